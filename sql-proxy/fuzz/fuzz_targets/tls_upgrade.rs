//! The TLS upgrade: after a client's SSL request the proxy hands the socket to rustls with the
//! server configuration `stream::acceptor` builds from PEM files. Arbitrary bytes as the
//! client's TLS records (in the pieces a socket could deliver them) must never panic the
//! server side; the SSL-request test runs on the same bytes.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sql_proxy::protocol::HandshakeResponse;
use tokio_rustls::rustls::{ServerConfig, ServerConnection};

/// The proxy's own acceptor over a throwaway self-signed certificate made once per run.
fn config() -> Arc<ServerConfig> {
    static CFG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sql-proxy-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=fuzz", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req failed");
        let acceptor = sql_proxy::stream::acceptor(&cert, &key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        acceptor.config().clone()
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let _ = HandshakeResponse::is_ssl_request(data);
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    let mut conn = ServerConnection::new(config()).unwrap();
    let chunk = 1 + ctl as usize * 7;
    for piece in data.chunks(chunk) {
        let mut rd = piece;
        while !rd.is_empty() {
            match conn.read_tls(&mut rd) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if conn.process_new_packets().is_err() {
                return;
            }
            // What the server would answer is drained as a socket write would.
            let mut sink = Vec::new();
            while conn.wants_write() {
                if conn.write_tls(&mut sink).is_err() {
                    return;
                }
            }
        }
    }
});
