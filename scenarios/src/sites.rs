//! Synthetic customer sites: logins, database mapping (every tenth site shares the previous
//! site's database), realistic file trees (many small files, a few large ones), the SQL that
//! creates databases, users (`mysql_native_password`) and rows, and the per-site lines of the
//! DNS zone, HAProxy map and nginx map. All content is deterministic from the site index.

use crate::error::{LabError, Result};
use crate::php_app;
use crate::state::{Side, SiteState};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How big each site is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SiteSpec {
    /// Small files per site (512 B – 8 KiB), spread over a few directories.
    pub small_files: usize,
    /// Large files per site.
    pub large_files: usize,
    /// Size of each large file, KiB.
    pub large_file_kib: usize,
    /// Rows in each database's `articles` table.
    pub rows: usize,
    /// Sizes (MiB) of the first sites' databases, grown with a `bulk` table of 4 KiB rows
    /// (random bytes, so nothing compresses): a size distribution for change capture, say
    /// `[1024, 320, 150, 50]`. Sites past the list keep their few rows.
    pub db_mib: Vec<u64>,
}

impl Default for SiteSpec {
    fn default() -> Self {
        SiteSpec {
            small_files: 40,
            large_files: 2,
            large_file_kib: 512,
            rows: 200,
            db_mib: Vec::new(),
        }
    }
}

/// Deterministic xorshift generator (content only, never secrets).
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Login of site `i` (1-based).
pub fn login(i: usize) -> String {
    format!("site{i:04}")
}

/// Builds the site list: every tenth site (i % 10 == 0) shares site i-1's database.
pub fn plan_sites(count: usize, zone: &str, filer: u32) -> Vec<SiteState> {
    (1..=count)
        .map(|i| {
            let l = login(i);
            let owner = if i % 10 == 0 { login(i - 1) } else { l.clone() };
            let shares = (owner != l).then(|| owner.clone());
            SiteState {
                domain: format!("{l}.{zone}"),
                filer,
                home: PathBuf::from(format!("/homez.{filer}/{l}")),
                database: format!("db_{owner}"),
                db_user: format!("db_{owner}"),
                shares_db_with: shares,
                login: l,
                serving: Side::Old,
                db_serving: None,
                sql_host: None,
                php: None,
                web_rules: Vec::new(),
            }
        })
        .collect()
}

/// Sites that share a database are listed both ways (owner gets the partner too).
pub fn mark_shared_owners(sites: &mut [SiteState]) {
    let pairs: Vec<(String, String)> = sites
        .iter()
        .filter_map(|s| s.shares_db_with.clone().map(|o| (o, s.login.clone())))
        .collect();
    for (owner, partner) in pairs {
        if let Some(s) = sites.iter_mut().find(|s| s.login == owner) {
            s.shares_db_with = Some(partner);
        }
    }
}

const DIRS: [&str; 6] = [
    "assets/css",
    "assets/js",
    "img",
    "lib/vendor",
    "cache",
    "content",
];

/// Writes one site's home under `filer_backing` (host view); `abs_home` is the path the
/// site's code uses (`/homez.N/<login>`). `uploads/` is owned by www-data (php-fpm's user).
pub fn write_site_tree(
    filer_backing: &Path,
    site: &SiteState,
    index: usize,
    spec: &SiteSpec,
    db_host: &str,
    db_pass: &str,
) -> Result<()> {
    let home = filer_backing.join(&site.login);
    let www = home.join("www");
    let mk = |p: &Path| std::fs::create_dir_all(p).map_err(LabError::io("creating site dir", p));
    mk(&www)?;
    for d in DIRS {
        mk(&www.join(d))?;
    }
    let uploads = www.join("uploads");
    mk(&uploads)?;
    let (uid, gid) = www_data();
    nix::unistd::chown(&uploads, Some(uid), Some(gid))
        .map_err(|e| LabError::io("chown uploads to www-data", &uploads)(e.into()))?;
    let abs_www = site.home.join("www");
    let write = |p: PathBuf, data: &[u8]| {
        std::fs::write(&p, data).map_err(LabError::io("writing site file", p))
    };
    write(
        www.join("config.php"),
        php_app::config_php(
            &site.login,
            db_host,
            &site.db_user,
            db_pass,
            &site.database,
            &abs_www.join("uploads").to_string_lossy(),
        )
        .as_bytes(),
    )?;
    write(
        www.join("index.php"),
        php_app::index_php(&abs_www.join("config.php").to_string_lossy()).as_bytes(),
    )?;
    let mut rng = XorShift::new(index as u64);
    let mut buf = Vec::new();
    for f in 0..spec.small_files {
        let size = 512 + rng.below(8 * 1024 - 512) as usize;
        buf.clear();
        while buf.len() < size {
            let at = buf.len();
            let _ = writeln!(
                ByteWriter(&mut buf),
                "{} line {at} of file {f} {:016x}",
                site.login,
                rng.next_u64()
            );
        }
        buf.truncate(size);
        let dir = DIRS[f % DIRS.len()];
        write(www.join(dir).join(format!("f{f:04}.txt")), &buf)?;
    }
    let big_dir = home.join("backups");
    if spec.large_files > 0 {
        mk(&big_dir)?;
    }
    // Large files: one random 64 KiB block per file, repeated with the block number stamped
    // in (cheap to generate, distinct blocks, same bytes on every run).
    let mut block = vec![0u8; 64 * 1024];
    for f in 0..spec.large_files {
        for chunk in block.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let size = spec.large_file_kib * 1024;
        let mut data = Vec::with_capacity(size);
        let mut n = 0u64;
        while data.len() < size {
            let take = (size - data.len()).min(block.len());
            let start = data.len();
            data.extend_from_slice(&block[..take]);
            let stamp = n.to_le_bytes();
            let k = stamp.len().min(take);
            data[start..start + k].copy_from_slice(&stamp[..k]);
            n += 1;
        }
        write(big_dir.join(format!("archive-{f}.bin")), &data)?;
    }
    // A relative symlink inside the home, as real sites have.
    let link = www.join("latest");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("content", &link)
            .map_err(LabError::io("creating site symlink", &link))?;
    }
    Ok(())
}

/// php-fpm's user (Debian's `www-data`, uid 33 when the lookup fails).
fn www_data() -> (nix::unistd::Uid, nix::unistd::Gid) {
    match nix::unistd::User::from_name("www-data") {
        Ok(Some(u)) => (u.uid, u.gid),
        _ => (
            nix::unistd::Uid::from_raw(33),
            nix::unistd::Gid::from_raw(33),
        ),
    }
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// SQL creating each distinct database with its one user (`mysql_native_password`), tables and
/// rows. It contains passwords: feed it on stdin, never write it to disk.
pub fn databases_sql(
    sites: &[SiteState],
    password_of: &dyn Fn(&str) -> String,
    rows: usize,
) -> String {
    let mut sql = String::from("SET sql_log_bin = 1;\n");
    for (i, s) in sites.iter().enumerate() {
        if s.shares_db_with.is_some() && s.database != format!("db_{}", s.login) {
            continue; // the owner creates the shared database
        }
        let db = &s.database;
        let user = &s.db_user;
        let pw = password_of(user);
        let _ = write!(
            sql,
            "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4;\n\
CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{pw}');\n\
GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'%';\n\
USE `{db}`;\n\
CREATE TABLE IF NOT EXISTS articles (id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, title VARCHAR(200) NOT NULL, body TEXT NOT NULL, views INT NOT NULL DEFAULT 0, updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB;\n\
CREATE TABLE IF NOT EXISTS events (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) NOT NULL, site VARCHAR(32) NOT NULL, body VARCHAR(255) NOT NULL DEFAULT '', created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), UNIQUE KEY token (token)) ENGINE=InnoDB;\n\
CREATE TABLE IF NOT EXISTS settings (name VARCHAR(64) NOT NULL PRIMARY KEY, value VARCHAR(255) NOT NULL) ENGINE=InnoDB;\n\
REPLACE INTO settings VALUES ('site_name', '{}'), ('theme', 'classic');\n",
            s.login
        );
        let mut rng = XorShift::new(1000 + i as u64);
        for chunk in (0..rows).collect::<Vec<_>>().chunks(500) {
            sql.push_str("INSERT INTO articles (title, body, views) VALUES ");
            for (k, r) in chunk.iter().enumerate() {
                if k > 0 {
                    sql.push(',');
                }
                let _ = write!(
                    sql,
                    "('Article {r} of {}', 'Body {:x} {:x}', {})",
                    s.login,
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.below(10_000)
                );
            }
            sql.push_str(";\n");
        }
    }
    sql
}

/// SQL growing the database of each of the first `mib.len()` database owners among `sites`
/// to about that many MiB (a `bulk` table of 4 KiB random rows, 16 MiB per statement), kept
/// out of the binary log: the data exists before any migration starts.
pub fn bulk_sql(sites: &[SiteState], mib: &[u64]) -> Vec<String> {
    let owners = sites
        .iter()
        .filter(|s| s.shares_db_with.is_none() || s.database == format!("db_{}", s.login));
    let mut out = Vec::new();
    for (s, &size) in owners.zip(mib) {
        let mut sql = format!(
            "SET sql_log_bin = 0; SET SESSION max_recursive_iterations = 100000; USE `{db}`;\n\
CREATE TABLE IF NOT EXISTS bulk (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
grp INT NOT NULL, pad VARBINARY(4096) NOT NULL, KEY grp (grp)) ENGINE=InnoDB;\n",
            db = s.database
        );
        for chunk in 0..size.div_ceil(16) {
            let _ = writeln!(
                sql,
                "INSERT INTO bulk (grp, pad) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL \
                 SELECT i + 1 FROM n WHERE i < 4096) SELECT {chunk}, CONCAT(RANDOM_BYTES(1024), \
                 RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024)) FROM n;"
            );
        }
        out.push(sql);
    }
    out
}

/// Zone lines for the sites: `<login>.<zone>. A <vip>`.
pub fn zone_records(sites: &[SiteState], vip: std::net::Ipv4Addr) -> String {
    let mut z = String::new();
    for s in sites {
        let _ = writeln!(z, "{}. 300 IN A {vip}", s.domain);
    }
    z
}

/// HAProxy map (`Host` → backend) and one backend per site with one server `web`.
/// The new DC's servers are put in maintenance through the runtime API right after start
/// ([`crate::dc_services::haproxy_maint_all`]): a config `disabled` would be a config-level
/// maintenance that `set server … state ready` cannot lift at cutover.
pub fn haproxy_sites(sites: &[SiteState], web: std::net::Ipv4Addr) -> (String, String) {
    let mut map = String::new();
    let mut backends = String::new();
    for s in sites {
        let _ = writeln!(map, "{} be_{}", s.domain, s.login);
        let _ = writeln!(
            backends,
            "backend be_{}\n    server web {web}:80\n",
            s.login
        );
    }
    (map, backends)
}

/// nginx `map $host $site_root` lines: `<domain> /homez.N/<login>/www;`.
pub fn nginx_map(sites: &[SiteState]) -> String {
    let mut m = String::new();
    for s in sites {
        let _ = writeln!(m, "{} {};", s.domain, s.home.join("www").display());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenth_site_shares_the_previous_database() {
        let mut sites = plan_sites(20, "lab.test", 7);
        mark_shared_owners(&mut sites);
        assert_eq!(sites[9].login, "site0010");
        assert_eq!(sites[9].database, "db_site0009");
        assert_eq!(sites[8].shares_db_with.as_deref(), Some("site0010"));
        assert_eq!(sites[0].database, "db_site0001");
        assert_eq!(sites[0].shares_db_with, None);
        assert_eq!(sites[0].home, PathBuf::from("/homez.7/site0001"));
        let sql = databases_sql(&sites, &|u| format!("pw-{u}"), 3);
        assert_eq!(sql.matches("CREATE DATABASE").count(), 18);
        assert!(
            sql.contains("IDENTIFIED VIA mysql_native_password USING PASSWORD('pw-db_site0009')")
        );
        assert!(!sql.contains("db_site0010"));
    }

    #[test]
    fn site_tree_has_small_and_large_files() {
        let dir = std::env::temp_dir().join(format!("lab-sites-{}", std::process::id()));
        let sites = plan_sites(1, "lab.test", 3);
        let spec = SiteSpec {
            small_files: 12,
            large_files: 1,
            large_file_kib: 64,
            rows: 1,
            db_mib: Vec::new(),
        };
        write_site_tree(&dir, &sites[0], 1, &spec, "sql1.old.lab.test", "pw").unwrap();
        let www = dir.join("site0001/www");
        let cfg = std::fs::read_to_string(www.join("config.php")).unwrap();
        assert!(cfg.contains("'/homez.3/site0001/www/uploads'"));
        assert!(cfg.contains("sql1.old.lab.test"));
        let idx = std::fs::read_to_string(www.join("index.php")).unwrap();
        assert!(idx.contains("require '/homez.3/site0001/www/config.php'"));
        let big = std::fs::metadata(dir.join("site0001/backups/archive-0.bin")).unwrap();
        assert_eq!(big.len(), 64 * 1024);
        let small: usize = DIRS
            .iter()
            .map(|d| std::fs::read_dir(www.join(d)).unwrap().count())
            .sum();
        assert_eq!(small, 12);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
