//! The `sql-proxy` binary as an operator runs it: users synced from the old server, a config
//! file, the route store created once with `routes init`, the daemon started (and killed) by
//! its PID, the admin API over HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use drivers::http::{HttpClient, Method};

pub const BIN: &str = env!("CARGO_BIN_EXE_sql-proxy");
pub const TOKEN: &str = "daemon-test-token-0123456789";

/// A running daemon, killed (SIGKILL, by its own PID) on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// SIGTERM, as systemd stops it; it must exit cleanly.
    pub fn term(mut self) {
        // SAFETY: a signal to the PID this guard started and has not reaped.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) }, 0);
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// `sql-proxy run --config cfg` with one extra environment variable, stderr to `log`, once it
/// listens on `port` (the log in the failure message otherwise).
pub fn start(cfg: &Path, log: &Path, env: (&str, &str), port: u16) -> Daemon {
    start_listening_on(cfg, log, env, &[port])
}

/// As [`start`], once it listens on every one of `ports`. The daemon binds its client ports
/// first and its admin API after them, so a test that calls the admin API right after the
/// client port answered could be refused: wait for both.
pub fn start_listening_on(cfg: &Path, log: &Path, env: (&str, &str), ports: &[u16]) -> Daemon {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut daemon = Daemon(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(cfg)
            .env(env.0, env.1)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let up = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!(
                "proxy exited ({status}): {}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        ports
            .iter()
            .all(|&port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
    });
    assert!(
        up,
        "proxy did not listen: {}",
        std::fs::read_to_string(log).unwrap()
    );
    daemon
}

/// Runs the binary with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `sql-proxy sync-users` from `db` into `dir/users.json`, which must succeed.
pub fn sync_users(db: &testkit::MariaDb, dir: &Path) -> PathBuf {
    sync_users_with(db, dir, testkit::mariadb::ADMIN_PASSWORD).0
}

/// As [`sync_users`], the admin password file holding `password_text` exactly; also returns
/// the command's output (what it listed).
pub fn sync_users_with(
    db: &testkit::MariaDb,
    dir: &Path,
    password_text: &str,
) -> (PathBuf, Output) {
    let pw_file = dir.join("admin.pw");
    std::fs::write(&pw_file, password_text).unwrap();
    let users = dir.join("users.json");
    let out = Command::new(BIN)
        .args(["sync-users", "--user", "admin", "--from"])
        .arg(format!("127.0.0.1:{}", db.port()))
        .arg("--password-file")
        .arg(&pw_file)
        .arg("--out")
        .arg(&users)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (users, out)
}

/// The daemon's files in one directory: config, users, token, log; the store beside users.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    pub admin: SocketAddr,
}

impl Setup {
    /// A config with sides `old` (and `new`), the admin API, `extra` TOML appended (limits,
    /// databases...). The store is not created: see [`Setup::init`].
    pub fn new(old: &testkit::MariaDb, new: Option<&testkit::MariaDb>, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let users = sync_users(old, dir.path());
        let port = testkit::free_port().unwrap();
        let admin_port = testkit::free_port().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let p = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.path().join("token"), p).unwrap();
        }
        let new_line = new
            .map(|n| format!("new = \"127.0.0.1:{}\"\n", n.port()))
            .unwrap_or_default();
        let cfg = dir.path().join("proxy.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nusers_file = \"{}\"\ndefault_side = \"old\"\n\
                 {extra}\n[backends]\nold = \"127.0.0.1:{}\"\n{new_line}\
                 [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_file = \"{}\"\n",
                users.display(),
                old.port(),
                dir.path().join("token").display()
            ),
        )
        .unwrap();
        Setup {
            log: dir.path().join("proxy.log"),
            cfg,
            port,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("routes.sqlite")
    }

    /// `sql-proxy routes init --config CFG --from-config`, which must succeed.
    pub fn init(&self) {
        let out = run(&[
            "routes",
            "init",
            "--from-config",
            "--config",
            self.cfg.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start(&self) -> Daemon {
        start_listening_on(
            &self.cfg,
            &self.log,
            ("RUST_LOG", "info"),
            &[self.port, self.admin.port()],
        )
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// One admin API call; (status, JSON body).
    pub fn admin(&self, method: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
        admin_call(self.admin, method, path, body)
    }
}

/// One request to the admin API with the test token (`drivers::http`), `body` as JSON on a
/// POST or PUT; the status and the JSON answer (a body that is not JSON as a JSON string).
pub fn admin_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = HttpClient::for_addr(addr, Duration::from_secs(30))
        .unwrap()
        .request(method, path)
        .header("Authorization", &format!("Bearer {TOKEN}"));
    if method != Method::Get {
        req = req.body("application/json", body);
    }
    let a = req.send().unwrap();
    let v = serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::String(a.text()));
    (a.status, v)
}
