//! Runs the built shim against a fake warden: a protocol-level peer made of a std
//! `UnixListener` and `clawrden-protocol`, scripted per test. (The real warden is tested
//! end to end elsewhere.)

use std::ffi::OsStr;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clawrden_protocol::{
    decode_frame, read_message, write_chunks, write_message, Action, Decision, ErrorKind, ExtraFd,
    FdKind, Kind, Message, Request, Termios, PARENT_REQUEST_ENV, SOCKET_ENV,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

const SHIM: &str = env!("CARGO_BIN_EXE_clawrden-shim");

/// A fresh directory, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clawrden-shim-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One fake warden listening on its own socket, serving one connection with a script.
struct FakeWarden {
    _scratch: Scratch,
    socket: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl FakeWarden {
    /// Accepts one connection and hands the raw stream to `script` (no handshake).
    fn raw(script: impl FnOnce(UnixStream) + Send + 'static) -> FakeWarden {
        keep_own_descriptors_from_children();
        let scratch = Scratch::new();
        let socket = scratch.dir.join("warden.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let thread = std::thread::spawn(move || {
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            let ready = poll(&mut fds, PollTimeout::from(10_000u16)).unwrap();
            assert_eq!(ready, 1, "the shim never connected");
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            script(stream);
        });
        FakeWarden {
            _scratch: scratch,
            socket,
            thread: Some(thread),
        }
    }

    /// Answers the hello, reads the request and hands both to `script`.
    fn serve(script: impl FnOnce(&mut UnixStream, Request) + Send + 'static) -> FakeWarden {
        FakeWarden::raw(move |mut stream| {
            let request = handshake(&mut stream);
            script(&mut stream, request);
        })
    }

    fn socket_str(&self) -> String {
        self.socket.display().to_string()
    }

    /// The shim, pointed at this warden, with `run -- ARGS`.
    fn shim_run(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SHIM);
        cmd.arg("run").arg("--").args(args);
        self.configure(&mut cmd);
        cmd
    }

    fn configure(&self, cmd: &mut Command) {
        cmd.env(SOCKET_ENV, &self.socket)
            .env_remove(PARENT_REQUEST_ENV)
            .env_remove("CLAWRDEN_HELLO_TIMEOUT_MS")
            .stdin(Stdio::null());
    }

    /// Waits for the script; its assertion failures fail the test.
    fn finish(mut self) {
        if let Err(panic) = self.thread.take().unwrap().join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Marks every descriptor of this test process above 2 close-on-exec, once: the test
/// runner may leave some inheritable, and the shim would report (and attach) them as the
/// caller's, as it must. Tests that want the shim to get one open it on purpose.
fn keep_own_descriptors_from_children() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
        for fd in fds {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
    });
}

/// The settings of a terminal, as the protocol carries them.
fn termios_of(fd: &impl AsFd) -> Termios {
    let t: libc::termios = nix::sys::termios::tcgetattr(fd.as_fd()).unwrap().into();
    Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        cc: t.c_cc.to_vec(),
    }
}

fn handshake(stream: &mut UnixStream) -> Request {
    let hello = read_message(stream).unwrap().expect("hello");
    hello.check_hello().unwrap();
    write_message(stream, &Message::hello()).unwrap();
    match read_message(stream).unwrap().expect("request") {
        Message::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn send(stream: &mut UnixStream, msg: Message) {
    write_message(stream, &msg).unwrap();
}

fn decision(action: Action, reason: &str, uses_fds: bool) -> Message {
    Message::Decision(Decision {
        request_id: "req-1".to_string(),
        action,
        reason: reason.to_string(),
        rule: None,
        uses_fds,
    })
}

fn allow() -> Message {
    decision(Action::Allow, "rule test allows", false)
}

/// Keeps the connection open until the shim closes it, so the shim's verdict cannot come
/// from an end of stream.
fn hold_until_shim_exits(stream: &mut UnixStream) {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn deny_exits_126_with_the_reason() {
    let warden = FakeWarden::serve(|stream, request| {
        assert_eq!(request.argv, vec![b"git".to_vec(), b"push".to_vec()]);
        send(stream, decision(Action::Deny, "rule no-push denies", false));
    });
    let out = warden.shim_run(&["git", "push"]).output().unwrap();
    warden.finish();
    assert_eq!(out.status.code(), Some(126));
    assert_eq!(stderr_of(&out), "clawrden: denied: rule no-push denies\n");
    assert_eq!(out.stdout, b"");
}

#[test]
fn pending_prints_each_approval_once_then_approval_timeout_denies() {
    let warden = FakeWarden::serve(|stream, _| {
        send(stream, decision(Action::Pending, "rule push asks", false));
        for (id, message) in [
            ("a1", "git push needs approval"),
            ("a1", "git push needs approval"),
            ("a2", "still waiting for a person"),
        ] {
            send(
                stream,
                Message::Pending {
                    approval_id: id.to_string(),
                    message: message.to_string(),
                },
            );
        }
        send(
            stream,
            decision(Action::Deny, "approval timed out after 10m", false),
        );
    });
    let out = warden.shim_run(&["git", "push"]).output().unwrap();
    warden.finish();
    assert_eq!(out.status.code(), Some(126));
    assert_eq!(
        stderr_of(&out),
        "clawrden: waiting for approval a1: git push needs approval\n\
         clawrden: waiting for approval a2: still waiting for a person\n\
         clawrden: denied: approval timed out after 10m\n"
    );
}

#[test]
fn streamed_output_reaches_stdout_and_stderr_byte_exact() {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let expected_stdout = [b"out \xff\xfe\n".as_slice(), &big].concat();
    let warden = FakeWarden::serve(move |stream, _| {
        send(stream, allow());
        send(stream, Message::Stdout(b"out \xff\xfe\n".to_vec()));
        send(stream, Message::Stderr(b"err \x80\xc3(".to_vec()));
        let mut frames = Vec::new();
        write_chunks(&mut frames, Kind::Stdout, &big);
        stream.write_all(&frames).unwrap();
        send(stream, Message::Exit(3));
        hold_until_shim_exits(stream);
    });
    let out = warden.shim_run(&["cat", "f"]).output().unwrap();
    warden.finish();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, expected_stdout);
    assert_eq!(out.stderr, b"err \x80\xc3(");
}

#[test]
fn one_mebibyte_of_stdin_is_forwarded_exactly_while_output_flows_back() {
    let input: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let expected = input.clone();
    let warden = FakeWarden::serve(move |stream, request| {
        assert!(request.stdin_open());
        assert!(request.fds_attached);
        assert_eq!(request.terminal, None);
        send(stream, allow());
        // Echo every chunk straight back with blocking writes: a shim that stopped
        // draining its socket while pushing stdin would deadlock here.
        let mut got = Vec::new();
        loop {
            match read_message(stream).unwrap().expect("frame") {
                Message::Stdin(chunk) => {
                    assert!(!chunk.is_empty() && chunk.len() <= 64 * 1024);
                    got.extend_from_slice(&chunk);
                    send(stream, Message::Stdout(chunk));
                }
                Message::StdinEof => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            got == expected,
            "stdin arrived altered ({} bytes)",
            got.len()
        );
        send(stream, Message::Exit(0));
        hold_until_shim_exits(stream);
    });
    let mut child = warden
        .shim_run(&["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    warden.finish();
    assert_eq!(stderr_of(&out), "");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == input, "echo came back altered");
}

#[test]
fn exit_status_of_the_command_is_mirrored_for_every_code() {
    for code in 0..=255 {
        let warden = FakeWarden::serve(move |stream, _| {
            send(stream, allow());
            send(stream, Message::Exit(code));
            hold_until_shim_exits(stream);
        });
        let out = warden.shim_run(&["true"]).output().unwrap();
        warden.finish();
        assert_eq!(out.status.code(), Some(code), "Exit({code})");
        assert_eq!(out.stderr, b"", "Exit({code})");
    }
}

#[test]
fn signaled_command_kills_the_shim_with_the_same_signal_without_core() {
    for signo in [libc::SIGTERM, libc::SIGQUIT] {
        let warden = FakeWarden::serve(move |stream, _| {
            send(stream, allow());
            send(stream, Message::Signaled(signo));
            hold_until_shim_exits(stream);
        });
        let out = warden.shim_run(&["sleep", "100"]).output().unwrap();
        warden.finish();
        assert_eq!(out.status.signal(), Some(signo));
        assert!(!out.status.core_dumped());
        assert_eq!(out.stderr, b"");
    }
}

#[test]
fn execution_timeout_exits_124_with_the_wardens_message() {
    let warden = FakeWarden::serve(|stream, _| {
        send(stream, allow());
        send(stream, Message::Stdout(b"partial".to_vec()));
        send(
            stream,
            Message::Error {
                kind: ErrorKind::Timeout,
                message: "timed out after 30s; process tree killed".to_string(),
            },
        );
        hold_until_shim_exits(stream);
    });
    let out = warden.shim_run(&["sleep", "100"]).output().unwrap();
    warden.finish();
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(out.stdout, b"partial");
    assert_eq!(
        stderr_of(&out),
        "clawrden: timed out after 30s; process tree killed\n"
    );
}

#[test]
fn not_found_error_exits_127() {
    let warden = FakeWarden::serve(|stream, _| {
        send(stream, allow());
        send(
            stream,
            Message::Error {
                kind: ErrorKind::NotFound,
                message: "command not found: frob".to_string(),
            },
        );
        hold_until_shim_exits(stream);
    });
    let out = warden.shim_run(&["frob"]).output().unwrap();
    warden.finish();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(stderr_of(&out), "clawrden: command not found: frob\n");
}

#[test]
fn missing_socket_fails_closed_within_a_second() {
    let scratch = Scratch::new();
    let socket = scratch.dir.join("absent.sock");
    let started = Instant::now();
    let out = Command::new(SHIM)
        .args(["run", "--", "rm", "-rf", "/"])
        .env(SOCKET_ENV, &socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr_of(&out),
        format!(
            "clawrden: warden unavailable ({}): cannot connect: No such file or directory (os error 2)\n",
            socket.display()
        )
    );
    assert_eq!(out.stdout, b"");
}

#[test]
fn warden_that_never_says_hello_fails_closed_after_the_hello_timeout() {
    let warden = FakeWarden::raw(|mut stream| hold_until_shim_exits(&mut stream));
    let started = Instant::now();
    let out = warden
        .shim_run(&["ls"])
        .env("CLAWRDEN_HELLO_TIMEOUT_MS", "200")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let socket = warden.socket_str();
    warden.finish();
    assert!(elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr_of(&out),
        format!("clawrden: warden unavailable ({socket}): no hello from the warden within 200ms\n")
    );
}

#[test]
fn unsupported_version_fails_closed_with_the_wardens_message() {
    let warden = FakeWarden::raw(|mut stream| {
        read_message(&mut stream).unwrap().expect("hello");
        send(
            &mut stream,
            Message::Error {
                kind: ErrorKind::UnsupportedVersion,
                message: "unsupported protocol version 1 (this warden speaks version 2)"
                    .to_string(),
            },
        );
    });
    let out = warden.shim_run(&["ls"]).output().unwrap();
    let socket = warden.socket_str();
    warden.finish();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr_of(&out),
        format!(
            "clawrden: warden unavailable ({socket}): unsupported protocol version 1 (this warden speaks version 2)\n"
        )
    );
}

#[test]
fn oversized_frame_from_the_warden_fails_closed() {
    let warden = FakeWarden::serve(|stream, _| {
        send(stream, allow());
        // A Stdout header claiming one byte more than the limit; nothing else follows.
        stream
            .write_all(&[Kind::Stdout as u8, 0, 1, 0, 1, b'x'])
            .unwrap();
        hold_until_shim_exits(stream);
    });
    let out = warden.shim_run(&["cat"]).output().unwrap();
    let socket = warden.socket_str();
    warden.finish();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr_of(&out),
        format!(
            "clawrden: warden unavailable ({socket}): Stdout frame of 65537 bytes exceeds the limit of 65536 bytes\n"
        )
    );
    assert_eq!(out.stdout, b"");
}

#[test]
fn oversized_decision_fails_closed_before_anything_runs() {
    let warden = FakeWarden::serve(|stream, _| {
        stream
            .write_all(&[Kind::Decision as u8, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        hold_until_shim_exits(stream);
    });
    let out = warden.shim_run(&["cat"]).output().unwrap();
    let socket = warden.socket_str();
    warden.finish();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr_of(&out),
        format!(
            "clawrden: warden unavailable ({socket}): Decision frame of 4294967295 bytes exceeds the limit of 65536 bytes\n"
        )
    );
}

#[test]
fn warden_closing_before_the_outcome_fails_closed() {
    let warden = FakeWarden::serve(|stream, _| {
        send(stream, allow());
        send(stream, Message::Stdout(b"so far".to_vec()));
    });
    let out = warden.shim_run(&["make"]).output().unwrap();
    let socket = warden.socket_str();
    warden.finish();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(out.stdout, b"so far");
    assert_eq!(
        stderr_of(&out),
        format!(
            "clawrden: warden unavailable ({socket}): connection closed before the command finished\n"
        )
    );
}

/// Receives the Request frame with `recvmsg`, returning it and the attached fds.
fn receive_request_with_fds(stream: &mut UnixStream) -> (Request, Vec<RawFd>) {
    let hello = read_message(stream).unwrap().expect("hello");
    hello.check_hello().unwrap();
    write_message(stream, &Message::hello()).unwrap();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut frame = Vec::new();
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 8]);
        let n = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<UnixAddr>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .unwrap();
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(got) = c {
                    fds.extend(got);
                }
            }
            msg.bytes
        };
        assert!(n > 0, "connection closed inside the request");
        frame.extend_from_slice(&buf[..n]);
        if let Some((Message::Request(r), used)) = decode_frame(&frame).unwrap() {
            assert_eq!(used, frame.len());
            return (r, fds);
        }
    }
}

#[test]
fn passed_fds_let_the_warden_write_straight_to_the_shims_stdout() {
    let warden = FakeWarden::raw(|mut stream| {
        let (request, fds) = receive_request_with_fds(&mut stream);
        assert!(request.fds_attached);
        assert_eq!(fds.len(), 3);
        {
            // Reopen the received pipe through /proc rather than adopting the raw fd.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", fds[1]))
                .unwrap();
            out.write_all(b"hi").unwrap();
        }
        for fd in fds {
            nix::unistd::close(fd).unwrap();
        }
        send(
            &mut stream,
            decision(Action::Allow, "rule test allows", true),
        );
        send(&mut stream, Message::Exit(0));
        hold_until_shim_exits(&mut stream);
    });
    let out = warden.shim_run(&["echo", "hi"]).output().unwrap();
    warden.finish();
    assert_eq!(stderr_of(&out), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hi");
}

fn symlinked_tool(dir: &Path, name: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tool = bin.join(name);
    std::os::unix::fs::symlink(SHIM, &tool).unwrap();
    tool
}

#[test]
fn invoked_through_a_symlink_forwards_argv_env_cwd_byte_exact() {
    let work = Scratch::new();
    let tool = symlinked_tool(&work.dir, "git");
    let expected_tool = tool.as_os_str().as_bytes().to_vec();
    let expected_cwd = work.dir.as_os_str().as_bytes().to_vec();
    let warden = FakeWarden::serve(move |stream, request| {
        assert_eq!(
            request.argv,
            vec![
                expected_tool.clone(),
                b"status".to_vec(),
                b"\xff\xfe".to_vec()
            ]
        );
        // The symlink that ran, not the shim it points to.
        assert_eq!(request.tool_path, expected_tool);
        assert_eq!(request.cwd, expected_cwd);
        assert!(request
            .env
            .contains(&(b"ODD_VALUE".to_vec(), b"caf\xe9".to_vec())));
        assert_eq!(request.parent_request.as_deref(), Some("req-parent-9"));
        send(stream, decision(Action::Deny, "inspected", false));
    });
    let mut cmd = Command::new(&tool);
    warden.configure(&mut cmd);
    let out = cmd
        .arg("status")
        .arg(OsStr::from_bytes(b"\xff\xfe"))
        .env("ODD_VALUE", OsStr::from_bytes(b"caf\xe9"))
        .env(PARENT_REQUEST_ENV, "req-parent-9")
        .current_dir(&work.dir)
        .output()
        .unwrap();
    warden.finish();
    assert_eq!(stderr_of(&out), "clawrden: denied: inspected\n");
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn bare_tool_name_resolves_tool_path_through_path() {
    let work = Scratch::new();
    let tool = symlinked_tool(&work.dir, "curl");
    let expected_tool = tool.as_os_str().as_bytes().to_vec();
    let warden = FakeWarden::serve(move |stream, request| {
        assert_eq!(request.argv, vec![b"curl".to_vec(), b"-s".to_vec()]);
        assert_eq!(request.tool_path, expected_tool);
        send(stream, decision(Action::Deny, "inspected", false));
    });
    let path = format!(
        "{}/nothing-here:{}/bin",
        work.dir.display(),
        work.dir.display()
    );
    let mut cmd = Command::new("curl");
    warden.configure(&mut cmd);
    let out = cmd.arg("-s").env("PATH", path).output().unwrap();
    warden.finish();
    assert_eq!(stderr_of(&out), "clawrden: denied: inspected\n");
}

#[test]
fn version_and_usage() {
    let out = Command::new(SHIM).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("clawrden-shim {} (protocol 2)\n", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(SHIM).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("usage: clawrden-shim run -- COMMAND"));
    let out = Command::new(SHIM).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("CLAWRDEN_HELLO_TIMEOUT_MS"));
}

#[test]
fn terminal_stdin_is_raw_while_streaming_and_restored_after() {
    use nix::pty::{openpty, Winsize};
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    use nix::sys::termios::{tcgetattr, LocalFlags};

    let size = Winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    // openpty's descriptors are inheritable; keep them out of other tests' children.
    for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    let before = tcgetattr(&pty.slave).unwrap();
    assert!(before
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ISIG));

    let before_settings = termios_of(&pty.slave);
    let warden = FakeWarden::serve(move |stream, request| {
        let terminal = request.terminal.expect("the caller's terminal");
        assert_eq!(
            (terminal.size.rows, terminal.size.cols, terminal.term),
            (33, 101, b"xterm-test".to_vec())
        );
        assert_eq!(terminal.termios, before_settings);
        assert_eq!(request.stdio, [FdKind::Terminal; 3]);
        assert!(!request.fds_attached);
        send(stream, allow());
        // Output flows only once the shim streams, i.e. after it switched to raw mode.
        send(stream, Message::TtyOut(b"ready".to_vec()));
        // Raw mode: Ctrl-C arrives as a byte, not as a signal to the shim.
        assert_eq!(read_message(stream).unwrap(), Some(Message::Stdin(vec![3])));
        let pid = getsockopt(&*stream, PeerCredentials).unwrap().pid();
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
        assert_eq!(
            read_message(stream).unwrap(),
            Some(Message::Resize {
                rows: 33,
                cols: 101
            })
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        assert_eq!(read_message(stream).unwrap(), Some(Message::Signal(2)));
        send(stream, Message::TtyOut(b"ok".to_vec()));
        send(stream, Message::Exit(0));
        hold_until_shim_exits(stream);
    });
    let mut cmd = warden.shim_run(&["vim"]);
    cmd.env("TERM", "xterm-test")
        .stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut master = std::fs::File::from(pty.master);
    assert_eq!(read_pty(&mut master), b"ready");
    master.write_all(&[3]).unwrap();
    let status = child.wait().unwrap();
    warden.finish();
    assert_eq!(status.code(), Some(0));

    let after = tcgetattr(&pty.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
    assert_eq!(read_pty(&mut master), b"ok");
}

/// What the pty master has to read now (waiting up to 5 s for the first byte).
fn read_pty(master: &mut std::fs::File) -> Vec<u8> {
    let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::from(5_000u16)).unwrap(), 1);
    let mut buf = [0u8; 64];
    let n = master.read(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn signals_to_the_shim_are_forwarded_to_the_command() {
    let warden = FakeWarden::serve(|stream, _| {
        send(stream, allow());
        // Output flows only once the shim streams, i.e. after its signals are blocked.
        send(stream, Message::Stdout(b"started\n".to_vec()));
        assert_eq!(read_message(stream).unwrap(), Some(Message::StdinEof));
        // Not on a terminal: SIGWINCH is not forwarded, SIGTERM is.
        assert_eq!(read_message(stream).unwrap(), Some(Message::Signal(15)));
        send(stream, Message::Signaled(15));
        hold_until_shim_exits(stream);
    });
    let mut child = warden
        .shim_run(&["sleep", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut started = [0u8; 8];
    stdout.read_exact(&mut started).unwrap();
    assert_eq!(&started, b"started\n");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    warden.finish();
    assert_eq!(status.signal(), Some(15));
}

#[test]
fn broken_stdout_pipe_kills_the_shim_with_sigpipe() {
    let (reader_closed, wait_for_reader_closed) = std::sync::mpsc::channel::<()>();
    let warden = FakeWarden::serve(move |stream, _| {
        wait_for_reader_closed.recv().unwrap();
        send(stream, allow());
        // Keep producing until the shim is gone. (A child being spawned concurrently by
        // another test may briefly hold a copy of the read end, so the first write can
        // still succeed; the pipe then breaks as soon as that copy is closed.)
        let chunk = Message::Stdout(vec![b'y'; 4096]);
        while write_message(stream, &chunk).is_ok() {}
    });
    let mut child = warden
        .shim_run(&["yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    reader_closed.send(()).unwrap();
    let out = child.wait_with_output().unwrap();
    warden.finish();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert_eq!(out.stderr, b"");
}

#[test]
fn closed_stdin_is_reported_and_ends_at_once() {
    let warden = FakeWarden::serve(|stream, request| {
        assert!(!request.stdin_open());
        assert_eq!(request.stdio, [FdKind::Closed, FdKind::Pipe, FdKind::Pipe]);
        assert_eq!(request.attached_fds(), [1, 2]);
        send(stream, allow());
        assert_eq!(read_message(stream).unwrap(), Some(Message::StdinEof));
        send(stream, Message::Exit(0));
        hold_until_shim_exits(stream);
    });
    let mut cmd = Command::new("/bin/sh");
    warden.configure(&mut cmd);
    let out = cmd
        .args(["-c", "exec \"$0\" run -- cat <&-", SHIM])
        .output()
        .unwrap();
    warden.finish();
    assert_eq!(stderr_of(&out), "");
    assert_eq!(out.status.code(), Some(0));
}

/// A pseudo-terminal pair of 24 x 80 whose descriptors stay out of other tests' children.
fn test_pty() -> nix::pty::OpenptyResult {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    pty
}

#[test]
fn the_callers_terminal_ends_with_the_settings_the_command_left() {
    let pty = test_pty();
    let before = termios_of(&pty.slave);
    let mut left = before.clone();
    left.lflag &= !(libc::ECHO | libc::ICANON);
    left.cc[libc::VINTR] = 0x18;
    let sent = left.clone();
    let warden = FakeWarden::serve(move |stream, _| {
        send(stream, allow());
        // As `stty -echo -icanon intr ^X` in the command would make its PTY.
        send(stream, Message::Termios(sent));
        send(stream, Message::Exit(0));
        hold_until_shim_exits(stream);
    });
    let mut cmd = warden.shim_run(&["stty", "-echo", "-icanon", "intr", "^X"]);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    let status = cmd.status().unwrap();
    warden.finish();
    assert_eq!(status.code(), Some(0));
    assert_eq!(termios_of(&pty.slave), left);
}

#[test]
fn terminal_output_on_a_terminal_stdout_is_not_processed_twice() {
    let pty = test_pty();
    let before = termios_of(&pty.slave);
    assert_ne!(before.oflag & libc::ONLCR, 0);
    let warden = FakeWarden::serve(move |stream, request| {
        assert_eq!(
            request.stdio,
            [FdKind::Other, FdKind::Terminal, FdKind::Terminal]
        );
        // stdin (/dev/null) is handed over; only the terminal streams.
        assert_eq!(request.attached_fds(), [0]);
        send(stream, decision(Action::Allow, "rule test allows", true));
        // What the command's PTY (with the caller's onlcr) made of "a\nb\n".
        send(stream, Message::TtyOut(b"a\r\nb\r\n".to_vec()));
        send(stream, Message::Exit(0));
        hold_until_shim_exits(stream);
    });
    let mut cmd = warden.shim_run(&["printf", "a\\nb\\n"]);
    cmd.stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    let status = cmd.status().unwrap();
    warden.finish();
    assert_eq!(status.code(), Some(0));
    let mut master = std::fs::File::from(pty.master);
    assert_eq!(read_pty(&mut master), b"a\r\nb\r\n");
    assert_eq!(termios_of(&pty.slave), before, "the terminal is restored");
}

#[test]
fn an_end_of_file_typed_before_the_call_reaches_the_command_as_eof_not_as_a_nul() {
    let pty = test_pty();
    let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
    // Ctrl-D (what `script` types when its own input ends) arrives while the terminal is
    // still in canonical mode: the terminal keeps an end-of-file mark in its input.
    master.write_all(&[4]).unwrap();
    let warden = FakeWarden::serve(move |stream, _| {
        send(stream, allow());
        // The mark comes through as the terminal's VEOF character, which the command's
        // PTY (in the same mode) turns back into end of file; never as a NUL byte.
        assert_eq!(read_message(stream).unwrap(), Some(Message::Stdin(vec![4])));
        send(stream, Message::Exit(0));
        hold_until_shim_exits(stream);
    });
    let mut cmd = warden.shim_run(&["python3", "-c", "print(1)"]);
    cmd.stdin(pty.slave.try_clone().unwrap())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    let status = cmd.status().unwrap();
    warden.finish();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn descriptors_above_2_are_described_and_attached_in_order() {
    let scratch = Scratch::new();
    let file = scratch.dir.join("three");
    std::fs::write(&file, b"3").unwrap();
    let warden = FakeWarden::raw(|mut stream| {
        let (request, fds) = receive_request_with_fds(&mut stream);
        assert_eq!(request.stdio, [FdKind::Other, FdKind::Pipe, FdKind::Pipe]);
        assert_eq!(
            request.extra_fds,
            [
                ExtraFd {
                    fd: 3,
                    kind: FdKind::File
                },
                ExtraFd {
                    fd: 9,
                    kind: FdKind::Pipe
                },
                // bash leaves the process substitution's own descriptor open too.
                ExtraFd {
                    fd: 63,
                    kind: FdKind::Pipe
                }
            ]
        );
        assert_eq!(request.extra_fds_dropped, 0);
        assert_eq!(request.attached_fds(), [0, 1, 2, 3, 9, 63]);
        assert_eq!(fds.len(), 6);
        let mut three = String::new();
        std::fs::File::open(format!("/proc/self/fd/{}", fds[3]))
            .unwrap()
            .read_to_string(&mut three)
            .unwrap();
        assert_eq!(three, "3");
        for fd in fds {
            nix::unistd::close(fd).unwrap();
        }
        send(&mut stream, decision(Action::Deny, "seen", false));
    });
    let mut cmd = Command::new("/bin/bash");
    warden.configure(&mut cmd);
    let out = cmd
        .args([
            "-c",
            "exec \"$0\" run -- cat 3<\"$1\" 9< <(echo nine)",
            SHIM,
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    warden.finish();
    assert_eq!(stderr_of(&out), "clawrden: denied: seen\n");
}
