//! `tunnel-bench`: TCP throughput and round-trip latency through the tunnel versus the bare
//! veth it rides on, measured alternately (veth, tunnel, veth, tunnel, ...) after a warm-up.
//!
//! It builds its own lab: two network namespaces joined by a veth pair (unique names), keys
//! and a config in a private temporary folder, `tunnel::up` on both sides (userspace
//! wireguard-go here); everything is torn down by a guard, even on failure. Traffic stays on
//! namespace-internal addresses. Run as root:
//! `cargo run --release -p tunnel --bin tunnel-bench -- --mib 64 --pairs 5 --rtt-iters 2000`

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tunnel::{Config, Side};

#[derive(Parser)]
struct Args {
    /// MiB sent per throughput run.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Measured pairs (veth, tunnel) after one warm-up pair.
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// 1-byte request/response round trips per latency run.
    #[arg(long, default_value_t = 2000)]
    rtt_iters: usize,
    /// Key rotations measured per method (`tunnel rotate` vs by-hand keygen + up + up).
    #[arg(long, default_value_t = 5)]
    rotations: usize,
}

struct Lab {
    ns: [String; 2],
    dir: PathBuf,
    cfg: Option<Config>,
}

impl Lab {
    fn side(&self, i: usize) -> Side {
        Side::new(["old-dc", "new-dc"][i])
            .in_netns(&self.ns[i])
            .with_state_dir(self.dir.join("state"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(cfg) = &self.cfg {
            for i in 0..2 {
                if let Err(e) = tunnel::down(cfg, &self.side(i)) {
                    eprintln!("cleanup: down {}: {e}", self.ns[i]);
                }
            }
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn build_lab() -> Result<Lab> {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("tunnel-bench-{id}"));
    let mut lab = Lab {
        ns: [format!("tnbench-a-{id}"), format!("tnbench-b-{id}")],
        dir: dir.clone(),
        cfg: None,
    };
    std::fs::create_dir_all(&dir)?;
    let [a, b] = lab.ns.clone();
    ip(&["netns", "add", &a])?;
    ip(&["netns", "add", &b])?;
    let (va, vb) = (format!("tbv{id}a"), format!("tbv{id}b"));
    ip(&[
        "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
    ])?;
    for (ns, dev, addr) in [(&a, &va, "172.31.251.1/24"), (&b, &vb, "172.31.251.2/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    let text = r#"
listen_port = 51820
key_dir = "keys"
backend = "auto"
[[datacenter]]
name = "old-dc"
endpoint = "172.31.251.1"
address = "10.98.0.1/24"
[[datacenter]]
name = "new-dc"
endpoint = "172.31.251.2"
address = "10.98.0.2/24"
"#;
    let cfg_path = dir.join("tunnel.toml");
    std::fs::write(&cfg_path, text)?;
    let cfg = Config::load(&cfg_path)?;
    for name in ["old-dc", "new-dc"] {
        tunnel::keys::generate(&cfg.key_dir, name, false)?;
    }
    lab.cfg = Some(cfg.clone());
    for i in 0..2 {
        tunnel::up(&cfg, &lab.side(i))?;
    }
    let h = tunnel::health(&cfg, &lab.side(0));
    if !h.healthy {
        bail!("tunnel unhealthy before benchmarking: {}", h.reason);
    }
    Ok(lab)
}

/// A listener inside `ns` on `addr`, port 0.
fn listen(ns: &str, addr: IpAddr) -> Result<TcpListener> {
    Ok(tunnel::netns::run_in(Some(ns), || {
        TcpListener::bind((addr, 0))
    })??)
}

fn connect(ns: &str, to: SocketAddr) -> Result<TcpStream> {
    let s = tunnel::netns::run_in(Some(ns), || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })??;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(s)
}

/// Bytes per second for `bytes` sent from client_ns to a sink at `server` in server_ns.
fn throughput(server_ns: &str, client_ns: &str, server: IpAddr, bytes: usize) -> Result<f64> {
    let l = listen(server_ns, server)?;
    let to = l.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        while s.read(&mut buf)? > 0 {}
        s.write_all(b"k")
    });
    let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i % 253) as u8).collect();
    let start = Instant::now();
    let mut c = connect(client_ns, to)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        c.write_all(&chunk[..n])?;
        left -= n;
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    c.read_exact(&mut ack)
        .context("waiting for the sink's ack")?;
    let secs = start.elapsed().as_secs_f64();
    sink.join().expect("sink thread")?;
    Ok(bytes as f64 / secs)
}

/// Median round trip (µs) of 1-byte request/response on one TCP connection.
fn rtt(server_ns: &str, client_ns: &str, server: IpAddr, iters: usize) -> Result<f64> {
    let l = listen(server_ns, server)?;
    let to = l.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b)? {
                0 => return Ok(()),
                _ => s.write_all(&b)?,
            }
        }
    });
    let mut c = connect(client_ns, to)?;
    c.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(iters);
    let mut b = [7u8; 1];
    for _ in 0..iters {
        let t = Instant::now();
        c.write_all(&b)?;
        c.read_exact(&mut b)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(c);
    echo.join().expect("echo thread")?;
    Ok(median(&mut samples))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summary(name: &str, unit: &str, v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    let m = median(&mut s);
    println!(
        "  {name:<7} median {m:>9.2} {unit}  (min {:.2}, max {:.2}, n={})",
        s[0],
        s[s.len() - 1],
        s.len()
    );
    m
}

fn main() -> Result<()> {
    let args = Args::parse();
    let lab = build_lab()?;
    let (a, b) = (lab.ns[0].clone(), lab.ns[1].clone());
    let veth: IpAddr = "172.31.251.2".parse()?;
    let tun: IpAddr = "10.98.0.2".parse()?;
    let bytes = args.mib * 1024 * 1024;
    let backend = tunnel::status(lab.cfg.as_ref().unwrap(), &lab.side(0))?
        .backend
        .map(|b| b.to_string())
        .unwrap_or_default();
    println!(
        "tunnel-bench: {} MiB per throughput run, {} RTT round trips per latency run, {} pairs after 1 warm-up, backend {backend}",
        args.mib, args.rtt_iters, args.pairs
    );
    let (mut tp, mut lat) = ((vec![], vec![]), (vec![], vec![]));
    for round in 0..=args.pairs {
        // Alternate which one goes first so neither always meets a warmer machine.
        let order: [(bool, IpAddr); 2] = if round % 2 == 0 {
            [(false, veth), (true, tun)]
        } else {
            [(true, tun), (false, veth)]
        };
        for (is_tun, addr) in order {
            let t = throughput(&b, &a, addr, bytes)? / 1e6;
            let r = rtt(&b, &a, addr, args.rtt_iters)?;
            if round > 0 {
                if is_tun {
                    tp.1.push(t);
                    lat.1.push(r);
                } else {
                    tp.0.push(t);
                    lat.0.push(r);
                }
            }
        }
    }
    println!("throughput (MB/s, higher is better):");
    let tv = summary("veth", "MB/s", &tp.0);
    let tt = summary("tunnel", "MB/s", &tp.1);
    println!("  ratio tunnel/veth {:.3}", tt / tv);
    println!("round trip, 1-byte TCP request/response (µs, lower is better):");
    let lv = summary("veth", "µs", &lat.0);
    let lt = summary("tunnel", "µs", &lat.1);
    println!("  ratio tunnel/veth {:.2}", lt / lv);

    // Key rotation: ours vs what an operator would do by hand (new key, `up` here, copy the
    // public key, `up` on the peer), alternated; the interruption is the longest gap of a
    // 1 kHz UDP stream over the tunnel in both cases.
    let cfg = lab.cfg.clone().expect("config");
    let (s0, s1) = (lab.side(0), lab.side(1));
    let (mut ours, mut manual) = (vec![], vec![]);
    for round in 0..=args.rotations {
        for first in [round % 2 == 0, round % 2 == 1] {
            let gap = if first {
                tunnel::rotate(&cfg, &s0, &[(&cfg, &s1)])?.interruption_ms
            } else {
                manual_rotation(&cfg, &s0, &s1, &a, &b)?
            };
            if round > 0 {
                if first {
                    ours.push(gap)
                } else {
                    manual.push(gap)
                }
            }
        }
    }
    println!("key rotation interruption (longest gap of a 1 kHz UDP stream, ms, lower is better):");
    let ro = summary("rotate", "ms", &ours);
    let rm = summary("by hand", "ms", &manual);
    println!("  ratio rotate/by-hand {:.3}", ro / rm);
    drop(lab);
    Ok(())
}

/// New private key for side 0 written in place, `up` on side 0, then `up` on side 1 (the
/// shared key folder stands for copying the public key).
fn manual_rotation(cfg: &Config, s0: &Side, s1: &Side, a: &str, b: &str) -> Result<f64> {
    let probe = tunnel::outage::OutageProbe::start(
        Some(a),
        Some(b),
        "10.98.0.2".parse()?,
        Duration::from_millis(1),
    )?;
    if !probe.wait_echo_sent_after(Instant::now(), Duration::from_secs(3)) {
        bail!("tunnel not answering before the manual rotation");
    }
    tunnel::keys::generate(&cfg.key_dir, "old-dc", true)?;
    tunnel::up(cfg, s0)?;
    tunnel::up(cfg, s1)?;
    let done = Instant::now();
    if !probe.wait_echo_sent_after(done, Duration::from_secs(10)) {
        bail!("tunnel not answering 10 s after the manual rotation");
    }
    std::thread::sleep(Duration::from_millis(30));
    Ok(probe.finish().longest_gap_ms)
}
