//! Two network namespaces joined by a veth pair, with configs and keys for both sides.
//! Names are unique per process and call (PID + counter) so a leftover never collides; the
//! `Drop` guard kills every daemon recorded in the lab's state folder by PID, removes their
//! UAPI links and deletes the namespaces (and with them the veth pair), even on failure.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const A_UNDERLAY: &str = "172.31.250.1";
pub const B_UNDERLAY: &str = "172.31.250.2";
pub const A_TUN: &str = "10.99.0.1";
pub const B_TUN: &str = "10.99.0.2";
/// A routed prefix behind side B, with one address of it on B's loopback.
pub const B_PREFIX: &str = "10.30.0.0/24";
pub const B_PREFIX_HOST: &str = "10.30.0.1";

pub fn require_root() {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        uid, 0,
        "these tests create network namespaces and run wireguard-go: run them as root"
    );
}

pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Alive and not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// Kills `pid` (recorded by `up`) with `sig` and waits up to 10 s until it is dead.
pub fn kill_and_wait(pid: u32, sig: i32) {
    // SAFETY: kill by a PID the test read from the tunnel's own state.
    unsafe { libc::kill(pid as i32, sig) };
    for _ in 0..500 {
        if !pid_alive(pid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("pid {pid} still alive 10 s after signal {sig}");
}

/// Waits up to 10 s until interface `name` is gone from `ns` (the kernel unregisters a TUN
/// device a moment after its process died).
pub fn wait_link_gone(ns: &str, name: &str) {
    for _ in 0..500 {
        let out = sh(&["ip", "-n", ns, "-o", "link", "show"]);
        let present = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split(':').nth(1).map(|n| n.trim()) == Some(name));
        if !present {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("interface {name} still in {ns} after 10 s");
}

pub struct Lab {
    pub interface: String,
    pub ns_a: String,
    pub ns_b: String,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub config_a: PathBuf,
    pub config_b: PathBuf,
}

impl Lab {
    /// Namespaces, veth, underlay addresses, B's routed host address, and one config file per
    /// side with its own key folder (public keys exchanged as files).
    pub fn new(interface: &str) -> Lab {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let lab = Lab {
            interface: interface.to_string(),
            ns_a: format!("tnla-{id}"),
            ns_b: format!("tnlb-{id}"),
            state_dir: dir.path().join("state"),
            config_a: dir.path().join("a/tunnel.toml"),
            config_b: dir.path().join("b/tunnel.toml"),
            dir,
        };
        let (va, vb) = (format!("tv{id}a"), format!("tv{id}b"));
        sh(&["ip", "netns", "add", &lab.ns_a]);
        sh(&["ip", "netns", "add", &lab.ns_b]);
        sh(&[
            "ip", "link", "add", &va, "netns", &lab.ns_a, "type", "veth", "peer", "name", &vb,
            "netns", &lab.ns_b,
        ]);
        for (ns, dev, addr) in [(&lab.ns_a, &va, A_UNDERLAY), (&lab.ns_b, &vb, B_UNDERLAY)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &lab.ns_b,
            "addr",
            "add",
            &format!("{B_PREFIX_HOST}/32"),
            "dev",
            "lo",
        ]);
        for side in ["a", "b"] {
            std::fs::create_dir_all(lab.dir.path().join(side)).unwrap();
            let ns = if side == "a" { &lab.ns_a } else { &lab.ns_b };
            let text = format!(
                r#"interface = "{interface}"
listen_port = 51820
mtu = 1420
keepalive = 5
key_dir = "keys"
backend = "userspace"

[[datacenter]]
name = "old-dc"
endpoint = "{A_UNDERLAY}:51820"
address = "{A_TUN}/24"
prefixes = ["10.20.0.0/24"]
{ns_a}

[[datacenter]]
name = "new-dc"
endpoint = "{B_UNDERLAY}"
address = "{B_TUN}/24"
prefixes = ["{B_PREFIX}"]
{ns_b}
"#,
                ns_a = if side == "a" {
                    format!("netns = \"{ns}\"")
                } else {
                    String::new()
                },
                ns_b = if side == "b" {
                    format!("netns = \"{ns}\"")
                } else {
                    String::new()
                },
            );
            std::fs::write(lab.config(side), text).unwrap();
        }
        lab
    }

    pub fn config(&self, side: &str) -> &Path {
        if side == "a" {
            &self.config_a
        } else {
            &self.config_b
        }
    }

    pub fn side_name(side: &str) -> &'static str {
        if side == "a" {
            "old-dc"
        } else {
            "new-dc"
        }
    }

    pub fn ns(&self, side: &str) -> &str {
        if side == "a" {
            &self.ns_a
        } else {
            &self.ns_b
        }
    }

    pub fn key_dir(&self, side: &str) -> PathBuf {
        self.dir.path().join(side).join("keys")
    }

    /// Runs the `tunnel` binary for one side; returns (exit code, stdout, stderr).
    pub fn tunnel(&self, side: &str, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tunnel"))
            .arg("-c")
            .arg(self.config(side))
            .args(["-s", Lab::side_name(side)])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .output()
            .expect("run tunnel");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Lab::tunnel`] but the command must succeed; returns stdout.
    pub fn tunnel_ok(&self, side: &str, args: &[&str]) -> String {
        let (code, out, err) = self.tunnel(side, args);
        assert_eq!(
            code, 0,
            "tunnel {args:?} on {side}: stdout {out} stderr {err}"
        );
        out
    }

    /// Key generation on both sides, then the exchange of public keys as files.
    pub fn keys(&self) {
        for side in ["a", "b"] {
            self.tunnel_ok(side, &["keygen"]);
        }
        for (from, to) in [("a", "b"), ("b", "a")] {
            let name = Lab::side_name(from);
            std::fs::copy(
                self.key_dir(from).join(format!("{name}.pub")),
                self.key_dir(to).join(format!("{name}.pub")),
            )
            .unwrap();
        }
    }

    /// PIDs of the daemons recorded in the state folder.
    pub fn recorded_pids(&self) -> Vec<u32> {
        let Ok(rd) = std::fs::read_dir(&self.state_dir) else {
            return vec![];
        };
        rd.filter_map(|e| {
            let p = e.ok()?.path();
            if p.extension()? != "json" {
                return None;
            }
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
            v["daemon"]["pid"].as_u64().map(|p| p as u32)
        })
        .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in self.recorded_pids() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "wireguard-go" {
                // SAFETY: plain kill of a PID this lab's `up` recorded and that is wireguard-go.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let alias = tunnel::side::alias(Some(ns), &self.interface);
            let _ = std::fs::remove_file(tunnel::backend::alias_socket(&alias));
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Sends `payload` to an echo server on `addr` inside `server_ns` from a client inside
/// `client_ns` and returns what came back.
pub fn tcp_echo(server_ns: &str, client_ns: &str, addr: IpAddr, payload: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let listener = tunnel::netns::run_in(Some(server_ns), || TcpListener::bind((addr, 0)))
        .expect("enter server netns")
        .expect("bind in server netns");
    let port = listener.local_addr().unwrap().port();
    let len = payload.len();
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no connection within 10 s"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).expect("server read");
        s.write_all(&buf).expect("server write");
    });
    let mut c = tunnel::netns::run_in(Some(client_ns), || {
        TcpStream::connect_timeout(
            &SocketAddr::new(addr, port),
            std::time::Duration::from_secs(5),
        )
    })
    .expect("enter client netns")
    .expect("connect over the tunnel");
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    c.write_all(payload).unwrap();
    let mut back = vec![0u8; len];
    c.read_exact(&mut back).expect("client read");
    server.join().unwrap();
    back
}
