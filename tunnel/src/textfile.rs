//! `tunnel check --textfile FILE`: the check's verdict in Prometheus text format, written
//! atomically for node_exporter's textfile collector (`--collector.textfile.directory`), so
//! the tunnel's health is scraped like every other host metric and alerted on
//! (`packaging/prometheus/hostmove-alerts.yml`, `TunnelUnhealthy`). A `tunnel-check.timer`
//! runs it every minute (`packaging/units/`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::health::CheckReport;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The report as Prometheus text; `now` is the check's Unix time.
pub fn render(rep: &CheckReport, side: &str, now: u64) -> String {
    let side = esc(side);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    gauge(
        "tunnel_healthy",
        "1 when every peer answered over the tunnel at the last check",
        vec![(
            format!("side=\"{side}\""),
            f64::from(u8::from(rep.health.healthy)),
        )],
    );
    gauge(
        "tunnel_check_timestamp_seconds",
        "Unix time of the last check",
        vec![(format!("side=\"{side}\""), now as f64)],
    );
    let peer = |p: &str| format!("side=\"{side}\",peer=\"{}\"", esc(p));
    gauge(
        "tunnel_peer_loss_ratio",
        "Share of pings lost over the tunnel at the last check (0 to 1)",
        rep.health
            .probes
            .iter()
            .map(|p| (peer(&p.peer), p.loss_percent / 100.0))
            .collect(),
    );
    gauge(
        "tunnel_peer_rtt_seconds",
        "Average ping round trip over the tunnel at the last check",
        rep.health
            .probes
            .iter()
            .filter_map(|p| p.rtt_avg_ms.map(|ms| (peer(&p.peer), ms / 1e3)))
            .collect(),
    );
    gauge(
        "tunnel_peer_echo_bytes_per_second",
        "Echo payload carried each way per second in the bounded throughput probe",
        rep.throughput
            .iter()
            .filter_map(|t| t.echo_bytes_per_sec.map(|b| (peer(&t.peer), b)))
            .collect(),
    );
    gauge(
        "tunnel_peer_handshake_age_seconds",
        "Seconds since the last WireGuard handshake with the peer",
        rep.peers
            .iter()
            .filter_map(|p| {
                let age = p.last_handshake_age_secs?;
                Some((peer(p.name.as_deref().unwrap_or(&p.public_key)), age as f64))
            })
            .collect(),
    );
    out
}

/// Writes `text` to `path` atomically (a temporary file beside it, then rename), mode 0644.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, PeerStatus, Probe, Throughput};

    #[test]
    fn a_report_renders_every_figure_with_help_and_type() {
        let rep = CheckReport {
            health: Health {
                healthy: false,
                reason: "new-dc does not answer".into(),
                probes: vec![Probe {
                    peer: "new-dc".into(),
                    address: "10.99.0.2".parse().unwrap(),
                    sent: 4,
                    received: 3,
                    loss_percent: 25.0,
                    rtt_min_ms: Some(0.2),
                    rtt_avg_ms: Some(0.5),
                    rtt_max_ms: Some(0.9),
                    error: None,
                }],
            },
            throughput: vec![Throughput {
                peer: "new-dc".into(),
                echo_bytes_per_sec: Some(1e6),
                echoes: 10,
                received: 10,
            }],
            peers: vec![PeerStatus {
                name: Some("new-dc".into()),
                public_key: "k".into(),
                endpoint: None,
                last_handshake_age_secs: Some(7),
                rx_bytes: 0,
                tx_bytes: 0,
                allowed_ips: vec![],
            }],
        };
        let t = render(&rep, "old-dc", 1_800_000_000);
        for line in [
            "tunnel_healthy{side=\"old-dc\"} 0",
            "tunnel_check_timestamp_seconds{side=\"old-dc\"} 1800000000",
            "tunnel_peer_loss_ratio{side=\"old-dc\",peer=\"new-dc\"} 0.25",
            "tunnel_peer_rtt_seconds{side=\"old-dc\",peer=\"new-dc\"} 0.0005",
            "tunnel_peer_echo_bytes_per_second{side=\"old-dc\",peer=\"new-dc\"} 1000000",
            "tunnel_peer_handshake_age_seconds{side=\"old-dc\",peer=\"new-dc\"} 7",
        ] {
            assert!(t.contains(&format!("{line}\n")), "{line} in {t}");
        }
        assert_eq!(t.matches("# HELP").count(), t.matches("# TYPE").count());
    }
}
