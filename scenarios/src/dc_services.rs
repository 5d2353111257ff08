//! The daemons of one datacenter, each our own instance with its own config in the state
//! dir: MariaDB (shared SQL server), php-fpm + nginx (web server), HAProxy (VIP with its
//! runtime API) and sshd (generated host keys). All run inside the DC's network namespace and
//! private mount namespace (where `/homez.<n>` is its filer).

use crate::error::{LabError, Result};
use crate::process::{in_ns, run, run_with_input, spawn_daemon, ProcRecord};
use crate::secrets::{password, write_secret};
use crate::state::DcState;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a DC keeps its configs, data and logs (`<state_dir>/<old-dc|new-dc>`).
pub struct DcDirs {
    pub root: PathBuf,
    /// Bulk data (MariaDB datadir and tmpdir) on the lab's tmpfs (`<state_dir>/data/<dc>`).
    pub data: PathBuf,
    /// 0700: admin socket, keys, credentials, the MariaDB socket.
    pub private: PathBuf,
    pub logs: PathBuf,
}

impl DcDirs {
    pub fn new(state_dir: &Path, dc: &DcState) -> Self {
        let root = state_dir.join(dc.side.label());
        DcDirs {
            data: state_dir.join("data").join(dc.side.label()),
            private: root.join("private"),
            logs: root.join("logs"),
            root,
        }
    }
}

fn spawn(
    dc: &DcState,
    dirs: &DcDirs,
    service: &str,
    program: &str,
    args: &[&str],
) -> Result<ProcRecord> {
    let mut cmd = in_ns(Some(&dc.mount_ns), &dc.netns, program);
    cmd.args(args);
    spawn_daemon(
        &format!("{}/{service}", dc.side.label()),
        cmd,
        &dirs.logs.join(format!("{service}.log")),
    )
}

fn write(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(LabError::io("writing config", path))
}

/// `mariadb-install-db` into `<dc>/mysql`.
pub fn mariadb_install(dirs: &DcDirs) -> Result<()> {
    let datadir = dirs.data.join("mysql");
    // Its own tmpdir: concurrent bootstraps sharing /tmp collide on temporary table files.
    let tmp = dirs.data.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(LabError::io("creating mariadb tmpdir", &tmp))?;
    run(Command::new("mariadb-install-db")
        .env("TMPDIR", &tmp)
        .args([
            "--no-defaults",
            &format!("--datadir={}", datadir.display()),
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            &format!("--tmpdir={}", tmp.display()),
        ]))?;
    Ok(())
}

/// Starts mariadbd on the DC's SQL address, with a binlog (the migrator's catch-up needs it).
pub fn mariadb_start(dc: &DcState, dirs: &DcDirs, server_id: u32) -> Result<ProcRecord> {
    let datadir = dirs.data.join("mysql");
    let args = [
        "--no-defaults".to_string(),
        format!("--datadir={}", datadir.display()),
        format!("--port={}", dc.sql_port),
        format!("--bind-address={}", dc.mariadb_addr()),
        format!("--socket={}", dc.sql_socket.display()),
        format!("--pid-file={}", dirs.root.join("mariadbd.pid").display()),
        format!(
            "--log-error={}",
            dirs.logs.join("mariadb-error.log").display()
        ),
        "--user=root".into(),
        "--skip-name-resolve".into(),
        format!("--log-bin={}", datadir.join("binlog").display()),
        format!("--server-id={server_id}"),
        "--binlog-format=ROW".into(),
        "--max-connections=400".into(),
        "--innodb-buffer-pool-size=128M".into(),
        // A lab, not production: make bulk site creation fast.
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--sync-binlog=0".into(),
        "--innodb-doublewrite=0".into(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn(dc, dirs, "mariadb", "/usr/sbin/mariadbd", &refs)
}

/// Runs SQL as root over the unix socket (from the host; the socket is in `private/`).
pub fn mariadb_exec(dc: &DcState, sql: &str) -> Result<String> {
    run_with_input(
        Command::new("mariadb").args([
            "--no-defaults",
            "--protocol=socket",
            &format!("--socket={}", dc.sql_socket.display()),
            "-uroot",
            "--batch",
            "--skip-column-names",
        ]),
        Some(sql.as_bytes()),
    )
}

/// Creates the admin account (`labadmin`, all privileges, from anywhere) and writes its
/// `[client]` option file (0600).
pub fn mariadb_admin(dc: &DcState) -> Result<()> {
    let pw = password(24)?;
    mariadb_exec(
        dc,
        &format!(
            "CREATE USER IF NOT EXISTS 'labadmin'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{pw}');\n\
ALTER USER 'labadmin'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{pw}');\n\
GRANT ALL PRIVILEGES ON *.* TO 'labadmin'@'%' WITH GRANT OPTION;\n\
DROP USER IF EXISTS ''@'localhost';\nFLUSH PRIVILEGES;\n"
        ),
    )?;
    let cnf = format!(
        "# hostmove lab {}: shared SQL server admin (keep 0600)\n[client]\nuser=labadmin\npassword={pw}\nhost={}\nport={}\n",
        dc.side.label(),
        dc.mariadb_addr(),
        dc.sql_port
    );
    write_secret(&dc.db_admin_credentials, cnf.as_bytes())
}

/// The admin account's `mysql://` URL on the DC's MariaDB, from its `[client]` file. It holds
/// the password: give it to a tool in a 0600 file, never on a command line or in a log.
pub fn mariadb_admin_url(dc: &DcState) -> Result<String> {
    let path = &dc.db_admin_credentials;
    let cnf = std::fs::read_to_string(path).map_err(LabError::io("reading", path))?;
    let v = |k| crate::sql_proxy::cnf_value(&cnf, k);
    match (v("user"), v("password"), v("host"), v("port")) {
        (Some(u), Some(pw), Some(h), Some(p)) => Ok(format!("mysql://{u}:{pw}@{h}:{p}/")),
        _ => Err(LabError::Config {
            path: path.clone(),
            message: "needs user=, password=, host= and port=".into(),
        }),
    }
}

/// php-fpm: one pool as www-data on a unix socket (with artifacts, also the sites' enabled
/// pools: [`crate::web_artifacts::php_fpm_global`]).
pub fn php_fpm_start(dc: &DcState, dirs: &DcDirs) -> Result<ProcRecord> {
    let conf = dirs.root.join("php-fpm.conf");
    write(
        &conf,
        &format!(
            "[global]\npid = {root}/php-fpm.pid\nerror_log = {logs}/php-fpm-error.log\ndaemonize = no\n{global}\n\
[www]\nuser = www-data\ngroup = www-data\nlisten = {sock}\nlisten.owner = www-data\nlisten.group = www-data\n\
listen.mode = 0660\npm = static\npm.max_children = 8\ncatch_workers_output = yes\n\
php_admin_value[error_log] = {logs}/php-errors.log\nphp_admin_flag[log_errors] = on\n",
            root = dirs.root.display(),
            logs = dirs.logs.display(),
            sock = dc.php_fpm_socket.display(),
            global = crate::web_artifacts::php_fpm_global(dc),
        ),
    )?;
    let php_fpm = find_php_fpm()?;
    spawn(
        dc,
        dirs,
        "php-fpm",
        &php_fpm,
        &["--nodaemonize", "--fpm-config", &conf.to_string_lossy()],
    )
}

pub(crate) fn find_php_fpm() -> Result<String> {
    let dir = Path::new("/usr/sbin");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(LabError::io("listing /usr/sbin", dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("php-fpm"))
        .collect();
    found.sort();
    found
        .pop()
        .map(|n| format!("/usr/sbin/{n}"))
        .ok_or_else(|| LabError::Command {
            command: "php-fpm".into(),
            status: "not installed".into(),
            stderr: "no /usr/sbin/php-fpm*: run scripts/install-deps.sh".into(),
        })
}

/// nginx on the DC's web address; `map $host $site_root` selects the site's absolute home
/// (with artifacts, each of `sites` has its own server block:
/// [`crate::web_artifacts::nginx_site_servers`]).
pub fn nginx_start(
    dc: &DcState,
    dirs: &DcDirs,
    sites: &[crate::state::SiteState],
) -> Result<ProcRecord> {
    let tmp = dirs.root.join("nginx-tmp");
    std::fs::create_dir_all(&tmp).map_err(LabError::io("creating nginx tmp", &tmp))?;
    if !dc.nginx_sites_map.exists() {
        write(&dc.nginx_sites_map, "")?;
    }
    let conf = dirs.root.join("nginx.conf");
    write(
        &conf,
        &format!(
            "user www-data;\nworker_processes 2;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {logs}/nginx-error.log warn;\n\
events {{ worker_connections 1024; }}\n\
http {{\n    access_log off;\n    client_body_temp_path {tmp}/body;\n    fastcgi_temp_path {tmp}/fastcgi;\n\
    proxy_temp_path {tmp}/proxy;\n    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n\
    map_hash_max_size 262144;\n    map_hash_bucket_size 128;\n\
    map $host $site_root {{\n        default \"\";\n        include {map};\n    }}\n\
    server {{\n        listen {addr}:80 default_server;\n        location = /healthz {{ return 200 \"ok\\n\"; }}\n\
        location / {{\n            if ($site_root = \"\") {{ return 404; }}\n            root $site_root;\n\
            include /etc/nginx/fastcgi_params;\n            fastcgi_param SCRIPT_FILENAME $site_root/index.php;\n\
            fastcgi_pass unix:{sock};\n        }}\n    }}\n{site_servers}}}\n",
            root = dirs.root.display(),
            logs = dirs.logs.display(),
            tmp = tmp.display(),
            map = dc.nginx_sites_map.display(),
            addr = dc.web_addr,
            sock = dc.php_fpm_socket.display(),
            site_servers = crate::web_artifacts::nginx_site_servers(dc, sites),
        ),
    )?;
    spawn(
        dc,
        dirs,
        "nginx",
        "/usr/sbin/nginx",
        &["-c", &conf.to_string_lossy()],
    )
}

/// HAProxy on the VIP: `Host` → `be_<login>` via a map file; runtime API on an admin socket.
/// With `crt_list`, the same frontend also terminates TLS on the VIP's port 443 with the
/// certificates it lists ([`crate::lab_tls`]).
pub fn haproxy_start(
    dc: &DcState,
    dirs: &DcDirs,
    backends: &str,
    crt_list: Option<&Path>,
) -> Result<ProcRecord> {
    if !dc.haproxy_map.exists() {
        write(&dc.haproxy_map, "")?;
    }
    let conf = dirs.root.join("haproxy.cfg");
    write(
        &conf,
        &format!(
            "global\n    stats socket {sock} mode 600 level admin\n    maxconn 4096\n\n\
defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    retries 2\n    \
# A site frozen for cutover (server in maint) answers 503 with Retry-After.\n    \
http-error status 503 content-type text/plain string \"site under maintenance, retry shortly\\n\" hdr Retry-After 2\n\n\
frontend vip\n    bind {vip}:80\n{tls}    use_backend %[req.hdr(host),lower,word(1,:),map({map},be_unknown)]\n\n\
backend be_unknown\n    http-request return status 404 content-type text/plain string \"unknown site\\n\"\n\n{backends}",
            sock = dc.haproxy_admin_socket.display(),
            vip = dc.vip,
            map = dc.haproxy_map.display(),
            tls = crt_list
                .map(|l| format!(
                    "    bind {}:{} ssl crt-list {}\n",
                    dc.vip,
                    crate::lab_tls::PORT,
                    l.display()
                ))
                .unwrap_or_default(),
        ),
    )?;
    spawn(
        dc,
        dirs,
        "haproxy",
        "/usr/sbin/haproxy",
        &["-W", "-db", "-f", &conf.to_string_lossy()],
    )
}

/// sshd on the DC's SSH address with a generated host key; the migrator logs in as root with
/// its own key and verifies the host key with `known_hosts`.
pub fn sshd_start(
    dc: &DcState,
    dirs: &DcDirs,
    host_key: &Path,
    authorized: &Path,
) -> Result<ProcRecord> {
    std::fs::create_dir_all("/run/sshd")
        .map_err(LabError::io("creating privsep dir", "/run/sshd"))?;
    let conf = dirs.root.join("sshd_config");
    write(
        &conf,
        &format!(
            "Port {port}\nListenAddress {addr}\nHostKey {key}\nPidFile {root}/sshd.pid\nUsePAM no\nStrictModes no\n\
PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
AuthorizedKeysFile {auth}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
            port = dc.ssh_port,
            addr = dc.ssh_addr,
            key = host_key.display(),
            root = dirs.root.display(),
            auth = authorized.display()
        ),
    )?;
    spawn(
        dc,
        dirs,
        "sshd",
        "/usr/sbin/sshd",
        &["-D", "-e", "-f", &conf.to_string_lossy()],
    )
}

/// Sends one command to HAProxy's runtime API and returns the answer.
pub fn haproxy_command(socket: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Puts every site's server on this DC's HAProxy in maintenance (runtime API, batches of
/// `;`-separated commands), and checks the answers are empty (success).
pub fn haproxy_maint_all(dc: &DcState, sites: &[crate::state::SiteState]) -> Result<()> {
    for chunk in sites.chunks(100) {
        let cmd: Vec<String> = chunk
            .iter()
            .map(|s| format!("set server be_{}/web state maint", s.login))
            .collect();
        let cmd = cmd.join(";");
        let out = haproxy_command(&dc.haproxy_admin_socket, &cmd).map_err(LabError::io(
            "haproxy runtime API",
            &dc.haproxy_admin_socket,
        ))?;
        if !out.trim().is_empty() {
            return Err(LabError::Command {
                command: format!("haproxy runtime API: {}…", &cmd[..cmd.len().min(60)]),
                status: "refused".into(),
                stderr: out.trim().to_string(),
            });
        }
    }
    Ok(())
}
