//! Streamed, parallel line reading: the file is read in large blocks, each block is cut at line
//! boundaries into sub-chunks parsed on all cores, and results are merged back in file order so
//! that loading stays deterministic. Memory stays bounded by the block size, not the file size.
//! The file's BLAKE3 checksum is computed on the way.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use crate::error::{InventoryError, RowError};

const BLOCK: usize = 16 << 20;
const SUB_CHUNK: usize = 256 << 10;

/// A problem found by a worker, with a line number local to its sub-chunk.
#[derive(Debug)]
pub(crate) struct LocalErr {
    pub line: u32,
    pub field: Option<String>,
    pub message: String,
}

impl LocalErr {
    pub fn new(line: u32, field: Option<&str>, message: impl Into<String>) -> Self {
        LocalErr {
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

/// Parses the lines of one sub-chunk into an accumulator.
pub(crate) trait LineParser: Sync {
    type Out: Send + Default;
    /// `line` is 0-based within the sub-chunk; blank lines are never passed.
    fn line(&self, text: &[u8], line: u32, out: &mut Self::Out, errs: &mut Vec<LocalErr>);
}

/// Reads `path` and feeds every non-blank line to `parser`; `merge` receives each sub-chunk's
/// output in file order with the 1-based line number of the sub-chunk's first line.
/// Stops early once `errors` holds `max_errors` problems. Returns the file's BLAKE3 hex.
pub(crate) fn read_lines<P: LineParser>(
    path: &Path,
    label: &str,
    skip_header: bool,
    parser: &P,
    max_errors: usize,
    errors: &mut Vec<RowError>,
    mut merge: impl FnMut(P::Out, u64) + Send,
) -> Result<String, InventoryError> {
    let io = |source| InventoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut left = file.metadata().map_err(io)?.len() as usize;
    let mut hasher = blake3::Hasher::new();
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK + (1 << 20));
    let mut next_line: u64 = 1;
    let mut header_pending = skip_header;
    let mut eof = false;
    // Results of the previous block: merged on one core while the next block is parsed.
    let mut pending: Option<Vec<Parsed<P>>> = None;
    while !eof {
        // Fill the buffer up to BLOCK bytes (after any carried-over partial line).
        let start = buf.len();
        // Never zero more than the file still holds (small files stay cheap).
        let want = if start < BLOCK { BLOCK - start } else { BLOCK };
        buf.resize(start + want.min(left + 1), 0);
        let mut filled = start;
        while filled < buf.len() {
            let n = file.read(&mut buf[filled..]).map_err(io)?;
            if n == 0 {
                eof = true;
                break;
            }
            filled += n;
            left = left.saturating_sub(n);
        }
        buf.truncate(filled);
        let fresh = start..filled;
        let end = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => {
                    // A line longer than a block: keep reading.
                    hasher.update(&buf[fresh]);
                    continue;
                }
            }
        };
        let mut body = &buf[..end];
        if header_pending {
            header_pending = false;
            match memchr::memchr(b'\n', body) {
                Some(i) => body = &body[i + 1..],
                None => body = &[],
            }
            next_line += 1;
        }
        let chunks = split_chunks(body);
        // One core hashes the new bytes and merges the previous block; all parse this one.
        let prev = pending.take();
        let (_, results) = rayon::join(
            || {
                hasher.update(&buf[fresh]);
                if let Some(r) = prev {
                    deliver::<P>(r, label, &mut next_line, errors, &mut merge);
                }
            },
            || parse_chunks(parser, &chunks),
        );
        pending = Some(results);
        if errors.len() >= max_errors {
            break;
        }
        buf.drain(..end);
    }
    if let Some(r) = pending {
        deliver::<P>(r, label, &mut next_line, errors, &mut merge);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// One sub-chunk's output, problems and line count.
type Parsed<P> = (<P as LineParser>::Out, Vec<LocalErr>, u32);

/// Hands parsed sub-chunks to `merge` in order, numbering lines and problems.
fn deliver<P: LineParser>(
    results: Vec<Parsed<P>>,
    label: &str,
    next_line: &mut u64,
    errors: &mut Vec<RowError>,
    merge: &mut impl FnMut(P::Out, u64),
) {
    for (out, errs, n) in results {
        for e in errs {
            errors.push(RowError {
                file: label.to_string(),
                line: *next_line + e.line as u64,
                field: e.field,
                message: e.message,
            });
        }
        merge(out, *next_line);
        *next_line += n as u64;
    }
}

/// Parses sub-chunks on all cores: (output, problems, lines) per sub-chunk, in order.
fn parse_chunks<P: LineParser>(parser: &P, chunks: &[&[u8]]) -> Vec<Parsed<P>> {
    chunks
        .par_iter()
        .map(|chunk| {
            let mut out = P::Out::default();
            let mut errs = Vec::new();
            let mut n = 0u32;
            for raw in chunk.split_inclusive(|&b| b == b'\n') {
                let mut l = raw;
                if let Some(x) = l.strip_suffix(b"\n") {
                    l = x;
                }
                if let Some(x) = l.strip_suffix(b"\r") {
                    l = x;
                }
                if !l.iter().all(u8::is_ascii_whitespace) {
                    parser.line(l, n, &mut out, &mut errs);
                }
                n += 1;
            }
            (out, errs, n)
        })
        .collect()
}

fn split_chunks(body: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() <= SUB_CHUNK {
            chunks.push(rest);
            break;
        }
        let cut = match memchr::memchr(b'\n', &rest[SUB_CHUNK..]) {
            Some(i) => SUB_CHUNK + i + 1,
            None => rest.len(),
        };
        chunks.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    chunks
}

/// Parses one JSON line into `T`; on failure names the field at fault when serde can tell.
pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(
    text: &'a [u8],
) -> Result<T, (Option<String>, String)> {
    match serde_json::from_slice::<T>(text) {
        Ok(v) => Ok(v),
        Err(first) => {
            // Slow path, only on errors: find the path of the failing field.
            let mut de = serde_json::Deserializer::from_slice(text);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => {
                    let path = e.path().to_string();
                    let field = if path.chars().all(|c| c == '.' || c == '?') {
                        None
                    } else {
                        Some(path)
                    };
                    Err((field, strip_position(e.into_inner().to_string())))
                }
                Ok(_) => Err((None, first.to_string())),
            }
        }
    }
}

/// serde_json appends " at line 1 column N": the line is ours to report, the column is kept.
fn strip_position(msg: String) -> String {
    match msg.rfind(" at line 1 column ") {
        Some(i) => format!("{} (column {})", &msg[..i], &msg[i + 18..]),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts lines and bytes, and records the first byte of each line.
    struct Count;
    impl LineParser for Count {
        type Out = Vec<(u32, usize, u8)>;
        fn line(&self, text: &[u8], line: u32, out: &mut Self::Out, _: &mut Vec<LocalErr>) {
            out.push((line, text.len(), text[0]));
        }
    }

    #[test]
    fn lines_across_blocks_and_longer_than_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        let mut data = Vec::new();
        let mut expect = Vec::new();
        for i in 0..200_000u64 {
            let len = 1 + (i * 7919 % 97) as usize;
            data.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            data.push(b'\n');
            expect.push((i + 1, len));
            if i == 150_000 {
                // One line longer than a whole block, then a blank line.
                data.extend(std::iter::repeat_n(b'L', BLOCK + 123));
                data.extend_from_slice(b"\n\n");
                expect.push((i + 2, BLOCK + 123));
            }
        }
        // Fix up line numbers after the long line and the blank line.
        for e in expect.iter_mut().skip(150_002) {
            e.0 += 2;
        }
        data.extend_from_slice(b"tail-without-newline");
        expect.push((200_003, 20));
        std::fs::write(&path, &data).unwrap();
        let mut got = Vec::new();
        let mut errors = Vec::new();
        let sum = read_lines(&path, "x", false, &Count, 10, &mut errors, |out, base| {
            got.extend(out.into_iter().map(|(l, n, _)| (base + l as u64, n)));
        })
        .unwrap();
        assert!(errors.is_empty());
        assert_eq!(got.len(), expect.len());
        assert_eq!(got, expect);
        assert_eq!(sum, blake3::hash(&data).to_hex().to_string());
    }
}
