//! Loading an inventory directory: the small tables (datacenters, clusters, filers, SQL
//! servers), then databases and sites in parallel blocks (see `reader`, `load_sites`), with
//! validation of references, duplicates and impossible values. Problems are collected (up to
//! `max_errors`) with file, line and field, never a panic.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use crate::error::{InventoryError, RowError};
use crate::inventory::{DatabaseTable, Inventory, InventoryChecksum, Span};
use crate::model::{files, Datacenter, DcRole, Filer, SqlServer, WebCluster};
use crate::reader::{parse_json, read_lines, LineParser, LocalErr};

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Stop after this many problems (they are all reported).
    pub max_errors: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_errors: 20 }
    }
}

/// A small, fast, deterministic hasher for our own maps of identifiers (FxHash-like).
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash64_seeded(self.0, bytes);
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

const K: u64 = 0x517c_c1b7_2722_0a95;

fn hash64_seeded(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
    }
    (h.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
}

/// 64-bit hash of a string, used to sort identifiers for duplicate detection.
pub(crate) fn hash64(s: &str) -> u64 {
    let h = hash64_seeded(0, s.as_bytes());
    // Final avalanche so that the high bits depend on every byte.
    let h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Loads and validates the inventory in `dir`.
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Inventory, InventoryError> {
    let max = opts.max_errors.max(1);
    let mut errors = Vec::new();
    let mut sums = Vec::new();

    let dcs: Vec<(u64, Datacenter)> = small(dir, files::DATACENTERS, max, &mut errors, &mut sums)?;
    let clusters: Vec<(u64, WebCluster)> =
        small(dir, files::CLUSTERS, max, &mut errors, &mut sums)?;
    let filers: Vec<(u64, Filer)> = small(dir, files::FILERS, max, &mut errors, &mut sums)?;
    let sqls: Vec<(u64, SqlServer)> = small(dir, files::SQL_SERVERS, max, &mut errors, &mut sums)?;

    let dc_role: HashMap<&str, DcRole> = dcs.iter().map(|(_, d)| (d.id.as_str(), d.role)).collect();
    unique(
        files::DATACENTERS,
        dcs.iter().map(|(l, d)| (*l, d.id.as_str())),
        &mut errors,
    );
    unique(
        files::CLUSTERS,
        clusters.iter().map(|(l, c)| (*l, c.id.as_str())),
        &mut errors,
    );
    unique(
        files::FILERS,
        filers.iter().map(|(l, c)| (*l, c.id.as_str())),
        &mut errors,
    );
    unique(
        files::SQL_SERVERS,
        sqls.iter().map(|(l, c)| (*l, c.id.as_str())),
        &mut errors,
    );
    let mut check_dc = |file: &str, line: u64, dc: &str| {
        if !dc_role.contains_key(dc) {
            errors.push(row(file, line, "dc", format!("unknown datacenter {dc:?}")));
        }
    };
    for (l, c) in &clusters {
        check_dc(files::CLUSTERS, *l, &c.dc);
    }
    for (l, f) in &filers {
        check_dc(files::FILERS, *l, &f.dc);
    }
    for (l, s) in &sqls {
        check_dc(files::SQL_SERVERS, *l, &s.dc);
    }
    for (l, c) in &clusters {
        if c.used_bytes > c.disk_bytes {
            errors.push(row(
                files::CLUSTERS,
                *l,
                "used_bytes",
                "larger than disk_bytes",
            ));
        }
        if c.used_slots > c.site_slots {
            errors.push(row(
                files::CLUSTERS,
                *l,
                "used_slots",
                "larger than site_slots",
            ));
        }
    }
    for (l, s) in &sqls {
        if s.hostnames.is_empty() && s.ips.is_empty() {
            errors.push(row(
                files::SQL_SERVERS,
                *l,
                "hostnames",
                "a SQL server needs at least one host name or IP",
            ));
        }
    }
    if dcs.iter().all(|(_, d)| d.role != DcRole::Destination) && !dcs.is_empty() {
        errors.push(row(
            files::DATACENTERS,
            1,
            "role",
            "no datacenter has role \"destination\": nothing to migrate to",
        ));
    }
    if !errors.is_empty() {
        return Err(invalid(errors, max));
    }
    let mut inv = Inventory {
        datacenters: strip(dcs),
        clusters: strip(clusters),
        filers: strip(filers),
        sql_servers: strip(sqls),
        databases: DatabaseTable::default(),
        sites: Default::default(),
        checksum: InventoryChecksum {
            blake3: String::new(),
            files: Vec::new(),
        },
    };

    load_databases(dir, &mut inv, max, &mut errors, &mut sums)?;
    if !errors.is_empty() {
        return Err(invalid(errors, max));
    }
    crate::load_sites::load_sites(dir, &mut inv, max, &mut errors, &mut sums)?;
    if !errors.is_empty() {
        return Err(invalid(errors, max));
    }
    // load_sites reads sites.jsonl when present, sites.csv otherwise.
    let sites_file = match dir.join(files::SITES_JSONL).exists() {
        true => files::SITES_JSONL,
        false => files::SITES_CSV,
    };
    if let Some(e) = byte_total_overflow(&inv, sites_file) {
        return Err(invalid(vec![e], max));
    }
    let mut all = blake3::Hasher::new();
    for (name, hex) in &sums {
        all.update(format!("{name}={hex}\n").as_bytes());
    }
    inv.checksum = InventoryChecksum {
        blake3: all.finalize().to_hex().to_string(),
        files: sums,
    };
    Ok(inv)
}

/// The first row at which the sum of all database and site bytes no longer fits in a `u64`.
/// Every byte total the planner keeps (per group, filer, cluster, wave, plan) is a part of that
/// sum, so once it fits none of them can wrap.
fn byte_total_overflow(inv: &Inventory, sites_file: &str) -> Option<RowError> {
    let over = |file: &str, line: u32| {
        row(
            file,
            line as u64,
            "bytes",
            format!(
                "the inventory's byte total (databases, then sites) passes {} at this row; \
                 a size this large is an export error",
                u64::MAX
            ),
        )
    };
    let mut total: u64 = 0;
    let dbs = &inv.databases;
    for (b, line) in dbs.bytes.iter().zip(&dbs.line) {
        total = match total.checked_add(*b) {
            Some(t) => t,
            None => return Some(over(files::DATABASES, *line)),
        };
    }
    for r in &inv.sites.recs {
        total = match total.checked_add(r.bytes) {
            Some(t) => t,
            None => return Some(over(sites_file, r.line)),
        };
    }
    None
}

fn strip<T>(v: Vec<(u64, T)>) -> Vec<T> {
    v.into_iter().map(|(_, x)| x).collect()
}

pub(crate) fn row(file: &str, line: u64, field: &str, message: impl Into<String>) -> RowError {
    RowError {
        file: file.to_string(),
        line,
        field: Some(field.to_string()),
        message: message.into(),
    }
}

pub(crate) fn invalid(mut errors: Vec<RowError>, max: usize) -> InventoryError {
    errors.sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
    let truncated = errors.len() >= max;
    errors.truncate(max);
    InventoryError::Invalid { errors, truncated }
}

/// Reports every id seen before (`(line, id)` in file order).
fn unique<'a>(file: &str, ids: impl Iterator<Item = (u64, &'a str)>, errors: &mut Vec<RowError>) {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (line, id) in ids {
        if let Some(first) = seen.insert(id, line) {
            errors.push(row(
                file,
                line,
                "id",
                format!("duplicate id {id:?} (first at line {first})"),
            ));
            seen.insert(id, first);
        }
    }
}

struct SmallParser<T>(std::marker::PhantomData<fn() -> T>);

impl<T: serde::de::DeserializeOwned + Send> LineParser for SmallParser<T> {
    type Out = Vec<(u32, T)>;
    fn line(&self, text: &[u8], line: u32, out: &mut Self::Out, errs: &mut Vec<LocalErr>) {
        match parse_json::<T>(text) {
            Ok(v) => out.push((line, v)),
            Err((field, message)) => errs.push(LocalErr {
                line,
                field,
                message,
            }),
        }
    }
}

fn small<T: serde::de::DeserializeOwned + Send>(
    dir: &Path,
    name: &str,
    max: usize,
    errors: &mut Vec<RowError>,
    sums: &mut Vec<(String, String)>,
) -> Result<Vec<(u64, T)>, InventoryError> {
    let mut all = Vec::new();
    let parser = SmallParser::<T>(std::marker::PhantomData);
    let sum = read_lines(
        &dir.join(name),
        name,
        false,
        &parser,
        max,
        errors,
        |v, base| {
            all.extend(v.into_iter().map(|(l, x)| (base + l as u64, x)));
        },
    )?;
    sums.push((name.to_string(), sum));
    Ok(all)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DbRow<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    user: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sql_server: std::borrow::Cow<'a, str>,
    bytes: u64,
    #[serde(default)]
    write_rate: f64,
}

struct DbParser<'m> {
    sql: &'m HashMap<&'m str, (u32, bool)>,
}

impl LineParser for DbParser<'_> {
    type Out = DatabaseTable;
    fn line(&self, text: &[u8], line: u32, out: &mut DatabaseTable, errs: &mut Vec<LocalErr>) {
        let r: DbRow = match parse_json(text) {
            Ok(r) => r,
            Err((field, message)) => {
                errs.push(LocalErr {
                    line,
                    field,
                    message,
                });
                return;
            }
        };
        let before = errs.len();
        if !valid_name(&r.name) {
            errs.push(LocalErr::new(
                line,
                Some("name"),
                "must be non-empty, without spaces",
            ));
        }
        if r.user.is_empty() {
            errs.push(LocalErr::new(line, Some("user"), "must not be empty"));
        }
        let sql = match self.sql.get(&*r.sql_server) {
            Some((i, false)) => *i,
            Some((_, true)) => {
                errs.push(LocalErr::new(
                    line,
                    Some("sql_server"),
                    format!(
                        "{:?} is in a destination datacenter; databases to move must be on \
                         source servers",
                        r.sql_server
                    ),
                ));
                0
            }
            None => {
                errs.push(LocalErr::new(
                    line,
                    Some("sql_server"),
                    format!("unknown SQL server {:?}", r.sql_server),
                ));
                0
            }
        };
        if !r.write_rate.is_finite() || r.write_rate < 0.0 {
            errs.push(LocalErr::new(
                line,
                Some("write_rate"),
                "must be a number >= 0",
            ));
        }
        if errs.len() > before {
            return;
        }
        out.name.push(push_text(&mut out.text, &r.name));
        out.user.push(push_text(&mut out.text, &r.user));
        out.sql_server.push(sql);
        out.bytes.push(r.bytes);
        out.write_rate.push(r.write_rate);
        out.line.push(line);
    }
}

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

pub(crate) fn push_text(text: &mut String, s: &str) -> Span {
    let off = text.len() as u32;
    text.push_str(s);
    Span {
        off,
        len: s.len() as u32,
    }
}

fn load_databases(
    dir: &Path,
    inv: &mut Inventory,
    max: usize,
    errors: &mut Vec<RowError>,
    sums: &mut Vec<(String, String)>,
) -> Result<(), InventoryError> {
    let name = files::DATABASES;
    let sql: HashMap<&str, (u32, bool)> = inv
        .sql_servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let dest = inv
                .datacenters
                .iter()
                .any(|d| d.id == s.dc && d.role == DcRole::Destination);
            (s.id.as_str(), (i as u32, dest))
        })
        .collect();
    let mut t = DatabaseTable::default();
    let sum = read_lines(
        &dir.join(name),
        name,
        false,
        &DbParser { sql: &sql },
        max,
        errors,
        |c, base| {
            let shift = t.text.len() as u32;
            t.text.push_str(&c.text);
            t.name.extend(c.name.iter().map(|s| Span {
                off: s.off + shift,
                len: s.len,
            }));
            t.user.extend(c.user.iter().map(|s| Span {
                off: s.off + shift,
                len: s.len,
            }));
            t.sql_server.extend_from_slice(&c.sql_server);
            t.bytes.extend_from_slice(&c.bytes);
            t.write_rate.extend_from_slice(&c.write_rate);
            t.line
                .extend(c.line.iter().map(|l| (base + *l as u64) as u32));
        },
    )?;
    sums.push((name.to_string(), sum));
    if t.text.len() > u32::MAX as usize / 2 {
        errors.push(row(
            name,
            1,
            "name",
            "databases file too large for this build",
        ));
    }
    let text = &t.text;
    duplicates(
        name,
        "name",
        "database",
        t.name.len(),
        |i| t.name[i].get(text),
        |i| t.line[i] as u64,
        errors,
    );
    duplicates(
        name,
        "user",
        "user (one user per database)",
        t.user.len(),
        |i| t.user[i].get(text),
        |i| t.line[i] as u64,
        errors,
    );
    inv.databases = t;
    Ok(())
}

/// Finds duplicate strings among `n` items by sorting their hashes (parallel, no big map).
pub(crate) fn duplicates<'a>(
    file: &str,
    field: &str,
    what: &str,
    n: usize,
    get: impl Fn(usize) -> &'a str + Sync,
    line: impl Fn(usize) -> u64,
    errors: &mut Vec<RowError>,
) {
    use rayon::prelude::*;
    let mut keys: Vec<(u64, u32)> = (0..n)
        .into_par_iter()
        .map(|i| (hash64(get(i)), i as u32))
        .collect();
    keys.par_sort_unstable();
    let mut i = 0;
    while i < keys.len() {
        let mut j = i + 1;
        while j < keys.len() && keys[j].0 == keys[i].0 {
            j += 1;
        }
        if j - i > 1 {
            // Same hash: compare the strings themselves (items are in input order here).
            let run = &keys[i..j];
            for (a, &(_, x)) in run.iter().enumerate() {
                if let Some(&(_, first)) = run[..a]
                    .iter()
                    .find(|(_, y)| get(*y as usize) == get(x as usize))
                {
                    errors.push(row(
                        file,
                        line(x as usize),
                        field,
                        format!(
                            "duplicate {what} {:?} (first at line {})",
                            get(x as usize),
                            line(first as usize)
                        ),
                    ));
                }
            }
        }
        i = j;
    }
}
