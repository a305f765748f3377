//! Talking to a running plugin: its config in on stdin, its stdout and stderr out, on one thread
//! with poll(2) over the pipes and a pidfd, within the deadline; and killing its process group.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{READS_PER_ROUND, STDERR_KEEP, STDERR_LINE_MAX, STDERR_LOG_MAX, STDOUT_MAX};

/// What a plugin said, once it has exited (not yet reaped).
pub(super) struct Talk {
    pub(super) stdout: Vec<u8>,
    /// The start of its stderr (all of it is logged).
    pub(super) stderr: String,
}

/// Why talking to a plugin stopped; the caller kills its group and reaps it.
pub(super) enum Failed {
    /// It had not exited by the deadline.
    Timeout,
    Io(String),
    /// Its stdout passed [`STDOUT_MAX`].
    TooLarge,
}

/// How long stderr may stay open after everything else is done: a plugin's stray child may hold
/// it, and it only feeds the log.
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// Feeds the plugin its config and reads its stdout and stderr until it has exited and closed
/// them, all on this thread: one poll(2) over the pipes and a pidfd for the exit. When a process
/// the plugin started keeps a pipe open after the plugin exited, its group is ended at the
/// deadline (the error names the pipe). The plugin is left unreaped, so its pid and process group
/// stay ours until the caller reaps it.
pub(super) fn talk(
    plugin: &str,
    child: &mut Child,
    pid: Pid,
    input: &[u8],
    deadline: Instant,
) -> Result<Talk, Failed> {
    use rustix::event::{poll, PollFd, PollFlags};
    let (Some(child_in), Some(child_out), Some(child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Failed::Io("its pipes were not set up".to_string()));
    };
    for fd in [child_in.as_fd(), child_out.as_fd(), child_err.as_fd()] {
        rustix::io::ioctl_fionbio(fd, true)
            .map_err(|e| Failed::Io(format!("its pipes cannot be made non-blocking: {e}")))?;
    }
    // Without pidfds (kernels before 5.3) the exit is polled for every few milliseconds.
    let pidfd = rustix::process::Pid::from_raw(pid.as_raw())
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());

    let mut child_in = Some(child_in);
    let mut child_out = Some(child_out);
    let mut child_err = Some(child_err);
    let mut written = 0;
    let mut exited = false;
    let mut stdout = Vec::new();
    let mut stderr = StderrLog::new(plugin);
    let mut stderr_until: Option<Instant> = None;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let rest_done = exited && child_in.is_none() && child_out.is_none();
        if rest_done && child_err.is_none() {
            break;
        }
        let now = Instant::now();
        let limit = if rest_done {
            *stderr_until.get_or_insert_with(|| deadline.max(now + STDERR_GRACE))
        } else {
            deadline
        };
        if now >= limit {
            if rest_done {
                break; // stderr still held open: it only feeds the log
            }
            if !exited {
                return Err(Failed::Timeout);
            }
            let _ = killpg(pid, Signal::SIGKILL);
            let pipe = if child_in.is_some() {
                "stdin open unread"
            } else {
                "stdout open"
            };
            return Err(Failed::Io(format!(
                "it exited but a process it started kept its {pipe}"
            )));
        }
        let mut wait = limit - now;
        if pidfd.is_none() && !exited {
            wait = wait.min(Duration::from_millis(5));
        }

        // The poll set, in this order: stdin, stdout, stderr, pidfd (each while it matters).
        let mut fds = Vec::with_capacity(4);
        let mut slots = [false; 4];
        if let Some(f) = &child_in {
            fds.push(PollFd::new(f, PollFlags::OUT));
            slots[0] = true;
        }
        if let Some(f) = &child_out {
            fds.push(PollFd::new(f, PollFlags::IN));
            slots[1] = true;
        }
        if let Some(f) = &child_err {
            fds.push(PollFd::new(f, PollFlags::IN));
            slots[2] = true;
        }
        if let (Some(f), false) = (&pidfd, exited) {
            fds.push(PollFd::new(f, PollFlags::IN));
            slots[3] = true;
        }
        let timeout = rustix::time::Timespec::try_from(wait).unwrap_or(rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Failed::Io(format!("polling its pipes failed: {e}"))),
        }
        let mut ready = [false; 4];
        let mut n = 0;
        for (slot, on) in slots.iter().enumerate() {
            if *on {
                ready[slot] = !fds[n].revents().is_empty();
                n += 1;
            }
        }
        drop(fds);

        if ready[0] {
            if let Some(f) = child_in.as_mut() {
                match f.write(&input[written..]) {
                    Ok(k) => written += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // A plugin may exit without reading its config.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => written = input.len(),
                    Err(e) => return Err(Failed::Io(format!("writing its config failed: {e}"))),
                }
            }
        }
        if written >= input.len() {
            child_in = None; // closed: the plugin reads to the end
        }
        if ready[1] {
            if let Some(f) = child_out.as_mut() {
                let ended = drain(f, &mut buf, |b| stdout.extend_from_slice(b))
                    .map_err(|e| Failed::Io(format!("reading its stdout failed: {e}")))?;
                if stdout.len() > STDOUT_MAX {
                    return Err(Failed::TooLarge);
                }
                if ended {
                    child_out = None;
                }
            }
        }
        if ready[2] {
            if let Some(f) = child_err.as_mut() {
                // A read error on stderr only ends the log.
                if drain(f, &mut buf, |b| stderr.push(b)).unwrap_or(true) {
                    child_err = None;
                }
            }
        }
        if ready[3] || (pidfd.is_none() && !exited) {
            // WNOWAIT: learn of the exit without reaping it.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            match waitid(Id::Pid(pid), flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                Ok(_) => exited = true,
                Err(e) => return Err(Failed::Io(format!("waiting for it failed: {e}"))),
            }
        }
    }
    Ok(Talk {
        stdout,
        stderr: stderr.finish(),
    })
}

/// Reads what `f` has now into `sink`, at most [`READS_PER_ROUND`] reads (a plugin writing
/// endlessly must not keep us from the deadline); true at the end of the stream.
fn drain(f: &mut impl Read, buf: &mut [u8], mut sink: impl FnMut(&[u8])) -> std::io::Result<bool> {
    for _ in 0..READS_PER_ROUND {
        match f.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => sink(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// A plugin's stderr: each line logged as it completes (up to [`STDERR_LOG_MAX`] bytes, lines cut
/// at [`STDERR_LINE_MAX`]), the last [`STDERR_KEEP`] bytes kept.
pub(super) struct StderrLog<'a> {
    plugin: &'a str,
    partial: Vec<u8>,
    kept: String,
    logged: usize,
    unlogged: usize,
}

impl<'a> StderrLog<'a> {
    pub(super) fn new(plugin: &'a str) -> Self {
        Self {
            plugin,
            partial: Vec::new(),
            kept: String::new(),
            logged: 0,
            unlogged: 0,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&line[..i]);
        }
        while self.partial.len() > STDERR_LINE_MAX {
            let piece: Vec<u8> = self.partial.drain(..STDERR_LINE_MAX).collect();
            self.line(&piece);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if self.logged < STDERR_LOG_MAX {
            tracing::info!(plugin = %self.plugin, "stderr: {line}");
            self.logged += line.len() + 1;
        } else {
            self.unlogged += line.len() + 1;
        }
        self.kept.push_str(&line);
        self.kept.push('\n');
        if self.kept.len() > 2 * STDERR_KEEP {
            let mut cut = self.kept.len() - STDERR_KEEP;
            while !self.kept.is_char_boundary(cut) {
                cut += 1;
            }
            self.kept.drain(..cut);
        }
    }

    pub(super) fn finish(mut self) -> String {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        if self.unlogged > 0 {
            tracing::info!(plugin = %self.plugin, bytes = self.unlogged, limit = STDERR_LOG_MAX, "stderr beyond the log limit was not logged");
        }
        if self.kept.len() > STDERR_KEEP {
            let mut cut = self.kept.len() - STDERR_KEEP;
            while !self.kept.is_char_boundary(cut) {
                cut += 1;
            }
            self.kept.drain(..cut);
        }
        self.kept
    }
}

/// Kills the plugin's process group and reaps the plugin.
pub(super) fn kill_and_reap(child: &mut Child, pid: Pid) {
    // The unreaped leader keeps the group id ours; ESRCH means the group is already empty.
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}
