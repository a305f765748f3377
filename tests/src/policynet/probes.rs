//! Probe plumbing: echo servers, TCP connections kept open, sequenced UDP streams.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};

pub(super) fn bind_udp(peer: IpAddr, port: u16) -> std::io::Result<UdpSocket> {
    match peer {
        IpAddr::V4(_) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)),
        IpAddr::V6(_) => UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)),
    }
}

pub(super) fn tcp_echo_server(
    listener: &TcpListener,
    stop: &Arc<AtomicBool>,
    workers: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    // Ends when the listener is shut down (accept fails) on drop.
    while let Ok((mut conn, _)) = listener.accept() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let stop = stop.clone();
        let worker = std::thread::Builder::new().spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 1024];
            while !stop.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        if let (Ok(w), Ok(mut list)) = (worker, workers.lock()) {
            list.push(w);
        }
    }
}

/// A TCP connection to an echo server.
pub struct TcpConn {
    pub(super) stream: TcpStream,
    pub(super) opened: Instant,
}

impl TcpConn {
    /// Sends one byte and reads it back within `timeout`.
    pub fn echo(&mut self, timeout: Duration) -> bool {
        let mut attempt = || -> std::io::Result<bool> {
            self.stream
                .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            self.stream.write_all(b"e")?;
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b)?;
            Ok(&b == b"e")
        };
        attempt().unwrap_or(false)
    }
}

/// A running [`Topology::udp_stream`].
pub struct UdpStream {
    sending: Arc<AtomicBool>,
    receiving: Arc<AtomicBool>,
    /// Datagrams sent and received so far.
    counts: Arc<[AtomicU64; 2]>,
    sender: Option<JoinHandle<Vec<Instant>>>,
    receiver: Option<JoinHandle<Vec<(u64, Instant)>>>,
}

impl UdpStream {
    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.counts[0].load(Ordering::Relaxed)
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.counts[1].load(Ordering::Relaxed)
    }

    /// Stops sending, waits for the datagrams in flight (up to 200 ms of quiet) and reports.
    pub fn stop(mut self) -> StreamReport {
        self.finish()
    }

    fn finish(&mut self) -> StreamReport {
        self.sending.store(false, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        self.receiving.store(false, Ordering::Relaxed);
        let received = self
            .receiver
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        StreamReport { sent, received }
    }
}

impl Drop for UdpStream {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.finish();
        }
    }
}

/// What a [`UdpStream`] sent (the send time of each sequence number) and what arrived.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub sent: Vec<Instant>,
    /// (sequence number, arrival time) in arrival order.
    pub received: Vec<(u64, Instant)>,
}

impl StreamReport {
    /// Sequence numbers sent and never received, in order.
    pub fn lost(&self) -> Vec<u64> {
        let mut seen = vec![false; self.sent.len()];
        for &(seq, _) in &self.received {
            if let Some(s) = seen.get_mut(seq as usize) {
                *s = true;
            }
        }
        (0..self.sent.len() as u64)
            .filter(|&s| !seen[s as usize])
            .collect()
    }

    /// Sequence numbers sent at or after `t`.
    pub fn sent_after(&self, t: Instant) -> impl Iterator<Item = u64> + '_ {
        (0..self.sent.len() as u64).filter(move |&s| self.sent[s as usize] >= t)
    }

    /// Sequence numbers sent before `t`.
    pub fn sent_before(&self, t: Instant) -> impl Iterator<Item = u64> + '_ {
        (0..self.sent.len() as u64).filter(move |&s| self.sent[s as usize] < t)
    }

    pub fn was_received(&self, seq: u64) -> bool {
        self.received.iter().any(|&(s, _)| s == seq)
    }

    /// A short summary for failure messages: counts and the lost ranges.
    pub fn summary(&self) -> String {
        let lost = self.lost();
        let mut ranges: Vec<String> = Vec::new();
        let mut i = 0;
        while i < lost.len() {
            let start = lost[i];
            while i + 1 < lost.len() && lost[i + 1] == lost[i] + 1 {
                i += 1;
            }
            ranges.push(if start == lost[i] {
                start.to_string()
            } else {
                format!("{start}-{}", lost[i])
            });
            i += 1;
        }
        let gap = self
            .sent
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default();
        format!(
            "sent {}, received {}, lost {} [{}], longest pause of the sender {gap:?}",
            self.sent.len(),
            self.received.len(),
            lost.len(),
            ranges.join(", ")
        )
    }
}

/// Starts the sender and the sink threads of a [`UdpStream`].
pub(super) fn start_stream(
    sock: UdpSocket,
    sink: UdpSocket,
    interval: Duration,
) -> anyhow::Result<UdpStream> {
    let sending = Arc::new(AtomicBool::new(true));
    let receiving = Arc::new(AtomicBool::new(true));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let count = counts.clone();
    let flag = sending.clone();
    // A stalled receiver thread (a loaded machine) must not overflow the sink's buffer: room
    // for seconds of the stream. Root may exceed rmem_max.
    let _ = setsockopt(&sink, sockopt::RcvBufForce, &(4 << 20));
    let sender = std::thread::Builder::new().spawn(move || {
        let mut sent = Vec::new();
        let mut due = Instant::now();
        while flag.load(Ordering::Relaxed) {
            let seq = sent.len() as u64;
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            // After a stall of this thread, carry on at the pace rather than send a burst.
            due = Instant::now().max(due) + interval;
            sent.push(Instant::now());
            count[0].fetch_add(1, Ordering::Relaxed);
            // A send refused (EPERM from an output drop) is a lost datagram, recorded.
            let _ = sock.send(&seq.to_be_bytes());
        }
        sent
    })?;
    let flag = receiving.clone();
    let count = counts.clone();
    let receiver = std::thread::Builder::new().spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let mut quiet_since: Option<Instant> = None;
        loop {
            match sink.recv(&mut buf) {
                Ok(8) => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[..8]);
                    got.push((u64::from_be_bytes(b), Instant::now()));
                    count[1].fetch_add(1, Ordering::Relaxed);
                    quiet_since = None;
                }
                Ok(_) => {}
                Err(_) if flag.load(Ordering::Relaxed) => {}
                // Sender done: stop after 200 ms without a datagram.
                Err(_) => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() >= Duration::from_millis(200) {
                        break;
                    }
                }
            }
        }
        got
    })?;
    Ok(UdpStream {
        sending,
        receiving,
        counts,
        sender: Some(sender),
        receiver: Some(receiver),
    })
}
