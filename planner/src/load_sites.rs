//! Loading `sites.jsonl` or `sites.csv` into the compact [`SiteTable`], with per-row checks
//! (references, home path, impossible values) and whole-file checks (duplicate ids, domains).
//!
//! CSV: a header line naming the columns (any order), one site per line, fields may be quoted
//! with `"` (`""` inside quotes is a quote). Columns: `id, login, domains, home, filer, cluster,
//! bytes, files, dns_hosted` (required) and `traffic, databases, window_start, window_end,
//! window_tz, pin, excluded` (optional). `domains` and `databases` are space-separated lists;
//! booleans are `true`/`false` (or `1`/`0`).

use std::borrow::Cow;
use std::path::Path;

use crate::error::{InventoryError, RowError};
use crate::inventory::{Inventory, SiteRec, SiteTable, Span};
use crate::load::{duplicates, push_text, valid_name, FastMap};
use crate::model::{files, Pin};
use crate::reader::{parse_json, read_lines, LineParser, LocalErr};
use crate::window::{Window, WindowPartError};

/// A string that borrows from the input line when it has no escapes.
#[derive(serde::Deserialize)]
struct BStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// One site row as parsed (JSONL or CSV), before checks.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteRow<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    login: Cow<'a, str>,
    #[serde(borrow)]
    domains: Vec<BStr<'a>>,
    #[serde(borrow)]
    home: Cow<'a, str>,
    #[serde(borrow)]
    filer: Cow<'a, str>,
    #[serde(borrow)]
    cluster: Cow<'a, str>,
    bytes: u64,
    files: u64,
    #[serde(default)]
    traffic: f64,
    dns_hosted: bool,
    #[serde(default, borrow)]
    databases: Vec<BStr<'a>>,
    #[serde(default)]
    window: Option<Window>,
    #[serde(default)]
    pin: Option<Pin>,
    #[serde(default)]
    excluded: bool,
}

/// Per-chunk output, merged in file order.
#[derive(Default)]
struct SiteChunk {
    table: SiteTable,
}

struct Ctx<'m> {
    filers: FastMap<&'m str, (u32, bool)>,
    clusters: FastMap<&'m str, (u32, bool)>,
    dbs: FastMap<&'m str, u32>,
    csv: Option<CsvColumns>,
}

impl LineParser for Ctx<'_> {
    type Out = SiteChunk;
    fn line(&self, text: &[u8], line: u32, out: &mut SiteChunk, errs: &mut Vec<LocalErr>) {
        let parsed = match &self.csv {
            None => parse_json::<SiteRow>(text),
            Some(cols) => csv_row(cols, text),
        };
        match parsed {
            Ok(r) => self.check(r, line, &mut out.table, errs),
            Err((field, message)) => errs.push(LocalErr {
                line,
                field,
                message,
            }),
        }
    }
}

impl Ctx<'_> {
    fn check(&self, r: SiteRow, line: u32, t: &mut SiteTable, errs: &mut Vec<LocalErr>) {
        let before = errs.len();
        let mut err = |field: &str, msg: String| errs.push(LocalErr::new(line, Some(field), msg));
        if !valid_name(&r.id) {
            err("id", "must be non-empty, without spaces".into());
        }
        if !valid_name(&r.login) || r.login.contains('/') {
            err("login", "must be non-empty, without spaces or '/'".into());
        }
        if r.domains.is_empty() {
            err("domains", "a site serves at least one domain".into());
        }
        if r.domains.iter().any(|d| !valid_name(&d.0)) {
            err(
                "domains",
                "domains must be non-empty, without spaces".into(),
            );
        }
        let filer = match self.filers.get(&*r.filer) {
            Some((i, false)) => *i,
            Some((_, true)) => {
                err(
                    "filer",
                    format!("{:?} is in the destination datacenter", r.filer),
                );
                0
            }
            None => {
                err("filer", format!("unknown filer {:?}", r.filer));
                0
            }
        };
        let cluster = match self.clusters.get(&*r.cluster) {
            Some((i, false)) => *i,
            Some((_, true)) => {
                err(
                    "cluster",
                    format!(
                        "{:?} is in the destination datacenter; sites to move must be on \
                         source clusters",
                        r.cluster
                    ),
                );
                0
            }
            None => {
                err("cluster", format!("unknown web cluster {:?}", r.cluster));
                0
            }
        };
        let home_ok = r
            .home
            .strip_prefix("/homez.")
            .and_then(|h| h.strip_prefix(&*r.filer))
            .and_then(|h| h.strip_prefix('/'))
            .is_some_and(|h| h == r.login);
        if !home_ok {
            err(
                "home",
                format!(
                    "expected \"/homez.{}/{}\" (/homez.<filer>/<login>), got {:?}",
                    r.filer, r.login, r.home
                ),
            );
        }
        if !r.traffic.is_finite() || r.traffic < 0.0 {
            err("traffic", "must be a number >= 0".into());
        }
        let mut dbs: Vec<u32> = Vec::with_capacity(r.databases.len());
        for d in &r.databases {
            match self.dbs.get(&*d.0) {
                Some(&i) if dbs.contains(&i) => {
                    err("databases", format!("database {:?} listed twice", d.0))
                }
                Some(&i) => dbs.push(i),
                None => err("databases", format!("unknown database {:?}", d.0)),
            }
        }
        let window = match &r.window {
            None => None,
            Some(w) => match w.to_utc() {
                Ok(u) => Some(u),
                // A named zone resolves only on a date: the planner does it per night
                // (settings `campaign_start`), from `window_text`.
                Err(e) if matches!(e.problem, WindowPartError::NeedsDates(_)) => None,
                Err(e) => {
                    err(&format!("window.{}", e.part), e.problem.to_string());
                    None
                }
            },
        };
        if errs.len() > before {
            return;
        }
        let dstart = t.domains.len() as u32;
        for d in &r.domains {
            let s = push_text(&mut t.text, &d.0);
            t.domains.push(s);
        }
        let dbstart = t.db_refs.len() as u32;
        t.db_refs.extend_from_slice(&dbs);
        if let Some(w) = r.window {
            t.window_text.push((t.recs.len() as u32, w));
        }
        let rec = SiteRec {
            id: push_text(&mut t.text, &r.id),
            login: push_text(&mut t.text, &r.login),
            domains: (dstart, r.domains.len() as u32),
            dbs: (dbstart, dbs.len() as u32),
            filer,
            cluster,
            bytes: r.bytes,
            files: r.files,
            traffic: r.traffic as f32,
            dns_hosted: r.dns_hosted,
            excluded: r.excluded,
            window,
            pin: r.pin,
            line,
        };
        t.recs.push(rec);
    }
}

pub(crate) fn load_sites(
    dir: &Path,
    inv: &mut Inventory,
    max: usize,
    errors: &mut Vec<RowError>,
    sums: &mut Vec<(String, String)>,
) -> Result<(), InventoryError> {
    let jsonl = dir.join(files::SITES_JSONL);
    let csv = dir.join(files::SITES_CSV);
    let (path, name, csv_cols) = if jsonl.exists() {
        (jsonl, files::SITES_JSONL, None)
    } else if csv.exists() {
        let header = read_header(&csv)?;
        match CsvColumns::from_header(&header) {
            Ok(c) => (csv, files::SITES_CSV, Some(c)),
            Err((field, message)) => {
                errors.push(RowError {
                    file: files::SITES_CSV.into(),
                    line: 1,
                    field,
                    message,
                });
                return Ok(());
            }
        }
    } else {
        return Err(InventoryError::NoSites {
            dir: dir.to_path_buf(),
        });
    };
    let role = |dc: &str| {
        inv.datacenters
            .iter()
            .any(|d| d.id == dc && d.role == crate::model::DcRole::Destination)
    };
    let ctx = Ctx {
        filers: (inv.filers.iter().enumerate())
            .map(|(i, f)| (f.id.as_str(), (i as u32, role(&f.dc))))
            .collect(),
        clusters: (inv.clusters.iter().enumerate())
            .map(|(i, c)| (c.id.as_str(), (i as u32, role(&c.dc))))
            .collect(),
        dbs: {
            let d = &inv.databases;
            let mut m = FastMap::default();
            m.reserve(d.name.len());
            for (i, s) in d.name.iter().enumerate() {
                m.insert(s.get(&d.text), i as u32);
            }
            m
        },
        csv: csv_cols,
    };
    let is_csv = ctx.csv.is_some();
    let mut t = SiteTable::default();
    let sum = read_lines(&path, name, is_csv, &ctx, max, errors, |c, base| {
        let c = c.table;
        let shift = t.text.len() as u32;
        let dshift = t.domains.len() as u32;
        let bshift = t.db_refs.len() as u32;
        let rshift = t.recs.len() as u32;
        t.text.push_str(&c.text);
        let sh = |s: Span| Span {
            off: s.off + shift,
            len: s.len,
        };
        t.domains.extend(c.domains.into_iter().map(sh));
        t.db_refs.extend_from_slice(&c.db_refs);
        t.window_text
            .extend(c.window_text.into_iter().map(|(i, w)| (i + rshift, w)));
        t.recs.extend(c.recs.into_iter().map(|mut r| {
            r.id = sh(r.id);
            r.login = sh(r.login);
            r.domains.0 += dshift;
            r.dbs.0 += bshift;
            r.line = (base + r.line as u64) as u32;
            r
        }));
    })?;
    drop(ctx);
    sums.push((name.to_string(), sum));
    if t.text.len() > u32::MAX as usize || t.recs.len() > u32::MAX as usize / 2 {
        errors.push(RowError {
            file: name.into(),
            line: 1,
            field: None,
            message: "too many sites for this build (text over 4 GiB): split the inventory".into(),
        });
    }
    if !errors.is_empty() {
        return Ok(());
    }
    let text = &t.text;
    duplicates(
        name,
        "id",
        "site id",
        t.recs.len(),
        |i| t.recs[i].id.get(text),
        |i| t.recs[i].line as u64,
        errors,
    );
    // Domains: map each domain back to its site for the line number.
    let mut owner = Vec::with_capacity(t.domains.len());
    for (i, r) in t.recs.iter().enumerate() {
        owner.extend(std::iter::repeat_n(i as u32, r.domains.1 as usize));
    }
    duplicates(
        name,
        "domains",
        "domain",
        t.domains.len(),
        |i| t.domains[i].get(text),
        |i| t.recs[owner[i] as usize].line as u64,
        errors,
    );
    inv.sites = t;
    Ok(())
}

fn read_header(path: &Path) -> Result<String, InventoryError> {
    use std::io::BufRead;
    let f = std::fs::File::open(path).map_err(|source| InventoryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut line = String::new();
    std::io::BufReader::new(f)
        .read_line(&mut line)
        .map_err(|source| InventoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(line.trim_end().to_string())
}

const CSV_COLUMNS: [&str; 16] = [
    "id",
    "login",
    "domains",
    "home",
    "filer",
    "cluster",
    "bytes",
    "files",
    "dns_hosted",
    "traffic",
    "databases",
    "window_start",
    "window_end",
    "window_tz",
    "pin",
    "excluded",
];
const CSV_REQUIRED: usize = 9;

/// Position of each known column in the header.
struct CsvColumns {
    pos: [Option<usize>; 16],
    width: usize,
}

impl CsvColumns {
    fn from_header(header: &str) -> Result<Self, (Option<String>, String)> {
        let names = split_csv(header.as_bytes()).map_err(|e| (None, e.to_string()))?;
        let mut pos = [None; 16];
        for (i, n) in names.iter().enumerate() {
            match CSV_COLUMNS.iter().position(|c| *c == n.trim()) {
                Some(k) if pos[k].is_some() => {
                    return Err((Some(n.to_string()), "column named twice".into()))
                }
                Some(k) => pos[k] = Some(i),
                None => {
                    return Err((
                        Some(n.to_string()),
                        format!("unknown column (known: {})", CSV_COLUMNS.join(", ")),
                    ))
                }
            }
        }
        if let Some(k) = (0..CSV_REQUIRED).find(|&k| pos[k].is_none()) {
            return Err((
                Some(CSV_COLUMNS[k].into()),
                "required column missing".into(),
            ));
        }
        Ok(CsvColumns {
            pos,
            width: names.len(),
        })
    }
}

fn csv_row<'a>(cols: &CsvColumns, text: &'a [u8]) -> Result<SiteRow<'a>, (Option<String>, String)> {
    let f = split_csv(text).map_err(|e| (None, e.to_string()))?;
    if f.len() != cols.width {
        return Err((
            None,
            format!(
                "expected {} columns like the header, found {}",
                cols.width,
                f.len()
            ),
        ));
    }
    let get = |k: usize| cols.pos[k].map(|i| f[i].clone());
    let req = |k: usize| get(k).unwrap_or_default();
    let num = |k: usize| -> Result<u64, (Option<String>, String)> {
        let v = req(k);
        v.trim().parse().map_err(|_| {
            (
                Some(CSV_COLUMNS[k].into()),
                format!("expected a whole number >= 0, got {v:?}"),
            )
        })
    };
    let boolean = |k: usize| -> Result<bool, (Option<String>, String)> {
        match get(k).as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => Err((
                Some(CSV_COLUMNS[k].into()),
                format!("expected true or false, got {v:?}"),
            )),
        }
    };
    let list = |k: usize| -> Vec<BStr<'a>> {
        match get(k) {
            None => Vec::new(),
            Some(Cow::Borrowed(s)) => s
                .split_whitespace()
                .map(|x| BStr(Cow::Borrowed(x)))
                .collect(),
            Some(Cow::Owned(s)) => s
                .split_whitespace()
                .map(|x| BStr(Cow::Owned(x.to_string())))
                .collect(),
        }
    };
    let traffic = match get(9).as_deref().map(str::trim) {
        None | Some("") => 0.0,
        Some(v) => v.parse().map_err(|_| {
            (
                Some("traffic".to_string()),
                format!("expected a number, got {v:?}"),
            )
        })?,
    };
    let wparts = [get(11), get(12), get(13)];
    let window = match wparts
        .iter()
        .filter(|p| p.as_deref().is_some_and(|s| !s.is_empty()))
        .count()
    {
        0 => None,
        3 => Some(Window::new(
            wparts[0].as_deref().unwrap_or(""),
            wparts[1].as_deref().unwrap_or(""),
            wparts[2].as_deref().unwrap_or(""),
        )),
        _ => {
            return Err((
                Some("window_start".into()),
                "window_start, window_end and window_tz go together".into(),
            ))
        }
    };
    let pin = match get(14).as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<Pin>()
                .map_err(|e| (Some("pin".to_string()), e.to_string()))?,
        ),
    };
    Ok(SiteRow {
        id: req(0),
        login: req(1),
        domains: list(2),
        home: req(3),
        filer: req(4),
        cluster: req(5),
        bytes: num(6)?,
        files: num(7)?,
        dns_hosted: boolean(8)?,
        traffic,
        databases: list(10),
        window,
        pin,
        excluded: boolean(15)?,
    })
}

/// Why a CSV line does not split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum CsvLineError {
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("unterminated quoted field")]
    UnterminatedQuote,
    #[error("unexpected text after a quoted field")]
    TextAfterQuote,
}

/// Splits one CSV line (RFC 4180 quoting, no newlines inside fields).
fn split_csv(text: &[u8]) -> Result<Vec<Cow<'_, str>>, CsvLineError> {
    let s = std::str::from_utf8(text).map_err(|_| CsvLineError::NotUtf8)?;
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if let Some(q) = rest.strip_prefix('"') {
            let mut val = String::new();
            let mut r = q;
            loop {
                match r.find('"') {
                    None => return Err(CsvLineError::UnterminatedQuote),
                    Some(i) => {
                        val.push_str(&r[..i]);
                        r = &r[i + 1..];
                        if let Some(x) = r.strip_prefix('"') {
                            val.push('"');
                            r = x;
                        } else {
                            break;
                        }
                    }
                }
            }
            out.push(Cow::Owned(val));
            match r.strip_prefix(',') {
                Some(x) => rest = x,
                None if r.is_empty() => return Ok(out),
                None => return Err(CsvLineError::TextAfterQuote),
            }
        } else {
            match rest.find(',') {
                Some(i) => {
                    out.push(Cow::Borrowed(&rest[..i]));
                    rest = &rest[i + 1..];
                }
                None => {
                    out.push(Cow::Borrowed(rest));
                    return Ok(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{split_csv, CsvLineError};

    #[test]
    fn csv_quotes() {
        let f = split_csv(br#"a,"b,c","d""e",,f"#).unwrap();
        assert_eq!(f, vec!["a", "b,c", "d\"e", "", "f"]);
        assert_eq!(split_csv(br#"a,"b"#), Err(CsvLineError::UnterminatedQuote));
        assert_eq!(split_csv(br#""a"b"#), Err(CsvLineError::TextAfterQuote));
        assert_eq!(split_csv(b"\xff"), Err(CsvLineError::NotUtf8));
    }
}
