//! The run's outputs: `preflight.jsonl` (one [`SiteReport`] per line, sorted by site; what
//! `migrator plan --exclude-from` reads) and a static HTML report: the fleet summary by
//! reason, then every site that is not `ok` with each finding and its fix. Every value from
//! customers' trees or databases is HTML-escaped (a file name or a matched line can hold
//! markup); the page has no script.

use super::verdict::{FleetSummary, SiteReport, Verdict};
use super::{PreflightError, Result};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::Path;

fn io(path: &Path) -> impl Fn(std::io::Error) -> PreflightError + '_ {
    move |source| PreflightError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the reports as JSON lines (through a temporary file renamed into place).
pub fn write_jsonl(path: &Path, reports: &[SiteReport]) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
    for r in reports {
        serde_json::to_writer(&mut w, r).map_err(|e| io(&tmp)(e.into()))?;
        w.write_all(b"\n").map_err(io(&tmp))?;
    }
    w.into_inner()
        .map_err(|e| io(&tmp)(e.into_error()))?
        .sync_all()
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads `preflight.jsonl`; a bad line is an error naming the file and the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<SiteReport>> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| PreflightError::Config {
                file: path.display().to_string(),
                message: format!("line {}: {e}", i + 1),
            })?,
        );
    }
    Ok(out)
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Sites listed in the HTML report with their findings (the summary counts every site).
const MAX_SITES: usize = 5000;

/// The static HTML report.
pub fn html(reports: &[SiteReport], summary: &FleetSummary) -> String {
    let mut h = String::new();
    h.push_str(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Pre-flight report</title>\n\
         <style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}\
         .blocked{color:#b00}.warn{color:#a60}.ok{color:#070}code{white-space:pre-wrap}</style>\
         </head><body>\n<h1>Pre-flight report</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>{} sites: <span class=\"ok\">{} ok</span>, <span class=\"warn\">{} warn</span>, \
         <span class=\"blocked\">{} blocked</span>; {} files, {:.1} MiB scanned.</p>",
        summary.sites,
        summary.ok,
        summary.warn,
        summary.blocked,
        summary.files,
        summary.bytes as f64 / 1048576.0
    );
    h.push_str("<h2>By reason</h2>\n<table><tr><th>reason</th><th>severity</th><th>sites</th><th>findings</th></tr>\n");
    for (reason, c) in &summary.by_reason {
        let sev = c.severity.map_or("", |s| s.as_str());
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"{sev}\">{sev}</td><td>{}</td><td>{}</td></tr>",
            escape(reason),
            c.sites,
            c.findings
        );
    }
    h.push_str("</table>\n<h2>Sites</h2>\n");
    for (listed, r) in reports
        .iter()
        .filter(|r| r.verdict != Verdict::Ok)
        .enumerate()
    {
        if listed == MAX_SITES {
            let _ = writeln!(h, "<p>… more sites in preflight.jsonl</p>");
            break;
        }
        let v = r.verdict.as_str();
        let _ = writeln!(
            h,
            "<h3 id=\"site-{id}\">{id} <span class=\"{v}\">{v}</span></h3>\n\
             <p>predicted freeze {} ms; {} files read</p>\n\
             <table><tr><th>where</th><th>rule</th><th>severity</th><th>found</th><th>fix</th></tr>",
            r.predicted_freeze_ms,
            r.files.files,
            id = escape(&r.site),
        );
        for f in &r.findings {
            let s = f.severity.as_str();
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"{s}\">{s}</td>\
                 <td><code>{}</code></td><td>{}</td></tr>",
                escape(&f.at.to_string()),
                escape(&f.rule),
                escape(&f.found),
                escape(&f.fix)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

/// Writes the HTML report.
pub fn write_html(path: &Path, reports: &[SiteReport], summary: &FleetSummary) -> Result<()> {
    std::fs::write(path, html(reports, summary)).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::{Finding, Severity, Where};

    #[test]
    fn html_escapes_what_customers_wrote() {
        let r = SiteReport {
            site: "s<1>".into(),
            verdict: Verdict::Blocked,
            reasons: vec!["php.ereg".into()],
            predicted_freeze_ms: 500,
            findings: vec![Finding {
                rule: "php.ereg".into(),
                severity: Severity::Blocked,
                at: Where::File {
                    path: "<script>alert(1)</script>.php".into(),
                    line: 3,
                },
                found: "ereg(\"<img src=x onerror=alert(1)>\"".into(),
                fix: "f & g".into(),
            }],
            files: Default::default(),
            databases: vec![],
            home_stamp: 0,
        };
        let mut s = FleetSummary::default();
        s.add(&r);
        let page = html(std::slice::from_ref(&r), &s);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.php:3"));
        assert!(page.contains("s&lt;1&gt;"));
        assert!(page.contains("f &amp; g"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("preflight.jsonl");
        write_jsonl(&p, std::slice::from_ref(&r)).unwrap();
        assert_eq!(read_jsonl(&p).unwrap(), vec![r]);
        std::fs::write(&p, "{\"site\": 1}\n").unwrap();
        let e = read_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("preflight.jsonl") && e.contains("line 1"), "{e}");
    }
}
