//! The lab's JSON state file: everything the migrator (and `lab down`) needs to find the lab —
//! namespaces, addresses, sockets, key and credential paths, the site list, recorded PIDs,
//! mounts and paths we created. Saved after every step of `lab up`, so a crashed `up` can still
//! be torn down from what it recorded.

use crate::error::{LabError, Result};
use crate::process::ProcRecord;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Schema version of `state.json`.
pub const STATE_VERSION: u32 = 1;

/// How far `lab up` got.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `up` is running or crashed mid-way: only `down` is valid.
    Starting,
    /// Every service started and answered its probe.
    Up,
}

/// Which datacenter.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Old,
    New,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Old => "old-dc",
            Side::New => "new-dc",
        }
    }
}

/// The whole lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub name: String,
    /// Random per run; part of every namespace name, so leftovers never collide.
    pub run_id: String,
    pub phase: Phase,
    pub state_dir: PathBuf,
    /// The hosted DNS zone (sites, DB hostnames, VIP names).
    pub zone: String,
    /// Namespace holding the "internet" bridge.
    pub internet_netns: String,
    pub old: DcState,
    pub new: DcState,
    pub dns: DnsState,
    pub client: ClientState,
    pub tunnel: Option<TunnelState>,
    /// Per-site database passwords (file 0600), used by the traffic generator.
    pub site_secrets: PathBuf,
    pub sites: Vec<SiteState>,
    /// Daemons we started, stopped by PID on `down`.
    pub processes: Vec<ProcRecord>,
    /// Mount points we created, unmounted in reverse order on `down`.
    pub mounts: Vec<PathBuf>,
    /// Files and directories outside the state dir we created (`/homez.N`, `/etc/netns/NS`).
    pub created_paths: Vec<PathBuf>,
    /// Seconds `lab up` took.
    pub up_secs: f64,
    /// Seconds per step of `lab up` (steps in parallel overlap), for BENCHMARKS.md.
    #[serde(default)]
    pub step_secs: Vec<(String, f64)>,
    /// The SQL proxy answering old-dc's DB endpoint (absent in labs built before it existed).
    #[serde(default)]
    pub sql_proxy: Option<ProxyState>,
    /// Planner-compatible inventory of the lab (`datacenters.jsonl`, … `sites.jsonl`).
    #[serde(default)]
    pub inventory_dir: Option<PathBuf>,
    /// The fleet topology (`lab up --fleet`): a Galera control store and a second proxy.
    #[serde(default)]
    pub fleet: Option<FleetState>,
    /// `lab up --artifacts` (issue 20): each site's cron job and the DCs' cron daemons.
    #[serde(default)]
    pub artifacts: Option<ArtifactsState>,
    /// HTTPS of the sites (`lab up --artifacts`, [`crate::lab_tls`]); absent: no port 443.
    #[serde(default)]
    pub tls: Option<LabTls>,
}

/// `lab up --artifacts`: every site has one cron job (`job`, `schedule`, run as `user`:
/// `php <home>/<script>`, which writes a row and a file named by its slot), staged for the
/// migrator under `stage_dir` on new-dc (written at prepare over SSH) and active from `lab up`
/// under `old_stage_dir` on old-dc. Each DC runs `scenarios crond` over its stage
/// (`old-dc/crond`, `new-dc/crond`); its commands get the migration's journal and spec file
/// from `env_file` (written when a migration is set up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactsState {
    pub stage_dir: PathBuf,
    pub old_stage_dir: PathBuf,
    pub env_file: PathBuf,
    pub job: String,
    pub schedule: String,
    pub user: String,
    /// Relative to the site's home: `www/cron.php`.
    pub script: String,
    /// Relative to the site's home: where each run writes its file (`www/cron`).
    pub out_dir: String,
}

/// The lab's certificates and where each HAProxy reads them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabTls {
    /// The lab CA (PEM) every site certificate chains to.
    pub ca: PathBuf,
    /// Its private key (0600, in a 0700 directory).
    pub ca_key: PathBuf,
    /// What both VIPs serve for a name they have no certificate for.
    pub default_cert: PathBuf,
    pub sites: Vec<SiteCert>,
    /// The port HAProxy terminates TLS on at each VIP.
    pub port: u16,
    /// old-dc's crt-list: the default and every site's certificate.
    pub old_crt_list: PathBuf,
    /// new-dc's crt-list: the default certificate only, until a site's prepare.
    pub new_crt_list: PathBuf,
    /// Where new-dc's certificate bundles live (the migrator writes a site's there).
    pub new_cert_dir: PathBuf,
}

/// One site's certificate (PEM) and key (0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteCert {
    pub login: String,
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `lab up --fleet` (issue 17): a 3-node Galera cluster as the shared control store (the
/// migrator workers' journal and the proxies' route table) in its own namespace on the lab's
/// internet bridge, and a second `sql-proxy` instance on old-dc's second DB endpoint
/// (`sql2.old.<zone>`), both proxies in one fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetState {
    /// The store's network namespace (`hm<run>-ctl`).
    pub netns: String,
    pub nodes: Vec<GaleraNode>,
    /// The store account (proxies and workers) and its password file (0600).
    pub user: String,
    pub password_file: PathBuf,
    /// Database of the proxies' shared route table.
    pub routes_db: String,
    /// Database of the migrator's shared journal.
    pub journal_db: String,
    /// Lease of each proxy instance in the store (fenced after half of it unconfirmed).
    pub proxy_lease_ms: u64,
    /// The second proxy (`sql2.old.<zone>`); its store connection goes to node 2, the first
    /// proxy's to node 1 (a proxy names one node: cutting one off cuts that proxy only).
    pub proxy2: Option<ProxyState>,
}

/// One Galera node (`mariadbd` with `wsrep`) of the fleet's control store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GaleraNode {
    /// Service name in `processes` (`ctl/galera-node1`).
    pub service: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Its directory (data, socket, error log).
    pub dir: PathBuf,
}

impl GaleraNode {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl FleetState {
    /// Every node's `addr:port`, comma-separated, starting with node `first`.
    fn hosts_from(&self, first: usize) -> String {
        let n = self.nodes.len().max(1);
        let hosts: Vec<String> = (0..self.nodes.len())
            .map(|i| &self.nodes[(first + i) % n])
            .map(|g| format!("{}:{}", g.addr, g.port))
            .collect();
        hosts.join(",")
    }

    /// The migrator's `--journal` URL naming every node, starting with node `first` (workers
    /// start on different nodes; each moves to the next when its node goes away).
    pub fn journal_url(&self, first: usize) -> String {
        format!(
            "mysql://{}@{}/{}?password_file={}",
            self.user,
            self.hosts_from(first),
            self.journal_db,
            self.password_file.display()
        )
    }

    /// The `[fleet] store` URL of a proxy naming every node, starting with node `first` (it
    /// moves to the next when its node goes away, as the journal does).
    pub fn store_url_all(&self, first: usize) -> String {
        format!(
            "mysql://{}@{}/{}",
            self.user,
            self.hosts_from(first),
            self.routes_db
        )
    }

    /// The `[fleet] store` URL of a proxy connected to node `i` (never a password in it).
    pub fn store_url(&self, i: usize) -> String {
        let g = &self.nodes[i % self.nodes.len().max(1)];
        format!(
            "mysql://{}@{}:{}/{}",
            self.user, g.addr, g.port, self.routes_db
        )
    }
}

/// One datacenter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DcState {
    pub side: Side,
    pub netns: String,
    /// Persistent mount namespace (nsfs bind mount): its own `/homez.*`. Enter with
    /// `nsenter --mount=<this> ip netns exec <netns> …`.
    pub mount_ns: PathBuf,
    /// Address on the "internet" link.
    pub internet_addr: Ipv4Addr,
    /// HAProxy VIP (on the internet link), port 80.
    pub vip: Ipv4Addr,
    /// Private LAN of the DC (reachable from the other DC through the tunnel).
    pub lan_cidr: String,
    pub web_addr: Ipv4Addr,
    /// The DB endpoint customers' code reaches (`sql_hostname`). In old-dc the SQL proxy
    /// answers here and MariaDB sits behind it at `mariadb_addr`.
    pub sql_addr: Ipv4Addr,
    pub sql_port: u16,
    /// Where this DC's MariaDB really listens, when it is not `sql_addr` (old-dc: behind the
    /// SQL proxy, on an address no site's configuration names).
    #[serde(default)]
    pub mariadb_addr: Option<Ipv4Addr>,
    /// The DB hostname customers' code uses for this DC's shared SQL server.
    pub sql_hostname: String,
    /// MariaDB unix socket (reachable from the host without entering the namespace).
    pub sql_socket: PathBuf,
    /// `[client]` option file with the admin user and password (0600).
    pub db_admin_credentials: PathBuf,
    pub ssh_addr: Ipv4Addr,
    pub ssh_port: u16,
    /// known_hosts with this DC's sshd host key (by address and by name).
    pub known_hosts: PathBuf,
    /// Private key the migrator logs in with (root), 0600.
    pub ssh_client_key: PathBuf,
    /// HAProxy runtime API socket (level admin), in a 0700 directory.
    pub haproxy_admin_socket: PathBuf,
    /// `Host` → backend map; one backend `be_<login>` with one server `web` per site.
    pub haproxy_map: PathBuf,
    /// nginx `map $host $site_root` include file; reload nginx (SIGHUP) after editing.
    pub nginx_sites_map: PathBuf,
    /// nginx master's pid file (`kill -HUP "$(cat …)"` reloads it).
    #[serde(default)]
    pub nginx_pid_file: Option<PathBuf>,
    pub php_fpm_socket: PathBuf,
    pub filer: FilerState,
    /// `lab up --artifacts`: the DC's site artifacts, `DIR/<login>/active/` being what its
    /// nginx (`nginx-rules.conf`, per site's server block) and php-fpm (`php-pool.conf`)
    /// include (old-dc: written at `up`, the sites' owner; new-dc: staged by `prepare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_dir: Option<PathBuf>,
    /// `lab up --artifacts`: the sites' own php-fpm pool sockets (`DIR/<login>.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php_pool_dir: Option<PathBuf>,
    /// `lab up --artifacts`: shell commands reloading the DC's nginx / php-fpm and waiting
    /// until the new configuration serves (failing when it does not load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx_reload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php_reload: Option<String>,
}

impl DcState {
    /// The address MariaDB listens on (`mariadb_addr`, else the DB endpoint itself).
    pub fn mariadb_addr(&self) -> Ipv4Addr {
        self.mariadb_addr.unwrap_or(self.sql_addr)
    }
}

/// Our `sql-proxy` daemon on old-dc's DB endpoint: every database routed to a side (`old` =
/// old-dc's MariaDB, `new` = new-dc's through the tunnel), admin API behind a bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyState {
    pub netns: String,
    /// Where clients connect (`sql1.old.<zone>`:3306).
    pub listen: std::net::SocketAddr,
    /// Admin API (HTTP, `Authorization: Bearer <token>`), on old-dc's LAN.
    pub admin: std::net::SocketAddr,
    /// The bearer token (0600).
    pub token_file: PathBuf,
    /// `proxy.toml`.
    pub config: PathBuf,
    /// User store from `sql-proxy sync-users` (hashes only, 0600).
    pub users_file: PathBuf,
    /// Side name → backend address.
    pub backends: std::collections::BTreeMap<String, std::net::SocketAddr>,
    /// The status file of the supervisor keeping the proxy running (`scenarios supervise`):
    /// the current child's PID and start time, restarts, last exit. The supervisor itself is
    /// recorded in `processes` as `old-dc/sql-proxy-supervisor`.
    #[serde(default)]
    pub supervisor_status: Option<PathBuf>,
}

/// A filer: the absolute path customers' code uses and where its bytes live on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilerState {
    pub number: u32,
    /// `/homez.<number>` as seen inside the DC's mount namespace.
    pub path: PathBuf,
    /// The same tree from the host's mount namespace.
    pub backing_dir: PathBuf,
}

/// The DNS server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsState {
    pub netns: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// TSIG key in Knot's YAML format (0600), from `keymgr -t`.
    pub tsig_key_file: PathBuf,
    pub tsig_key_name: String,
    pub tsig_algorithm: String,
    pub knot_conf: PathBuf,
    pub knot_control_socket: PathBuf,
}

/// The traffic client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientState {
    pub netns: String,
    pub addr: Ipv4Addr,
}

/// The WireGuard link between old-dc and new-dc.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TunnelState {
    pub old_addr: Ipv4Addr,
    pub new_addr: Ipv4Addr,
    pub config_dir: PathBuf,
    pub detail: String,
}

/// One synthetic customer site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteState {
    pub login: String,
    pub domain: String,
    pub filer: u32,
    /// `/homez.<filer>/<login>`.
    pub home: PathBuf,
    pub database: String,
    pub db_user: String,
    /// Another site using the same database, if shared.
    pub shares_db_with: Option<String>,
    /// Which side's web server serves the site now (`scenarios check` refreshes it from the
    /// old VIP's HAProxy after a cutover).
    pub serving: Side,
    /// Which side's MariaDB holds the site's database now (`scenarios check` refreshes it from
    /// the SQL proxy's routes); `None` = same as `serving`.
    #[serde(default)]
    pub db_serving: Option<Side>,
    /// The DB hostname the site's `config.php` names (`None`: its DC's `sql_hostname`). In a
    /// fleet lab half the sites use old-dc's second endpoint, served by the second proxy.
    #[serde(default)]
    pub sql_host: Option<String>,
    /// `lab up --artifacts`: the site's PHP pool settings (its own pool on each DC) and web
    /// rules, as the migrator's spec holds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php: Option<migrator::artifacts::PhpSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub web_rules: Vec<migrator::artifacts::WebRule>,
}

impl LabState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.state_dir);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|source| LabError::State {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, json).map_err(LabError::io("writing state", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(LabError::io("writing state", &path))
    }

    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let data = std::fs::read(&path).map_err(LabError::io("reading state", &path))?;
        serde_json::from_slice(&data).map_err(|source| LabError::State { path, source })
    }

    pub fn dc(&self, side: Side) -> &DcState {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// All network namespaces of the lab.
    pub fn namespaces(&self) -> Vec<&str> {
        [
            self.old.netns.as_str(),
            &self.new.netns,
            &self.dns.netns,
            &self.client.netns,
            &self.internet_netns,
        ]
        .into_iter()
        .chain(self.fleet.as_ref().map(|f| f.netns.as_str()))
        .collect()
    }

    /// Every sql-proxy instance of old-dc (the second one only in a fleet lab).
    pub fn proxies(&self) -> Vec<&ProxyState> {
        self.sql_proxy
            .iter()
            .chain(self.fleet.as_ref().and_then(|f| f.proxy2.as_ref()))
            .collect()
    }
}
