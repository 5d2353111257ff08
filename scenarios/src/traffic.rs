//! The bounded traffic generator, run inside the `client` namespace (so names resolve through
//! the lab's Knot): HTTP reads, writes and read-your-write checks through each site's DNS name
//! (→ VIP → HAProxy → nginx/php → MariaDB), and SQL reads and writes through the old DB
//! hostname. Every request's result goes to a JSONL log; every acknowledged write carries its
//! token, so `check` can prove that no acknowledged write was lost.
//!
//! HTTP goes through `drivers::http`, one client per site that keeps no connection: every
//! request looks the name up and connects again, as a new visitor does, and takes 15 s at most.
//! The blocking exchange runs on tokio's blocking pool; the workers stay async (SQL is
//! `mysql_async`).

use crate::sites::XorShift;
use crate::state::LabState;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drivers::http::{HttpClient, HttpError, Method};

use crate::error::{LabError, Result};

/// How much traffic, and which mix (weights).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficSpec {
    /// Hard stop, seconds.
    pub duration_secs: u64,
    /// Hard stop, requests.
    pub max_requests: u64,
    pub concurrency: usize,
    /// Overall request rate limit (0 = as fast as the workers go).
    pub rate_per_sec: u64,
    pub http_read: u32,
    pub http_write: u32,
    pub http_verify: u32,
    pub sql_read: u32,
    pub sql_write: u32,
    /// `GET https://<domain>/?op=read` (lab with `--artifacts`): the chain verified against
    /// the lab CA and the name against the site's; a wrong certificate is a failed request.
    pub https_read: u32,
    pub seed: u64,
    /// Stop (like the deadline) once this file exists: a scenario keeps the traffic running
    /// for as long as its migration takes.
    pub stop_file: Option<std::path::PathBuf>,
    /// The first this many sites also get a writer of their own, through the old database
    /// hostname (the sql-proxy), at `hot_writes_per_sec` each, on top of the mix: the busy
    /// customers whose databases must move while written.
    pub hot_sites: usize,
    pub hot_writes_per_sec: u64,
    /// Weight of `web_rules` checks (a lab with artifacts): the site's redirect (status and
    /// `Location`), its header on `/?op=read`, and its `/?op=phpinfo` fingerprint equal to its
    /// pool settings. 0 by default: a scenario without it runs as before.
    pub web_rules: u32,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            duration_secs: 10,
            max_requests: 2_000,
            concurrency: 8,
            rate_per_sec: 0,
            http_read: 40,
            http_write: 20,
            http_verify: 15,
            sql_read: 15,
            sql_write: 10,
            https_read: 0,
            seed: 1,
            stop_file: None,
            hot_sites: 0,
            hot_writes_per_sec: 0,
            web_rules: 0,
        }
    }
}

/// Kinds of requests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    HttpRead,
    HttpWrite,
    HttpVerify,
    SqlRead,
    SqlWrite,
    HttpsRead,
    /// The site's web rules and PHP fingerprint, as served now ([`crate::web_artifacts`]).
    WebRules,
}

impl Op {
    /// True for requests that create data (their token must survive).
    pub fn is_write(self) -> bool {
        matches!(self, Op::HttpWrite | Op::SqlWrite)
    }
}

/// One line of the traffic log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    pub seq: u64,
    /// Milliseconds since the start of the run.
    pub t_ms: u64,
    /// Unix time (ms) the request started, to compare with the migrator's journal.
    #[serde(default)]
    pub at_ms: u64,
    pub op: Op,
    pub site: String,
    pub token: Option<String>,
    /// For writes: acknowledged. For reads: answered correctly.
    pub ok: bool,
    pub status: Option<u16>,
    pub ms: f64,
    pub error: Option<String>,
    /// Web server address that answered (`SERVER_ADDR`), to see which DC served.
    pub server: Option<String>,
}

/// Totals printed at the end of a run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TrafficSummary {
    pub requests: u64,
    pub failed: u64,
    pub acked_writes: u64,
    pub by_op: BTreeMap<String, (u64, u64)>,
    pub secs: f64,
}

/// How long one request may take, all told (a request past it is a failure in the log).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The HTTP client of one site, by its DNS name: every request resolves the name and connects
/// again (no connection kept), as a new visitor does, so the traffic sees each DNS and
/// load-balancer change the moment it is made.
fn site_client(domain: &str) -> Result<HttpClient> {
    Ok(HttpClient::new(&format!("http://{domain}"), REQUEST_TIMEOUT)?.without_keep_alive())
}

/// The HTTPS client of one site (like [`site_client`]): the server's chain must lead to the
/// lab CA `ca` and name `domain` (rustls), else the request fails with rustls' reason.
fn site_https_client(domain: &str, ca: &Path) -> Result<HttpClient> {
    Ok(
        HttpClient::new(&format!("https://{domain}"), REQUEST_TIMEOUT)?
            .with_ca_file(ca)?
            .without_keep_alive(),
    )
}

/// One request to a site's PHP app (through DNS → VIP → HAProxy → nginx/php); the status and
/// the JSON object it answers with, whatever the status. The blocking exchange runs on
/// tokio's blocking pool.
async fn http(
    client: &HttpClient,
    method: Method,
    path: &str,
    body: &str,
) -> Result<(u16, serde_json::Value)> {
    let mut req = client.request(method, path);
    if method != Method::Get {
        req = req.body("text/plain", body);
    }
    let answer = tokio::task::spawn_blocking(move || req.send())
        .await
        .map_err(|e| LabError::Internal(format!("HTTP request task: {e}")))??;
    let status = answer.status;
    let text = answer.text();
    let bad = |message: String| {
        LabError::Http(HttpError::Decode {
            method,
            url: client.url(path),
            message: format!("HTTP {status}: {message}"),
        })
    };
    // The app's answer is one JSON object; anything printed around it (a PHP notice) is
    // ignored, as it always was.
    let json = match (text.find('{'), text.rfind('}')) {
        (Some(a), Some(b)) if b > a => {
            serde_json::from_str(&text[a..=b]).map_err(|e| bad(format!("bad JSON: {e}")))?
        }
        _ => return Err(bad(format!("no JSON body: {}", text.trim()))),
    };
    Ok((status, json))
}

struct Site {
    login: String,
    /// Its lab state when it has web rules or PHP settings (a lab with artifacts).
    state: Option<crate::state::SiteState>,
    /// `http://{domain}`, a new connection per request.
    http: HttpClient,
    /// `https://{domain}` trusting the lab CA only (a lab with `--artifacts`).
    https: Option<HttpClient>,
    db: String,
    user: String,
    pass: String,
    /// The DB hostname its `config.php` names (the customer's code connects there).
    sql_host: String,
}

struct Shared {
    sites: Vec<Site>,
    sql_port: u16,
    spec: TrafficSpec,
    run_tag: String,
    counter: AtomicU64,
    start: Instant,
    log: Mutex<std::io::BufWriter<std::fs::File>>,
    /// Acknowledged HTTP write tokens per site, for read-your-write checks.
    acked: Mutex<HashMap<usize, Vec<String>>>,
    summary: Mutex<TrafficSummary>,
}

/// Runs the traffic against the lab described by `state`, logging to `log_path`.
pub async fn run(state: &LabState, spec: &TrafficSpec, log_path: &Path) -> Result<TrafficSummary> {
    let pw_data = std::fs::read(&state.site_secrets).map_err(LabError::io(
        "reading the site passwords",
        &state.site_secrets,
    ))?;
    let passwords: BTreeMap<String, String> =
        serde_json::from_slice(&pw_data).map_err(|e| LabError::Config {
            path: state.site_secrets.clone(),
            message: e.to_string(),
        })?;
    let sites = state
        .sites
        .iter()
        .map(|s| {
            Ok(Site {
                login: s.login.clone(),
                state: (s.php.is_some() || !s.web_rules.is_empty()).then(|| s.clone()),
                http: site_client(&s.domain)?,
                https: state
                    .tls
                    .as_ref()
                    .map(|t| site_https_client(&s.domain, &t.ca))
                    .transpose()?,
                db: s.database.clone(),
                user: s.db_user.clone(),
                pass: passwords.get(&s.db_user).cloned().unwrap_or_default(),
                sql_host: s
                    .sql_host
                    .clone()
                    .unwrap_or_else(|| state.old.sql_hostname.clone()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if sites.is_empty() {
        return Err(LabError::Missing("sites"));
    }
    let file = std::fs::File::create(log_path)
        .map_err(LabError::io("creating the traffic log", log_path))?;
    let shared = Arc::new(Shared {
        sites,
        sql_port: state.old.sql_port,
        spec: spec.clone(),
        run_tag: format!("{}{}", state.run_id, std::process::id()),
        counter: AtomicU64::new(0),
        start: Instant::now(),
        log: Mutex::new(std::io::BufWriter::new(file)),
        acked: Mutex::new(HashMap::new()),
        summary: Mutex::new(TrafficSummary::default()),
    });
    let mut tasks = Vec::new();
    for w in 0..spec.concurrency.max(1) {
        let sh = shared.clone();
        tasks.push(tokio::spawn(async move { worker(sh, w).await }));
    }
    if spec.hot_writes_per_sec > 0 {
        for idx in 0..spec.hot_sites.min(shared.sites.len()) {
            let sh = shared.clone();
            tasks.push(tokio::spawn(async move { hot_writer(sh, idx).await }));
        }
    }
    for t in tasks {
        t.await
            .map_err(|e| LabError::Internal(format!("traffic worker: {e}")))?;
    }
    shared
        .log
        .lock()
        .expect("log lock")
        .flush()
        .map_err(LabError::io("writing the traffic log", log_path))?;
    let mut summary = shared.summary.lock().expect("summary lock").clone();
    summary.secs = shared.start.elapsed().as_secs_f64();
    Ok(summary)
}

fn pick_op(spec: &TrafficSpec, rng: &mut XorShift) -> Op {
    let weights = [
        (Op::HttpRead, spec.http_read),
        (Op::HttpWrite, spec.http_write),
        (Op::HttpVerify, spec.http_verify),
        (Op::SqlRead, spec.sql_read),
        (Op::SqlWrite, spec.sql_write),
        (Op::HttpsRead, spec.https_read),
        (Op::WebRules, spec.web_rules),
    ];
    let total: u64 = weights.iter().map(|w| w.1 as u64).sum();
    let mut x = rng.below(total.max(1));
    for (op, w) in weights {
        if x < w as u64 {
            return op;
        }
        x -= w as u64;
    }
    Op::HttpRead
}

async fn worker(sh: Arc<Shared>, w: usize) {
    let mut rng = XorShift::new(sh.spec.seed.wrapping_mul(7919) + w as u64);
    let deadline = Duration::from_secs(sh.spec.duration_secs);
    loop {
        if sh.start.elapsed() >= deadline {
            return;
        }
        if sh.spec.stop_file.as_ref().is_some_and(|f| f.exists()) {
            return;
        }
        let seq = sh.counter.fetch_add(1, Ordering::SeqCst);
        if seq >= sh.spec.max_requests {
            return;
        }
        if sh.spec.rate_per_sec > 0 {
            // Request `seq` is due at seq / rate seconds after the start.
            let due = Duration::from_secs_f64(seq as f64 / sh.spec.rate_per_sec as f64);
            if due >= deadline {
                return;
            }
            tokio::time::sleep(due.saturating_sub(sh.start.elapsed())).await;
        }
        let idx = rng.below(sh.sites.len() as u64) as usize;
        let mut op = pick_op(&sh.spec, &mut rng);
        let verify_token = if op == Op::HttpVerify {
            let acked = sh.acked.lock().expect("acked lock");
            acked.get(&idx).and_then(|v| v.last().cloned())
        } else {
            None
        };
        if op == Op::HttpVerify && verify_token.is_none() {
            op = Op::HttpRead;
        }
        let token = match op {
            Op::HttpWrite | Op::SqlWrite => Some(format!("{}-{w}-{seq}", sh.run_tag)),
            Op::HttpVerify => verify_token,
            _ => None,
        };
        issue(&sh, seq, idx, op, token).await;
    }
}

/// Writes to site `idx`'s database through the old hostname at `hot_writes_per_sec`, until
/// the deadline or the stop file; each write is logged (and checked) like the mix's.
async fn hot_writer(sh: Arc<Shared>, idx: usize) {
    let deadline = Duration::from_secs(sh.spec.duration_secs);
    let every = Duration::from_secs_f64(1.0 / sh.spec.hot_writes_per_sec.max(1) as f64);
    let mut n = 0u64;
    loop {
        if sh.start.elapsed() >= deadline || sh.spec.stop_file.as_ref().is_some_and(|f| f.exists())
        {
            return;
        }
        let seq = sh.counter.fetch_add(1, Ordering::SeqCst);
        let token = format!("{}-hot{idx}-{n}", sh.run_tag);
        n += 1;
        let t0 = Instant::now();
        issue(&sh, seq, idx, Op::SqlWrite, Some(token)).await;
        tokio::time::sleep(every.saturating_sub(t0.elapsed())).await;
    }
}

/// Sends one request, logs it and counts it.
async fn issue(sh: &Shared, seq: u64, idx: usize, op: Op, token: Option<String>) {
    let t0 = Instant::now();
    let t_ms = sh.start.elapsed().as_millis() as u64;
    let at_ms = unix_ms();
    let result = tokio::time::timeout(
        Duration::from_secs(15),
        request(sh, idx, op, token.as_deref()),
    )
    .await
    .unwrap_or_else(|_| Err((None, "timed out after 15 s".into())));
    let (ok, status, error, server) = match result {
        Ok((status, server)) => (true, status, None, server),
        Err((status, e)) => (false, status, Some(e), None),
    };
    if ok && op == Op::HttpWrite {
        if let Some(t) = &token {
            sh.acked
                .lock()
                .expect("acked lock")
                .entry(idx)
                .or_default()
                .push(t.clone());
        }
    }
    let rec = LogRecord {
        seq,
        t_ms,
        at_ms,
        op,
        site: sh.sites[idx].login.clone(),
        token,
        ok,
        status,
        ms: t0.elapsed().as_secs_f64() * 1000.0,
        error,
        server,
    };
    {
        let mut s = sh.summary.lock().expect("summary lock");
        s.requests += 1;
        let e = s.by_op.entry(format!("{op:?}")).or_default();
        e.0 += 1;
        if !ok {
            e.1 += 1;
            s.failed += 1;
        } else if op.is_write() {
            s.acked_writes += 1;
        }
    }
    if let Ok(line) = serde_json::to_string(&rec) {
        let mut log = sh.log.lock().expect("log lock");
        let _ = writeln!(log, "{line}");
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A request's outcome for the log: (status, server) when it did what was asked, (status, what went
/// wrong) otherwise.
type ReqResult = std::result::Result<(Option<u16>, Option<String>), (Option<u16>, String)>;

async fn request(sh: &Shared, idx: usize, op: Op, token: Option<&str>) -> ReqResult {
    let site = &sh.sites[idx];
    match op {
        Op::HttpsRead => {
            let Some(client) = &site.https else {
                return Err((None, "no HTTPS in this lab (lab up --artifacts)".into()));
            };
            let (status, json) = http(client, Method::Get, "/?op=read", "")
                .await
                .map_err(|e| (None, e.to_string()))?;
            let server = json["server"].as_str().map(str::to_string);
            if status != 200 || json["ok"] != serde_json::Value::Bool(true) {
                return Err((Some(status), format!("HTTPS {status}: {json}")));
            }
            if json["site"].as_str() != Some(site.login.as_str()) {
                return Err((Some(status), format!("wrong site answered: {json}")));
            }
            Ok((Some(status), server))
        }
        Op::HttpRead | Op::HttpWrite | Op::HttpVerify => {
            let (method, path, body) = match op {
                Op::HttpRead => (Method::Get, "/?op=read".to_string(), String::new()),
                Op::HttpWrite => (
                    Method::Post,
                    format!("/?op=write&token={}", token.unwrap_or("")),
                    format!("upload from the lab client for {}", site.login),
                ),
                _ => (
                    Method::Get,
                    format!("/?op=get&token={}", token.unwrap_or("")),
                    String::new(),
                ),
            };
            let (status, json) = http(&site.http, method, &path, &body)
                .await
                .map_err(|e| (None, e.to_string()))?;
            let server = json["server"].as_str().map(str::to_string);
            if status != 200 || json["ok"] != serde_json::Value::Bool(true) {
                return Err((Some(status), format!("HTTP {status}: {json}")));
            }
            if json["site"].as_str() != Some(site.login.as_str()) {
                return Err((Some(status), format!("wrong site answered: {json}")));
            }
            if op == Op::HttpVerify && (json["found"] != true || json["file"] != true) {
                return Err((
                    Some(status),
                    format!("acknowledged write not visible on the next read: {json}"),
                ));
            }
            Ok((Some(status), server))
        }
        Op::WebRules => web_rules_check(site)
            .await
            .map(|server| (Some(200), server))
            .map_err(|e| (None, e)),
        Op::SqlRead | Op::SqlWrite => {
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname(site.sql_host.clone())
                .tcp_port(sh.sql_port)
                .user(Some(site.user.clone()))
                .pass(Some(site.pass.clone()))
                .db_name(Some(site.db.clone()));
            let mut conn = mysql_async::Conn::new(opts)
                .await
                .map_err(|e| (None, format!("connect {}: {e}", site.sql_host)))?;
            let res = if op == Op::SqlWrite {
                conn.exec_drop(
                    "INSERT INTO events (token, site, body) VALUES (?, ?, 'sql')",
                    (token.unwrap_or(""), site.login.as_str()),
                )
                .await
                .map(|_| ())
            } else {
                conn.query_first::<u64, _>("SELECT COUNT(*) FROM articles")
                    .await
                    .map(|_| ())
            };
            let _ = conn.disconnect().await;
            res.map(|_| (None, None)).map_err(|e| (None, e.to_string()))
        }
    }
}

/// A site's web rules and PHP fingerprint as served now, through its DNS name
/// ([`crate::web_artifacts::served_by`]): the answering server, or every difference in one
/// message.
async fn web_rules_check(site: &Site) -> std::result::Result<Option<String>, String> {
    let Some(state) = site.state.clone() else {
        return Err(format!(
            "{}: no web rules or PHP settings in the lab state (lab up without --artifacts)",
            site.login
        ));
    };
    let client = site.http.clone();
    let diffs = tokio::task::spawn_blocking(move || {
        crate::web_artifacts::served_by(&client, &state, false)
    })
    .await
    .map_err(|e| format!("web rules check task: {e}"))?;
    if diffs.is_empty() {
        Ok(None)
    } else {
        Err(format!("{}: {}", site.login, diffs.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_mix_follows_weights() {
        let spec = TrafficSpec {
            http_read: 0,
            http_write: 0,
            http_verify: 0,
            sql_read: 0,
            sql_write: 1,
            ..TrafficSpec::default()
        };
        let mut rng = XorShift::new(3);
        assert!((0..100).all(|_| pick_op(&spec, &mut rng) == Op::SqlWrite));
        // `web_rules` is off unless weighted, and only it when it alone is.
        let mut rng = XorShift::new(5);
        let d = TrafficSpec::default();
        assert_eq!(d.web_rules, 0);
        assert!((0..1000).all(|_| pick_op(&d, &mut rng) != Op::WebRules));
        let only = TrafficSpec {
            http_read: 0,
            http_write: 0,
            http_verify: 0,
            sql_read: 0,
            sql_write: 0,
            web_rules: 1,
            ..TrafficSpec::default()
        };
        assert!((0..100).all(|_| pick_op(&only, &mut rng) == Op::WebRules));
    }

    #[test]
    fn https_reads_only_when_weighted() {
        // Default weight 0: the mix of an existing scenario is unchanged, draw for draw.
        let spec = TrafficSpec::default();
        let old_mix = |rng: &mut XorShift| {
            let w = [40u64, 20, 15, 15, 10];
            let ops = [
                Op::HttpRead,
                Op::HttpWrite,
                Op::HttpVerify,
                Op::SqlRead,
                Op::SqlWrite,
            ];
            let mut x = rng.below(w.iter().sum());
            for (op, w) in ops.into_iter().zip(w) {
                if x < w {
                    return op;
                }
                x -= w;
            }
            unreachable!()
        };
        let (mut a, mut b) = (XorShift::new(9), XorShift::new(9));
        assert!((0..500).all(|_| pick_op(&spec, &mut a) == old_mix(&mut b)));
        let only = TrafficSpec {
            http_read: 0,
            http_write: 0,
            http_verify: 0,
            sql_read: 0,
            sql_write: 0,
            https_read: 3,
            ..TrafficSpec::default()
        };
        assert!((0..100).all(|_| pick_op(&only, &mut a) == Op::HttpsRead));
        let t: TrafficSpec = toml::from_str("https_read = 5").unwrap();
        assert_eq!((t.https_read, t.http_read), (5, 40));
    }
}

/// Result of probing one site from the client (`scenarios probe`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteProbe {
    pub site: String,
    pub read_ok: bool,
    pub write_ok: bool,
    /// The write was visible (row and upload file) on the next read.
    pub visible: bool,
    pub token: String,
    /// Absolute path the PHP code reported writing the upload to.
    pub upload_path: Option<String>,
    pub server: Option<String>,
    pub error: Option<String>,
}

/// For every site: a read, a write, and a read of that write, through its DNS name.
pub async fn probe_sites(state: &LabState) -> Vec<SiteProbe> {
    let mut out = Vec::new();
    for (i, s) in state.sites.iter().enumerate() {
        let token = format!("probe-{}-{i}", std::process::id());
        let mut p = SiteProbe {
            site: s.login.clone(),
            read_ok: false,
            write_ok: false,
            visible: false,
            token: token.clone(),
            upload_path: None,
            server: None,
            error: None,
        };
        let steps = async {
            let c = site_client(&s.domain)?;
            let (st, j) = http(&c, Method::Get, "/?op=read", "").await?;
            p.read_ok = st == 200 && j["ok"] == true && j["site"] == s.login.as_str();
            p.server = j["server"].as_str().map(str::to_string);
            let path = format!("/?op=write&token={token}");
            let (st, j) = http(&c, Method::Post, &path, "probe").await?;
            p.write_ok = st == 200 && j["ok"] == true;
            p.upload_path = j["file"].as_str().map(str::to_string);
            let path = format!("/?op=get&token={token}");
            let (st, j) = http(&c, Method::Get, &path, "").await?;
            p.visible = st == 200 && j["found"] == true && j["file"] == true;
            Ok::<(), LabError>(())
        };
        if let Err(e) = steps.await {
            p.error = Some(e.to_string());
        }
        out.push(p);
    }
    out
}
