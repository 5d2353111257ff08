//! Where a backend response ends. The relay forwards frames untouched; this scanner looks only
//! at the first bytes of each logical packet to follow the response grammar (OK / ERR / local
//! infile / result set with column definitions, EOF, rows, EOF, more results...) and to pick
//! up the server status flags (in transaction, autocommit).
//!
//! We never negotiate CLIENT_DEPRECATE_EOF, so a row set always ends with a classic EOF packet
//! (0xFE, shorter than 9 bytes), which no row can look like.

use crate::protocol::{eof_status, is_eof, ok_status, status};
use crate::wire::{DecodeError, Reader};

/// What kind of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE: OK, ERR, local infile, or result sets.
    Results { binary: bool },
    /// COM_STMT_FETCH: rows then EOF, or ERR.
    Rows,
    /// COM_STMT_PREPARE: prepare-OK with parameter and column definitions, or ERR.
    Prepare,
    /// COM_FIELD_LIST: column definitions until EOF, or ERR.
    FieldList,
    /// Exactly one packet (OK, ERR, EOF or a statistics string).
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns { left: u64, then_rows: bool },
    ColumnsEof { then_rows: bool },
    Rows,
    PrepareParams { left: u64, columns: u64 },
    PrepareColumns { left: u64 },
    UntilEof,
    Single,
    Done,
}

/// One step of the scanner after a logical packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More packets follow.
    More,
    /// The response is complete.
    Done,
    /// The server asks the client for a local file; relay client packets until an empty one,
    /// then keep scanning.
    LocalInfile,
    /// A prepare succeeded: the backend's statement id (bytes 1..5 of this packet), counts.
    Prepared {
        stmt_id: u32,
        params: u16,
        columns: u16,
    },
}

/// Follows one response.
#[derive(Debug, Clone)]
pub struct Scanner {
    state: State,
    binary: bool,
    /// Status flags of the last OK/EOF seen (None until one arrives).
    pub status: Option<u16>,
    /// Whether the response ended in an ERR packet.
    pub error: bool,
}

impl Scanner {
    pub fn new(expect: Expect) -> Self {
        let (state, binary) = match expect {
            Expect::Results { binary } => (State::First, binary),
            Expect::Rows => (State::Rows, true),
            Expect::Prepare => (State::First, false),
            Expect::FieldList => (State::UntilEof, false),
            Expect::Single => (State::Single, false),
        };
        let mut s = Self {
            state,
            binary,
            status: None,
            error: false,
        };
        if expect == Expect::Prepare {
            s.state = State::PrepareParams {
                left: u64::MAX,
                columns: 0,
            };
        }
        s
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the first frame's payload of the next logical packet (enough for every decision:
    /// status-bearing packets are small).
    pub fn feed(&mut self, p: &[u8]) -> Result<Step, DecodeError> {
        let first = p.first().copied();
        let step = match self.state {
            State::Done => return Err(crate::wire::bad("response", "packet after the end")),
            State::Single => {
                if first == Some(0xFF) {
                    self.error = true;
                } else if first == Some(0x00) {
                    self.status = ok_status(p).ok().or(self.status);
                } else if is_eof(p) {
                    self.status = eof_status(p).ok().or(self.status);
                }
                self.state = State::Done;
                Step::Done
            }
            State::First => match first {
                Some(0x00) => {
                    let st = ok_status(p)?;
                    self.status = Some(st);
                    self.more_or_done(st)
                }
                Some(0xFF) => self.fail(),
                Some(0xFB) => Step::LocalInfile,
                _ => {
                    let n = Reader::new(p).lenenc("column count")?.unwrap_or(0);
                    self.state = State::Columns {
                        left: n,
                        then_rows: true,
                    };
                    Step::More
                }
            },
            State::Columns { left, then_rows } => {
                if first == Some(0xFF) {
                    return Ok(self.fail());
                }
                self.state = if left <= 1 {
                    State::ColumnsEof { then_rows }
                } else {
                    State::Columns {
                        left: left - 1,
                        then_rows,
                    }
                };
                Step::More
            }
            State::ColumnsEof { then_rows } => {
                if first == Some(0xFF) {
                    return Ok(self.fail());
                }
                let st = eof_status(p)?;
                self.status = Some(st);
                if !then_rows {
                    self.state = State::Done;
                    Step::Done
                } else if self.binary && st & status::CURSOR_EXISTS != 0 {
                    self.more_or_done(st)
                } else {
                    self.state = State::Rows;
                    Step::More
                }
            }
            State::Rows => {
                if first == Some(0xFF) {
                    self.fail()
                } else if is_eof(p) {
                    let st = eof_status(p)?;
                    self.status = Some(st);
                    self.more_or_done(st)
                } else {
                    Step::More
                }
            }
            State::PrepareParams {
                left: u64::MAX,
                columns: _,
            } => {
                if first == Some(0xFF) {
                    return Ok(self.fail());
                }
                let mut r = Reader::new(p);
                r.u8("prepare OK header")?;
                let stmt_id = r.u32("statement id")?;
                let columns = r.u16("column count")?;
                let params = r.u16("parameter count")?;
                self.state = if params > 0 {
                    State::PrepareParams {
                        left: params as u64,
                        columns: columns as u64,
                    }
                } else if columns > 0 {
                    State::PrepareColumns {
                        left: columns as u64,
                    }
                } else {
                    State::Done
                };
                return Ok(Step::Prepared {
                    stmt_id,
                    params,
                    columns,
                });
            }
            State::PrepareParams { left, columns } => {
                self.state = if left == 0 {
                    // This is the EOF after the parameter definitions.
                    if columns > 0 {
                        State::PrepareColumns { left: columns }
                    } else {
                        State::Done
                    }
                } else {
                    State::PrepareParams {
                        left: left - 1,
                        columns,
                    }
                };
                self.step_from_state()
            }
            State::PrepareColumns { left } => {
                self.state = if left == 0 {
                    State::Done
                } else {
                    State::PrepareColumns { left: left - 1 }
                };
                self.step_from_state()
            }
            State::UntilEof => {
                if first == Some(0xFF) {
                    self.fail()
                } else if is_eof(p) {
                    self.status = eof_status(p).ok().or(self.status);
                    self.state = State::Done;
                    Step::Done
                } else {
                    Step::More
                }
            }
        };
        Ok(step)
    }

    /// After a local infile exchange the server answers like a query (OK or ERR).
    pub fn infile_sent(&mut self) {
        self.state = State::First;
    }

    fn step_from_state(&self) -> Step {
        if self.state == State::Done {
            Step::Done
        } else {
            Step::More
        }
    }

    fn fail(&mut self) -> Step {
        self.error = true;
        self.state = State::Done;
        Step::Done
    }

    fn more_or_done(&mut self, st: u16) -> Step {
        if st & status::MORE_RESULTS_EXISTS != 0 {
            self.state = State::First;
            Step::More
        } else {
            self.state = State::Done;
            Step::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::build_ok;

    const EOF: [u8; 5] = [0xFE, 0, 0, 2, 0];
    const EOF_MORE: [u8; 5] = [0xFE, 0, 0, 10, 0];

    fn run(expect: Expect, packets: &[&[u8]]) -> (Vec<Step>, Scanner) {
        let mut s = Scanner::new(expect);
        let steps = packets.iter().map(|p| s.feed(p).unwrap()).collect();
        (steps, s)
    }

    #[test]
    fn ok_and_err_end_a_query() {
        let (steps, s) = run(Expect::Results { binary: false }, &[&build_ok(1, 0, 3, 0)]);
        assert_eq!(steps, vec![Step::Done]);
        assert_eq!(s.status, Some(3));
        let (steps, s) = run(Expect::Results { binary: false }, &[&[0xFF, 1, 2]]);
        assert_eq!(steps, vec![Step::Done]);
        assert!(s.error);
    }

    #[test]
    fn multi_results_continue_until_the_last() {
        let row: &[u8] = &[0x01, b'1'];
        // A 0xFE-leading row of 9+ bytes is a row, not an EOF.
        let big_row: &[u8] = &[0xFE, 1, 0, 0, 0, 0, 0, 0, 0, b'x'];
        let ok_more = build_ok(0, 0, 2 | 8, 0);
        let (steps, s) = run(
            Expect::Results { binary: false },
            &[
                &[1],
                b"coldef",
                &EOF,
                row,
                big_row,
                &EOF_MORE,
                &ok_more,
                &[2],
                b"c1",
                b"c2",
                &EOF,
                &EOF,
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Done));
        assert!(steps[..steps.len() - 1].iter().all(|s| *s == Step::More));
        assert_eq!(s.status, Some(2));
    }

    #[test]
    fn prepare_reports_the_statement_id_and_counts_definitions() {
        let prep = [0x00, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let (steps, _) = run(Expect::Prepare, &[&prep, b"p1", b"p2", &EOF, b"c1", &EOF]);
        assert_eq!(
            steps,
            vec![
                Step::Prepared {
                    stmt_id: 7,
                    params: 2,
                    columns: 1
                },
                Step::More,
                Step::More,
                Step::More,
                Step::More,
                Step::Done
            ]
        );
        let no_defs = [0x00, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let (steps, s) = run(Expect::Prepare, &[&no_defs]);
        assert!(matches!(steps[0], Step::Prepared { stmt_id: 8, .. }));
        assert!(s.is_done());
    }

    #[test]
    fn cursor_execute_stops_after_column_definitions() {
        let eof_cursor = [0xFE, 0, 0, 0x42, 0];
        let (steps, _) = run(Expect::Results { binary: true }, &[&[1], b"c", &eof_cursor]);
        assert_eq!(steps, vec![Step::More, Step::More, Step::Done]);
    }

    #[test]
    fn local_infile_then_ok() {
        let mut s = Scanner::new(Expect::Results { binary: false });
        assert_eq!(s.feed(b"\xFBdata.csv").unwrap(), Step::LocalInfile);
        s.infile_sent();
        assert_eq!(s.feed(&build_ok(3, 0, 2, 0)).unwrap(), Step::Done);
    }
}
