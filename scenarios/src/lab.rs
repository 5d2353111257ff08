//! `lab up` / `lab down` and the `LabGuard` that tears a lab down on `Drop`.
//!
//! `up` records every resource in the state file right after creating it (namespace names are
//! derived from the run id, so even a crash between creating and recording one is cleaned up
//! by name). `up` on a healthy lab changes nothing; on a half-built or unhealthy one it tears
//! the old run down and builds a fresh one under a new run id.

use crate::dc_services::{self as svc, DcDirs};
use crate::error::{LabError, Result};
use crate::process::{self, ProcRecord};
use crate::secrets;
use crate::sites::{self, SiteSpec};
use crate::state::*;
pub use crate::teardown::{down, down_state, leftovers, DownReport, LabGuard};
use crate::topology;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What `lab up` builds.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Lab name: the state lives in `<state_root>/<name>`.
    pub name: String,
    pub state_root: PathBuf,
    pub sites: usize,
    pub spec: SiteSpec,
    /// Bring up the WireGuard tunnel between old-dc and new-dc.
    pub tunnel: bool,
    /// Keep filers and MariaDB data on a tmpfs (default) instead of the state root's disk.
    pub tmpfs: bool,
    /// The fleet topology: a 3-node Galera control store and a second proxy instance
    /// (`src/galera.rs`, `src/sql_proxy.rs`).
    pub fleet: bool,
    /// Sites get their artifacts (issue 20): a lab CA and a certificate per site, HTTPS on
    /// both VIPs ([`crate::lab_tls`]); web rules and a PHP pool each on both DCs
    /// (`src/web_artifacts.rs`); a cron job each and a cron daemon per DC
    /// ([`crate::cron_lab`]). Off: the lab is exactly as before (no port 443).
    pub artifacts: bool,
}

impl LabConfig {
    pub fn new(name: &str, state_root: &Path, sites: usize) -> Self {
        LabConfig {
            name: name.to_string(),
            state_root: state_root.to_path_buf(),
            sites,
            spec: SiteSpec::default(),
            tunnel: true,
            tmpfs: true,
            fleet: false,
            artifacts: false,
        }
    }
    pub fn state_dir(&self) -> PathBuf {
        self.state_root.join(&self.name)
    }
}

/// Default state root.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/hostmove-lab";
/// The hosted zone.
pub const ZONE: &str = "lab.test";
const READY: Duration = Duration::from_secs(30);
/// Parallel SQL sessions creating the site databases.
const DB_SESSIONS: usize = 4;

pub(crate) fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

pub(crate) fn dc_skeleton(side: Side, run: &str, dir: &Path, filer: u32) -> DcState {
    let (n, tag) = match side {
        Side::Old => (1u8, "old"),
        Side::New => (2u8, "new"),
    };
    let root = dir.join(side.label());
    let private = root.join("private");
    DcState {
        side,
        netns: format!("hm{run}-{tag}"),
        mount_ns: dir.join("ns").join(format!("{tag}.mnt")),
        internet_addr: Ipv4Addr::new(172, 31, 0, 1 + n),
        vip: Ipv4Addr::new(172, 31, 0, 10 * n),
        lan_cidr: format!("10.{n}.0.0/24"),
        web_addr: Ipv4Addr::new(10, n, 0, 10),
        sql_addr: Ipv4Addr::new(10, n, 0, 20),
        sql_port: 3306,
        // old-dc's MariaDB hides behind the SQL proxy (which answers on .20).
        mariadb_addr: (side == Side::Old).then(|| Ipv4Addr::new(10, n, 0, 21)),
        sql_hostname: format!("sql1.{tag}.{ZONE}"),
        sql_socket: private.join("mysql.sock"),
        db_admin_credentials: private.join("db-admin.cnf"),
        ssh_addr: Ipv4Addr::new(10, n, 0, 22),
        ssh_port: 22,
        known_hosts: dir.join("known_hosts"),
        ssh_client_key: dir.join("private").join("migrator_ed25519"),
        haproxy_admin_socket: private.join("haproxy.sock"),
        haproxy_map: root.join("haproxy-sites.map"),
        nginx_sites_map: root.join("nginx-sites.map"),
        nginx_pid_file: Some(root.join("nginx.pid")),
        php_fpm_socket: root.join("php-fpm.sock"),
        artifacts_dir: None,
        php_pool_dir: None,
        nginx_reload: None,
        php_reload: None,
        filer: FilerState {
            number: filer,
            path: PathBuf::from(format!("/homez.{filer}")),
            backing_dir: dir
                .join("data")
                .join("filers")
                .join(format!("homez.{filer}")),
        },
    }
}

fn skeleton(cfg: &LabConfig, run: &str, old_filer: u32, new_filer: u32) -> LabState {
    let dir = cfg.state_dir();
    LabState {
        version: STATE_VERSION,
        name: cfg.name.clone(),
        run_id: run.to_string(),
        phase: Phase::Starting,
        state_dir: dir.clone(),
        zone: ZONE.to_string(),
        internet_netns: format!("hm{run}-net"),
        old: dc_skeleton(Side::Old, run, &dir, old_filer),
        new: dc_skeleton(Side::New, run, &dir, new_filer),
        dns: DnsState {
            netns: format!("hm{run}-dns"),
            addr: Ipv4Addr::new(172, 31, 0, 53),
            port: 53,
            tsig_key_file: dir.join("private").join("tsig.key"),
            tsig_key_name: "hostmove-lab".into(),
            tsig_algorithm: "hmac-sha256".into(),
            knot_conf: dir.join("dns").join("knot.conf"),
            knot_control_socket: dir.join("dns").join("run").join("knot.sock"),
        },
        client: ClientState {
            netns: format!("hm{run}-cli"),
            addr: Ipv4Addr::new(172, 31, 0, 100),
        },
        tunnel: None,
        site_secrets: dir.join("private").join("site-db-passwords.json"),
        sites: Vec::new(),
        processes: Vec::new(),
        mounts: Vec::new(),
        created_paths: Vec::new(),
        up_secs: 0.0,
        step_secs: Vec::new(),
        inventory_dir: None,
        sql_proxy: None,
        fleet: cfg.fleet.then(|| crate::galera::skeleton(run, &dir)),
        artifacts: cfg.artifacts.then(|| crate::cron_lab::skeleton(&dir)),
        tls: None,
    }
}

/// Brings the lab up (idempotent: a healthy lab with the same size is left as it is).
pub fn up(cfg: &LabConfig) -> Result<LabState> {
    require_root()?;
    let dir = cfg.state_dir();
    if LabState::path(&dir).exists() {
        let old = LabState::load(&dir)?;
        let healthy = crate::status::status(&old).iter().all(|s| s.healthy);
        let same = old.sites.len() == cfg.sites
            && old.fleet.is_some() == cfg.fleet
            && old.tls.is_some() == cfg.artifacts
            && old.old.artifacts_dir.is_some() == cfg.artifacts
            && old.artifacts.is_some() == cfg.artifacts;
        if old.phase == Phase::Up && same && healthy {
            return Ok(old);
        }
        down_state(&old, false);
    }
    let started = Instant::now();
    std::fs::create_dir_all(&dir).map_err(LabError::io("creating state dir", &dir))?;
    secrets::private_dir(&dir.join("private"))?;
    let run = secrets::run_id()?;
    let old_filer = topology::claim_filer_number(100)?;
    let new_filer = match topology::claim_filer_number(old_filer + 1) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_dir(format!("/homez.{old_filer}"));
            return Err(e);
        }
    };
    let mut st = skeleton(cfg, &run, old_filer, new_filer);
    st.created_paths.push(st.old.filer.path.clone());
    st.created_paths.push(st.new.filer.path.clone());
    st.save()?;
    match build(&mut st, cfg) {
        Ok(()) => {
            st.phase = Phase::Up;
            st.up_secs = started.elapsed().as_secs_f64();
            st.save()?;
            Ok(st)
        }
        Err(e) => {
            // Keep the files (logs) for inspection; `lab down` removes them.
            down_state(&st, true);
            Err(e)
        }
    }
}

/// Times steps of `up` into a shared list.
struct Steps(Mutex<Vec<(String, f64)>>);

impl Steps {
    fn time<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.0
            .lock()
            .expect("steps lock")
            .push((name.to_string(), t.elapsed().as_secs_f64()));
        out
    }
}

fn build(st: &mut LabState, cfg: &LabConfig) -> Result<()> {
    let steps = Steps(Mutex::new(Vec::new()));
    let r = build_steps(st, cfg, &steps);
    st.step_secs = steps.0.into_inner().expect("steps lock");
    r
}

fn build_steps(st: &mut LabState, cfg: &LabConfig, steps: &Steps) -> Result<()> {
    steps.time("network", || topology::create_network(st))?;
    let etc = topology::write_resolv_confs(st)?;
    st.created_paths.extend(etc);
    st.save()?;

    // Bulk data (filers, MariaDB datadirs) on a tmpfs: fast to write, and `down` frees it by
    // unmounting instead of deleting tens of thousands of files from disk.
    if cfg.tmpfs {
        let data = st.state_dir.join("data");
        std::fs::create_dir_all(&data).map_err(LabError::io("creating data dir", &data))?;
        crate::process::run(std::process::Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            "mode=0755",
            &format!("hostmove-lab-{}", st.run_id),
            &data.to_string_lossy(),
        ]))?;
        st.mounts.push(data);
        st.save()?;
    }

    // Filers and the DCs' private mount namespaces.
    let ns_dir = st.state_dir.join("ns");
    std::fs::create_dir_all(&ns_dir).map_err(LabError::io("creating ns dir", &ns_dir))?;
    topology::make_private_mount(&ns_dir)?;
    st.mounts.push(ns_dir.clone());
    st.save()?;
    for side in [Side::Old, Side::New] {
        let dc = st.dc(side).clone();
        let dirs = DcDirs::new(&st.state_dir, &dc);
        for d in [&dirs.root, &dirs.logs, &dc.filer.backing_dir] {
            std::fs::create_dir_all(d).map_err(LabError::io("creating dc dir", d))?;
        }
        secrets::private_dir(&dirs.private)?;
        let m = topology::create_dc_mount_ns(&dc)?;
        st.mounts.extend(m);
        st.save()?;
    }

    // new-dc's web server has its own (empty) directory at the old filer's path, where the
    // migrator makes compat paths: a small tmpfs inside new-dc's mount namespace, so they never
    // touch the host's `/homez.<old>` and vanish with the namespace.
    topology::mount_compat_root(&st.new, &st.old.filer.path, &st.run_id)?;

    // Secrets: TSIG key, SSH keys, per-database passwords.
    secrets::tsig_key(&st.dns.tsig_key_name, &st.dns.tsig_key_file)?;
    let client_pub = secrets::ssh_key(&st.old.ssh_client_key, "hostmove-migrator")?;
    let authorized = st.state_dir.join("private").join("authorized_keys");
    secrets::write_secret(&authorized, format!("{client_pub}\n").as_bytes())?;
    let mut known = String::new();
    let mut host_keys = BTreeMap::new();
    for dc in [&st.old, &st.new] {
        let key = DcDirs::new(&st.state_dir, dc)
            .private
            .join("ssh_host_ed25519_key");
        let pubkey = secrets::ssh_key(&key, &format!("{}-host", dc.side.label()))?;
        let tag = if dc.side == Side::Old { "old" } else { "new" };
        let mut parts = pubkey.split_whitespace();
        let algo_key = format!(
            "{} {}",
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        );
        known.push_str(&format!(
            "{},ssh.{tag}.{} {algo_key}\n",
            dc.ssh_addr, st.zone
        ));
        host_keys.insert(dc.side.label(), key);
    }
    let kh = st.old.known_hosts.clone();
    std::fs::write(&kh, known).map_err(LabError::io("writing known_hosts", &kh))?;

    let mut plan = sites::plan_sites(cfg.sites, &st.zone, st.old.filer.number);
    sites::mark_shared_owners(&mut plan);
    if st.fleet.is_some() {
        // Customers' code split between the two endpoints: every second site names the second.
        let host = format!("{}.{}", crate::sql_proxy::SQL2_HOST_PREFIX, st.zone);
        for s in plan.iter_mut().skip(1).step_by(2) {
            s.sql_host = Some(host.clone());
        }
    }
    let mut passwords = BTreeMap::new();
    for s in &plan {
        if !passwords.contains_key(&s.db_user) {
            passwords.insert(s.db_user.clone(), secrets::password(20)?);
        }
    }
    let pw_json = serde_json::to_vec_pretty(&passwords).map_err(|source| LabError::State {
        path: st.site_secrets.clone(),
        source,
    })?;
    secrets::write_secret(&st.site_secrets, &pw_json)?;
    st.sites = plan;
    st.save()?;

    // In parallel: databases, file trees, DNS.
    let records: Mutex<Vec<ProcRecord>> = Mutex::new(Vec::new());
    let snapshot = st.clone();
    let result: Result<()> = std::thread::scope(|scope| {
        let db = scope.spawn(|| -> Result<()> {
            // Both DCs' servers install and start in parallel.
            std::thread::scope(|sc| {
                let handles: Vec<_> = [Side::Old, Side::New]
                    .into_iter()
                    .enumerate()
                    .map(|(i, side)| {
                        let (snapshot, records) = (&snapshot, &records);
                        sc.spawn(move || {
                            let dc = snapshot.dc(side);
                            let dirs = DcDirs::new(&snapshot.state_dir, dc);
                            steps.time(&format!("{}: mariadb install+start", side.label()), || {
                                svc::mariadb_install(&dirs)?;
                                let rec = svc::mariadb_start(dc, &dirs, i as u32 + 1)?;
                                records.lock().expect("records lock").push(rec);
                                wait_tcp(
                                    dc,
                                    "mariadb",
                                    SocketAddr::from((dc.mariadb_addr(), dc.sql_port)),
                                )?;
                                wait_socket(dc, &dc.sql_socket)?;
                                svc::mariadb_admin(dc)
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(LabError::Internal("mariadb setup thread panicked".into()))
                        })
                    })
                    .collect::<Result<Vec<()>>>()
            })?;
            // Several client sessions in parallel: DDL is bound by fsync latency, not CPU.
            let chunk = snapshot.sites.len().div_ceil(DB_SESSIONS).max(1);
            steps.time("old-dc: create site databases", || {
                std::thread::scope(|sc| {
                    let handles: Vec<_> = snapshot
                        .sites
                        .chunks(chunk)
                        .map(|part| {
                            let passwords = &passwords;
                            let old = &snapshot.old;
                            sc.spawn(move || {
                                let sql = sites::databases_sql(
                                    part,
                                    &|u| passwords.get(u).cloned().unwrap_or_default(),
                                    cfg.spec.rows,
                                );
                                svc::mariadb_exec(old, &sql).map(|_| ())
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(LabError::Internal("db session thread panicked".into()))
                            })
                        })
                        .collect::<Result<Vec<()>>>()
                })
            })?;
            if !cfg.spec.db_mib.is_empty() {
                steps.time("old-dc: grow the big databases", || {
                    std::thread::scope(|sc| {
                        let handles: Vec<_> = sites::bulk_sql(&snapshot.sites, &cfg.spec.db_mib)
                            .into_iter()
                            .map(|sql| {
                                let old = &snapshot.old;
                                sc.spawn(move || svc::mariadb_exec(old, &sql).map(|_| ()))
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    Err(LabError::Internal("bulk thread panicked".into()))
                                })
                            })
                            .collect::<Result<Vec<()>>>()
                    })
                })?;
            }
            Ok(())
        });
        let dns = scope.spawn(|| -> Result<()> {
            let t = Instant::now();
            let lines = sites::zone_records(&snapshot.sites, snapshot.old.vip);
            let rec = crate::dns::knot_start(&snapshot, &lines)?;
            records.lock().expect("records lock").push(rec);
            let r = process::wait_until(READY, || crate::dns::zone_loaded(&snapshot)).map_err(
                |detail| LabError::NotReady {
                    service: "knot".into(),
                    namespace: snapshot.dns.netns.clone(),
                    address: format!("{}:{}", snapshot.dns.addr, snapshot.dns.port),
                    secs: READY.as_secs(),
                    detail: detail.to_string(),
                },
            );
            steps.0.lock().expect("steps lock").push((
                "dns: knot up, zone loaded".into(),
                t.elapsed().as_secs_f64(),
            ));
            r
        });
        let files = steps.time("old-dc: site file trees", || {
            write_trees(&snapshot, &cfg.spec, &passwords)
        });
        let db = db
            .join()
            .map_err(|_| LabError::Internal("db thread panicked".into()))?;
        let dns = dns
            .join()
            .map_err(|_| LabError::Internal("dns thread panicked".into()))?;
        db.and(dns).and(files)
    });
    st.processes
        .extend(records.into_inner().expect("records lock"));
    st.save()?;
    result?;

    if st.fleet.is_some() {
        steps.time("ctl: galera (3 nodes synced)", || crate::galera::start(st))?;
    }
    // old-dc's DB endpoint: our SQL proxy, with the users' hashes synced from MariaDB.
    steps.time("old-dc: sql-proxy (hash sync, start)", || {
        crate::sql_proxy::start(st)
    })?;

    if cfg.artifacts {
        st.tls = Some(steps.time("tls: lab CA and site certificates", || {
            crate::lab_tls::make(st)
        })?);
        st.save()?;
    }
    let t_web = Instant::now();
    if cfg.artifacts {
        crate::web_artifacts::setup(st)?;
        st.save()?;
    }
    // Web tier of both DCs.
    for side in [Side::Old, Side::New] {
        let dc = st.dc(side).clone();
        let dirs = DcDirs::new(&st.state_dir, &dc);
        let served: Vec<SiteState> = if side == Side::Old {
            st.sites.clone()
        } else {
            Vec::new()
        };
        std::fs::write(&dc.nginx_sites_map, sites::nginx_map(&served))
            .map_err(LabError::io("writing nginx map", &dc.nginx_sites_map))?;
        // Both HAProxies know every site; the new DC's servers start in maintenance.
        let (map, backends) = sites::haproxy_sites(&st.sites, dc.web_addr);
        std::fs::write(&dc.haproxy_map, map)
            .map_err(LabError::io("writing haproxy map", &dc.haproxy_map))?;
        let host_key = &host_keys[dc.side.label()];
        st.processes.push(svc::php_fpm_start(&dc, &dirs)?);
        st.save()?;
        st.processes
            .push(svc::nginx_start(&dc, &dirs, &st.sites.clone())?);
        st.save()?;
        let crt_list = st.tls.as_ref().map(|t| match side {
            Side::Old => t.old_crt_list.clone(),
            Side::New => t.new_crt_list.clone(),
        });
        st.processes.push(svc::haproxy_start(
            &dc,
            &dirs,
            &backends,
            crt_list.as_deref(),
        )?);
        st.save()?;
        st.processes
            .push(svc::sshd_start(&dc, &dirs, host_key, &authorized)?);
        st.save()?;
    }
    for side in [Side::Old, Side::New] {
        let dc = st.dc(side);
        wait_socket(dc, &dc.php_fpm_socket)?;
        wait_socket(dc, &dc.haproxy_admin_socket)?;
        if side == Side::New {
            // Every site's new-dc server waits in maintenance until its cutover.
            svc::haproxy_maint_all(dc, &st.sites)?;
        }
        wait_tcp(dc, "nginx", SocketAddr::from((dc.web_addr, 80)))?;
        wait_tcp(dc, "haproxy", SocketAddr::from((dc.vip, 80)))?;
        if let Some(t) = &st.tls {
            wait_tcp(dc, "haproxy (TLS)", SocketAddr::from((dc.vip, t.port)))?;
        }
        wait_tcp(dc, "sshd", SocketAddr::from((dc.ssh_addr, dc.ssh_port)))?;
    }
    steps.0.lock().expect("steps lock").push((
        "web tier, haproxy, sshd up".into(),
        t_web.elapsed().as_secs_f64(),
    ));
    st.inventory_dir = Some(crate::inventory::write(st, &cfg.spec)?);
    if let Some(a) = st.artifacts.clone() {
        steps.time("artifacts: cron jobs, crond per dc", || {
            crate::cron_lab::install(st, &a)?;
            crate::cron_lab::start(st, &a)
        })?;
    }
    if cfg.tunnel {
        steps.time("tunnel up and healthy", || crate::tunnel_link::up(st))?;
        st.save()?;
    }
    Ok(())
}

fn write_trees(st: &LabState, spec: &SiteSpec, pw: &BTreeMap<String, String>) -> Result<()> {
    let workers = 2;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || -> Result<()> {
                    for (i, s) in st.sites.iter().enumerate().skip(w).step_by(workers) {
                        let pass = pw.get(&s.db_user).map(String::as_str).unwrap_or("");
                        sites::write_site_tree(
                            &st.old.filer.backing_dir,
                            s,
                            i + 1,
                            spec,
                            s.sql_host.as_deref().unwrap_or(&st.old.sql_hostname),
                            pass,
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(LabError::Internal("tree writer panicked".into())))
            })
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    })
}

fn wait_tcp(dc: &DcState, service: &str, addr: SocketAddr) -> Result<()> {
    process::wait_until(READY, || topology::tcp_probe(&dc.netns, addr)).map_err(|last| {
        LabError::NotReady {
            service: format!("{}/{service}", dc.side.label()),
            namespace: dc.netns.clone(),
            address: addr.to_string(),
            secs: READY.as_secs(),
            detail: last.to_string(),
        }
    })
}

fn wait_socket(dc: &DcState, path: &Path) -> Result<()> {
    // Connected to, not only present: the file exists from the server's bind(), a moment
    // before its listen(), and a client in between is refused (ECONNREFUSED: seen on a
    // loaded machine, MariaDB's socket right after its TCP port answered).
    process::wait_until(READY, || {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Ok(()),
            Err(e) if path.exists() => Err(format!("socket present but not accepting: {e}")),
            Err(_) => Err("socket not created yet".to_string()),
        }
    })
    .map_err(|detail| LabError::NotReady {
        service: format!("{}/{}", dc.side.label(), path.display()),
        namespace: dc.netns.clone(),
        address: path.display().to_string(),
        secs: READY.as_secs(),
        detail,
    })
}
