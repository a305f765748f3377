//! A synchronous `NETLINK_ROUTE` socket: sends one request at a time and collects its answer,
//! decoding ACKs and kernel errors, following multipart dumps to `NLMSG_DONE`, and bounding every
//! receive with `SO_RCVTIMEO`.

use std::io;
use std::time::Duration;

use netlink_packet_core::{NLM_F_DUMP_INTR, NLM_F_MULTIPART};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::error::NetlinkError;
use super::message::Request;
use super::parse::{self, Header, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN};

/// How many times an interrupted dump is retried before giving up.
const DUMP_ATTEMPTS: u32 = 3;

/// One message of an answer: its header and payload (after the `nlmsghdr`).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub header: Header,
    pub payload: Vec<u8>,
}

fn errno_of(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

pub(crate) struct RtSocket {
    socket: Socket,
    port: u32,
    seq: u32,
    timeout: Duration,
}

/// Why one attempt at a request ended without an answer.
enum Failure {
    Error(NetlinkError),
    Interrupted,
}

impl RtSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open(timeout: Duration) -> Result<Self, NetlinkError> {
        let sock_err = |e: io::Error| NetlinkError::Socket {
            errno: errno_of(&e),
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err)?;
        let addr = socket.bind_auto().map_err(sock_err)?;
        // A zero SO_RCVTIMEO would mean "wait forever".
        let timeout = timeout.max(Duration::from_millis(1));
        let tv = TimeVal::new(
            timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            libc::suseconds_t::from(timeout.subsec_micros()),
        );
        setsockopt(&socket, sockopt::ReceiveTimeout, &tv)
            .map_err(|errno| NetlinkError::Socket { errno })?;
        // Extended ACKs carry the kernel's reason for a refusal; capped ACKs spare echoing the
        // request back. Both exist since Linux 4.12; without them errors are still reported.
        if let Err(e) = socket.set_ext_ack(true) {
            tracing::debug!(error = %e, "netlink extended ACKs unavailable");
        }
        if let Err(e) = socket.set_cap_ack(true) {
            tracing::debug!(error = %e, "netlink capped ACKs unavailable");
        }
        Ok(Self {
            socket,
            port: addr.port_number(),
            seq: 0,
            timeout,
        })
    }

    /// Sends `req` and returns the data messages of its answer. Errors carry an empty op, which the
    /// caller fills in with [`NetlinkError::with_op`].
    pub fn request(&mut self, req: &Request) -> Result<Vec<Reply>, NetlinkError> {
        let attempts = if req.is_dump() { DUMP_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            match self.attempt(req) {
                Ok(replies) => return Ok(replies),
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::Interrupted) => {
                    tracing::debug!("netlink dump interrupted, retrying");
                }
            }
        }
        Err(NetlinkError::DumpInterrupted {
            op: String::new(),
            attempts,
        })
    }

    fn attempt(&mut self, req: &Request) -> Result<Vec<Reply>, Failure> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = req.encode(seq);
        loop {
            match self.socket.send(&bytes, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failure::Error(NetlinkError::Io {
                        op: String::new(),
                        errno: errno_of(&e),
                    }))
                }
            }
        }
        let mut collector = Collector::new(seq, self.port, req.is_dump());
        loop {
            let datagram = self.recv().map_err(Failure::Error)?;
            if let Some(outcome) = collector.feed(&datagram) {
                return outcome;
            }
        }
    }

    /// One whole datagram, however large: peek its size first.
    fn recv(&self) -> Result<Vec<u8>, NetlinkError> {
        loop {
            let mut probe: Vec<u8> = Vec::new();
            let size = match self
                .socket
                .recv_from(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Ok((size, _)) => size,
                Err(e) => match self.recv_error(&e) {
                    Some(err) => return Err(err),
                    None => continue,
                },
            };
            let mut buf: Vec<u8> = Vec::with_capacity(size);
            match self.socket.recv_from(&mut buf, 0) {
                Ok((n, _)) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) => match self.recv_error(&e) {
                    Some(err) => return Err(err),
                    None => continue,
                },
            }
        }
    }

    /// Maps a receive error; `None` means retry (interrupted by a signal).
    fn recv_error(&self, e: &io::Error) -> Option<NetlinkError> {
        match e.kind() {
            io::ErrorKind::Interrupted => None,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Some(NetlinkError::Timeout {
                op: String::new(),
                timeout: self.timeout,
            }),
            _ => Some(NetlinkError::Io {
                op: String::new(),
                errno: errno_of(e),
            }),
        }
    }
}

/// Gathers the answer to one request from the datagrams that arrive: skips messages of other
/// requests, stops at the ACK, the error or `NLMSG_DONE`, and notes `NLM_F_DUMP_INTR`.
struct Collector {
    seq: u32,
    port: u32,
    dump: bool,
    interrupted: bool,
    replies: Vec<Reply>,
}

fn decode_failure(reason: String) -> Failure {
    Failure::Error(NetlinkError::Decode {
        op: String::new(),
        reason,
    })
}

fn kernel_failure(code: i32, ext_ack: Option<String>) -> Failure {
    Failure::Error(NetlinkError::Kernel {
        op: String::new(),
        errno: Errno::from_raw(code.saturating_neg()),
        ext_ack,
    })
}

impl Collector {
    fn new(seq: u32, port: u32, dump: bool) -> Self {
        Self {
            seq,
            port,
            dump,
            interrupted: false,
            replies: Vec::new(),
        }
    }

    /// Takes one datagram; `Some` when the answer is complete.
    fn feed(&mut self, datagram: &[u8]) -> Option<Result<Vec<Reply>, Failure>> {
        let messages = match parse::split_messages(datagram) {
            Ok(m) => m,
            Err(reason) => return Some(Err(decode_failure(reason))),
        };
        for (header, payload) in messages {
            if header.seq != self.seq || (header.port != 0 && header.port != self.port) {
                // A late answer to an earlier request that timed out.
                continue;
            }
            if header.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match header.kind {
                NLMSG_NOOP => {}
                NLMSG_ERROR => {
                    return Some(match parse::parse_error(&header, payload) {
                        Ok((0, _)) => Ok(std::mem::take(&mut self.replies)),
                        Ok((code, ext_ack)) => Err(kernel_failure(code, ext_ack)),
                        Err(reason) => Err(decode_failure(reason)),
                    });
                }
                NLMSG_DONE => {
                    // A dump may end with an error code in its DONE message.
                    let code = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code < 0 {
                        let ext_ack = parse::parse_error(&header, payload)
                            .ok()
                            .and_then(|(_, msg)| msg);
                        return Some(Err(kernel_failure(code, ext_ack)));
                    }
                    if self.interrupted {
                        return Some(Err(Failure::Interrupted));
                    }
                    return Some(Ok(std::mem::take(&mut self.replies)));
                }
                NLMSG_OVERRUN => {
                    return Some(Err(Failure::Error(NetlinkError::Io {
                        op: String::new(),
                        errno: Errno::ENOBUFS,
                    })))
                }
                _ => {
                    let multipart = header.flags & NLM_F_MULTIPART != 0;
                    self.replies.push(Reply {
                        header,
                        payload: payload.to_vec(),
                    });
                    if self.dump && !multipart {
                        // A single-message answer to a dump request.
                        return Some(Ok(std::mem::take(&mut self.replies)));
                    }
                }
            }
        }
        None
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&77u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out
    }

    const NEWLINK: u16 = 16;

    #[test]
    fn a_dump_spans_datagrams_and_ends_at_done() {
        let mut c = Collector::new(4, 77, true);
        // A stale answer to seq 3 is skipped.
        assert!(c
            .feed(&msg(NEWLINK, NLM_F_MULTIPART, 3, &[0; 16]))
            .is_none());
        let first = [
            msg(NEWLINK, NLM_F_MULTIPART, 4, &[1; 16]),
            msg(NEWLINK, NLM_F_MULTIPART, 4, &[2; 16]),
        ]
        .concat();
        assert!(c.feed(&first).is_none());
        let second = [
            msg(NEWLINK, NLM_F_MULTIPART, 4, &[3; 16]),
            msg(NLMSG_DONE, NLM_F_MULTIPART, 4, &[0; 4]),
        ]
        .concat();
        let Some(Ok(replies)) = c.feed(&second) else {
            panic!("dump not complete")
        };
        let firsts: Vec<u8> = replies.iter().map(|r| r.payload[0]).collect();
        assert_eq!(firsts, [1, 2, 3]);
    }

    #[test]
    fn an_interrupted_dump_asks_for_a_retry() {
        let mut c = Collector::new(1, 77, true);
        let d = [
            msg(NEWLINK, NLM_F_MULTIPART | NLM_F_DUMP_INTR, 1, &[1; 16]),
            msg(NLMSG_DONE, NLM_F_MULTIPART | NLM_F_DUMP_INTR, 1, &[0; 4]),
        ]
        .concat();
        assert!(matches!(c.feed(&d), Some(Err(Failure::Interrupted))));
    }

    #[test]
    fn errors_end_the_answer_with_their_errno() {
        let mut c = Collector::new(2, 77, false);
        let mut payload = (-95i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        match c.feed(&msg(NLMSG_ERROR, 0, 2, &payload)) {
            Some(Err(Failure::Error(NetlinkError::Kernel { errno, .. }))) => {
                assert_eq!(errno, Errno::EOPNOTSUPP)
            }
            _ => panic!("error not reported"),
        }
        // A dump whose DONE carries an error.
        let mut c = Collector::new(3, 77, true);
        let out = c.feed(&msg(
            NLMSG_DONE,
            NLM_F_MULTIPART,
            3,
            &(-16i32).to_ne_bytes(),
        ));
        assert!(matches!(
            out,
            Some(Err(Failure::Error(NetlinkError::Kernel {
                errno: Errno::EBUSY,
                ..
            })))
        ));
    }

    #[test]
    fn a_get_returns_its_reply_at_the_ack() {
        let mut c = Collector::new(5, 77, false);
        assert!(c.feed(&msg(NEWLINK, 0, 5, &[9; 16])).is_none());
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend_from_slice(&[0; 16]);
        let Some(Ok(replies)) = c.feed(&msg(NLMSG_ERROR, 0x100, 5, &ack)) else {
            panic!("ACK not seen")
        };
        assert_eq!(replies.len(), 1);
        assert!(matches!(
            c.feed(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]),
            Some(Err(Failure::Error(NetlinkError::Decode { .. })))
        ));
    }
}
