//! [`PreflightConfig`]: the operator's pre-flight settings, a TOML file (every field optional;
//! unknown fields refused, so a typo never silently becomes a default).
//!
//! ```toml
//! php_version = "8.2"                      # the destination's PHP
//! old_networks = ["10.20.0.0/16", "2001:db8:20::/48"]
//! old_domains = ["dc1.example"]            # host names of the old platform end in one of these
//! served_hosts = ["sql7.dc1.example"]      # answered after the move (added to the inventory's)
//! served_ips = ["10.20.0.7"]
//! compat_paths = ["/homez.shared/common"]  # absolute paths the new web servers keep
//! path_pattern = '/homez\.[0-9]+/[A-Za-z0-9._-]+'
//! max_file_bytes = 4194304
//! skip_extensions = ["jpg", "png"]         # added to the built-in media list
//! freeze_budget_ms = 3000
//! write_sample_s = 10.0                    # write rates measured over at least this long
//! ```

use super::{PreflightError, Result};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::Path;

/// Media and binaries never read (lower case, without the dot).
pub const MEDIA_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "avif", "bmp", "ico", "tif", "tiff", "psd", "svgz", "mp3",
    "mp4", "m4a", "m4v", "ogg", "oga", "ogv", "wav", "flac", "avi", "mov", "mkv", "webm", "wmv",
    "flv", "pdf", "zip", "gz", "tgz", "bz2", "xz", "7z", "rar", "tar", "zst", "woff", "woff2",
    "ttf", "otf", "eot", "exe", "dll", "so", "bin", "jar", "class", "pyc", "sqlite", "db", "mo",
    "map",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreflightConfig {
    /// The destination's PHP version (`major.minor`): rules removed in it or before apply.
    pub php_version: String,
    /// The old platform's networks (CIDR): an IP literal inside one that nothing serves after
    /// the move is a finding.
    pub old_networks: Vec<String>,
    /// Domain suffixes of the old platform's host names.
    pub old_domains: Vec<String>,
    /// Host names answered after the move, beyond the inventory's old SQL host names.
    pub served_hosts: Vec<String>,
    /// IPs answered after the move, beyond the inventory's old SQL IPs and web VIPs.
    pub served_ips: Vec<String>,
    /// Absolute paths the new web servers keep for every site (each site's own home is kept).
    pub compat_paths: Vec<String>,
    /// What an absolute path of the old platform looks like (a regular expression).
    pub path_pattern: String,
    /// Files larger than this are not read (counted as skipped).
    pub max_file_bytes: u64,
    /// Extensions skipped beyond [`MEDIA_EXTENSIONS`].
    pub skip_extensions: Vec<String>,
    /// A predicted freeze above this makes the site `warn`.
    pub freeze_budget_ms: u64,
    /// The fixed part of a freeze (load balancer, proxy pause, DNS, checks).
    pub freeze_base_ms: u64,
    /// Copy throughput inside the freeze, for tables copied again (no key, no snapshot, no
    /// change capture).
    pub copy_bytes_per_s: f64,
    /// Seconds of writes the capture's tail holds at the freeze (one catch-up interval).
    pub capture_tail_s: f64,
    /// Apply throughput of the capture's tail.
    pub apply_bytes_per_s: f64,
    /// Each source server's databases' write rates are measured on its binary log over at
    /// least this many seconds (the scan of its databases counts); 0: the inventory's figures.
    pub write_sample_s: f64,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        PreflightConfig {
            php_version: "8.2".into(),
            old_networks: Vec::new(),
            old_domains: Vec::new(),
            served_hosts: Vec::new(),
            served_ips: Vec::new(),
            compat_paths: Vec::new(),
            path_pattern: r"/homez\.[0-9]+/[A-Za-z0-9._-]+".into(),
            max_file_bytes: 4 << 20,
            skip_extensions: Vec::new(),
            freeze_budget_ms: 3000,
            freeze_base_ms: 500,
            copy_bytes_per_s: 50e6,
            capture_tail_s: 2.0,
            apply_bytes_per_s: 20e6,
            write_sample_s: 10.0,
        }
    }
}

impl PreflightConfig {
    /// Reads a settings file; errors name the file and the line.
    pub fn read(path: &Path) -> Result<PreflightConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| PreflightError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<PreflightConfig> {
        let c: PreflightConfig = toml::from_str(text).map_err(|e| PreflightError::Config {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        c.networks(file)?;
        PhpVersion::parse(&c.php_version).ok_or_else(|| PreflightError::Config {
            file: file.to_string(),
            message: format!(
                "field `php_version`: {:?} is not MAJOR.MINOR",
                c.php_version
            ),
        })?;
        for ip in &c.served_ips {
            ip.parse::<IpAddr>().map_err(|_| PreflightError::Config {
                file: file.to_string(),
                message: format!("field `served_ips`: {ip:?} is not an IP address"),
            })?;
        }
        Ok(c)
    }

    /// The old networks, parsed.
    pub fn networks(&self, file: &str) -> Result<Vec<Cidr>> {
        self.old_networks
            .iter()
            .map(|n| {
                Cidr::parse(n).ok_or_else(|| PreflightError::Config {
                    file: file.to_string(),
                    message: format!("field `old_networks`: {n:?} is not ADDRESS/PREFIX"),
                })
            })
            .collect()
    }
}

/// A PHP version, `major.minor`, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhpVersion(pub u32, pub u32);

impl PhpVersion {
    pub fn parse(s: &str) -> Option<PhpVersion> {
        let (a, b) = s.trim().split_once('.')?;
        Some(PhpVersion(a.parse().ok()?, b.parse().ok()?))
    }
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u32) {
            match ip {
                IpAddr::V4(v) => (u32::from(v) as u128, 32),
                IpAddr::V6(v) => (u128::from(v), 128),
            }
        }
        let (net, width) = bits(self.addr);
        let (x, xw) = bits(ip);
        if width != xw {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        if shift >= width {
            return true;
        }
        (net >> shift) == (x >> shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let n = Cidr::parse("10.20.0.0/16").unwrap();
        assert!(n.contains("10.20.3.4".parse().unwrap()));
        assert!(!n.contains("10.21.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8:20::/48").unwrap();
        assert!(v6.contains("2001:db8:20:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db8:21::5".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn bad_settings_name_the_file_and_field() {
        let e = PreflightConfig::parse("old_networks = [\"10.0.0.0\"]", "p.toml").unwrap_err();
        assert!(e.to_string().contains("p.toml"), "{e}");
        assert!(e.to_string().contains("old_networks"), "{e}");
        let e = PreflightConfig::parse("php_vresion = \"8.2\"", "p.toml").unwrap_err();
        assert!(e.to_string().contains("php_vresion"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
