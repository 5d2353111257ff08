//! The running wave's local control socket (gh-ost's `server.go` idea): a unix socket, mode
//! 0600, one command per line, one JSON answer per line.
//!
//! Commands: `status`, `pause`, `resume`, `throttle N` (0 removes the limit), either as plain
//! words (`echo pause | socat - UNIX:wave.sock`) or as JSON
//! (`{"cmd":"throttle","value":2,"who":"alice","note":"db slow"}`). Answers:
//! `{"ok":true,"status":{...WaveStatus...}}` or `{"ok":false,"error":"..."}`.
//!
//! A control is not applied here: it is written to the journal ([`crate::control`]) with who
//! sent it (the client's `who`, and the peer's uid from the kernel), and the wave obeys the
//! journal. So the socket, the CLI and the dashboard steer the wave the same way.

use crate::control::{Action, Controls, WaveStatus};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {0}: another migrator is serving it (a wave is running)")]
    InUse(PathBuf),
    #[error("control socket {path}: bad answer {answer:?}: {source}")]
    BadAnswer {
        path: PathBuf,
        answer: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why a command line was refused (answered as `{"ok":false,"error":"..."}`).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("bad JSON command: {0}")]
    Json(#[source] serde_json::Error),
    #[error("empty command")]
    Empty,
    #[error("`{cmd} {value}`: the value must be a whole number")]
    NotANumber { cmd: String, value: String },
    #[error("throttle needs a number: `throttle N` (0 removes the limit)")]
    ThrottleWithoutNumber,
    #[error("unknown command `{0}`; commands: status, pause, resume, throttle N")]
    Unknown(String),
}

/// One command as sent on the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WaveStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Parses one line: JSON, or words (`throttle 2`).
pub fn parse_line(line: &str) -> Result<Command, CommandError> {
    let line = line.trim();
    if line.starts_with('{') {
        return serde_json::from_str(line).map_err(CommandError::Json);
    }
    let mut words = line.split_whitespace();
    let cmd = words.next().ok_or(CommandError::Empty)?.to_string();
    let value = match words.next() {
        Some(v) => Some(v.parse::<u32>().map_err(|_| CommandError::NotANumber {
            cmd: cmd.clone(),
            value: v.to_string(),
        })?),
        None => None,
    };
    Ok(Command {
        cmd,
        value,
        who: None,
        note: None,
    })
}

/// The action a command asks for (`None` for `status`).
pub fn action_of(c: &Command) -> Result<Option<Action>, CommandError> {
    match (c.cmd.as_str(), c.value) {
        ("status", _) => Ok(None),
        ("pause", _) => Ok(Some(Action::Pause)),
        ("resume", _) => Ok(Some(Action::Resume)),
        ("throttle", Some(n)) => Ok(Some(Action::Throttle(n))),
        ("throttle", None) => Err(CommandError::ThrottleWithoutNumber),
        (other, _) => Err(CommandError::Unknown(other.to_string())),
    }
}

/// The listening socket; removed when dropped.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Live status of the wave, as the server answers it.
pub type StatusFn = Arc<dyn Fn() -> WaveStatus + Send + Sync>;

impl ControlServer {
    /// Binds `path` (mode 0600) and serves commands for `wave`, writing controls to `journal`.
    pub fn start(
        path: &Path,
        wave: u32,
        journal: &Path,
        status: StatusFn,
    ) -> Result<ControlServer, SocketError> {
        let io = |source| SocketError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            // Left by a killed migrator.
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let journal = journal.to_path_buf();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (journal, status) = (journal.clone(), status.clone());
                        std::thread::spawn(move || serve(conn, wave, &journal, &status));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The uid of the process at the other end of `conn` (kernel-reported).
fn peer_uid(conn: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn serve(conn: UnixStream, wave: u32, journal: &Path, status: &StatusFn) {
    let uid = peer_uid(&conn);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let answer = handle(&line, wave, journal, status, uid);
        let text = serde_json::to_string(&answer).expect("answer serializes");
        if writeln!(out, "{text}").is_err() {
            return;
        }
    }
}

/// Handles one command line; public so the dashboard can offer the same commands.
pub fn handle(
    line: &str,
    wave: u32,
    journal: &Path,
    status: &StatusFn,
    uid: Option<u32>,
) -> Answer {
    let fail = |error: String| Answer {
        ok: false,
        status: None,
        error: Some(error),
    };
    let cmd = match parse_line(line) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let action = match action_of(&cmd) {
        Ok(a) => a,
        Err(e) => return fail(e.to_string()),
    };
    let controls = match Controls::open(journal) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if let Some(action) = action {
        let who = cmd.who.clone().unwrap_or_else(|| "unknown".into());
        let source = match uid {
            Some(u) => format!("socket uid={u}"),
            None => "socket".into(),
        };
        if let Err(e) = controls.request(wave, action, &who, &source, cmd.note.as_deref()) {
            return fail(e.to_string());
        }
    }
    let mut st = status();
    match controls.current(wave) {
        Ok(c) => st.control = c,
        Err(e) => return fail(e.to_string()),
    }
    Answer {
        ok: true,
        status: Some(st),
        error: None,
    }
}

/// Sends one command to a running wave's socket and returns its answer.
pub fn send(path: &Path, cmd: &Command) -> Result<Answer, SocketError> {
    let io = |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = UnixStream::connect(path).map_err(io)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let text = serde_json::to_string(cmd).expect("command serializes");
    writeln!(conn, "{text}").map_err(io)?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).map_err(io)?;
    serde_json::from_str(&line).map_err(|source| SocketError::BadAnswer {
        path: path.to_path_buf(),
        answer: line.clone(),
        source,
    })
}

/// The default socket path: next to the journal, `<journal>.wave.sock`.
pub fn default_path(journal: &Path) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push(".wave.sock");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_words_and_json_and_refuses_nonsense() {
        let action = |line: &str| action_of(&parse_line(line).unwrap());
        assert_eq!(action("pause").unwrap(), Some(Action::Pause));
        assert_eq!(action(" throttle 3 ").unwrap(), Some(Action::Throttle(3)));
        assert_eq!(
            action(r#"{"cmd":"throttle","value":0,"who":"a"}"#).unwrap(),
            Some(Action::Throttle(0))
        );
        assert_eq!(action("status").unwrap(), None);
        assert!(matches!(
            action("throttle"),
            Err(CommandError::ThrottleWithoutNumber)
        ));
        assert_eq!(
            parse_line("throttle x").unwrap_err().to_string(),
            "`throttle x`: the value must be a whole number"
        );
        assert_eq!(
            action("explode").unwrap_err().to_string(),
            "unknown command `explode`; commands: status, pause, resume, throttle N"
        );
        assert!(parse_line("{oops")
            .unwrap_err()
            .to_string()
            .starts_with("bad JSON command: "));
        assert_eq!(parse_line("  ").unwrap_err().to_string(), "empty command");
    }

    #[test]
    fn socket_is_private_records_the_sender_and_answers_status() {
        let dir = tempfile::tempdir().unwrap();
        let jp = dir.path().join("j.sqlite");
        let sock = default_path(&jp);
        let status: StatusFn = Arc::new(|| WaveStatus {
            wave: 5,
            total: 2,
            ..Default::default()
        });
        let server = ControlServer::start(&sock, 5, &jp, status.clone()).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            ControlServer::start(&sock, 5, &jp, status),
            Err(SocketError::InUse(_))
        ));
        let cmd = |c: &str, v: Option<u32>| Command {
            cmd: c.into(),
            value: v,
            who: Some("carol".into()),
            note: None,
        };
        let a = send(&sock, &cmd("pause", None)).unwrap();
        assert!(a.ok);
        let st = a.status.unwrap();
        assert_eq!(st.total, 2);
        assert!(st.control.paused);
        let last = st.control.last.unwrap();
        assert_eq!(last.who, "carol");
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert_eq!(last.source, format!("socket uid={uid}"));
        let a = send(&sock, &cmd("throttle", Some(1))).unwrap();
        assert_eq!(a.status.unwrap().control.concurrency_limit, Some(1));
        let a = send(&sock, &cmd("throttle", None)).unwrap();
        assert!(!a.ok && a.error.unwrap().contains("needs a number"));
        // The journal has what the socket was told.
        assert!(crate::control::current(&jp, 5).unwrap().paused);
        drop(server);
        assert!(!sock.exists());
        // A stale socket file left by a killed migrator is replaced.
        let l = UnixListener::bind(&sock).unwrap();
        drop(l);
        let s2 = ControlServer::start(&sock, 5, &jp, Arc::new(WaveStatus::default)).unwrap();
        assert!(send(&sock, &cmd("status", None)).unwrap().ok);
        drop(s2);
    }
}
