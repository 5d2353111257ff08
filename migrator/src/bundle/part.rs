//! Writing one part of a bundle: bytes from a reader (a child program's output, or a buffer)
//! throttled, zstd-compressed and hashed (BLAKE3 of the stored bytes) on their way into the
//! store's temporary file, which is renamed into place only once complete
//! ([`super::store::PartSink::commit`]). Also the option file that gives `mariadb-dump` and
//! `mariadb` their credentials (mode 0600, deleted on drop), never a command line.

use super::pause::Gate;
use super::store::PartSink;
use super::{BundleError, PartInfo, PartKind, Result};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// zstd level: level 3 compresses a SQL dump ~5x at several hundred MB/s on one core, faster
/// than `mariadb-dump` produces it.
const ZSTD_LEVEL: i32 = 3;
const CHUNK: usize = 1 << 20;

/// A byte-rate limit over everything one capture reads (its parts one after the other), so a
/// capture never loads the old side's disks or network more than asked: the work loop calls
/// [`Throttle::obey`] with each chunk, which sleeps while the capture is ahead of the rate,
/// and, with a [`Gate`], while a site is frozen (the time paused is not caught up after).
pub struct Throttle<'g> {
    bytes_per_sec: Option<u64>,
    start: Instant,
    bytes: u64,
    gate: Option<&'g Gate<'g>>,
}

impl<'g> Throttle<'g> {
    /// `None`: no limit.
    pub fn new(bytes_per_sec: Option<u64>) -> Throttle<'static> {
        Throttle {
            bytes_per_sec: bytes_per_sec.filter(|r| *r > 0),
            start: Instant::now(),
            bytes: 0,
            gate: None,
        }
    }

    /// [`Throttle::new`], also pausing while `gate` says a site is frozen.
    pub fn with_gate(bytes_per_sec: Option<u64>, gate: &'g Gate<'g>) -> Throttle<'g> {
        Throttle {
            gate: Some(gate),
            ..Throttle::new(bytes_per_sec)
        }
    }

    pub fn obey(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(g) = self.gate {
            // The rate's clock stops while paused: no burst to catch up afterwards.
            self.start += g.wait();
        }
        let Some(rate) = self.bytes_per_sec else {
            return;
        };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

/// Counts and hashes what goes through to the sink.
struct Hashing {
    sink: Box<dyn PartSink>,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sink.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.flush()
    }
}

/// Streams `src` into `sink` (throttled, compressed, hashed) and commits it.
pub fn write_part(
    sink: Box<dyn PartSink>,
    name: &str,
    kind: PartKind,
    mut src: impl Read,
    throttle: &mut Throttle<'_>,
) -> Result<PartInfo> {
    let io = |e: std::io::Error| BundleError::Io {
        path: name.into(),
        source: e,
    };
    let hashing = Hashing {
        sink,
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    let mut enc = zstd::Encoder::new(hashing, ZSTD_LEVEL).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    let mut raw = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        throttle.obey(n);
        raw += n as u64;
        enc.write_all(&buf[..n]).map_err(io)?;
    }
    let hashing = enc.finish().map_err(io)?;
    let info = PartInfo {
        name: name.to_string(),
        kind,
        bytes: hashing.bytes,
        raw_bytes: raw,
        blake3: hashing.hasher.finalize().to_hex().to_string(),
    };
    hashing.sink.commit()?;
    Ok(info)
}

/// Runs `cmd` and stores its standard output as a part; fails (nothing committed) when the
/// program fails, with the end of what it said on stderr.
pub fn write_part_from_child(
    sink: Box<dyn PartSink>,
    name: &str,
    kind: PartKind,
    mut cmd: Command,
    what: &str,
    throttle: &mut Throttle<'_>,
) -> Result<PartInfo> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let fail = |message: String| BundleError::Program {
        program: program.clone(),
        what: what.to_string(),
        message,
    };
    let (mut child, errs) = spawn_reading_stderr(&mut cmd, Stdio::null(), Stdio::piped())
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let stdout = child.stdout.take().expect("stdout piped");
    let written = write_part_checked(sink, name, kind, stdout, throttle, &mut child);
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    let said = errs.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(format!("{status}: {}", tail(&said))));
    }
    written
}

/// [`write_part`], except that the part is committed only if `child` exited successfully
/// (its output may be cut short by a failure).
fn write_part_checked(
    sink: Box<dyn PartSink>,
    name: &str,
    kind: PartKind,
    src: impl Read,
    throttle: &mut Throttle<'_>,
    child: &mut std::process::Child,
) -> Result<PartInfo> {
    struct Gate {
        inner: Box<dyn PartSink>,
        ok: Box<dyn FnMut() -> bool>,
    }
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.inner.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    impl PartSink for Gate {
        fn commit(mut self: Box<Self>) -> Result<()> {
            if !(self.ok)() {
                return Err(BundleError::Program {
                    program: "child".into(),
                    what: "commit".into(),
                    message: "the program failed; the part is not kept".into(),
                });
            }
            self.inner.commit()
        }
    }
    let pid = child.id();
    let ok = Box::new(move || wait_ok(pid));
    write_part(
        Box::new(Gate { inner: sink, ok }),
        name,
        kind,
        src,
        throttle,
    )
}

/// Waits for child `pid` to exit without reaping it (`waitid` with `WNOWAIT`), and says
/// whether it exited 0; the caller's `wait` reaps it afterwards.
fn wait_ok(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    // SAFETY: after a successful waitid with WEXITED the status fields are set.
    r == 0 && info.si_code == libc::CLD_EXITED && unsafe { info.si_status() } == 0
}

/// The last lines of a program's stderr (errors come last).
/// Starts `cmd` with its stderr read into a string by a thread of its own (a chatty program
/// never blocks on a full pipe); join the handle once the child is done.
pub fn spawn_reading_stderr(
    cmd: &mut Command,
    stdin: Stdio,
    stdout: Stdio,
) -> std::io::Result<(std::process::Child, std::thread::JoinHandle<String>)> {
    let mut child = cmd
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = child.stderr.take().expect("stderr piped");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Ok((child, errs))
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// A MariaDB client option file for one server: `[client]` host, port, user, password; mode
/// 0600 in a private temporary directory, deleted on drop. Passed as
/// `--defaults-extra-file`, so no password is on a command line or in the environment.
pub struct ClientOptions {
    file: tempfile::NamedTempFile,
}

impl ClientOptions {
    pub fn new(url: &mysql_async::Opts) -> Result<ClientOptions> {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut text = String::from("[client]\n");
        if let Some(sock) = url.socket() {
            text.push_str(&format!("socket={}\n", quote(sock)));
        }
        text.push_str(&format!("host={}\n", quote(url.ip_or_hostname())));
        text.push_str(&format!("port={}\n", url.tcp_port()));
        if let Some(u) = url.user() {
            text.push_str(&format!("user={}\n", quote(u)));
        }
        if let Some(p) = url.pass() {
            text.push_str(&format!("password={}\n", quote(p)));
        }
        let mut file = tempfile::Builder::new()
            .prefix("migrator-client-")
            .suffix(".cnf")
            .tempfile()
            .map_err(BundleError::io(std::env::temp_dir()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.flush())
            .map_err(BundleError::io(file.path()))?;
        Ok(ClientOptions { file })
    }

    /// A command for `program` (`mariadb-dump`, `mariadb`) reading these options first.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.arg(format!(
            "--defaults-extra-file={}",
            self.file.path().display()
        ));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_holds_a_capture_to_its_rate() {
        let mut t = Throttle::new(Some(10 << 20));
        let start = Instant::now();
        for _ in 0..5 {
            t.obey(1 << 20); // 5 MiB at 10 MiB/s: ~0.5 s
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // No rate: 1 GiB passes without a sleep (at any rate it would take seconds or more).
        // The bound leaves room for a test thread preempted on a loaded machine.
        let mut free = Throttle::new(None);
        let start = Instant::now();
        free.obey(1 << 30);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn client_options_are_private_and_quote_the_password() {
        use std::os::unix::fs::PermissionsExt;
        let url: mysql_async::Opts = "mysql://u:p%22w@127.0.0.1:3307".parse().unwrap();
        let o = ClientOptions::new(&url).unwrap();
        let mode = std::fs::metadata(o.file.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        let text = std::fs::read_to_string(o.file.path()).unwrap();
        assert!(text.contains("password=\"p\\\"w\""), "{text}");
        assert!(text.contains("port=3307"), "{text}");
        let cmd = o.command("mariadb-dump");
        let args: Vec<_> = cmd.get_args().collect();
        assert!(!format!("{args:?}").contains("p\\\"w"));
    }
}
