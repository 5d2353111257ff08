//! Opens N logged-in connections to a MySQL endpoint and keeps them idle (for the RSS
//! benchmark). Usage: `idle_conns ADDR USER COUNT SECONDS`, password in `$IDLE_PASSWORD`.
//! Prints `ready N` once every connection is logged in.

use std::time::Duration;

use sql_proxy::auth::stage1_of;
use sql_proxy::backend::{BackendConn, Login};
use sql_proxy::protocol::cap;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err(
            "usage: idle_conns ADDR USER COUNT SECONDS (password in $IDLE_PASSWORD)".into(),
        );
    }
    let addr = args[1].parse()?;
    let count: usize = args[3].parse()?;
    let secs: u64 = args[4].parse()?;
    let pw = std::env::var("IDLE_PASSWORD").unwrap_or_default();
    let login = Login {
        user: args[2].clone(),
        stage1: Some(stage1_of(&pw)),
        database: None,
        capabilities: cap::PROXY_OFFER,
        charset: 45,
        max_packet: 1 << 24,
        tls: Default::default(),
    };
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        conns.push(BackendConn::connect("proxy", addr, &login, Duration::from_secs(10)).await?);
    }
    println!("ready {}", conns.len());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(())
}
