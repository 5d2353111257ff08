//! Outage probe: a 1 kHz stream of numbered UDP datagrams from one side to an echo responder
//! on the other, both sockets opened inside their sides' namespaces, over the tunnel
//! addresses. The longest gap between consecutive echoes is the traffic interruption as a
//! real flow sees it (resolution ≈ the send interval). Used to measure key rotation.

use crate::error::{Error, Result};
use crate::netns;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Log {
    sent: Vec<Instant>,
    /// Arrival time of the echo of each sequence number.
    echoed: Vec<Option<Instant>>,
}

pub struct OutageProbe {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    threads: Vec<JoinHandle<()>>,
}

/// What the stream saw.
#[derive(Debug, Clone, Copy)]
pub struct OutageStats {
    /// Longest time between two consecutive echoes (ms).
    pub longest_gap_ms: f64,
    pub sent: usize,
    pub lost: usize,
}

fn io(netns: Option<&str>) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Netns {
        netns: netns.unwrap_or("(own)").to_string(),
        source,
    }
}

impl OutageProbe {
    /// Starts the responder on `to` (inside `to_ns`) and the sender inside `from_ns`.
    pub fn start(
        from_ns: Option<&str>,
        to_ns: Option<&str>,
        to: IpAddr,
        interval: Duration,
    ) -> Result<OutageProbe> {
        let responder =
            netns::run_in(to_ns, || UdpSocket::bind(SocketAddr::new(to, 0)))?.map_err(io(to_ns))?;
        let target = responder.local_addr().map_err(io(to_ns))?;
        let unspecified: IpAddr = if to.is_ipv4() {
            "0.0.0.0".parse().expect("ip")
        } else {
            "::".parse().expect("ip")
        };
        let sender =
            netns::run_in(from_ns, || UdpSocket::bind((unspecified, 0)))?.map_err(io(from_ns))?;
        sender.connect(target).map_err(io(from_ns))?;
        sender.set_nonblocking(true).map_err(io(from_ns))?;
        responder
            .set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(io(to_ns))?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = responder.recv_from(&mut buf) {
                        let _ = responder.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        {
            let (stop, log) = (stop.clone(), log.clone());
            threads.push(std::thread::spawn(move || {
                let mut seq: u64 = 0;
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    {
                        let mut l = log.lock().expect("probe log");
                        l.sent.push(Instant::now());
                        l.echoed.push(None);
                    }
                    let _ = sender.send(&seq.to_be_bytes());
                    seq += 1;
                    let next = Instant::now() + interval;
                    while Instant::now() < next {
                        match sender.recv(&mut buf) {
                            Ok(8) => {
                                let s = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                                let mut l = log.lock().expect("probe log");
                                if let Some(slot) = l.echoed.get_mut(s as usize) {
                                    slot.get_or_insert(Instant::now());
                                }
                            }
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_micros(100)),
                        }
                    }
                }
            }));
        }
        Ok(OutageProbe { stop, log, threads })
    }

    /// Waits until a datagram sent at or after `after` has been echoed.
    pub fn wait_echo_sent_after(&self, after: Instant, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            {
                let l = self.log.lock().expect("probe log");
                if l.sent
                    .iter()
                    .zip(&l.echoed)
                    .any(|(s, e)| *s >= after && e.is_some())
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops the stream and summarizes it.
    pub fn finish(mut self) -> OutageStats {
        self.halt();
        let l = self.log.lock().expect("probe log");
        let mut arrivals: Vec<Instant> = l.echoed.iter().flatten().copied().collect();
        arrivals.sort();
        let longest = arrivals
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        OutageStats {
            longest_gap_ms: longest.as_secs_f64() * 1e3,
            sent: l.sent.len(),
            // The last 20 datagrams may still be in flight when the stream stops.
            lost: l
                .echoed
                .iter()
                .rev()
                .skip(20)
                .filter(|e| e.is_none())
                .count(),
        }
    }
}

impl Drop for OutageProbe {
    /// An early return (a failed step) never leaves the probe threads running.
    fn drop(&mut self) {
        self.halt();
    }
}
