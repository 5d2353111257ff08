//! `lab status`: every service with its namespace, address, PID and a live health probe.

use crate::dc_services::haproxy_command;
use crate::process;
use crate::state::{DcState, LabState};
use crate::topology;
use serde::Serialize;
use std::net::SocketAddr;

/// One line of `lab status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    pub namespace: String,
    pub address: String,
    pub pid: Option<i32>,
    pub healthy: bool,
    pub detail: String,
}

/// What a health probe found, in words for the DETAIL column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Healthy(String),
    Unhealthy(String),
}

/// A probe's result: `Ok(detail)` healthy, `Err(why)` not (any error that can be shown).
impl<E: std::fmt::Display> From<std::result::Result<String, E>> for Probe {
    fn from(r: std::result::Result<String, E>) -> Probe {
        match r {
            Ok(d) => Probe::Healthy(d),
            Err(e) => Probe::Unhealthy(e.to_string()),
        }
    }
}

fn pid_of(st: &LabState, service: &str) -> Option<(i32, bool)> {
    st.processes
        .iter()
        .rev()
        .find(|p| p.service == service)
        .map(|p| (p.pid, process::alive(p)))
}

pub(crate) fn line(
    st: &LabState,
    service: String,
    namespace: &str,
    address: String,
    probe: impl Into<Probe>,
) -> ServiceStatus {
    let pid = pid_of(st, &service);
    let (healthy, detail) = match (&pid, probe.into()) {
        (Some((_, false)), _) => (false, "process not running".to_string()),
        (None, _) if !service.starts_with("tunnel") => (false, "no recorded process".to_string()),
        (_, Probe::Healthy(d)) => (true, d),
        (_, Probe::Unhealthy(e)) => (false, e),
    };
    ServiceStatus {
        service,
        namespace: namespace.to_string(),
        address,
        pid: pid.map(|p| p.0),
        healthy,
        detail,
    }
}

fn dc_lines(st: &LabState, dc: &DcState, out: &mut Vec<ServiceStatus>) {
    let l = dc.side.label();
    let sql = SocketAddr::from((dc.mariadb_addr(), dc.sql_port));
    let name = if dc.mariadb_addr.is_some() {
        format!("behind the proxy ({sql})")
    } else {
        format!("{} ({sql})", dc.sql_hostname)
    };
    out.push(line(
        st,
        format!("{l}/mariadb"),
        &dc.netns,
        name,
        topology::tcp_probe(&dc.netns, sql).map(|_| "accepts TCP".to_string()),
    ));
    if dc.side == crate::state::Side::Old {
        let names = [
            (crate::sql_proxy::SUPERVISOR, crate::sql_proxy::SERVICE),
            (crate::sql_proxy::SUPERVISOR2, crate::sql_proxy::SERVICE2),
        ];
        for (p, (sup, service)) in st.proxies().into_iter().zip(names) {
            let probe = topology::tcp_probe(&p.netns, p.listen)
                .and_then(|_| crate::sql_proxy::admin_get_at(p, "/routes"))
                .map(|body| {
                    let n = serde_json::from_str::<Vec<serde_json::Value>>(&body)
                        .map(|v| v.len())
                        .unwrap_or(0);
                    format!("accepts TCP, admin API ok, {n} routes")
                });
            let address = format!("{} admin {}", p.listen, p.admin);
            match &p.supervisor_status {
                Some(file) => proxy_lines(st, p, (sup, service), file, address, probe, out),
                // A lab built before the supervisor: the proxy itself is recorded.
                None => out.push(line(st, service.into(), &p.netns, address, probe)),
            }
        }
    }
    out.push(line(
        st,
        format!("{l}/php-fpm"),
        &dc.netns,
        dc.php_fpm_socket.display().to_string(),
        if dc.php_fpm_socket.exists() {
            Probe::Healthy("socket present".into())
        } else {
            Probe::Unhealthy("socket missing".into())
        },
    ));
    let web = SocketAddr::from((dc.web_addr, 80));
    out.push(line(
        st,
        format!("{l}/nginx"),
        &dc.netns,
        web.to_string(),
        match topology::http_get(&dc.netns, web, "health", "/healthz") {
            Ok((200, _)) => Probe::Healthy("GET /healthz 200".into()),
            Ok((code, _)) => Probe::Unhealthy(format!("GET /healthz {code}")),
            Err(e) => Probe::Unhealthy(e.to_string()),
        },
    ));
    let probe = haproxy_command(&dc.haproxy_admin_socket, "show info")
        .map_err(|e| format!("admin socket: {e}"))
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("Uptime:"))
                .map(|u| format!("runtime API ok, {}", u.trim()))
                .ok_or_else(|| "admin socket gave no info".to_string())
        })
        .and_then(|d| {
            topology::tcp_probe(&dc.netns, SocketAddr::from((dc.vip, 80)))
                .map(|_| d)
                .map_err(|e| e.to_string())
        });
    out.push(line(
        st,
        format!("{l}/haproxy"),
        &dc.netns,
        format!("{}:80 admin {}", dc.vip, dc.haproxy_admin_socket.display()),
        probe,
    ));
    let ssh = SocketAddr::from((dc.ssh_addr, dc.ssh_port));
    out.push(line(
        st,
        format!("{l}/sshd"),
        &dc.netns,
        ssh.to_string(),
        topology::tcp_probe(&dc.netns, ssh).map(|_| "accepts TCP".to_string()),
    ));
}

/// The supervisor (recorded by PID) and the proxy it keeps running (its current child, read
/// from the supervisor's status file), with the restarts so far and how the last child ended.
fn proxy_lines(
    st: &LabState,
    p: &crate::state::ProxyState,
    (supervisor, service): (&str, &str),
    file: &std::path::Path,
    address: String,
    probe: impl Into<Probe>,
    out: &mut Vec<ServiceStatus>,
) {
    let sup = crate::supervise::read_status(file);
    let sup_probe = match &sup {
        Ok(s) => Probe::Healthy(format!(
            "{}, {} restarts{}",
            s.state,
            s.restarts,
            s.last_exit
                .as_deref()
                .map(|e| format!(", last: {e}"))
                .unwrap_or_default()
        )),
        Err(e) => Probe::Unhealthy(e.to_string()),
    };
    out.push(line(
        st,
        supervisor.into(),
        &p.netns,
        file.display().to_string(),
        sup_probe,
    ));
    let child = sup.ok().and_then(|s| s.child);
    let alive = child.as_ref().is_some_and(process::alive);
    let (healthy, detail) = match probe.into() {
        _ if !alive => (
            false,
            "not running (the supervisor restarts it)".to_string(),
        ),
        Probe::Healthy(d) => (true, d),
        Probe::Unhealthy(e) => (false, e),
    };
    out.push(ServiceStatus {
        service: service.into(),
        namespace: p.netns.clone(),
        address,
        pid: child.map(|c| c.pid),
        healthy,
        detail,
    });
}

/// Probes every service of the lab.
pub fn status(st: &LabState) -> Vec<ServiceStatus> {
    let mut out = Vec::new();
    let dns = SocketAddr::from((st.dns.addr, st.dns.port));
    out.push(line(
        st,
        "dns/knot".into(),
        &st.dns.netns,
        format!("{dns} zone {}", st.zone),
        topology::tcp_probe(&st.dns.netns, dns)
            .map_err(|e| e.to_string())
            .and_then(|_| crate::dns::zone_loaded(st).map_err(|e| e.to_string()))
            .map(|_| "zone loaded".to_string()),
    ));
    dc_lines(st, &st.old, &mut out);
    dc_lines(st, &st.new, &mut out);
    if st.tunnel.is_some() {
        out.push(crate::tunnel_link::status(st));
    }
    if let Some(a) = &st.artifacts {
        crate::cron_lab::status_lines(st, a, &mut out);
    }
    if let Some(f) = &st.fleet {
        for n in &f.nodes {
            let probe = crate::galera::node_state(n).and_then(|(state, size)| {
                if state == "Synced" {
                    Ok(format!("wsrep Synced, cluster size {size}"))
                } else {
                    Err(crate::error::LabError::Internal(format!("wsrep {state:?}")))
                }
            });
            let addr = format!("{}:{} {}", n.addr, n.port, n.dir.display());
            out.push(line(st, n.service.clone(), &f.netns, addr, probe));
        }
    }
    out
}

/// Renders the status as an aligned table.
pub fn render(st: &LabState, lines: &[ServiceStatus]) -> String {
    let mut s = format!(
        "lab {} (run {}, {} sites, state {})\n",
        st.name,
        st.run_id,
        st.sites.len(),
        LabState::path(&st.state_dir).display()
    );
    // The widest service name sets the first column (`old-dc/sql-proxy-supervisor`).
    let w = lines
        .iter()
        .map(|l| l.service.len())
        .chain([16])
        .max()
        .unwrap_or(16);
    s.push_str(&format!(
        "{:<w$} {:<14} {:<58} {:>7}  {:<7} {}\n",
        "SERVICE", "NAMESPACE", "ADDRESS", "PID", "HEALTH", "DETAIL"
    ));
    for l in lines {
        s.push_str(&format!(
            "{:<w$} {:<14} {:<58} {:>7}  {:<7} {}\n",
            l.service,
            l.namespace,
            l.address,
            l.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if l.healthy { "ok" } else { "FAIL" },
            l.detail
        ));
    }
    s
}
