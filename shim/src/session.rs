//! One forwarded call: connect to the warden, handshake, send the request, wait for the
//! decision, then hand the connection to the stream loop. Every failure before the
//! decision fails closed: nothing runs and the shim exits 125.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use clawrden_protocol::{
    read_message, Action, ErrorKind, FdKind, Message, ProtocolError, DEFAULT_SOCKET, EXIT_DENIED,
    EXIT_UNAVAILABLE, SOCKET_ENV,
};
use nix::errno::Errno;
use nix::sys::socket::{send, sendmsg, ControlMessage, MsgFlags, UnixAddr};

use crate::descriptors;
use crate::request;
use crate::stream::{self, Mode};
use crate::sys::signals::{self, SignalChannel};
use crate::terminal::{CallerTerminal, Takeover};

/// Environment variable overriding how long the shim waits for the warden's `Hello`
/// (milliseconds, 1..=3600000). Meant for tests and slow hosts; default 10 s.
pub const HELLO_TIMEOUT_ENV: &str = "CLAWRDEN_HELLO_TIMEOUT_MS";
const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How a forwarded call ended, from the agent's point of view.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this status.
    Exited(i32),
    /// The command was killed by this signal (or the shim's stdout broke: SIGPIPE).
    Signaled(i32),
    /// Denied by policy, by a person, or the approval timed out.
    Denied(String),
    /// The warden ended the call with an `Error` frame.
    Failed { kind: ErrorKind, message: String },
    /// The warden is unreachable or broke the protocol; this is the cause.
    Unavailable(String),
    /// The shim itself could not forward the call (e.g. no current directory).
    Local(String),
}

impl Outcome {
    /// The shim's exit status for this outcome (`Signaled` only if re-raising fails).
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Signaled(n) => 128 + n,
            Outcome::Denied(_) => EXIT_DENIED,
            Outcome::Failed { kind, .. } => kind.exit_status(),
            Outcome::Unavailable(_) | Outcome::Local(_) => EXIT_UNAVAILABLE,
        }
    }

    /// The line the shim writes to its stderr, if any (the command's own endings print
    /// nothing).
    pub fn stderr_line(&self, socket: &str) -> Option<String> {
        match self {
            Outcome::Exited(_) | Outcome::Signaled(_) => None,
            Outcome::Denied(reason) => Some(format!("clawrden: denied: {reason}\n")),
            Outcome::Failed { message, .. } => Some(format!("clawrden: {message}\n")),
            Outcome::Unavailable(cause) => Some(format!(
                "clawrden: warden unavailable ({socket}): {cause}\n"
            )),
            Outcome::Local(message) => Some(format!("clawrden: {message}\n")),
        }
    }
}

/// An outcome plus the socket it concerned (for the message).
#[derive(Debug)]
pub struct Ending {
    pub outcome: Outcome,
    pub socket: String,
}

/// Forwards `argv` (argv[0] = the tool as invoked) to the warden and waits for the end.
pub fn forward(argv: Vec<OsString>) -> Ending {
    signals::ignore_sigpipe();
    let socket = std::env::var_os(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let outcome = run(argv, &socket);
    Ending {
        outcome,
        socket: socket.display().to_string(),
    }
}

/// Prints the ending's message (after the terminal was restored) and exits with its
/// status, or dies of the command's signal.
pub fn conclude(ending: Ending) -> ! {
    if let Some(line) = ending.outcome.stderr_line(&ending.socket) {
        let _ = io::stderr().write_all(line.as_bytes());
    }
    match ending.outcome {
        Outcome::Signaled(n) => signals::die_of_signal(n),
        other => std::process::exit(other.exit_status()),
    }
}

fn run(argv: Vec<OsString>, socket: &std::path::Path) -> Outcome {
    let stdio = match request::probe_stdio() {
        Ok(s) => s,
        Err(e) => return Outcome::Local(format!("cannot forward this call: {e}")),
    };
    let hello_timeout = match hello_timeout(std::env::var_os(HELLO_TIMEOUT_ENV)) {
        Ok(t) => t,
        Err(e) => return Outcome::Local(e),
    };
    let mut inputs = match request::gather(argv, stdio) {
        Ok(i) => i,
        Err(e) => return Outcome::Local(format!("cannot forward this call: {e}")),
    };
    // In the terminal's background (`CMD &`, `timeout CMD`) the shim leaves the terminal
    // alone: no keystrokes are read, no setting is changed. The command's PTY then does
    // no output processing of its own, so the caller's terminal does it, once.
    let foreground = stdio
        .terminal_fd()
        .is_none_or(descriptors::may_change_terminal);
    if let (false, Some(terminal)) = (foreground, inputs.terminal.as_mut()) {
        terminal.termios.oflag &= !libc::OPOST;
    }
    let stdio_kinds = inputs.stdio;
    let started_termios = inputs.terminal.as_ref().map(|t| t.termios.clone());
    let request = request::build(inputs);
    let fds_attached = request.fds_attached;
    let attached: Vec<RawFd> = request
        .attached_fds()
        .iter()
        .map(|&fd| fd as RawFd)
        .collect();
    let mut frame = Vec::new();
    if let Err(e) = Message::Request(request).encode(&mut frame) {
        return Outcome::Local(format!(
            "cannot forward this call: {e}; the command line and environment are too large"
        ));
    }

    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return Outcome::Unavailable(format!("cannot connect: {e}")),
    };
    if let Err(e) = stream.set_write_timeout(Some(hello_timeout)) {
        return Outcome::Unavailable(format!("cannot configure the socket: {e}"));
    }
    if let Err(outcome) = handshake(&stream, hello_timeout) {
        return outcome;
    }
    let sent = if fds_attached {
        send_with_fds(&stream, &frame, &attached)
    } else {
        send_all(&stream, &frame)
    };
    if let Err(e) = sent {
        return Outcome::Unavailable(format!("cannot send the request: {e}"));
    }
    if let Err(e) = stream.set_write_timeout(None) {
        return Outcome::Unavailable(format!("cannot configure the socket: {e}"));
    }
    drop(frame);

    let uses_fds = match await_decision(&stream, fds_attached) {
        Ok(uses_fds) => uses_fds,
        Err(outcome) => return outcome,
    };

    // Allowed. From here on, signals are forwarded instead of killing the shim. (Before,
    // a signal kills the shim, which closes the socket and so cancels the request.)
    let signals = match SignalChannel::open() {
        Ok(s) => s,
        Err(e) => return Outcome::Local(format!("cannot set up signal forwarding: {e}")),
    };
    // Keystrokes go to the command only when its stdin is the terminal and the shim is in
    // its foreground; any other stdin is either handed over (uses_fds) or streamed (a
    // closed one as an immediate EOF).
    let forward_stdin = if stdio_kinds[0] == FdKind::Terminal {
        foreground
    } else {
        !uses_fds
    };
    let mut caller = None;
    let mut typed_ahead = Vec::new();
    if let (Some(fd), Some(started)) = (stdio.terminal_fd(), started_termios) {
        let out = if stdio_kinds[1] == FdKind::Terminal || stdio_kinds[2] == FdKind::Terminal {
            None
        } else {
            descriptors::writable_stdin_terminal()
        };
        let output_fd = match (stdio_kinds[1], stdio_kinds[2]) {
            (FdKind::Terminal, _) => 1,
            (_, FdKind::Terminal) => 2,
            _ => fd,
        };
        let mut terminal = CallerTerminal::new(fd, output_fd, out, started, foreground);
        let how = if stdio_kinds[0] == FdKind::Terminal && forward_stdin {
            typed_ahead = terminal.drain_typed_ahead();
            Takeover::Raw
        } else {
            Takeover::Output
        };
        if let Err(e) = terminal.take_over(how) {
            return Outcome::Local(format!(
                "cannot switch off the processing of the terminal on fd {fd}: {e}"
            ));
        }
        caller = Some(terminal);
    }
    let mode = Mode {
        forward_stdin,
        stdin_open: stdio.stdin_open(),
        resize: caller.is_some(),
    };
    let outcome = stream::pump(&stream, mode, typed_ahead, &signals, caller.as_mut());
    if let Some(mut t) = caller {
        t.settle();
    }
    outcome
}

/// Parses the hello timeout override; unset means 10 s.
fn hello_timeout(value: Option<OsString>) -> Result<Duration, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_HELLO_TIMEOUT);
    };
    match value.to_str().and_then(|v| v.parse::<u64>().ok()) {
        Some(ms @ 1..=3_600_000) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "invalid {HELLO_TIMEOUT_ENV}={:?}: expected milliseconds from 1 to 3600000; \
             unset it to use the default of 10s",
            value.to_string_lossy()
        )),
    }
}

/// `10s`, `250ms`: the duration style of Clawrden messages.
fn format_ms(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn unavailable(e: impl std::fmt::Display) -> Outcome {
    Outcome::Unavailable(e.to_string())
}

/// Hello out, Hello back within `timeout`.
fn handshake(stream: &UnixStream, timeout: Duration) -> Result<(), Outcome> {
    let mut hello = Vec::new();
    Message::hello().encode(&mut hello).map_err(unavailable)?;
    send_all(stream, &hello).map_err(|e| unavailable(format!("cannot send hello: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unavailable)?;
    let reply = read_message(&mut &*stream);
    stream.set_read_timeout(None).map_err(unavailable)?;
    match reply {
        Ok(Some(m @ Message::Hello { .. })) => m.check_hello().map_err(unavailable),
        // Typically Error{UnsupportedVersion}: the warden's own words say why.
        Ok(Some(Message::Error { message, .. })) => Err(unavailable(message)),
        Ok(Some(other)) => Err(unavailable(ProtocolError::Unexpected {
            got: other.kind(),
            expected: "hello",
        })),
        Ok(None) => Err(unavailable("connection closed before the warden's hello")),
        Err(ProtocolError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
            Err(unavailable("connection closed before the warden's hello"))
        }
        Err(ProtocolError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(unavailable(format!(
                "no hello from the warden within {}",
                format_ms(timeout)
            )))
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Reads until the final decision. `Ok(uses_fds)` when allowed; the ending otherwise.
/// Each distinct approval id gets one line on stderr.
fn await_decision(stream: &UnixStream, fds_attached: bool) -> Result<bool, Outcome> {
    let mut announced = HashSet::new();
    let mut pending = false;
    loop {
        let msg = match read_message(&mut &*stream) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(unavailable("connection closed before a decision arrived")),
            Err(ProtocolError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(unavailable("connection closed before a decision arrived"))
            }
            Err(e) => return Err(unavailable(e)),
        };
        match msg {
            Message::Decision(d) => match d.action {
                Action::Deny => return Err(Outcome::Denied(d.reason)),
                Action::Allow if d.uses_fds && !fds_attached => {
                    return Err(unavailable(
                        "the warden wants to use file descriptors the shim did not attach",
                    ))
                }
                Action::Allow => return Ok(d.uses_fds),
                Action::Pending if !pending => pending = true,
                Action::Pending => return Err(unavailable("a second pending decision arrived")),
            },
            Message::Pending {
                approval_id,
                message,
            } if pending => {
                if !announced.contains(&approval_id) {
                    let line = format!("clawrden: waiting for approval {approval_id}: {message}\n");
                    let _ = io::stderr().write_all(line.as_bytes());
                    announced.insert(approval_id);
                }
            }
            Message::Error { kind, message } => return Err(Outcome::Failed { kind, message }),
            other => {
                return Err(unavailable(ProtocolError::Unexpected {
                    got: other.kind(),
                    expected: if pending {
                        "pending or decision"
                    } else {
                        "decision"
                    },
                }))
            }
        }
    }
}

/// Writes all of `buf` to the socket (MSG_NOSIGNAL: a closed peer is EPIPE, not death).
pub fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends `frame` with `fds` attached (SCM_RIGHTS) to its first bytes, then the remainder
/// with plain sends.
fn send_with_fds(stream: &UnixStream, frame: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    loop {
        match sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &[IoSlice::new(frame)],
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => return send_all(stream, &frame[n..]),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_contract() {
        assert_eq!(Outcome::Exited(0).exit_status(), 0);
        assert_eq!(Outcome::Exited(255).exit_status(), 255);
        assert_eq!(Outcome::Signaled(15).exit_status(), 143);
        assert_eq!(Outcome::Denied("x".into()).exit_status(), 126);
        assert_eq!(Outcome::Unavailable("x".into()).exit_status(), 125);
        assert_eq!(Outcome::Local("x".into()).exit_status(), 125);
        let failed = |kind| Outcome::Failed {
            kind,
            message: String::new(),
        };
        assert_eq!(failed(ErrorKind::Timeout).exit_status(), 124);
        assert_eq!(failed(ErrorKind::NotFound).exit_status(), 127);
        assert_eq!(failed(ErrorKind::SpawnFailed).exit_status(), 126);
        assert_eq!(failed(ErrorKind::Cancelled).exit_status(), 126);
        assert_eq!(failed(ErrorKind::Internal).exit_status(), 125);
        assert_eq!(failed(ErrorKind::Protocol).exit_status(), 125);
    }

    #[test]
    fn messages_follow_the_contract() {
        let sock = "/run/clawrden/warden.sock";
        assert_eq!(Outcome::Exited(3).stderr_line(sock), None);
        assert_eq!(Outcome::Signaled(9).stderr_line(sock), None);
        assert_eq!(
            Outcome::Denied("approval timed out after 10m".into()).stderr_line(sock),
            Some("clawrden: denied: approval timed out after 10m\n".into())
        );
        assert_eq!(
            Outcome::Failed {
                kind: ErrorKind::Timeout,
                message: "timed out after 30s; process tree killed".into()
            }
            .stderr_line(sock),
            Some("clawrden: timed out after 30s; process tree killed\n".into())
        );
        assert_eq!(
            Outcome::Unavailable("cannot connect: refused".into()).stderr_line(sock),
            Some(
                "clawrden: warden unavailable (/run/clawrden/warden.sock): cannot connect: refused\n"
                    .into()
            )
        );
    }

    #[test]
    fn hello_timeout_defaults_and_validates() {
        assert_eq!(hello_timeout(None), Ok(Duration::from_secs(10)));
        assert_eq!(
            hello_timeout(Some("250".into())),
            Ok(Duration::from_millis(250))
        );
        assert!(hello_timeout(Some("0".into())).is_err());
        assert!(hello_timeout(Some("ten".into())).is_err());
    }

    #[test]
    fn durations_print_in_clawrden_style() {
        assert_eq!(format_ms(Duration::from_secs(10)), "10s");
        assert_eq!(format_ms(Duration::from_millis(200)), "200ms");
    }
}
