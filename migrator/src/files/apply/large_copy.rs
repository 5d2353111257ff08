//! Copying a large file so that a killed pass continues where it stopped.
//!
//! A file of at least [`RESUME_MIN`] bytes is copied into a temporary file of its directory
//! (a fresh name, [`super::staging`]) in steps of [`COMMIT_EVERY`] bytes. After each step the
//! data is made durable (`fdatasync`) and only then the temporary file's extended attribute
//! [`XATTR`] records how far it is committed, the name it is a copy for, and which source it
//! is a copy of: the source's inode, size, mtime and ctime (ctime changes on every write or
//! metadata change and cannot be set back, so a source edited in between never matches). The
//! record travels with the data it describes (no journal entry per file, and it works the
//! same on the far side of an SSH receiver); it is removed before the temporary file is
//! renamed into place.
//!
//! On the next pass the destination walk reports a file carrying such a record as a leftover
//! (a customer's file of the same prefix has none: it is an ordinary entry); the applier keeps
//! it for the name its record names, and the copy of that path opens it, truncates it to the
//! committed offset and continues from there when the record names the same source, or starts
//! from zero when it does not. Leftovers that no write of the pass took back are removed when
//! the pass finishes.
//!
//! Where the file system has no user extended attributes the copy still works, it just cannot
//! resume (and skips the intermediate `fdatasync`s, which then buy nothing).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Files at least this large are copied resumably.
pub const RESUME_MIN: u64 = 64 << 20;
/// Bytes copied between two commits (`fdatasync` + record).
pub const COMMIT_EVERY: u64 = 16 << 20;
/// The extended attribute holding the resume record.
pub const XATTR: &std::ffi::CStr = c"user.hostmove.resume";

/// Which source file a partial copy is a copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId {
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl SourceId {
    pub fn of(st: &libc::stat) -> SourceId {
        SourceId {
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// The record: `v2 <ino> <size> <mtime> <mtime ns> <ctime> <ctime ns> <committed>
    /// <name, hex>` (`name`: the file name, in the same directory, this is a copy for).
    pub fn record(&self, committed: u64, name: &[u8]) -> String {
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "v2 {} {} {} {} {} {} {committed} {hex}",
            self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    /// Parses a record; `None` for anything malformed (then the copy starts from zero).
    pub fn parse(record: &[u8]) -> Option<(SourceId, u64, Vec<u8>)> {
        let s = std::str::from_utf8(record).ok()?;
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() != 9 || f[0] != "v2" || f[8].is_empty() || !f[8].len().is_multiple_of(2) {
            return None;
        }
        let name = (0..f[8].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(f[8].get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        if name.contains(&b'/') || name.contains(&0) || name == b".." || name == b"." {
            return None;
        }
        let n = |i: usize| f[i].parse::<i64>().ok();
        let id = SourceId {
            ino: f[1].parse().ok()?,
            size: f[2].parse().ok()?,
            mtime: (n(3)?, n(4)?),
            ctime: (n(5)?, n(6)?),
        };
        Some((id, f[7].parse().ok()?, name))
    }
}

/// The record of an open file: (source, committed offset, the name it is a copy for).
pub fn read_record(f: &impl AsRawFd) -> Option<(SourceId, u64, Vec<u8>)> {
    let mut buf = [0u8; 1024];
    // SAFETY: the descriptor is open; buf is writable for its length.
    let n = unsafe {
        libc::fgetxattr(
            f.as_raw_fd(),
            XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    SourceId::parse(&buf[..n as usize])
}

/// Writes the record; `Ok(false)` when the file system has no user extended attributes.
pub(super) fn write_record(
    f: &File,
    id: &SourceId,
    committed: u64,
    name: &[u8],
) -> std::io::Result<bool> {
    let v = id.record(committed, name);
    // SAFETY: the descriptor is open; v is valid for its length.
    let rc =
        unsafe { libc::fsetxattr(f.as_raw_fd(), XATTR.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTSUP) => Ok(false),
        _ => Err(e),
    }
}

pub(super) fn remove_record(f: &File) -> std::io::Result<()> {
    // SAFETY: the descriptor is open; the name is NUL-terminated.
    if unsafe { libc::fremovexattr(f.as_raw_fd(), XATTR.as_ptr()) } != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) {
            return Err(e);
        }
    }
    Ok(())
}

thread_local! {
    /// The buffer of the `pread`/`pwrite` copy, one per thread, reused file after file.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies `len` bytes at `pos` of `input` to the same offset of `out`; returns the bytes
/// copied (fewer when the source ends first). In the kernel (`copy_file_range`) while
/// `kernel` holds; the first refusal (another file system: the usual case between two filers,
/// which Linux does not copy across) clears it, and from then on, for this file and the
/// following ones, `sendfile` into a fresh file (one call for a small file), else
/// `pread`/`pwrite` through a reused buffer.
pub fn copy_range(
    input: &File,
    out: &File,
    pos: u64,
    len: u64,
    kernel: &AtomicBool,
) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut done = 0u64;
    while done < len && kernel.load(Ordering::Relaxed) {
        let want = (len - done).min(1 << 30) as usize;
        let mut off_in = (pos + done) as libc::loff_t;
        let mut off_out = off_in;
        // SAFETY: both descriptors are open; the offsets are valid pointers for the call.
        let n = unsafe {
            libc::copy_file_range(
                input.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            return Ok(done); // the source ended (shrank since it was measured)
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                kernel.store(false, Ordering::Relaxed)
            }
            _ => return Err(e),
        }
    }
    if done == len {
        return Ok(done);
    }
    if pos == 0 && done == 0 {
        // `out` is fresh, its file position at 0: `sendfile` copies page cache to page
        // cache in one call (no copy through user space).
        let mut off_in: libc::off_t = 0;
        while done < len {
            let want = (len - done).min(1 << 30) as usize;
            // SAFETY: both descriptors are open; off_in is a valid pointer for the call.
            let n =
                unsafe { libc::sendfile(out.as_raw_fd(), input.as_raw_fd(), &mut off_in, want) };
            if n > 0 {
                done += n as u64;
                continue;
            }
            if n == 0 {
                return Ok(done);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EINVAL | libc::ENOSYS) if done == 0 => break,
                _ => return Err(e),
            }
        }
        if done == len {
            return Ok(done);
        }
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let cap = (len - done).clamp(64 << 10, 1 << 20) as usize;
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        while done < len {
            let want = ((len - done) as usize).min(buf.len());
            let n = match input.read_at(&mut buf[..want], pos + done) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all_at(&buf[..n], pos + done)?;
            done += n as u64;
        }
        Ok(done)
    })
}

/// Copies `input` (fstat'ed as `st`) into the open temporary file `out`, a copy for file
/// name `name`, continuing a previous pass's committed copy of the same source. Returns the
/// bytes copied by this call (the record is removed at the end).
pub fn copy_resumable(
    input: &File,
    st: &libc::stat,
    out: &File,
    name: &[u8],
    kernel: &AtomicBool,
) -> std::io::Result<u64> {
    let id = SourceId::of(st);
    // A record beyond the file's length outlived its data: set_len would fill it with zeros.
    let len = out.metadata()?.len();
    let start = match read_record(out) {
        Some((was, committed, for_name))
            if was == id && for_name == name && committed <= id.size && committed <= len =>
        {
            committed
        }
        _ => 0,
    };
    // Whatever lies past the committed offset was written but never made durable.
    out.set_len(start)?;
    let resumable = write_record(out, &id, start, name)?;
    let mut pos = start;
    while pos < id.size {
        let step = (id.size - pos).min(COMMIT_EVERY);
        let n = copy_range(input, out, pos, step, kernel)?;
        pos += n;
        if n < step {
            break; // the source shrank: the next pass sees its new size and copies again
        }
        if resumable && pos < id.size {
            out.sync_data()?;
            write_record(out, &id, pos, name)?;
        }
    }
    if resumable {
        remove_record(out)?;
    }
    Ok(pos - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(f: &File) -> libc::stat {
        // SAFETY: a zeroed stat is a valid out-buffer; the descriptor is open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0);
        st
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let id = SourceId {
            ino: 42,
            size: 1 << 33,
            mtime: (-3, 5),
            ctime: (1_700_000_000, 999_999_999),
        };
        assert_eq!(
            SourceId::parse(id.record(77, b"big.bin").as_bytes()),
            Some((id, 77, b"big.bin".to_vec()))
        );
        assert_eq!(SourceId::parse(b"v1 1 2 3"), None);
        assert_eq!(SourceId::parse(b"v1 1 2 3 4 5 6 7"), None);
        assert_eq!(
            SourceId::parse(b"v2 1 2 3 4 5 6 7 2e2e"),
            None,
            "`..` as name"
        );
        assert_eq!(
            SourceId::parse(b"v2 1 2 3 4 5 6 7 612f62"),
            None,
            "`/` in name"
        );
        assert_eq!(SourceId::parse(b"\xff"), None);
    }

    #[test]
    fn a_committed_partial_copy_is_continued_and_a_stale_one_restarted() {
        // /var/tmp: a disk file system with user extended attributes.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..(3 * COMMIT_EVERY + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&src, &data).unwrap();
        let input = File::open(&src).unwrap();
        let st = stat(&input);
        let tmp = dir.path().join(".~migrator-tmp.src");
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&tmp)
                .unwrap()
        };
        // A killed pass committed one step, then wrote garbage past it.
        {
            let out = File::create(&tmp).unwrap();
            use std::io::Write;
            (&out).write_all(&data[..COMMIT_EVERY as usize]).unwrap();
            (&out).write_all(&[0xee; 4096]).unwrap();
            if !write_record(&out, &SourceId::of(&st), COMMIT_EVERY, b"src").unwrap() {
                eprintln!("no user xattrs on /var/tmp: resume not testable here");
                return;
            }
        }
        assert!(read_record(&open()).is_some());
        let copied = copy_resumable(&input, &st, &open(), b"src", &AtomicBool::new(true)).unwrap();
        assert_eq!(copied, data.len() as u64 - COMMIT_EVERY);
        assert_eq!(std::fs::read(&tmp).unwrap(), data);
        assert!(
            read_record(&open()).is_none(),
            "record left on the finished copy"
        );
        // A record naming another source (here: another size), or written for another name,
        // is not trusted.
        for (size_delta, name) in [(1, &b"src"[..]), (0, b"other")] {
            {
                let out = open();
                let mut other = SourceId::of(&st);
                other.size += size_delta;
                write_record(&out, &other, 2 * COMMIT_EVERY, name).unwrap();
            }
            let copied =
                copy_resumable(&input, &st, &open(), b"src", &AtomicBool::new(true)).unwrap();
            assert_eq!(copied, data.len() as u64);
            assert_eq!(std::fs::read(&tmp).unwrap(), data);
        }
    }
}
