//! DNS update benchmark: our signed RFC 2136 replace (hickory) against `nsupdate` (BIND's
//! client) sending the same updates with the same TSIG key to the same real Knot server.
//!
//! Run: `cargo bench -p drivers --bench dns_update` (env BENCH_NAMES, BENCH_PAIRS to change the
//! size). Each round moves every name between two documentation addresses (RFC 5737, record
//! data only), so both tools do the same work against the same zone state. Rounds alternate
//! ours / nsupdate after one warm-up round of each; prints medians, min–max and the ratio.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drivers::dns::rfc2136::{Rfc2136Updater, TsigKey};
use testkit::Knot;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn addr(round: usize) -> IpAddr {
    if round.is_multiple_of(2) {
        "192.0.2.10".parse().unwrap()
    } else {
        "192.0.2.20".parse().unwrap()
    }
}

fn nsupdate_round(knot: &Knot, names: usize, round: usize) -> Duration {
    let (from, to) = (addr(round), addr(round + 1));
    let mut script = format!("server 127.0.0.1 {}\nzone lab.example.\n", knot.port());
    for i in 0..names {
        script.push_str(&format!(
            "prereq yxrrset s{i}.lab.example. A {from}\nupdate delete s{i}.lab.example. A {from}\n\
             update add s{i}.lab.example. 60 A {to}\nsend\n"
        ));
    }
    let start = Instant::now();
    // -t 30: a generous timeout, so a loaded machine slows the round instead of failing it.
    let mut child = Command::new("nsupdate")
        .args(["-t", "30", "-y"])
        .arg(format!(
            "hmac-sha256:{}:{}",
            knot.key_name(),
            knot.key_secret()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate (Debian bind9-dnsutils) must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "nsupdate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

async fn ours_round(dns: &Rfc2136Updater, names: usize, round: usize) -> Duration {
    let (from, to) = (addr(round), addr(round + 1));
    let start = Instant::now();
    for i in 0..names {
        dns.replace_addresses(&format!("s{i}.lab.example"), &[from], &[to], 60)
            .await
            .unwrap();
    }
    start.elapsed()
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let names = env_usize("BENCH_NAMES", 300);
    let pairs = env_usize("BENCH_PAIRS", 7);
    let records: String = (0..names)
        .map(|i| format!("s{i} 60 A 192.0.2.10\n"))
        .collect();
    let knot = Knot::start("lab.example.", &records, "bench-key").unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], knot.port()).into();
    let key = TsigKey::new(knot.key_name(), "hmac-sha256", knot.key_secret()).unwrap();
    let dns = Rfc2136Updater::new(server, "lab.example", key).unwrap();

    // Warm-up: one round each (rounds alternate the direction, so the zone state always
    // matches the prerequisite of the next round whoever runs it).
    let mut round = 0;
    ours_round(&dns, names, round).await;
    round += 1;
    nsupdate_round(&knot, names, round);
    round += 1;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        a.push(ours_round(&dns, names, round).await.as_secs_f64());
        round += 1;
        b.push(nsupdate_round(&knot, names, round).as_secs_f64());
        round += 1;
    }
    let (am, amin, amax) = stats(&mut a);
    let (bm, bmin, bmax) = stats(&mut b);
    println!(
        "dns_update: {names} signed replace updates per round, {pairs} pairs, Knot on loopback"
    );
    println!(
        "  ours (hickory, TSIG)   median {:.3} s  min {:.3}  max {:.3}  ({:.0} updates/s)",
        am,
        amin,
        amax,
        names as f64 / am
    );
    println!(
        "  nsupdate -y (same key) median {:.3} s  min {:.3}  max {:.3}  ({:.0} updates/s)",
        bm,
        bmin,
        bmax,
        names as f64 / bm
    );
    println!("  ratio nsupdate/ours (speed-up): {:.2}x", bm / am);
}
