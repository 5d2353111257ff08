//! `migrator receive`: the far side of an SSH destination ([`crate::files::remote`]). It
//! greets the sender with the protocol version, then answers each request of
//! [`crate::files::wire`] (scan, apply a batch, stamps, resume offsets, finish) against one
//! directory with the same [`crate::files::apply::Applier`] a local pass uses. Paths from the
//! wire are checked ([`check_rel`]: no absolute path, `..`, empty component or NUL) before
//! anything of their request is done; a refusal names the path.

use crate::files::apply::Applied;
use crate::files::beneath::check_rel;
use crate::files::wire::{
    decode_request, encode_response, read_frame, write_frame, Request, Response, WireError,
    PROTOCOL_VERSION,
};
use std::io::{Read, Write};

/// `migrator receive`: serves requests on `input`/`output` (the SSH exec channel's stdin and
/// stdout) against the directory `root`, until the sender closes the stream.
pub fn serve(
    root: &std::path::Path,
    input: impl Read,
    output: impl Write,
) -> Result<(), WireError> {
    let mut input = std::io::BufReader::with_capacity(1 << 20, input);
    let mut output = std::io::BufWriter::new(output);
    let mut applier = crate::files::apply::Applier::new(root);
    let hello = Response::Hello {
        version: PROTOCOL_VERSION,
        sets_owner: applier.sets_owner(),
    };
    write_frame(&mut output, &encode_response(&hello))?;
    output.flush()?;
    let mut total = Applied::default();
    while let Some(frame) = read_frame(&mut input)? {
        let resp = match decode_request(&frame)? {
            Request::Scan { checksum } => {
                let opts = crate::files::manifest::WalkOptions {
                    checksum,
                    refuse_escaping_symlinks: false,
                    leftovers: true,
                };
                match crate::files::manifest::build(root, &opts) {
                    Ok(m) => Response::Manifest(m),
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Request::Apply(ops) => match applier.apply(&ops) {
                Ok(a) => {
                    total.bytes += a.bytes;
                    total.files += a.files;
                    Response::Applied(a)
                }
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Finish => match applier.sync() {
                Ok(()) => Response::Finished,
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Stamps { dirs, settled } => {
                match dirs.iter().find_map(|d| check_rel(d).err()) {
                    // A path leaving the root is refused, naming it, before anything is read.
                    Some(bad) => Response::Error(bad.to_string()),
                    None => Response::Stamps(if settled {
                        crate::files::stamps::settled_stamps(root, &dirs)
                    } else {
                        crate::files::stamps::current_stamps(root, &dirs)
                    }),
                }
            }
            Request::Resume { path, source } => match applier.resume_offset(&path, source) {
                Ok(offset) => Response::ResumeAt(offset),
                Err(e) => Response::Error(e.to_string()),
            },
        };
        write_frame(&mut output, &encode_response(&resp))?;
        output.flush()?;
    }
    Ok(())
}
