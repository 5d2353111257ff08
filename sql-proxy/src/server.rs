//! Listeners: one accept loop per configured address (every old SQL endpoint), all feeding
//! the same shared routing state.
//!
//! The daemon runs sessions on [`Workers`]: one single-threaded runtime per core, each session
//! (client and backend socket) pinned to one of them round-robin. A session's relay then never
//! leaves its thread: no work stealing, no cross-thread wake-ups per query (the per-query cost
//! of a proxy hop is almost all syscalls and wake-ups, see BENCHMARKS.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::route::Shared;

/// Single-threaded runtimes, one per thread, that sessions are spread over.
pub struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` (at least 1) threads, each running its own single-threaded runtime for
    /// the life of the process.
    pub fn start(n: usize) -> std::io::Result<Arc<Self>> {
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("sql-proxy-w{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Arc::new(Self {
            handles,
            next: AtomicUsize::new(0),
        }))
    }

    fn pick(&self) -> &tokio::runtime::Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[i % self.handles.len()]
    }
}

/// Counts a new connection against the limits, or refuses it right here on the accept thread
/// (no task, no buffer): an address blocked for failed logins gets error 1129, one over
/// `max_connections` or `max_connections_per_ip` error 1040, written without waiting (a
/// client that does not read simply loses it) before the socket is closed.
fn admit(
    shared: &Shared,
    sock: &tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<crate::limits::ConnGuard> {
    let p = &shared.protect;
    let refusal = if let Some(left) = p.logins.ip_blocked(peer.ip()) {
        p.counters
            .refused_blocked_ip
            .fetch_add(1, Ordering::Relaxed);
        crate::limits::host_blocked(peer.ip(), left)
    } else {
        match p.conns.try_acquire(peer.ip()) {
            Ok(g) => return Some(g),
            Err(r) => {
                let c = match r {
                    crate::limits::ConnRefusal::Total => &p.counters.refused_max_connections,
                    crate::limits::ConnRefusal::PerIp => &p.counters.refused_per_ip,
                };
                c.fetch_add(1, Ordering::Relaxed);
                crate::limits::too_many_connections(r)
            }
        }
    };
    tracing::debug!(client = %peer, code = refusal.code, "connection refused");
    let mut out = bytes::BytesMut::new();
    crate::wire::encode_packet(&mut out, 0, &refusal.build());
    let _ = sock.try_write(&out);
    None
}

/// Binds every address first (so a bad one fails before any serves), then accepts on each.
/// Sessions run on the caller's runtime. Returns the bound addresses (port 0 resolved) and the
/// accept tasks.
pub async fn listen(
    shared: Arc<Shared>,
    addrs: &[SocketAddr],
) -> std::io::Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>)> {
    listen_on(shared, addrs, None).await
}

/// As [`listen`], running each session on one of `workers` when given.
pub async fn listen_on(
    shared: Arc<Shared>,
    addrs: &[SocketAddr],
    workers: Option<Arc<Workers>>,
) -> std::io::Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>)> {
    let mut listeners = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {a}: {e}")))?;
        listeners.push(l);
    }
    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for l in listeners {
        bound.push(l.local_addr()?);
        let shared = shared.clone();
        let workers = workers.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((sock, peer)) => {
                        let Some(conn) = admit(&shared, &sock, peer) else {
                            continue;
                        };
                        match &workers {
                            None => {
                                tokio::spawn(crate::session::serve(
                                    shared.clone(),
                                    sock,
                                    peer,
                                    conn,
                                ));
                            }
                            Some(w) => {
                                // A socket belongs to the runtime that registered it: hand the
                                // worker the plain socket and let it register there.
                                let sock = match sock.into_std() {
                                    Ok(s) => s,
                                    Err(e) => {
                                        tracing::warn!(error = %e, "accepted socket unusable");
                                        continue;
                                    }
                                };
                                let shared = shared.clone();
                                w.pick().spawn(async move {
                                    match tokio::net::TcpStream::from_std(sock) {
                                        Ok(sock) => {
                                            crate::session::serve(shared, sock, peer, conn).await
                                        }
                                        Err(e) => {
                                            tracing::warn!(error = %e, "accepted socket unusable")
                                        }
                                    }
                                });
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    Ok((bound, tasks))
}
