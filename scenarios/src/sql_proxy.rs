//! Our `sql-proxy` daemon on old-dc's DB endpoint (`sql1.old.<zone>`, 10.1.0.20:3306), the way
//! an operator installs it in front of a shared SQL server: MariaDB moves to another address
//! (10.1.0.21, named by no site's configuration), the users' `mysql_native_password` hashes and
//! grants are synced into the proxy's user store (`sql-proxy sync-users`, 0600, hashes only),
//! every database gets a route to side `old`, and side `new` is new-dc's MariaDB, reached through
//! the tunnel. Its routes are committed to a route store (`routes.sqlite` beside the user store,
//! created once with `sql-proxy routes init`), so a restarted proxy serves every database from
//! the side it was last switched to. The admin API listens on old-dc's LAN (10.1.0.23:9090) behind a bearer token in a
//! 0600 file. The daemon runs in old-dc's namespaces under a supervisor (`scenarios supervise`,
//! recorded by PID like every other daemon) that restarts it when it dies, as systemd does in
//! production; the supervisor's status file names the current child's PID. A restart only
//! runs `sql-proxy run` again: the route store persists, `routes init` never runs twice.

use crate::dc_services::DcDirs;
use crate::error::{LabError, Result};
use crate::process::{in_ns, run, spawn_daemon, wait_until};
use crate::secrets::{password, write_secret};
use crate::state::{FleetState, LabState, ProxyState};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::topology::in_netns;
use drivers::http::{HttpClient, Method};
use drivers::proxy::Route;

/// Service name of the proxy (the supervisor's child) in `lab status` and the supervisor's log.
pub const SERVICE: &str = "old-dc/sql-proxy";
/// Service name of its supervisor in `state.processes` and `lab status`.
pub const SUPERVISOR: &str = "old-dc/sql-proxy-supervisor";
/// The admin API's address on old-dc's LAN.
pub const ADMIN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 23);
pub const ADMIN_PORT: u16 = 9090;
/// A fleet lab's second instance: old-dc's second DB endpoint (`sql2.old.<zone>`) and its
/// admin API.
pub const SQL2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 24);
pub const SQL2_HOST_PREFIX: &str = "sql2.old";
pub const ADMIN2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 25);
pub const SERVICE2: &str = "old-dc/sql-proxy-2";
pub const SUPERVISOR2: &str = "old-dc/sql-proxy-2-supervisor";

/// Reads `key=value` from a `[client]` option file.
pub(crate) fn cnf_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
}

/// The proxy's config file.
pub fn config_toml(p: &ProxyState, databases: &[&str]) -> String {
    let mut s = format!(
        "# hostmove lab: sql-proxy on old-dc's DB endpoint\nlisten = [\"{}\"]\nusers_file = \"{}\"\ndefault_side = \"old\"\n\n[backends]\n",
        p.listen,
        p.users_file.display()
    );
    for (side, addr) in &p.backends {
        let _ = writeln!(s, "{side} = \"{addr}\"");
    }
    for db in databases {
        let _ = write!(s, "\n[databases.{db}]\nside = \"old\"\nmode = \"open\"\n");
    }
    let _ = write!(
        s,
        "\n[admin]\nlisten = \"{}\"\ntoken_file = \"{}\"\n",
        p.admin,
        p.token_file.display()
    );
    s
}

/// One proxy instance of old-dc: where it answers and what it is called.
struct Instance {
    service: &'static str,
    supervisor: &'static str,
    /// Its directory under old-dc's (config, supervisor status).
    dir: &'static str,
    listen: Ipv4Addr,
    admin: Ipv4Addr,
    token: &'static str,
}

const FIRST: Instance = Instance {
    service: SERVICE,
    supervisor: SUPERVISOR,
    dir: "sql-proxy",
    listen: Ipv4Addr::new(10, 1, 0, 20),
    admin: ADMIN_ADDR,
    token: "sql-proxy.token",
};

const SECOND: Instance = Instance {
    service: SERVICE2,
    supervisor: SUPERVISOR2,
    dir: "sql-proxy-2",
    listen: SQL2_ADDR,
    admin: ADMIN2_ADDR,
    token: "sql-proxy-2.token",
};

/// Syncs the hashes, writes the config and token, starts the daemon and waits for both the
/// client listener and the admin API. Records the process and the proxy in the state. In a
/// fleet lab, a second instance on old-dc's second endpoint joins the same fleet.
pub fn start(st: &mut LabState) -> Result<()> {
    let bin = crate::tools::find("sql-proxy")?;
    let old = st.old.clone();
    let dirs = DcDirs::new(&st.state_dir, &old);
    let backend_old = SocketAddr::from((old.mariadb_addr(), old.sql_port));
    let users_file = dirs.private.join("sql-proxy-users.json");
    // The admin password for the hash sync, in its own 0600 file (never on a command line).
    let cnf_path = &old.db_admin_credentials;
    let cnf = std::fs::read_to_string(cnf_path).map_err(LabError::io("reading", cnf_path))?;
    let (Some(user), Some(pw)) = (cnf_value(&cnf, "user"), cnf_value(&cnf, "password")) else {
        return Err(LabError::Config {
            path: cnf_path.clone(),
            message: "needs user= and password=".into(),
        });
    };
    let pw_file = dirs.private.join("sql-proxy-sync.pw");
    write_secret(&pw_file, pw.as_bytes())?;
    let mut sync = in_ns(None, &old.netns, &bin.to_string_lossy());
    sync.args([
        "sync-users",
        "--from",
        &backend_old.to_string(),
        "--user",
        &user,
        "--password-file",
        &pw_file.to_string_lossy(),
        "--out",
        &users_file.to_string_lossy(),
    ]);
    run(&mut sync)?;
    let p = start_instance(st, &FIRST, 0)?;
    st.sql_proxy = Some(p);
    st.save()?;
    if st.fleet.is_some() {
        let p2 = start_instance(st, &SECOND, 1)?;
        if let Some(f) = st.fleet.as_mut() {
            f.proxy2 = Some(p2);
        }
        st.save()?;
    }
    Ok(())
}

/// Starts instance `inst` under its supervisor (recorded) and waits until it answers; in a
/// fleet lab its store connection goes to Galera node `store_node`.
fn start_instance(st: &mut LabState, inst: &Instance, store_node: usize) -> Result<ProxyState> {
    let bin = crate::tools::find("sql-proxy")?;
    let old = st.old.clone();
    let dirs = DcDirs::new(&st.state_dir, &old);
    let root = dirs.root.join(inst.dir);
    std::fs::create_dir_all(&root).map_err(LabError::io("creating sql-proxy dir", &root))?;
    let backend_old = SocketAddr::from((old.mariadb_addr(), old.sql_port));
    let backend_new = SocketAddr::from((st.new.mariadb_addr(), st.new.sql_port));
    let p = ProxyState {
        netns: old.netns.clone(),
        listen: SocketAddr::from((inst.listen, old.sql_port)),
        admin: SocketAddr::from((inst.admin, ADMIN_PORT)),
        token_file: dirs.private.join(inst.token),
        config: root.join("proxy.toml"),
        users_file: dirs.private.join("sql-proxy-users.json"),
        backends: BTreeMap::from([("old".into(), backend_old), ("new".into(), backend_new)]),
        supervisor_status: Some(root.join("supervisor.json")),
    };
    write_secret(&p.token_file, password(32)?.as_bytes())?;
    let mut dbs: Vec<&str> = st.sites.iter().map(|s| s.database.as_str()).collect();
    dbs.sort();
    dbs.dedup();
    let mut text = config_toml(&p, &dbs);
    if let Some(f) = &st.fleet {
        text.push_str(&fleet_toml(f, inst.dir, store_node));
    }
    // The durable route store, created once (the daemon refuses to start without it; later
    // starts restore every route from it): beside the user store, or a fleet's table in the
    // shared store, created from the first instance only.
    let init = match &st.fleet {
        Some(_) => store_node == 0,
        None => !p.users_file.with_file_name("routes.sqlite").exists(),
    };
    if init {
        std::fs::write(&p.config, &text)
            .map_err(LabError::io("writing sql-proxy config", &p.config))?;
        let mut init = in_ns(None, &old.netns, &bin.to_string_lossy());
        init.args([
            "routes",
            "init",
            "--from-config",
            "--config",
            &p.config.to_string_lossy(),
        ]);
        run(&mut init)?;
    }
    std::fs::write(&p.config, text).map_err(LabError::io("writing sql-proxy config", &p.config))?;
    // The command line sql-proxy.service runs, with the lab's binary and config.
    let unit = crate::units::sql_proxy_run(&bin, &p.config)?;
    let mut child = in_ns(Some(&old.mount_ns), &old.netns, &bin.to_string_lossy());
    child.args(&unit.argv[1..]);
    let status_file = root.join("supervisor.json");
    let _ = std::fs::remove_file(&status_file);
    let sup_log = dirs.logs.join(format!("{}-supervisor.log", inst.dir));
    let mut cmd = std::process::Command::new(scenarios_exe()?);
    cmd.args(["supervise", "--service", inst.service, "--status-file"])
        .arg(&status_file)
        .arg("--child-log")
        .arg(dirs.logs.join(format!("{}.log", inst.dir)))
        .arg("--")
        .arg(child.get_program())
        .args(child.get_args())
        // Inherited by every start of the child: the unit's environment, then the lab's.
        .envs(unit.env.iter().map(|(k, v)| (k, v)))
        .env("SQL_PROXY_WORKER_THREADS", "2")
        .env("RUST_LOG", "warn");
    let rec = spawn_daemon(inst.supervisor, cmd, &sup_log)?;
    let supervisor = rec.clone();
    st.processes.push(rec);
    st.save()?;
    wait_until(Duration::from_secs(30), || {
        if !crate::process::alive(&supervisor) {
            return Err(LabError::Exited {
                service: inst.supervisor.into(),
                pid: supervisor.pid,
                log: sup_log.clone(),
            });
        }
        crate::supervise::current_child(&status_file).ok_or(LabError::NotStarted {
            supervisor: inst.supervisor,
            service: inst.service,
        })?;
        crate::topology::tcp_probe(&p.netns, p.listen)?;
        admin_get_at(&p, "/routes").map(|_| ())
    })
    .map_err(|last| LabError::NotReady {
        service: inst.service.into(),
        namespace: p.netns.clone(),
        address: format!("{} (admin {})", p.listen, p.admin),
        secs: 30,
        detail: last.to_string(),
    })?;
    Ok(p)
}

/// `[fleet]` of an instance: one fleet for old-dc's SQL server. The first instance names
/// every store node from node 1 (it fails over when its node dies: `store-node-loss` kills
/// that one); the second only node `store_node`, so cutting that node off fences it
/// (`proxy-partition`: both instances share old-dc's namespace, a route cannot single one out).
pub fn fleet_toml(f: &FleetState, instance: &str, store_node: usize) -> String {
    let store = match store_node {
        0 => f.store_url_all(0),
        i => f.store_url(i),
    };
    format!(
        "\n[fleet]\nname = \"old-dc-sql\"\ninstance = \"{instance}\"\nstore = \"{store}\"\n\
         password_file = \"{}\"\nlease_ms = {}\npoll_ms = 200\n",
        f.password_file.display(),
        f.proxy_lease_ms
    )
}

/// The `scenarios` binary that runs `scenarios supervise` (and `crond`): this one when it is `scenarios`,
/// else found (or built) like the other workspace binaries (tests, `lab-bench`).
pub(crate) fn scenarios_exe() -> Result<std::path::PathBuf> {
    match std::env::current_exe() {
        Ok(e) if e.file_name().is_some_and(|n| n == "scenarios") => Ok(e),
        _ => crate::tools::find_or_build("scenarios"),
    }
}

/// The proxy's current process (the supervisor's child), when it runs.
pub fn current_child(st: &LabState) -> Option<crate::process::ProcRecord> {
    let f = st.sql_proxy.as_ref()?.supervisor_status.as_ref()?;
    crate::supervise::current_child(f)
}

/// The client of the proxy's admin API (token read now) and the namespace to call it from.
fn admin_client(p: &ProxyState) -> Result<(String, HttpClient)> {
    let token = std::fs::read_to_string(&p.token_file)
        .map_err(LabError::io("reading the sql-proxy token", &p.token_file))?;
    let client = HttpClient::for_addr(p.admin, Duration::from_secs(10))?
        .with_secret_header("Authorization", &format!("Bearer {}", token.trim()));
    Ok((p.netns.clone(), client))
}

/// `GET path` on the (first) proxy's admin API from inside old-dc's namespace; the body of a
/// 2xx answer, an error naming the status and the proxy's text otherwise.
pub fn admin_get(st: &LabState, path: &str) -> Result<String> {
    admin_get_at(
        st.sql_proxy
            .as_ref()
            .ok_or(LabError::Missing("sql-proxy"))?,
        path,
    )
}

/// [`admin_get`] on instance `p`.
pub fn admin_get_at(p: &ProxyState, path: &str) -> Result<String> {
    let (ns, client) = admin_client(p)?;
    let path = path.to_string();
    // The connection is made on the thread inside the namespace.
    in_netns(&ns, move || {
        Ok(client.request(Method::Get, &path).send_ok()?.text())
    })?
}

/// Every database's side as the proxy routes it now.
pub fn routes(st: &LabState) -> Result<BTreeMap<String, String>> {
    routes_at(
        st.sql_proxy
            .as_ref()
            .ok_or(LabError::Missing("sql-proxy"))?,
    )
}

/// [`routes`] of instance `p`.
pub fn routes_at(p: &ProxyState) -> Result<BTreeMap<String, String>> {
    let (ns, client) = admin_client(p)?;
    let routes: Vec<Route> = in_netns(&ns, move || {
        client.json(Method::Get, "/routes", None::<&()>)
    })??;
    Ok(routes.into_iter().map(|r| (r.database, r.side)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_routes_every_database_to_old() {
        let p = ProxyState {
            netns: "ns".into(),
            listen: "10.1.0.20:3306".parse().unwrap(),
            admin: "10.1.0.23:9090".parse().unwrap(),
            token_file: "/s/token".into(),
            config: "/s/proxy.toml".into(),
            users_file: "/s/users.json".into(),
            backends: BTreeMap::from([
                ("old".into(), "10.1.0.21:3306".parse().unwrap()),
                ("new".into(), "10.2.0.20:3306".parse().unwrap()),
            ]),
            supervisor_status: None,
        };
        let text = config_toml(&p, &["db_a", "db_b"]);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["listen"][0].as_str(), Some("10.1.0.20:3306"));
        assert_eq!(v["backends"]["new"].as_str(), Some("10.2.0.20:3306"));
        assert_eq!(v["databases"]["db_b"]["side"].as_str(), Some("old"));
        assert_eq!(v["admin"]["token_file"].as_str(), Some("/s/token"));
        assert_eq!(
            cnf_value("[client]\nuser = u\npassword=p=q\n", "password").as_deref(),
            Some("p=q")
        );
    }
}
