//! The nodes a shared store's URL names, and connecting to the first one that answers: one
//! MariaDB server (`mysql://user@host:port/db`) or the nodes of one Galera cluster
//! (`mysql://user@host:port,host:port,host:port/db`), tried in the URL's order. The proxy's
//! shared route store ([`crate::route_store::SharedStore`]) and the migrator's MariaDB journal
//! both go through here, so both fail over the same way.

use mysql_async::{Conn, Opts};
use std::future::Future;

/// Why a store URL cannot be used (the URL itself is not repeated: it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("{0}")]
    BadUrl(#[from] mysql_async::UrlError),
    #[error("the URL carries a password")]
    InlinePassword,
    #[error("the URL names no database")]
    NoDatabase,
}

/// Every node of `rest`, what follows `mysql://`: `[user@]host[:port][,host[:port]…]/db[?query]`.
/// Each node gets the same account, database and query parameters; none may carry a password
/// (the callers read it from a file) and the database must be named.
pub fn parse(rest: &str) -> Result<Vec<Opts>, NodesError> {
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (rest, String::new()),
    };
    let (authority, path) = base.split_at(base.find('/').unwrap_or(base.len()));
    let (user, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    if user.contains(':') {
        return Err(NodesError::InlinePassword);
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let opts = Opts::from_url(&format!("mysql://{user}{host}{path}{query}"))?;
        if opts.pass().is_some() {
            return Err(NodesError::InlinePassword);
        }
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(NodesError::NoDatabase);
        }
        nodes.push(opts);
    }
    Ok(nodes)
}

/// `mysql://host:port,host:port/db`: the nodes as messages show them (never a password).
pub fn name(nodes: &[Opts]) -> String {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|o| format!("{}:{}", o.ip_or_hostname(), o.tcp_port()))
        .collect();
    let db = nodes.first().and_then(|o| o.db_name()).unwrap_or("");
    format!("mysql://{}/{db}", hosts.join(","))
}

/// Connects to the first of `nodes` that answers, trying them in order from `start` (and
/// around); returns its index and the connection `connect` opened (with the caller's session
/// set-up). A server's refusal (the login, the database) would be the same on every node of
/// one cluster: it is returned at once; otherwise the last node's error.
pub async fn connect_first<'n, F, Fut>(
    nodes: &'n [Opts],
    start: usize,
    mut connect: F,
) -> Result<(usize, Conn), mysql_async::Error>
where
    F: FnMut(&'n Opts) -> Fut,
    Fut: Future<Output = Result<Conn, mysql_async::Error>>,
{
    let mut last = None;
    for k in 0..nodes.len() {
        let i = (start + k) % nodes.len();
        match connect(&nodes[i]).await {
            Ok(c) => return Ok((i, c)),
            Err(e @ mysql_async::Error::Server(_)) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| mysql_async::Error::Other("the store URL names no server".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_the_account_database_and_parameters() {
        let n = parse("px@10.0.0.1:3306,10.0.0.2,10.0.0.3:3307/store?prefer_socket=false").unwrap();
        let hosts: Vec<(String, u16)> = n
            .iter()
            .map(|o| (o.ip_or_hostname().to_string(), o.tcp_port()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.1".to_string(), 3306),
                ("10.0.0.2".to_string(), 3306),
                ("10.0.0.3".to_string(), 3307)
            ]
        );
        for o in &n {
            assert_eq!((o.user(), o.db_name()), (Some("px"), Some("store")));
            assert!(!o.prefer_socket());
        }
        assert_eq!(
            name(&n),
            "mysql://10.0.0.1:3306,10.0.0.2:3306,10.0.0.3:3307/store"
        );
        assert_eq!(parse("px@h/db").unwrap().len(), 1);
    }

    #[test]
    fn a_password_in_the_url_or_no_database_is_refused() {
        for (url, want) in [
            ("px:hunter2@h1,h2/db", "the URL carries a password"),
            ("px@h1,h2", "the URL names no database"),
            ("px@h1,h2/", "the URL names no database"),
        ] {
            let e = parse(url).unwrap_err().to_string();
            assert_eq!(e, want, "{url}");
            assert!(!e.contains("hunter2"));
        }
    }

    /// Every node tried once from `start` around; a login refusal stops at once.
    #[tokio::test]
    async fn connects_to_the_first_node_that_answers_from_start() {
        let nodes = parse("px@127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/db").unwrap();
        let tried = std::sync::Mutex::new(Vec::new());
        let r = connect_first(&nodes, 1, |o| {
            tried.lock().unwrap().push(o.tcp_port());
            async { Err(mysql_async::Error::Other("down".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(*tried.lock().unwrap(), [2, 3, 1]);
        tried.lock().unwrap().clear();
        let refused = connect_first(&nodes, 0, |o| {
            tried.lock().unwrap().push(o.tcp_port());
            async {
                Err(mysql_async::Error::Server(mysql_async::ServerError {
                    code: 1045,
                    message: "Access denied".into(),
                    state: "28000".into(),
                }))
            }
        })
        .await;
        assert!(matches!(refused, Err(mysql_async::Error::Server(_))));
        assert_eq!(*tried.lock().unwrap(), [1]);
    }
}
