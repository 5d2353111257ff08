//! `scenarios supervise`: keeps one daemon running the way production's service manager
//! (systemd `Restart=always`, see `sql-proxy/dist/sql-proxy.service`) does: it starts the
//! child, records the child's PID (with its start time) in a status file, restarts it when it
//! exits (a short backoff that grows while the child keeps dying quickly, and a start limit:
//! more than `max_starts` starts within `window` and it gives up, like systemd's
//! `StartLimitBurst`), logs every exit with its status, forwards `SIGHUP`, and on `SIGTERM` or
//! `SIGINT` stops its child by that PID (`SIGTERM`, then `SIGKILL` after a grace) and exits.
//!
//! `lab up` starts it (recorded by PID like every daemon) for old-dc's `sql-proxy`; `lab status`
//! and `lab down` read the current child from the status file, and the `proxy-restart`
//! scenario kills the child by that PID.

use crate::error::{LabError, Result};
use crate::process::{self, ProcRecord};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// When to restart, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Delay before the first restart after a quick exit (and after a stable run).
    pub backoff_min: Duration,
    /// The delay doubles while the child keeps exiting quickly, up to this.
    pub backoff_max: Duration,
    /// A child that ran at least this long was healthy: the next delay is `backoff_min` again.
    pub stable_after: Duration,
    /// At most this many starts within `window`; one more and the supervisor gives up.
    pub max_starts: usize,
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
            max_starts: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// What to do after the child exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// Too many starts within the window: stop trying (the service manager's start limit).
    GiveUp { starts: usize, window: Duration },
}

/// The restart bookkeeping: pure, so the policy is unit-tested without processes.
#[derive(Debug)]
pub struct Restarts {
    policy: Policy,
    starts: VecDeque<Instant>,
    next_delay: Duration,
}

impl Restarts {
    pub fn new(policy: Policy) -> Self {
        let next_delay = policy.backoff_min;
        Restarts {
            policy,
            starts: VecDeque::new(),
            next_delay,
        }
    }

    /// The child was started at `at`.
    pub fn started(&mut self, at: Instant) {
        self.starts.push_back(at);
    }

    /// The child exited at `now` after running `ran_for`.
    pub fn exited(&mut self, now: Instant, ran_for: Duration) -> Decision {
        let window = self.policy.window;
        while self
            .starts
            .front()
            .is_some_and(|s| now.saturating_duration_since(*s) > window)
        {
            self.starts.pop_front();
        }
        if self.starts.len() >= self.policy.max_starts {
            return Decision::GiveUp {
                starts: self.starts.len(),
                window,
            };
        }
        if ran_for >= self.policy.stable_after {
            self.next_delay = self.policy.backoff_min;
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.policy.backoff_max);
        Decision::RestartAfter(delay)
    }
}

/// The supervisor's status file (JSON, replaced atomically): who runs now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub service: String,
    pub supervisor_pid: i32,
    /// The child running now; `None` between an exit and the restart, and after the end.
    pub child: Option<ProcRecord>,
    /// Starts so far (the first included).
    pub starts: u64,
    /// Restarts after an exit (`starts - 1` while running).
    pub restarts: u64,
    /// How the last child ended, e.g. `killed by signal 9 (SIGKILL) after 4.2 s`.
    pub last_exit: Option<String>,
    /// `running`, `restarting`, `stopped` (SIGTERM) or `gave_up` (start limit hit).
    pub state: String,
}

/// Reads a status file.
pub fn read_status(path: &Path) -> Result<Status> {
    let data = std::fs::read(path).map_err(LabError::io("reading supervisor status", path))?;
    serde_json::from_slice(&data).map_err(|source| LabError::State {
        path: path.to_path_buf(),
        source,
    })
}

fn write_status(path: &Path, s: &Status) {
    let tmp = path.with_extension("json.tmp");
    let ok = serde_json::to_vec_pretty(s)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&tmp, json))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        log(&format!("cannot write status {}: {e}", path.display()));
    }
}

/// The running child of a supervisor, if its status file names one that is alive.
pub fn current_child(status_file: &Path) -> Option<ProcRecord> {
    read_status(status_file).ok()?.child.filter(process::alive)
}

/// `exited 1`, `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("killed by signal {sig} ({name})")
        }
        None => format!("ended ({status})"),
    }
}

static TERM: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    if sig == libc::SIGHUP {
        HUP.store(true, Ordering::SeqCst);
    } else {
        TERM.store(true, Ordering::SeqCst);
    }
}

fn install_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to atomics; exec resets it to the default in the child.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

fn log(msg: &str) {
    let now = crate::traffic::unix_ms();
    eprintln!("[{}.{:03}] supervise: {msg}", now / 1000, now % 1000);
}

/// What `scenarios supervise` runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name in the logs and the status file, e.g. `old-dc/sql-proxy`.
    pub service: String,
    pub status_file: PathBuf,
    /// The child's stdout and stderr (appended).
    pub child_log: PathBuf,
    pub policy: Policy,
    /// How long a stopped child gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Program and arguments.
    pub command: Vec<String>,
}

fn spawn(opts: &Options) -> std::io::Result<Child> {
    let (program, args) = opts
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command to supervise"))?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.child_log)?;
    let err = out.try_clone()?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
}

/// Sleeps `d` in small steps; false if a stop was requested meanwhile.
fn sleep_unless_stopped(d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if TERM.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    !TERM.load(Ordering::SeqCst)
}

/// Stops the child by its PID: SIGTERM (and SIGCONT, should it be stopped), then SIGKILL after
/// `grace`; reaps it.
fn stop_child(child: &mut Child, grace: Duration) -> String {
    let pid = child.id() as i32;
    process::signal_pid(pid, libc::SIGTERM);
    process::signal_pid(pid, libc::SIGCONT);
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return describe_exit(&st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    process::signal_pid(pid, libc::SIGKILL);
    match child.wait() {
        Ok(st) => format!(
            "{} (SIGKILL after {:.0} s)",
            describe_exit(&st),
            grace.as_secs_f64()
        ),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Runs the supervisor until SIGTERM/SIGINT (exit code 0) or the start limit (exit code 1).
pub fn run(opts: &Options) -> i32 {
    install_handlers();
    let mut status = Status {
        service: opts.service.clone(),
        supervisor_pid: std::process::id() as i32,
        state: "starting".into(),
        ..Default::default()
    };
    let mut restarts = Restarts::new(opts.policy.clone());
    log(&format!(
        "{}: supervising `{}` (status {})",
        opts.service,
        opts.command.join(" "),
        opts.status_file.display()
    ));
    loop {
        if TERM.load(Ordering::SeqCst) {
            status.state = "stopped".into();
            write_status(&opts.status_file, &status);
            log(&format!("{}: stop requested; exiting", opts.service));
            return 0;
        }
        let started = Instant::now();
        restarts.started(started);
        status.starts += 1;
        let outcome = match spawn(opts) {
            Ok(mut child) => {
                let pid = child.id() as i32;
                status.child = Some(ProcRecord {
                    service: opts.service.clone(),
                    pid,
                    start_time: process::start_time(pid).unwrap_or(0),
                });
                status.state = "running".into();
                write_status(&opts.status_file, &status);
                log(&format!(
                    "{}: started pid {pid} (start {})",
                    opts.service, status.starts
                ));
                loop {
                    if TERM.load(Ordering::SeqCst) {
                        let how = stop_child(&mut child, opts.stop_grace);
                        status.child = None;
                        status.last_exit = Some(how.clone());
                        status.state = "stopped".into();
                        write_status(&opts.status_file, &status);
                        log(&format!(
                            "{}: stop requested; pid {pid} {how}; exiting",
                            opts.service
                        ));
                        return 0;
                    }
                    if HUP.swap(false, Ordering::SeqCst) {
                        process::signal_pid(pid, libc::SIGHUP);
                        log(&format!("{}: SIGHUP forwarded to pid {pid}", opts.service));
                    }
                    match child.try_wait() {
                        Ok(Some(st)) => break format!("pid {pid} {}", describe_exit(&st)),
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                        Err(e) => {
                            // Cannot happen for our own child; never spin on it.
                            process::signal_pid(pid, libc::SIGKILL);
                            let _ = child.wait();
                            break format!("pid {pid}: wait failed ({e}), killed");
                        }
                    }
                }
            }
            Err(e) => format!("could not start: {e}"),
        };
        let ran_for = started.elapsed();
        let how = format!("{outcome} after {:.1} s", ran_for.as_secs_f64());
        status.child = None;
        status.last_exit = Some(how.clone());
        match restarts.exited(Instant::now(), ran_for) {
            Decision::RestartAfter(delay) => {
                status.restarts += 1;
                status.state = "restarting".into();
                write_status(&opts.status_file, &status);
                log(&format!(
                    "{}: {how}; restart {} in {} ms",
                    opts.service,
                    status.restarts,
                    delay.as_millis()
                ));
                if !sleep_unless_stopped(delay) {
                    continue;
                }
            }
            Decision::GiveUp { starts, window } => {
                status.state = "gave_up".into();
                write_status(&opts.status_file, &status);
                log(&format!(
                    "{}: {how}; {starts} starts within {} s: start limit hit, giving up",
                    opts.service,
                    window.as_secs()
                ));
                return 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(700),
            stable_after: Duration::from_secs(10),
            max_starts: 4,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn quick_exits_back_off_and_a_stable_run_resets() {
        let t0 = Instant::now();
        let mut r = Restarts::new(policy());
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        r.started(t0);
        assert_eq!(r.exited(t0 + s(1), s(1)), Decision::RestartAfter(ms(100)));
        r.started(t0 + s(2));
        assert_eq!(r.exited(t0 + s(3), s(1)), Decision::RestartAfter(ms(200)));
        r.started(t0 + s(4));
        assert_eq!(r.exited(t0 + s(5), s(1)), Decision::RestartAfter(ms(400)));
        // A long healthy run: back to the minimum (and the early starts left the window).
        r.started(t0 + s(100));
        assert_eq!(
            r.exited(t0 + s(130), s(30)),
            Decision::RestartAfter(ms(100))
        );
    }

    #[test]
    fn backoff_is_capped() {
        let t0 = Instant::now();
        let mut r = Restarts::new(Policy {
            max_starts: 100,
            ..policy()
        });
        let mut last = Duration::ZERO;
        for i in 0..10 {
            r.started(t0 + Duration::from_secs(i));
            if let Decision::RestartAfter(d) = r.exited(t0 + Duration::from_secs(i), Duration::ZERO)
            {
                last = d;
            }
        }
        assert_eq!(last, Duration::from_millis(700));
    }

    #[test]
    fn start_limit_within_the_window_gives_up() {
        let t0 = Instant::now();
        let mut r = Restarts::new(policy());
        let s = Duration::from_secs;
        for i in 0..3 {
            r.started(t0 + s(i));
            assert!(matches!(
                r.exited(t0 + s(i), s(0)),
                Decision::RestartAfter(_)
            ));
        }
        r.started(t0 + s(3));
        assert_eq!(
            r.exited(t0 + s(3), s(0)),
            Decision::GiveUp {
                starts: 4,
                window: s(60)
            }
        );
        // Spread over more than the window, the same number of starts is fine.
        let mut r = Restarts::new(policy());
        for i in 0..8 {
            r.started(t0 + s(30 * i));
            assert!(matches!(
                r.exited(t0 + s(30 * i + 1), s(1)),
                Decision::RestartAfter(_)
            ));
        }
    }

    #[test]
    fn exit_statuses_are_described() {
        let st = ExitStatus::from_raw(9);
        assert_eq!(describe_exit(&st), "killed by signal 9 (SIGKILL)");
        let st = ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_exit(&st), "exited 3");
    }

    #[test]
    fn status_file_round_trips_and_names_the_live_child() {
        // The supervisor process itself is exercised in tests/supervise.rs (needs the binary).
        let dir = std::env::temp_dir().join(format!("hm-supervise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Status {
            service: "x".into(),
            supervisor_pid: 1,
            child: Some(ProcRecord {
                service: "x".into(),
                pid: std::process::id() as i32,
                start_time: process::start_time(std::process::id() as i32).unwrap(),
            }),
            starts: 1,
            restarts: 0,
            last_exit: None,
            state: "running".into(),
        };
        let f = dir.join("status.json");
        write_status(&f, &st);
        assert_eq!(read_status(&f).unwrap(), st);
        assert_eq!(
            current_child(&f).map(|c| c.pid),
            Some(std::process::id() as i32)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
