//! Listeners: one accept loop per configured address (every old SQL endpoint), all feeding
//! the same shared routing state.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::route::Shared;

/// Binds every address first (so a bad one fails before any serves), then accepts on each.
/// Returns the bound addresses (port 0 resolved) and the accept tasks.
pub async fn listen(
    shared: Arc<Shared>,
    addrs: &[SocketAddr],
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
        tasks.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((sock, peer)) => {
                        tokio::spawn(crate::session::serve(shared.clone(), sock, peer));
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
