//! A site's PHP runtime: the version and the FPM pool settings that must be equal on both
//! sides, and the pool file rendered from them.

use super::PhpSpec;

/// PHP versions a spec may name (what Debian and the Sury packages have shipped).
pub const KNOWN_VERSIONS: [&str; 11] = [
    "5.6", "7.0", "7.1", "7.2", "7.3", "7.4", "8.0", "8.1", "8.2", "8.3", "8.4",
];

/// A size as php.ini writes it: digits with an optional `K`, `M` or `G`.
fn size_ok(v: &str) -> bool {
    let digits = v.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
    !digits.is_empty() && digits.len() + 1 >= v.len() && digits.chars().all(|c| c.is_ascii_digit())
}

/// Checks a PHP section; the error names the field (below `php.`) and why.
pub fn validate(p: &PhpSpec) -> Result<(), (String, String)> {
    if !KNOWN_VERSIONS.contains(&p.version.as_str()) {
        return Err((
            "version".into(),
            format!(
                "{:?}: unknown PHP version (known: {})",
                p.version,
                KNOWN_VERSIONS.join(", ")
            ),
        ));
    }
    if let Some(m) = &p.map_to {
        if !KNOWN_VERSIONS.contains(&m.as_str()) {
            return Err((
                "map_to".into(),
                format!(
                    "{m:?}: unknown PHP version (known: {})",
                    KNOWN_VERSIONS.join(", ")
                ),
            ));
        }
    }
    if let Some(r) = &p.fpm_root {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
        if !r.starts_with('/') || !r.chars().all(ok) {
            return Err(("fpm_root".into(), format!("{r:?}: not an absolute path")));
        }
    }
    for (name, v) in [("user", &p.user), ("listen_owner", &p.listen_owner)] {
        if let Some(u) = v {
            if !super::user_ok(u) {
                return Err((name.into(), format!("{u:?}: not a user name")));
            }
        }
    }
    if let Some(l) = &p.listen {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
        if !l.starts_with('/') || !l.chars().all(ok) || l.split('/').any(|x| x == "..") {
            return Err((
                "listen".into(),
                format!("{l:?}: an absolute path of letters, digits, `/`, `.`, `_`, `-`"),
            ));
        }
    }
    if let Some(probe) = &p.probe {
        if !super::web_rules::target_ok(probe) || probe.starts_with("//") {
            return Err((
                "probe".into(),
                format!("{probe:?}: not an absolute path (with an optional query)"),
            ));
        }
    }
    let sizes = [
        ("memory_limit", &p.pool.memory_limit),
        ("upload_max_filesize", &p.pool.upload_max_filesize),
        ("post_max_size", &p.pool.post_max_size),
    ];
    for (name, v) in sizes {
        if let Some(v) = v {
            // memory_limit -1 is "no limit".
            if !(size_ok(v) || (name == "memory_limit" && v == "-1")) {
                return Err((
                    format!("pool.{name}"),
                    format!("{v:?}: not a size (digits with an optional K, M or G)"),
                ));
            }
        }
    }
    for (j, f) in p.pool.disable_functions.iter().enumerate() {
        let ok = !f.is_empty()
            && !f.starts_with(|c: char| c.is_ascii_digit())
            && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err((
                format!("pool.disable_functions[{j}]"),
                format!("{f:?}: not a PHP function name"),
            ));
        }
    }
    Ok(())
}

/// The shell lines that refuse (exit 4) a new web server without the PHP version the site
/// runs with there, naming the versions it has and the field that maps one.
pub fn require_script(p: &PhpSpec) -> String {
    let root = p.fpm_root.as_deref().unwrap_or("/etc/php");
    let field = if p.map_to.is_some() {
        format!("artifacts.php.map_to ({} for {})", p.target(), p.version)
    } else {
        format!("artifacts.php.version {}", p.version)
    };
    format!(
        "if [ ! -d '{root}/{v}/fpm' ]; then\n  \
         have=$(ls '{root}' 2>/dev/null | tr '\\n' ' ')\n  \
         echo \"{field}: PHP {v} is not installed on the new web server (it has: ${{have:-none}}); \
         set artifacts.php.map_to to one of those\" >&2\n  exit 4\nfi\n",
        v = p.target()
    )
}

/// The php-fpm pool file of a site (`[site]` running as `user`, listening on `listen`, the
/// socket the web server's user's: `p.listen_owner`, default `www-data`), its settings as
/// `php_admin_value`s so a script cannot change them.
pub fn render_pool(site: &str, user: &str, listen: &str, p: &PhpSpec) -> String {
    let owner = p.listen_owner.as_deref().unwrap_or("www-data");
    let mut out = format!(
        "; written by migrator for site {site} (PHP {})\n[{site}]\nuser = {user}\ngroup = {user}\n\
         listen = {listen}\nlisten.owner = {owner}\nlisten.group = {owner}\nlisten.mode = 0660\n\
         pm = ondemand\npm.max_children = {}\n",
        p.target(),
        p.pool.max_children.unwrap_or(5)
    );
    let mut value = |k: &str, v: &str| out.push_str(&format!("php_admin_value[{k}] = {v}\n"));
    if let Some(v) = &p.pool.memory_limit {
        value("memory_limit", v);
    }
    if let Some(v) = p.pool.max_execution_time {
        value("max_execution_time", &v.to_string());
    }
    if let Some(v) = &p.pool.upload_max_filesize {
        value("upload_max_filesize", v);
    }
    if let Some(v) = &p.pool.post_max_size {
        value("post_max_size", v);
    }
    if !p.pool.disable_functions.is_empty() {
        value("disable_functions", &p.pool.disable_functions.join(","));
    }
    out
}

/// What a PHP probe answered (`php_version`, `ini.<setting>`), against `p`: the version's
/// `major.minor` and each pool setting the spec sets. One line per difference.
pub fn probe_diffs(p: &PhpSpec, answer: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let version = answer["php_version"].as_str().unwrap_or("");
    if !version.starts_with(&format!("{}.", p.target())) {
        out.push(format!(
            "PHP_VERSION {version:?}, expected {}.x",
            p.target()
        ));
    }
    let pool = &p.pool;
    let want = [
        ("memory_limit", pool.memory_limit.clone()),
        (
            "max_execution_time",
            pool.max_execution_time.map(|v| v.to_string()),
        ),
        ("upload_max_filesize", pool.upload_max_filesize.clone()),
        ("post_max_size", pool.post_max_size.clone()),
        (
            "disable_functions",
            (!pool.disable_functions.is_empty()).then(|| pool.disable_functions.join(",")),
        ),
    ];
    for (k, v) in want {
        let Some(v) = v else { continue };
        let have = answer["ini"][k].as_str().unwrap_or("<absent>");
        if have != v {
            out.push(format!("{k} = {have:?}, expected {v:?}"));
        }
    }
    out
}
