//! `lab up --artifacts` (issue 20), the web half: every site gets web rules (a redirect and a
//! header) and a PHP pool of its own with settings that differ from site to site, so a site
//! served with another's pool, or with the shared one, shows.
//!
//! Both DCs' web servers are set up the way an operator points them at the migrator's
//! artifacts once ([`migrator::artifacts::activate`]): a DC's artifacts live under
//! `<state>/<dc>/artifacts/<login>/active/`, and
//! - nginx has one server block per site (its host only) that includes
//!   `active/nginx-rules.conf` (a glob, so an absent `active/` is no error) and sends the
//!   site's PHP to its own pool's socket while `active/php-pool.conf` is there, else to the
//!   DC's shared pool;
//! - php-fpm includes `<state>/<dc>/artifacts/*/active/php-pool.conf` (a glob: none is fine).
//!
//! old-dc owns the sites from `up`: its `active/` dirs are written here. new-dc's come from
//! `prepare` (staged) and the switch (enabled). Each DC has reload commands (scripts in its
//! directory) that check the configuration first and wait until the reloaded server runs,
//! recorded in the state for `migrator site specs-from-lab`.
//!
//! Debian bookworm ships one PHP (8.2), so both DCs run 8.2: the sites differ by their pool
//! settings, not by version.

use crate::error::{LabError, Result};
use crate::state::{DcState, LabState, SiteState};
use migrator::artifacts::{
    php, served_diffs, web_rules, Artifacts, Header, PhpSpec, PoolSettings, Redirect, WebRule,
};
use std::path::{Path, PathBuf};

/// The redirect every site has: an old page to the app's `about` answer.
pub const REDIRECT_FROM: &str = "/old-page";
pub const REDIRECT_TO: &str = "/?op=about";
pub const REDIRECT_STATUS: u16 = 301;
/// The header every site sends, its value the site's login.
pub const HEADER: &str = "X-Site";
/// The PHP version of the lab's pools (Debian bookworm's only one).
pub const PHP_VERSION: &str = "8.2";

/// Site `i`'s (1-based) PHP settings: every value differs between neighbouring sites.
pub fn php_for(i: usize) -> PhpSpec {
    const FUNCS: [&str; 6] = [
        "exec",
        "shell_exec",
        "system",
        "passthru",
        "proc_open",
        "popen",
    ];
    PhpSpec {
        version: PHP_VERSION.into(),
        map_to: None,
        fpm_root: None,
        pool: PoolSettings {
            memory_limit: Some(format!("{}M", 96 + 32 * (i % 5))),
            max_execution_time: Some(20 + 5 * (i % 7) as u32),
            upload_max_filesize: Some(format!("{}M", 2 + i % 9)),
            post_max_size: Some(format!("{}M", 12 + i % 9)),
            disable_functions: (0..2).map(|k| FUNCS[(i + k) % 6].to_string()).collect(),
            max_children: Some(3),
        },
        user: None,
        listen: None,
        listen_owner: None,
        probe: None,
    }
}

/// Site `login`'s web rules.
pub fn rules_for(login: &str) -> Vec<WebRule> {
    vec![
        WebRule::Redirect(Redirect {
            from: REDIRECT_FROM.into(),
            to: REDIRECT_TO.into(),
            status: REDIRECT_STATUS,
        }),
        WebRule::Header(Header {
            name: HEADER.into(),
            value: login.into(),
        }),
    ]
}

/// The pool file of `site` on `dc` (user www-data, like the shared pool: the uploads are
/// www-data's).
pub fn pool_file(dc: &DcState, site: &SiteState) -> Option<String> {
    let p = site.php.as_ref()?;
    let sock = pool_socket(dc, &site.login)?;
    Some(php::render_pool(
        &site.login,
        "www-data",
        &sock.to_string_lossy(),
        p,
    ))
}

/// The socket of `login`'s own pool on `dc`.
pub fn pool_socket(dc: &DcState, login: &str) -> Option<PathBuf> {
    dc.php_pool_dir
        .as_ref()
        .map(|d| d.join(format!("{login}.sock")))
}

fn write(path: &Path, data: &str) -> Result<()> {
    std::fs::write(path, data).map_err(LabError::io("writing", path))
}

fn mkdir_755(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(LabError::io("creating", path))?;
    // nginx's workers (www-data) test `active/php-pool.conf` and reach the sockets through it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(LabError::io("chmod 755", path))
}

/// Sets the lab up for artifacts before its web servers start: the DCs' directories and
/// reload scripts (recorded in the state), every site's settings and rules, old-dc's enabled
/// artifacts.
pub fn setup(st: &mut LabState) -> Result<()> {
    for (i, s) in st.sites.iter_mut().enumerate() {
        s.php = Some(php_for(i + 1));
        s.web_rules = rules_for(&s.login);
    }
    for dc in [&mut st.old, &mut st.new] {
        let root = st.state_dir.join(dc.side.label());
        let arts = root.join("artifacts");
        let pools = root.join("php-pools");
        mkdir_755(&arts)?;
        mkdir_755(&pools)?;
        let nginx = root.join("reload-nginx.sh");
        write(&nginx, &nginx_reload_script(&root))?;
        let php_fpm = root.join("reload-php-fpm.sh");
        write(
            &php_fpm,
            &php_reload_script(&root, &crate::dc_services::find_php_fpm()?),
        )?;
        dc.nginx_reload = Some(format!("sh '{}'", nginx.display()));
        dc.php_reload = Some(format!("sh '{}'", php_fpm.display()));
        dc.artifacts_dir = Some(arts);
        dc.php_pool_dir = Some(pools);
    }
    // old-dc serves every site: its artifacts are enabled from the start.
    let old = st.old.clone();
    let arts = old.artifacts_dir.clone().unwrap_or_default();
    for s in &st.sites {
        let active = arts.join(&s.login).join("active");
        mkdir_755(&arts.join(&s.login))?;
        mkdir_755(&active)?;
        if let Some(pool) = pool_file(&old, s) {
            write(&active.join("php-pool.conf"), &pool)?;
        }
        write(
            &active.join("nginx-rules.conf"),
            &web_rules::render_nginx(&s.web_rules),
        )?;
    }
    Ok(())
}

/// `reload-nginx.sh`: SIGHUP, then wait until the master runs a new worker (the new
/// configuration serves); 10 s at most, else a failure (a configuration nginx refuses keeps
/// the old workers: no new one). Not `nginx -t` first: it binds the listen addresses, which
/// exist only in the DC's namespace, and the old side's reload runs in the migrator's.
fn nginx_reload_script(root: &Path) -> String {
    reload_script(root, "nginx", "HUP", "nginx.pid", "")
}

/// `reload-php-fpm.sh`: `php-fpm -t` first (a bad pool file would otherwise stop the master),
/// then SIGUSR2 (graceful: workers finish their request), then wait for a new worker.
fn php_reload_script(root: &Path, php_fpm: &str) -> String {
    let test = format!(
        "if ! out=$('{php_fpm}' -t --fpm-config '{}' 2>&1); then echo \"$out\" >&2; exit 1; fi\n",
        root.join("php-fpm.conf").display()
    );
    reload_script(root, "php-fpm", "USR2", "php-fpm.pid", &test)
}

/// One reload at a time per server (the wave moves several sites at once): under a lock, and
/// skipped when a reload signalled after this one was asked for has completed meanwhile (it
/// loaded this change too): `<what>-reload.done` holds the signal time of the last one done.
fn reload_script(root: &Path, what: &str, signal: &str, pid: &str, test: &str) -> String {
    let done = root.join(format!("{what}-reload.done"));
    format!(
        "#!/bin/sh\n# hostmove lab: reload this DC's {what} and wait for it (lab up --artifacts)\nset -eu\n\
         asked=$(date +%s%N)\nexec 9>'{lock}'\nflock 9\n\
         last=$(cat '{done}' 2>/dev/null || echo 0)\nif [ \"$last\" -gt \"$asked\" ]; then exit 0; fi\n\
         {test}pid=$(cat '{pid}')\nsignalled=$(date +%s%N)\n{wait}",
        lock = root.join(format!("{what}-reload.lock")).display(),
        done = done.display(),
        pid = root.join(pid).display(),
        wait = wait_new_children(
            what,
            signal,
            100,
            &format!("echo \"$signalled\" > '{0}.tmp'; mv '{0}.tmp' '{0}'", done.display())
        ),
    )
}

/// Shell lines: signal `$pid`, then wait (`tenths` of a second at most) until it has a child
/// it did not have before (a reloaded nginx or php-fpm master starts new workers); then run
/// `on_success` and exit 0, else exit 1 naming `what`.
fn wait_new_children(what: &str, signal: &str, tenths: u32, on_success: &str) -> String {
    let on_success = if on_success.is_empty() {
        String::new()
    } else {
        format!("{on_success}; ")
    };
    format!(
        "kids() {{ ps -o pid= --ppid \"$pid\" | tr -s ' \\n' '  '; }}\nbefore=\" $(kids) \"\n\
         kill -{signal} \"$pid\"\ni=0\nwhile [ $i -lt {tenths} ]; do\n  sleep 0.1\n  \
         for k in $(kids); do\n    case \"$before\" in *\" $k \"*) ;; *) {on_success}exit 0 ;; esac\n  done\n  \
         i=$((i + 1))\ndone\necho \"{what} (pid $pid) started no new worker within {} s of SIG{signal}\" >&2\nexit 1\n",
        tenths / 10
    )
}

/// The php-fpm `[global]` lines of a DC with artifacts: the sites' enabled pools included,
/// and a bounded graceful reload.
pub fn php_fpm_global(dc: &DcState) -> String {
    match &dc.artifacts_dir {
        Some(a) => format!(
            "process_control_timeout = 10s\ninclude = {}/*/active/php-pool.conf\n",
            a.display()
        ),
        None => String::new(),
    }
}

/// The nginx server blocks of a DC with artifacts: one per site, for its host only.
pub fn nginx_site_servers(dc: &DcState, sites: &[SiteState]) -> String {
    let (Some(arts), Some(_)) = (&dc.artifacts_dir, &dc.php_pool_dir) else {
        return String::new();
    };
    let mut out = String::new();
    for s in sites {
        let active = arts.join(&s.login).join("active");
        let sock = pool_socket(dc, &s.login).unwrap_or_default();
        out.push_str(&format!(
            "    server {{\n        listen {addr}:80;\n        server_name {domain};\n\
             include {active}/nginx-rules.con[f];\n        location / {{\n\
             if ($site_root = \"\") {{ return 404; }}\n            root $site_root;\n\
             include /etc/nginx/fastcgi_params;\n            fastcgi_param SCRIPT_FILENAME $site_root/index.php;\n\
             set $php_pool unix:{shared};\n\
             if (-f {active}/php-pool.conf) {{ set $php_pool unix:{sock}; }}\n\
             fastcgi_pass $php_pool;\n        }}\n    }}\n",
            addr = dc.web_addr,
            domain = s.domain,
            active = active.display(),
            shared = dc.php_fpm_socket.display(),
            sock = sock.display(),
        ));
    }
    out
}

/// The path of the lab app answering its PHP settings (`php_app`).
pub const PHP_PROBE: &str = "/?op=phpinfo";

/// A site's rules and PHP settings as the migrator compares them with what is served
/// ([`migrator::artifacts::served_diffs`]), the probe being the lab app's.
pub fn site_artifacts(site: &SiteState) -> Artifacts {
    Artifacts {
        php: site.php.clone().map(|mut p| {
            p.probe = Some(PHP_PROBE.into());
            p
        }),
        web_rules: site.web_rules.clone(),
        ..Default::default()
    }
}

/// A site's rules and PHP settings as `client` serves them (blocking): every difference from
/// the lab state, unanswered requests included (empty: all as expected). `by_addr`: the
/// client names an address (a VIP, a web server), so `Host` is set to the site's domain;
/// else it names the domain itself.
pub fn served_by(
    client: &drivers::http::HttpClient,
    site: &SiteState,
    by_addr: bool,
) -> Vec<String> {
    use drivers::http::Method;
    let ask = |path: &str| {
        let mut req = client.request(Method::Get, path);
        if by_addr {
            req = req.header("Host", &site.domain);
        }
        req.send().map_err(|e| e.to_string())
    };
    served_diffs(&site_artifacts(site), &site.domain, "/?op=read", &ask)
}

/// [`served_by`] at `addr` (run it in the client namespace).
pub fn check_served(addr: std::net::SocketAddr, site: &SiteState) -> Vec<String> {
    match drivers::http::HttpClient::for_addr(addr, std::time::Duration::from_secs(10)) {
        Ok(c) => served_by(&c.without_keep_alive(), site, true),
        Err(e) => vec![e.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_sites_differ_in_every_setting_and_validate() {
        let (a, b) = (php_for(1), php_for(2));
        assert_ne!(a.pool.memory_limit, b.pool.memory_limit);
        assert_ne!(a.pool.max_execution_time, b.pool.max_execution_time);
        assert_ne!(a.pool.upload_max_filesize, b.pool.upload_max_filesize);
        assert_ne!(a.pool.disable_functions, b.pool.disable_functions);
        for i in 1..20 {
            migrator::artifacts::php::validate(&php_for(i)).unwrap();
        }
        for r in rules_for("site0001") {
            migrator::artifacts::web_rules::validate(&r).unwrap();
        }
    }

    /// The lab's sites checked the migrator's way: an answer as specified passes; another
    /// site's header, a missing redirect and other PHP settings are each named.
    #[test]
    fn served_answers_are_checked_against_the_site() {
        let mut sites = crate::sites::plan_sites(2, "lab.test", 3);
        for (i, s) in sites.iter_mut().enumerate() {
            s.php = Some(php_for(i + 1));
            s.web_rules = rules_for(&s.login);
        }
        let answer = |site: &SiteState, redirect: bool, header: &str| {
            let ini = serde_json::json!({"php_version": "8.2.26", "ini": {
                "memory_limit": "128M", "max_execution_time": "25",
                "upload_max_filesize": "3M", "post_max_size": "13M",
                "disable_functions": "shell_exec,system"}});
            let domain = site.domain.clone();
            let header = header.to_string();
            move |path: &str| -> std::result::Result<drivers::http::Answer, String> {
                let mut headers = vec![("x-site".to_string(), header.clone())];
                let (status, body) = match path {
                    REDIRECT_FROM if redirect => {
                        headers.push(("location".into(), format!("http://{domain}{REDIRECT_TO}")));
                        (301, Vec::new())
                    }
                    PHP_PROBE => (200, ini.to_string().into_bytes()),
                    _ => (200, b"{}".to_vec()),
                };
                Ok(drivers::http::Answer {
                    status,
                    body,
                    headers,
                })
            }
        };
        let a = site_artifacts(&sites[0]);
        let ok = answer(&sites[0], true, "site0001");
        assert_eq!(
            served_diffs(&a, &sites[0].domain, "/?op=read", &ok),
            Vec::<String>::new()
        );
        let bad = answer(&sites[0], false, "site0002");
        let d = served_diffs(&a, &sites[0].domain, "/?op=read", &bad);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("redirect /old-page: HTTP 200") && d[1].contains("site0002"));
        // site0002's settings are not what site0001's pool answers.
        let d = served_diffs(
            &site_artifacts(&sites[1]),
            &sites[1].domain,
            "/?op=read",
            &ok,
        );
        assert!(
            d.iter().any(|l| l.starts_with("php: memory_limit")),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l.starts_with("header X-Site")), "{d:?}");
    }

    #[test]
    fn each_site_gets_its_own_server_block_and_pool() {
        use crate::state::Side;
        let mut sites = crate::sites::plan_sites(2, "lab.test", 3);
        for (i, s) in sites.iter_mut().enumerate() {
            s.php = Some(php_for(i + 1));
            s.web_rules = rules_for(&s.login);
        }
        let mut old = crate::lab::dc_skeleton(Side::Old, "r", Path::new("/lab"), 3);
        let new = crate::lab::dc_skeleton(Side::New, "r", Path::new("/lab"), 4);
        old.artifacts_dir = Some("/lab/old-dc/artifacts".into());
        old.php_pool_dir = Some("/lab/old-dc/php-pools".into());
        let conf = nginx_site_servers(&old, &sites);
        assert_eq!(conf.matches("server {").count(), sites.len());
        assert!(conf.contains("server_name site0001.lab.test;"));
        assert!(conf.contains("include /lab/old-dc/artifacts/site0001/active/nginx-rules.con[f];"));
        assert!(conf.contains(
            "if (-f /lab/old-dc/artifacts/site0002/active/php-pool.conf) { set $php_pool \
             unix:/lab/old-dc/php-pools/site0002.sock; }"
        ));
        let pool = pool_file(&old, &sites[0]).unwrap();
        assert!(pool.contains("listen = /lab/old-dc/php-pools/site0001.sock\n"));
        assert!(pool.contains("php_admin_value[memory_limit] = 128M\n"));
        assert!(
            php_fpm_global(&old).contains("include = /lab/old-dc/artifacts/*/active/php-pool.conf")
        );
        // Without artifacts: nothing added.
        assert_eq!(nginx_site_servers(&new, &sites), "");
        assert_eq!(php_fpm_global(&new), "");
    }

    /// The wait loop of the reload scripts, run by `sh` against a stand-in master (a shell
    /// whose USR2 trap starts a new child): a new child after the signal is success; a master
    /// that starts none is a failure naming it, once the bound is over.
    #[test]
    fn reload_waits_for_a_new_worker() {
        let run = |trap: &str| {
            let mut master = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("trap {trap} USR2; sleep 4 & wait; wait; wait"))
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "set -eu\npid={}\n{}",
                    master.id(),
                    wait_new_children("test", "USR2", 10, "")
                ))
                .output()
                .unwrap();
            master.kill().unwrap();
            let _ = master.wait();
            out
        };
        let out = run("'sleep 4 &'");
        assert!(out.status.success(), "{out:?}");
        let out = run("''");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("test (pid ") && err.contains("no new worker within 1 s"),
            "{err}"
        );
    }

    /// The reload script proper: with no reload done since it was asked for, it signals the
    /// master and records the time; a reload done after it was asked for (the done file's time
    /// later than the ask) makes it a no-op, no signal sent.
    #[test]
    fn a_reload_covered_by_a_later_one_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mark = d.path().join("signalled");
        let mut master = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap 'echo x >> {}; sleep 4 &' USR2; sleep 4 & wait; wait; wait",
                mark.display()
            ))
            .spawn()
            .unwrap();
        std::fs::write(d.path().join("m.pid"), master.id().to_string()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let script = reload_script(d.path(), "test", "USR2", "m.pid", "");
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap()
        };
        let done = d.path().join("test-reload.done");
        // A reload done "later" than any ask: skipped.
        std::fs::write(&done, "9000000000000000000\n").unwrap();
        let out = run();
        assert!(out.status.success(), "{out:?}");
        assert!(!mark.exists(), "signalled although covered");
        // None done since: signalled, and its time recorded.
        std::fs::write(&done, "0\n").unwrap();
        let out = run();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read_to_string(&mark).unwrap(), "x\n");
        let t: u64 = std::fs::read_to_string(&done)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(t > 0);
        master.kill().unwrap();
        let _ = master.wait();
    }
}
