//! A recording implementation of every outside system: `--dry-run` prints each action it would
//! take on each system and does none; tests use the same recorder as a fake world (it keeps the
//! state the actions would leave: HAProxy servers, DNS records, proxy routes) and can make one
//! named action fail or "crash" the process (panic, so no cleanup code runs, like SIGKILL).

use crate::site_spec::SiteSpec;
use crate::systems::{
    DataMover, Dc, Direction, ProxyControl, Route, SysResult, SystemError, Systems, TunnelError,
    TunnelGate,
};
use drivers::dns::{Dns, DnsConfig, DnsError};
use drivers::lb::{AdminState, LoadBalancer, ServerState};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// What to do when an action with a given key runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trap {
    /// Return an error from the action (nothing changed).
    Fail,
    /// Panic before the action takes effect (simulates SIGKILL: no cleanup runs).
    Crash,
    /// Return an error from the next `n` runs of the action (a system that keeps refusing).
    FailTimes(u32),
    /// Take this long before acting, then act (a long pass).
    Delay(std::time::Duration),
    /// Let the next `n` runs of the action act, then fail every later one (a system that
    /// breaks part-way through a run).
    FailAfter(u32),
}

#[derive(Default)]
struct World {
    servers: HashMap<(String, String, String), ServerState>,
    dns: HashMap<String, (Vec<IpAddr>, u32)>,
    routes: HashMap<String, Route>,
    tunnel_healthy: bool,
    /// Tunnel verdicts asked: (full checks, in-freeze confirmations).
    tunnel_asks: (u32, u32),
    /// The in-freeze confirmation fails while the full check passes (tunnel lost mid-freeze).
    tunnel_fails_in_freeze: bool,
    /// Bytes the next sync passes report, front first; then 0.
    deltas: Vec<u64>,
    verify_diffs: Vec<String>,
    /// The next fingerprints the site answers, in order (then `200:fixed`).
    fingerprints: std::collections::VecDeque<String>,
    /// Key of the action → trap, consumed when it fires.
    traps: HashMap<String, Trap>,
    log: Vec<String>,
}

/// The recorder. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Recorder {
    world: Arc<Mutex<World>>,
    /// Print each action on stdout as it is recorded (the `--dry-run` output).
    print: bool,
    /// The site the printed lines belong to (sites of a wave interleave).
    label: String,
}

impl Recorder {
    /// A world where `spec` is a live site on the old side.
    pub fn for_site(spec: &SiteSpec, print: bool) -> Recorder {
        let r = Recorder {
            world: Arc::new(Mutex::new(World {
                tunnel_healthy: true,
                ..Default::default()
            })),
            print,
            label: spec.site.clone(),
        };
        r.add_site(spec);
        r
    }

    /// Adds another site's initial state to the same world.
    pub fn add_site(&self, spec: &SiteSpec) {
        let mut w = self.world.lock().expect("recorder");
        let server = |lb: &crate::site_spec::LbSpec, addr: SocketAddr, admin| ServerState {
            backend: lb.backend.clone(),
            server: lb.server.clone(),
            addr,
            admin,
            weight: 1,
            op_state: 2,
        };
        w.servers.insert(
            key(Dc::Old, &spec.old_lb.backend, &spec.old_lb.server),
            server(&spec.old_lb, spec.old_web, AdminState::Ready),
        );
        w.servers.insert(
            key(Dc::New, &spec.new_lb.backend, &spec.new_lb.server),
            server(&spec.new_lb, spec.new_web, AdminState::Maint),
        );
        if let Some(d) = &spec.dns {
            w.dns
                .insert(d.target().name.to_string(), (vec![spec.old_vip], 3600));
        }
        for db in &spec.databases {
            w.routes.insert(
                db.clone(),
                Route {
                    side: spec.proxy.old_side.clone(),
                    mode: crate::systems::Mode::Open,
                },
            );
        }
    }

    /// The systems of one site, all backed by this recorder.
    pub fn systems(&self, spec: &SiteSpec) -> Systems {
        let me = Recorder {
            label: spec.site.clone(),
            ..self.clone()
        };
        me.systems_labelled(spec.dns.as_ref())
    }

    fn systems_labelled(&self, dns: Option<&DnsConfig>) -> Systems {
        Systems {
            lb_old: Arc::new(RecLb(self.clone(), Dc::Old)),
            lb_new: Arc::new(RecLb(self.clone(), Dc::New)),
            dns: dns.map(|d| {
                Arc::new(RecDns {
                    rec: self.clone(),
                    how: d.describe(),
                }) as Arc<dyn Dns>
            }),
            proxy: Arc::new(self.clone()),
            tunnel: Some(Arc::new(self.clone())),
            data: Arc::new(self.clone()),
        }
    }

    pub fn set_trap(&self, action: &str, trap: Trap) {
        let mut w = self.world.lock().expect("recorder");
        w.traps.insert(action.to_string(), trap);
    }
    pub fn set_tunnel_healthy(&self, healthy: bool) {
        self.world.lock().expect("recorder").tunnel_healthy = healthy;
    }
    pub fn set_tunnel_fails_in_freeze(&self, fails: bool) {
        self.world.lock().expect("recorder").tunnel_fails_in_freeze = fails;
    }
    /// Tunnel verdicts asked so far: (full checks, in-freeze confirmations).
    pub fn tunnel_asks(&self) -> (u32, u32) {
        self.world.lock().expect("recorder").tunnel_asks
    }
    pub fn set_deltas(&self, deltas: Vec<u64>) {
        self.world.lock().expect("recorder").deltas = deltas;
    }
    pub fn set_fingerprints(&self, answers: &[&str]) {
        self.world.lock().expect("recorder").fingerprints =
            answers.iter().map(|a| a.to_string()).collect();
    }
    pub fn set_verify_diffs(&self, diffs: Vec<String>) {
        self.world.lock().expect("recorder").verify_diffs = diffs;
    }
    pub fn log(&self) -> Vec<String> {
        self.world.lock().expect("recorder").log.clone()
    }
    pub fn route(&self, db: &str) -> Option<Route> {
        self.world.lock().expect("recorder").routes.get(db).cloned()
    }
    pub fn dns_of(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.world
            .lock()
            .expect("recorder")
            .dns
            .get(name)
            .map(|(a, _)| a.clone())
    }
    pub fn server(&self, dc: Dc, backend: &str, server: &str) -> Option<ServerState> {
        self.world
            .lock()
            .expect("recorder")
            .servers
            .get(&key(dc, backend, server))
            .cloned()
    }

    /// Records `line` under `action`; fires a trap set on `action`.
    fn act(&self, action: &str, system: &'static str, dc: Dc, line: String) -> SysResult<()> {
        let trap = {
            let mut w = self.world.lock().expect("recorder");
            let mut trap = w.traps.remove(action);
            if let Some(Trap::FailTimes(0)) = trap {
                trap = None;
            }
            if let Some(Trap::FailTimes(n)) = trap {
                if n > 1 {
                    w.traps.insert(action.to_string(), Trap::FailTimes(n - 1));
                }
                trap = Some(Trap::Fail);
            }
            if let Some(Trap::FailAfter(n)) = trap {
                if n > 0 {
                    w.traps.insert(action.to_string(), Trap::FailAfter(n - 1));
                    trap = None;
                } else {
                    w.traps.insert(action.to_string(), Trap::FailAfter(0));
                    trap = Some(Trap::Fail);
                }
            }
            if matches!(trap, None | Some(Trap::Delay(_))) {
                w.log.push(format!("{action}: {line}"));
            }
            trap
        };
        if let Some(Trap::Delay(d)) = trap {
            std::thread::sleep(d);
        }
        match trap {
            None | Some(Trap::Delay(_)) => {
                if self.print {
                    println!("[dry-run] {} {system:<9} {dc}: {line}", self.label);
                }
                Ok(())
            }
            Some(Trap::Fail) => Err(SystemError::new(
                system,
                dc,
                format!("injected failure: {line}"),
            )),
            Some(Trap::Crash) => panic!("injected crash at {action}"),
            Some(Trap::FailTimes(_) | Trap::FailAfter(_)) => unreachable!("turned into Fail above"),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("recorder"))
    }
}

fn key(dc: Dc, backend: &str, server: &str) -> (String, String, String) {
    (dc.to_string(), backend.to_string(), server.to_string())
}

struct RecLb(Recorder, Dc);

impl RecLb {
    fn get(&self, backend: &str, server: &str) -> drivers::Result<ServerState> {
        self.0
            .server(self.1, backend, server)
            .ok_or_else(|| drivers::DriverError::NotFound(format!("{backend}/{server}")))
    }
    fn act(&self, action: &str, line: String) -> drivers::Result<()> {
        self.0
            .act(action, "haproxy", self.1, line)
            .map_err(|e| drivers::DriverError::Protocol(e.message))
    }
}

impl LoadBalancer for RecLb {
    fn server_state(&self, backend: &str, server: &str) -> drivers::Result<ServerState> {
        self.get(backend, server)
    }
    fn in_flight(&self, backend: &str, server: &str) -> drivers::Result<u64> {
        self.get(backend, server)?;
        self.act(
            "haproxy.drain",
            format!("wait until {backend}/{server} has no request in flight (show stat: scur + qcur = 0)"),
        )?;
        Ok(0)
    }
    fn set_server_addr(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
    ) -> drivers::Result<()> {
        self.get(backend, server)?;
        self.act(
            "haproxy.addr",
            format!(
                "set server {backend}/{server} addr {} port {} (read back)",
                addr.ip(),
                addr.port()
            ),
        )?;
        self.0.with(|w| {
            if let Some(s) = w.servers.get_mut(&key(self.1, backend, server)) {
                s.addr = addr;
            }
        });
        Ok(())
    }
    fn set_server_admin(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> drivers::Result<()> {
        self.get(backend, server)?;
        let what = match state {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint (503 + Retry-After)",
        };
        let action = match state {
            AdminState::Maint => "haproxy.maint",
            _ => "haproxy.ready",
        };
        self.act(
            action,
            format!("set server {backend}/{server} state {what} (read back)"),
        )?;
        self.0.with(|w| {
            if let Some(s) = w.servers.get_mut(&key(self.1, backend, server)) {
                s.admin = state;
            }
        });
        Ok(())
    }
    fn set_server_weight(&self, backend: &str, server: &str, weight: u32) -> drivers::Result<()> {
        self.get(backend, server)?;
        self.act(
            "haproxy.weight",
            format!("set server {backend}/{server} weight {weight}"),
        )?;
        self.0.with(|w| {
            if let Some(s) = w.servers.get_mut(&key(self.1, backend, server)) {
                s.weight = weight;
            }
        });
        Ok(())
    }
}

/// Hosted DNS in the recorded world; `how` is the provider's own account of how it would
/// send the change (printed in a dry run).
struct RecDns {
    rec: Recorder,
    how: String,
}

impl RecDns {
    fn act(&self, action: &str, dc: Dc, line: String) -> drivers::dns::Result<()> {
        self.rec
            .act(action, "dns", dc, line)
            .map_err(|e| DnsError::Refused {
                server: "recorded world".into(),
                what: action.into(),
                answer: e.message,
                retryable: false,
            })
    }
}

impl Dns for RecDns {
    fn provider(&self) -> &'static str {
        "recorder"
    }
    fn current(&self, name: &str) -> drivers::dns::Result<Vec<IpAddr>> {
        self.rec
            .with(|w| w.dns.get(name).map(|(a, _)| a.clone()))
            .ok_or_else(|| DnsError::Invalid(format!("{name}: no address record")))
    }
    fn set_ttl(&self, name: &str, addrs: &[IpAddr], ttl: u32) -> drivers::dns::Result<()> {
        self.act(
            "dns.ttl",
            Dc::Old,
            format!("{}: {name} {addrs:?} ttl -> {ttl}", self.how),
        )?;
        self.rec
            .with(|w| w.dns.insert(name.to_string(), (addrs.to_vec(), ttl)));
        Ok(())
    }
    fn replace_confirmed(
        &self,
        name: &str,
        current: &[IpAddr],
        new: &[IpAddr],
        ttl: u32,
    ) -> drivers::dns::Result<()> {
        self.act(
            "dns.replace",
            Dc::New,
            format!(
                "{}: {name} {current:?} -> {new:?} ttl {ttl}, confirmed on every authoritative server",
                self.how
            ),
        )?;
        self.rec
            .with(|w| w.dns.insert(name.to_string(), (new.to_vec(), ttl)));
        Ok(())
    }
}

impl ProxyControl for Recorder {
    fn route(&self, db: &str) -> SysResult<Route> {
        self.with(|w| w.routes.get(db).cloned()).ok_or_else(|| {
            SystemError::new("sql-proxy", Dc::Old, format!("no route for database {db}"))
        })
    }
    fn pause(&self, db: &str) -> SysResult<()> {
        self.act(
            "proxy.pause",
            "sql-proxy",
            Dc::Old,
            format!("POST /routes/{db}/pause (returns once drained)"),
        )?;
        self.with(|w| {
            if let Some(r) = w.routes.get_mut(db) {
                r.mode = crate::systems::Mode::Paused;
            }
        });
        Ok(())
    }
    fn resume(&self, db: &str, side: Option<&str>) -> SysResult<f64> {
        let body = side
            .map(|s| format!(" {{\"side\":\"{s}\"}}"))
            .unwrap_or_default();
        self.act(
            "proxy.resume",
            "sql-proxy",
            Dc::Old,
            format!("POST /routes/{db}/resume{body}"),
        )?;
        self.with(|w| {
            if let Some(r) = w.routes.get_mut(db) {
                r.mode = crate::systems::Mode::Open;
                if let Some(s) = side {
                    r.side = s.to_string();
                }
            }
        });
        Ok(0.0)
    }
}

impl Recorder {
    fn tunnel_verdict(&self, confirm: bool) -> Result<String, TunnelError> {
        let healthy = self.with(|w| {
            if confirm {
                w.tunnel_asks.1 += 1;
                w.tunnel_healthy && !w.tunnel_fails_in_freeze
            } else {
                w.tunnel_asks.0 += 1;
                w.tunnel_healthy
            }
        });
        if healthy {
            Ok("tunnel healthy".into())
        } else {
            Err(TunnelError::Unhealthy("injected".into()))
        }
    }
}

impl TunnelGate for Recorder {
    fn check(&self) -> Result<String, TunnelError> {
        self.tunnel_verdict(false)
    }
    fn confirm(&self) -> Result<String, TunnelError> {
        self.tunnel_verdict(true)
    }
}

impl DataMover for Recorder {
    fn prepare(&self, spec: &SiteSpec) -> SysResult<()> {
        let homes: Vec<_> = spec
            .homes
            .iter()
            .map(|h| h.new.display().to_string())
            .collect();
        self.act(
            "data.prepare",
            "prepare",
            Dc::New,
            format!(
                "create homes {homes:?}, databases {:?} with users (same hash), compat paths, web config",
                spec.databases
            ),
        )?;
        for line in crate::web_host::describe(spec) {
            self.act("data.prepare_web_host", "web-host", Dc::New, line)?;
        }
        if spec.new_web_host.is_none() {
            let a = &spec.artifacts;
            for line in crate::artifacts::install::describe(&spec.site, a.stage(), a) {
                self.act("data.prepare_artifacts", "web-host", Dc::New, line)?;
            }
        }
        if let Some(t) = &spec.new_lb.tls {
            for line in crate::artifacts::lb_tls::describe(t, &spec.artifacts) {
                self.act("data.prepare_lb_tls", "haproxy", Dc::New, line)?;
            }
        }
        Ok(())
    }
    fn activate_artifacts(
        &self,
        spec: &SiteSpec,
        owner: crate::artifacts::fence::Side,
    ) -> SysResult<()> {
        if spec.artifacts.is_empty() {
            return Ok(());
        }
        // The side losing the site first, as the real move does.
        let (lose, gain) = (owner.other(), owner);
        for (side, enable) in [(lose, false), (gain, true)] {
            if let Some((dc, line)) = artifacts_line(spec, side, enable) {
                self.act("data.activate_artifacts", "web-host", dc, line)?;
            }
        }
        Ok(())
    }
    fn arm_artifacts(&self, spec: &SiteSpec, side: crate::artifacts::fence::Side) -> SysResult<()> {
        if spec.artifacts.is_empty() {
            return Ok(());
        }
        if let Some((dc, line)) = artifacts_line(spec, side, true) {
            self.act("data.arm_artifacts", "web-host", dc, line)?;
        }
        Ok(())
    }
    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64> {
        let (to, line) = match dir {
            Direction::Forward => (Dc::New, "file pass old -> new"),
            Direction::Back => (Dc::Old, "file pass new -> old"),
        };
        self.act(
            "data.sync_files",
            "files",
            to,
            format!("{line} for {} home(s)", spec.homes.len()),
        )?;
        Ok(self.with(|w| {
            if w.deltas.is_empty() {
                0
            } else {
                w.deltas.remove(0)
            }
        }))
    }
    fn copy_dbs(
        &self,
        _spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64> {
        let to = if dir == Direction::Forward {
            Dc::New
        } else {
            Dc::Old
        };
        let how = if delta {
            "changed tables of"
        } else {
            "snapshot copy of"
        };
        self.act(
            "data.copy_dbs",
            "mariadb",
            to,
            format!("{how} {dbs:?} to {to}"),
        )?;
        Ok(0)
    }
    fn verify(&self, _spec: &SiteSpec, dbs: &[String]) -> SysResult<Vec<String>> {
        self.act(
            "data.verify",
            "verify",
            Dc::New,
            format!("manifests and table checksums of {dbs:?}"),
        )?;
        Ok(self.with(|w| w.verify_diffs.clone()))
    }
    fn served_artifacts(&self, spec: &SiteSpec) -> SysResult<Vec<String>> {
        let (host, page) = crate::real_systems::served_host_page(spec)?;
        let a = &spec.artifacts;
        let mut what: Vec<String> = a
            .web_rules
            .iter()
            .map(|r| match r {
                crate::artifacts::WebRule::Redirect(x) => {
                    format!("GET {} -> {} {}", x.from, x.status, x.to)
                }
                crate::artifacts::WebRule::Header(x) => {
                    format!("GET {page}: {}: {}", x.name, x.value)
                }
            })
            .collect();
        if let Some(probe) = a.php.as_ref().and_then(|p| p.probe.as_deref()) {
            what.push(format!("GET {probe}: the PHP settings"));
        }
        self.act(
            "http.served_artifacts",
            "http",
            Dc::New,
            format!(
                "compare with the spec what {} serves for {host}: {}",
                spec.new_web,
                what.join("; ")
            ),
        )?;
        Ok(Vec::new())
    }
    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>> {
        match &spec.fingerprint {
            None => Ok(None),
            Some(f) => {
                self.act(
                    "http.fingerprint",
                    "http",
                    Dc::Old,
                    format!("GET http://{}{} Host: {}", f.addr, f.path, f.host),
                )?;
                let next = self.with(|w| w.fingerprints.pop_front());
                Ok(Some(next.unwrap_or_else(|| "200:fixed".into())))
            }
        }
    }
}

/// What enabling (or disabling) the site's artifacts on one side does, in one line (none for
/// an old side without `artifacts.old_stage_dir`).
fn artifacts_line(
    spec: &SiteSpec,
    side: crate::artifacts::fence::Side,
    enable: bool,
) -> Option<(Dc, String)> {
    use crate::artifacts::{activate, fence::Side};
    let a = &spec.artifacts;
    match side {
        Side::Old => {
            let stage = a.old_stage_dir.as_ref()?;
            let r = activate::reloads(
                a,
                a.old_nginx_reload.as_deref(),
                a.old_php_reload.as_deref(),
            );
            Some((
                Dc::Old,
                activate::describe_with_reloads(&spec.site, stage, enable, &r),
            ))
        }
        Side::New => {
            let r = match &spec.new_web_host {
                Some(w) => activate::reloads(a, Some(&w.nginx_reload), w.php_reload.as_deref()),
                None => Vec::new(),
            };
            Some((
                Dc::New,
                activate::describe_with_reloads(&spec.site, a.stage(), enable, &r),
            ))
        }
    }
}
