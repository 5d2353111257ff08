//! A fleet's artifacts in the inventory: `artifacts.jsonl` beside `sites.jsonl`, one line per
//! site that has any, `{"site": "<id>", "artifacts": {…}}` with the site spec's `artifacts`
//! section as its value (same fields, same checks). Optional: an inventory without the file
//! has no artifacts. The planner does not read it (the waves do not depend on it), so it is
//! not part of the inventory checksum a plan records; `migrator inventory check` loads and
//! checks it with the rest, each problem named by file, line and field like the other files.
//!
//! Certificates are named by path and read at prepare ([`super::check_tls`]), not here: an
//! inventory is checked wherever it is, often far from the key files.

use super::{Artifacts, CronJob, Header, PhpSpec, PoolSettings, Redirect, TlsSpec, WebRule};
use planner::generate::Rng;
use planner::RowError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// The file's name inside an inventory directory.
pub const FILE: &str = "artifacts.jsonl";

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub site: String,
    pub artifacts: Artifacts,
}

/// The artifacts of the sites that have any, by site id.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sites: HashMap<String, Artifacts>,
}

/// How many of each the loaded file holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sites: u64,
    pub cron_jobs: u64,
    pub certificates: u64,
    pub php_pools: u64,
    pub web_rules: u64,
}

impl Counts {
    fn add(&mut self, a: &Artifacts) {
        self.sites += 1;
        self.cron_jobs += a.cron.len() as u64;
        self.certificates += a.tls.len() as u64;
        self.php_pools += u64::from(a.php.is_some());
        self.web_rules += a.web_rules.len() as u64;
    }
}

impl Loaded {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for a in self.sites.values() {
            c.add(a);
        }
        c
    }
}

/// Reads `DIR/artifacts.jsonl` when it exists (`Ok(None)` when it does not). `known` says
/// whether a site id is in the inventory's sites file. Problems: at most `max_errors`, in
/// line order, with `truncated` when reading stopped at the limit; an unreadable file is one
/// problem at line 0.
pub fn load(
    dir: &Path,
    known: impl Fn(&str) -> bool,
    max_errors: usize,
) -> Result<Option<Loaded>, (Vec<RowError>, bool)> {
    let mut out = Loaded::default();
    let found = scan(dir, known, max_errors, |site, a| {
        out.sites.insert(site, a);
    })?;
    Ok(found.then_some(out))
}

/// [`load`]'s checks without keeping the sections (what `inventory check` needs at 3M sites:
/// the counts), `Ok(None)` when there is no file.
pub fn check(
    dir: &Path,
    known: impl Fn(&str) -> bool,
    max_errors: usize,
) -> Result<Option<Counts>, (Vec<RowError>, bool)> {
    let mut c = Counts::default();
    let found = scan(dir, known, max_errors, |_, a| c.add(&a))?;
    Ok(found.then_some(c))
}

/// Reads and checks every line, handing each good one to `each`; `Ok(false)`: no file.
fn scan(
    dir: &Path,
    known: impl Fn(&str) -> bool,
    max_errors: usize,
    mut each: impl FnMut(String, Artifacts),
) -> Result<bool, (Vec<RowError>, bool)> {
    let path = dir.join(FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err((vec![row(0, None, format!("cannot read: {e}"))], false)),
    };
    let max_errors = max_errors.max(1);
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut errs = Vec::new();
    for (i, text) in std::io::BufReader::new(file).lines().enumerate() {
        let n = i as u64 + 1;
        if errs.len() >= max_errors {
            return Err((errs, true));
        }
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                errs.push(row(n, None, format!("cannot read the line: {e}")));
                break;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(&text) {
            Err((field, m)) => errs.push(row(n, field, m)),
            Ok(l) => {
                if !known(&l.site) {
                    errs.push(row(
                        n,
                        Some("site".into()),
                        format!("{:?}: no such site in the sites file", l.site),
                    ));
                } else if let Some(first) = first_line.get(&l.site) {
                    errs.push(row(
                        n,
                        Some("site".into()),
                        format!("{:?}: already given on line {first}", l.site),
                    ));
                } else {
                    first_line.insert(l.site.clone(), n);
                    each(l.site, l.artifacts);
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(true)
    } else {
        let truncated = errs.len() > max_errors;
        errs.truncate(max_errors);
        Err((errs, truncated))
    }
}

fn row(line: u64, field: Option<String>, message: String) -> RowError {
    RowError {
        file: FILE.into(),
        line,
        field,
        message,
    }
}

/// One line, parsed and checked: the error names the field (`artifacts.cron[0].schedule`).
fn parse_line(text: &str) -> Result<Line, (Option<String>, String)> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let l: Line = serde_path_to_error::deserialize(de).map_err(|e| {
        let p = e.path().to_string();
        let field = (p != ".").then_some(p);
        (field, e.inner().to_string())
    })?;
    super::validate(&l.artifacts).map_err(|(f, m)| (Some(format!("artifacts.{f}")), m))?;
    Ok(l)
}

/// Shares of the synthetic fleet (per site): the generator's assumptions, written down.
/// Sites with jobs: 35 % (1–3 each: hourly, daily or every 5 minutes); a PHP pool: 80 %
/// (8.2: 55 %, 8.1: 15 %, 7.4: 20 %, 5.6: 10 % — old versions the new side maps); web rules:
/// 20 % (a redirect, sometimes a header); a certificate per domain: 60 % (files under
/// `/etc/hostmove/tls/`, not written: the inventory names them).
pub fn generate(
    dir: &Path,
    seed: u64,
    sites: &[(String, String, Vec<String>)],
) -> std::io::Result<Counts> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    let mut rng = Rng::new(seed ^ 0xa27f_ac75);
    let mut c = Counts::default();
    const SCHEDULES: [&str; 3] = ["0 * * * *", "30 3 * * *", "*/5 * * * *"];
    const PHP: [(&str, f64); 4] = [("8.2", 0.55), ("8.1", 0.70), ("7.4", 0.90), ("5.6", 1.0)];
    for (id, login, domains) in sites {
        let mut a = Artifacts::default();
        if rng.f64() < 0.35 {
            for j in 0..rng.range(1, 4) {
                a.cron.push(CronJob {
                    name: format!("job{j}"),
                    schedule: SCHEDULES[rng.range(0, 3) as usize].into(),
                    command: format!("php /homez/{login}/www/cron{j}.php"),
                    user: "www-data".into(),
                });
            }
        }
        if rng.f64() < 0.80 {
            let x = rng.f64();
            let version = PHP.iter().find(|(_, p)| x < *p).map_or("8.2", |(v, _)| v);
            a.php = Some(PhpSpec {
                version: version.into(),
                map_to: (version == "5.6").then(|| "7.4".into()),
                fpm_root: None,
                user: None,
                listen: None,
                listen_owner: None,
                probe: None,
                pool: PoolSettings {
                    memory_limit: Some(format!("{}M", 64 << rng.range(0, 3))),
                    max_execution_time: Some(30),
                    upload_max_filesize: Some("16M".into()),
                    ..Default::default()
                },
            });
        }
        if rng.f64() < 0.20 {
            a.web_rules.push(WebRule::Redirect(Redirect {
                from: "/old".into(),
                to: "/".into(),
                status: 301,
            }));
            if rng.f64() < 0.5 {
                a.web_rules.push(WebRule::Header(Header {
                    name: "X-Frame-Options".into(),
                    value: "SAMEORIGIN".into(),
                }));
            }
        }
        if rng.f64() < 0.60 {
            for d in domains {
                a.tls.push(TlsSpec {
                    domain: d.clone(),
                    cert: format!("/etc/hostmove/tls/{d}.crt").into(),
                    key: format!("/etc/hostmove/tls/{d}.key").into(),
                    ca: None,
                });
            }
        }
        if a.is_empty() {
            continue;
        }
        c.add(&a);
        serde_json::to_writer(
            &mut w,
            &Line {
                site: id.clone(),
                artifacts: a,
            },
        )?;
        w.write_all(b"\n")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join(FILE), text).unwrap();
    }

    fn known(s: &str) -> bool {
        s.starts_with("site")
    }

    #[test]
    fn absent_file_is_no_artifacts() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path(), known, 10).unwrap().is_none());
    }

    #[test]
    fn loads_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let a = serde_json::to_string(&super::super::sample("site1")).unwrap();
        write(
            d.path(),
            &format!("{{\"site\":\"site1\",\"artifacts\":{a}}}\n\n{{\"site\":\"site2\",\"artifacts\":{{}}}}\n"),
        );
        let l = load(d.path(), known, 10).unwrap().unwrap();
        assert_eq!(l.sites.len(), 2);
        assert_eq!(
            l.counts(),
            Counts {
                sites: 2,
                cron_jobs: 1,
                certificates: 0,
                php_pools: 1,
                web_rules: 2
            }
        );
    }

    #[test]
    fn problems_name_line_and_field() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            concat!(
                "{\"site\":\"site1\",\"artifacts\":{\"cron\":[{\"name\":\"a\",\"schedule\":\"61 * * * *\",\"command\":\"x\",\"user\":\"www-data\"}]}}\n",
                "{\"site\":\"nosuch\",\"artifacts\":{}}\n",
                "{\"site\":\"site3\",\"artifacts\":{\"php\":{\"version\":\"9.9\"}}}\n",
                "{\"site\":\"site4\",\"artifacts\":{}}\n",
                "{\"site\":\"site4\",\"artifacts\":{}}\n",
                "{\"site\":\"site5\",\"artifacts\":{\"tls\":[{\"domain\":\"a.test\",\"cert\":\"/c\"}]}}\n",
                "{\"site\":\"site6\",\"artifacts\":{\"colour\":1}}\n",
                "not json\n",
            ),
        );
        let (errs, truncated) = load(d.path(), known, 20).unwrap_err();
        assert!(!truncated);
        let got: Vec<(u64, Option<&str>)> =
            errs.iter().map(|e| (e.line, e.field.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                (1, Some("artifacts.cron[0].schedule")),
                (2, Some("site")),
                (3, Some("artifacts.php.version")),
                (5, Some("site")),
                (6, Some("artifacts.tls[0]")),
                (7, Some("artifacts.colour")),
                (8, None),
            ]
        );
        assert!(
            errs[3].message.contains("already given on line 4"),
            "{}",
            errs[3]
        );
        assert!(errs[4].message.contains("key"), "{}", errs[4]);
        assert!(errs.iter().all(|e| e.file == FILE));
        // The limit stops reading and says so.
        let (errs, truncated) = load(d.path(), known, 2).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(truncated);
    }

    #[test]
    fn generated_file_loads_clean_and_is_deterministic() {
        let d = tempfile::tempdir().unwrap();
        let sites: Vec<_> = (0..2000)
            .map(|i| {
                (
                    format!("site{i}"),
                    format!("login{i}"),
                    vec![format!("d{i}.example.test")],
                )
            })
            .collect();
        let c = generate(d.path(), 7, &sites).unwrap();
        let first = std::fs::read(d.path().join(FILE)).unwrap();
        assert_eq!(generate(d.path(), 7, &sites).unwrap(), c);
        assert_eq!(std::fs::read(d.path().join(FILE)).unwrap(), first);
        let l = load(d.path(), known, 10).unwrap().unwrap();
        assert_eq!(l.counts(), c);
        assert_eq!(check(d.path(), known, 10).unwrap(), Some(c));
        // The shares are near the documented ones.
        let share = |n: u64| n as f64 / sites.len() as f64;
        assert!((0.75..0.85).contains(&share(c.php_pools)), "{c:?}");
        assert!((0.55..0.65).contains(&share(c.certificates)), "{c:?}");
        assert!(c.cron_jobs > 0 && c.web_rules > 0, "{c:?}");
    }
}
