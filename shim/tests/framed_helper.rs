//! `clawrden-shim exec-helper --framed`, driven over its stdin/stdout with the executor
//! channel's frames, as the mirror executor drives it inside a prisoner (here without
//! Docker, as the test's own user).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clawrden_protocol::channel::{ChannelFrame, ChannelMsg, Start, StdioPlan, SINGLE_CALL};
use clawrden_protocol::{Termios, WinSize};

const SHIM: &str = env!("CARGO_BIN_EXE_clawrden-shim");

/// A framed helper running `sh -c SCRIPT`.
struct Helper {
    child: Child,
    frames: std::sync::mpsc::Receiver<ChannelFrame>,
}

impl Helper {
    fn start(script: &str) -> Helper {
        Helper::start_with(&[], script)
    }

    /// With more exec-helper options before `--`.
    fn start_with(options: &[&str], script: &str) -> Helper {
        let mut child = Command::new(SHIM)
            .args(["exec-helper", "--framed", "--grace-ms", "300"])
            .args(options)
            .arg("--")
            .args(["/bin/sh", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the exec-helper");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                match out.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while let Some((frame, used)) =
                    ChannelFrame::decode_from(&buf).expect("the helper sends valid frames")
                {
                    buf.drain(..used);
                    if tx.send(frame).is_err() {
                        return;
                    }
                }
            }
        });
        Helper { child, frames: rx }
    }

    fn send(&mut self, msgs: &[ChannelMsg]) {
        let mut buf = Vec::new();
        for m in msgs {
            ChannelFrame::single(m.clone()).encode(&mut buf).unwrap();
        }
        // One write: frames that arrive together must all be handled.
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(&buf).unwrap();
        stdin.flush().unwrap();
    }

    fn next(&self) -> ChannelMsg {
        let frame = self
            .frames
            .recv_timeout(Duration::from_secs(30))
            .expect("a frame from the helper within 30 s");
        assert_eq!(frame.call, SINGLE_CALL);
        frame.msg
    }

    /// Every frame until the outcome; returns (stdout, stderr, tty output, settings,
    /// stdin granted back, outcome).
    fn collect(&self) -> Collected {
        let mut c = Collected::default();
        loop {
            match self.next() {
                ChannelMsg::Started { pid, program } => {
                    c.pid = pid;
                    c.program = program;
                }
                ChannelMsg::Stdout(b) => c.stdout.extend(b),
                ChannelMsg::Stderr(b) => c.stderr.extend(b),
                ChannelMsg::TtyOut(b) => c.tty.extend(b),
                ChannelMsg::Termios(t) => c.settings.push(t),
                ChannelMsg::StdinWindow(n) => c.granted += u64::from(n),
                end @ (ChannelMsg::Exit(_) | ChannelMsg::Signaled(_) | ChannelMsg::Failed(_)) => {
                    c.end = Some(end);
                    return c;
                }
                other => panic!("a helper never sends {other:?}"),
            }
        }
    }

    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

#[derive(Default, Debug)]
struct Collected {
    pid: u32,
    program: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    tty: Vec<u8>,
    settings: Vec<Termios>,
    granted: u64,
    end: Option<ChannelMsg>,
}

fn pipes() -> Start {
    Start {
        stdio: [StdioPlan::Pipe; 3],
        terminal: None,
    }
}

/// The settings of a fresh pseudo-terminal (cooked).
fn cooked() -> Termios {
    let pty = nix::pty::openpty(None, None).unwrap();
    let t: libc::termios = nix::sys::termios::tcgetattr(&pty.slave).unwrap().into();
    Termios {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        cc: t.c_cc.to_vec(),
    }
}

fn size() -> WinSize {
    WinSize {
        rows: 24,
        cols: 80,
        xpixel: 0,
        ypixel: 0,
    }
}

#[test]
fn stdin_sent_together_with_start_reaches_the_command() {
    let mut h = Helper::start("cat; echo done >&2");
    h.send(&[
        ChannelMsg::Start(pipes()),
        ChannelMsg::Stdin(b"hello\n".to_vec()),
        ChannelMsg::StdinEof,
    ]);
    let c = h.collect();
    assert!(c.pid > 0);
    assert_eq!(c.program, b"/bin/sh", "what the helper executed");
    assert_eq!(c.stdout, b"hello\n");
    assert_eq!(c.stderr, b"done\n");
    assert_eq!(c.granted, 6);
    assert_eq!(c.end, Some(ChannelMsg::Exit(0)));
    assert_eq!(h.finish().code(), Some(0));
}

#[test]
fn a_mebibyte_of_stdin_is_granted_back_as_the_command_takes_it() {
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let mut h = Helper::start("cat");
    h.send(&[ChannelMsg::Start(pipes())]);
    for chunk in data.chunks(65536) {
        h.send(&[ChannelMsg::Stdin(chunk.to_vec())]);
    }
    h.send(&[ChannelMsg::StdinEof]);
    let c = h.collect();
    assert_eq!(c.stdout.len(), data.len());
    assert!(c.stdout == data, "stdout differs from stdin");
    assert_eq!(c.granted, data.len() as u64);
    assert_eq!(c.end, Some(ChannelMsg::Exit(0)));
}

#[test]
fn death_by_a_signal_is_reported_as_that_signal() {
    let mut h = Helper::start("kill -TERM $$");
    h.send(&[ChannelMsg::Start(pipes()), ChannelMsg::StdinEof]);
    assert_eq!(h.collect().end, Some(ChannelMsg::Signaled(libc::SIGTERM)));
    assert_eq!(h.finish().code(), Some(0));
}

#[test]
fn a_forwarded_signal_reaches_the_command() {
    let mut h =
        Helper::start("trap 'echo got-INT; exit 7' INT; echo ready; while :; do sleep 0.05; done");
    h.send(&[ChannelMsg::Start(pipes())]);
    assert!(matches!(h.next(), ChannelMsg::Started { .. }));
    assert_eq!(h.next(), ChannelMsg::Stdout(b"ready\n".to_vec()));
    h.send(&[ChannelMsg::Signal(libc::SIGINT)]);
    let c = h.collect();
    assert_eq!(c.stdout, b"got-INT\n");
    assert_eq!(c.end, Some(ChannelMsg::Exit(7)));
}

#[test]
fn kill_and_the_end_of_the_channel_kill_the_whole_tree() {
    for how in ["kill", "hangup"] {
        let mut h = Helper::start("sleep 60 & echo $!; wait");
        h.send(&[ChannelMsg::Start(pipes())]);
        assert!(matches!(h.next(), ChannelMsg::Started { .. }));
        let ChannelMsg::Stdout(line) = h.next() else {
            panic!("expected the background pid")
        };
        let pid: i32 = String::from_utf8(line).unwrap().trim().parse().unwrap();
        if how == "kill" {
            h.send(&[ChannelMsg::Kill]);
        }
        // No outcome after a kill: the warden decides what to report.
        assert_eq!(h.finish().code(), Some(0), "{how}");
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "{how}: the background sleep {pid} outlived its helper"
        );
    }
}

#[test]
fn the_time_limit_kills_the_tree_while_the_warden_still_listens() {
    // The warden never sends `Kill` (as if it hung): the helper's own limit ends the call.
    let mut h = Helper::start_with(&["--time-limit-ms", "300"], "sleep 60 & echo $!; wait");
    h.send(&[ChannelMsg::Start(pipes())]);
    let c = h.collect();
    let pid: i32 = String::from_utf8(c.stdout.clone())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&c.stderr),
        "clawrden: time limit of 300 ms reached; process tree killed\n"
    );
    assert_eq!(c.end, Some(ChannelMsg::Exit(124)));
    assert_eq!(h.finish().code(), Some(0));
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "the background sleep {pid} outlived the time limit"
    );
}

#[test]
fn the_terminal_starts_with_the_callers_settings_and_its_changes_come_back() {
    let mut settings = cooked();
    settings.oflag &= !libc::ONLCR;
    // /dev/tty is the command's PTY (its controlling terminal); stdin stays a pipe.
    let mut h = Helper::start(
        "printf 'a\\nb\\n'; stty -F /dev/tty size; stty -F /dev/tty -echo; [ -t 0 ] || echo stdin-is-a-pipe",
    );
    h.send(&[
        ChannelMsg::Start(Start {
            stdio: [StdioPlan::Pipe, StdioPlan::Terminal, StdioPlan::Terminal],
            terminal: Some((settings.clone(), size())),
        }),
        ChannelMsg::StdinEof,
    ]);
    let c = h.collect();
    assert_eq!(c.end, Some(ChannelMsg::Exit(0)));
    assert_eq!(c.tty, b"a\nb\n24 80\nstdin-is-a-pipe\n");
    assert!(c.stdout.is_empty() && c.stderr.is_empty(), "{c:?}");
    let last = c.settings.last().expect("the command's change came back");
    assert_eq!(last.lflag & libc::ECHO, 0);
    assert_eq!(last.lflag | libc::ECHO, settings.lflag | libc::ECHO);
}

#[test]
fn typing_into_the_terminal_and_resizing_it() {
    let mut h = Helper::start("read line; echo \"got $line\"; stty size");
    h.send(&[
        ChannelMsg::Start(Start {
            stdio: [StdioPlan::Terminal; 3],
            terminal: Some((cooked(), size())),
        }),
        ChannelMsg::Resize(WinSize {
            rows: 50,
            cols: 132,
            xpixel: 0,
            ypixel: 0,
        }),
        ChannelMsg::Stdin(b"hi\n".to_vec()),
    ]);
    let c = h.collect();
    assert_eq!(c.end, Some(ChannelMsg::Exit(0)));
    assert_eq!(c.tty, b"hi\r\ngot hi\r\n50 132\r\n");
}

#[test]
fn a_command_that_closes_its_terminal_before_it_exits_does_not_die_of_sighup() {
    // close_stdout(3) in coreutils closes stdout and stderr at exit: the PTY's output
    // ends (EIO) while the command still runs. Hanging the terminal up then would kill
    // it with SIGHUP.
    let mut h = Helper::start("printf x; exec 1>&- 2>&-; sleep 0.3; exit 5");
    h.send(&[ChannelMsg::Start(Start {
        stdio: [StdioPlan::Null, StdioPlan::Terminal, StdioPlan::Terminal],
        terminal: Some((cooked(), size())),
    })]);
    let c = h.collect();
    assert_eq!(c.tty, b"x");
    assert_eq!(c.end, Some(ChannelMsg::Exit(5)));
}

#[test]
fn a_tool_without_an_original_fails_with_a_not_found_frame() {
    let originals =
        std::env::temp_dir().join(format!("clawrden-no-originals-{}", std::process::id()));
    std::fs::create_dir_all(&originals).unwrap();
    let uid = nix::unistd::getuid().to_string();
    let gid = nix::unistd::getgid().to_string();
    let mut child = Command::new(SHIM)
        .args([
            "exec-helper",
            "--framed",
            "--uid",
            &uid,
            "--gid",
            &gid,
            "--original-root",
        ])
        .arg(&originals)
        .args(["--", "no-such-tool", "/usr/bin/no-such-tool"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut start = Vec::new();
    ChannelFrame::single(ChannelMsg::Start(pipes()))
        .encode(&mut start)
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(&start).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir(&originals);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (frame, used) = ChannelFrame::decode_from(&out.stdout).unwrap().unwrap();
    assert_eq!(used, out.stdout.len(), "one frame, nothing else");
    match frame.msg {
        ChannelMsg::Failed(f) => {
            assert!(f.not_found, "{f:?}");
            assert!(
                f.message.starts_with("cannot execute no-such-tool: "),
                "{f:?}"
            );
        }
        other => panic!("expected a Failed frame, got {other:?}"),
    }
}
