//! The local executor against the real exec-helper (the clawrden-shim binary, which must
//! be built first: `cargo build -p clawrden-shim`).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clawrden_protocol::{FdKind, Terminal, Termios, WinSize};
use clawrden_warden::executor::local::cgroup::RequestCgroups;
use clawrden_warden::executor::local::{LocalExecutor, LocalOptions};
use clawrden_warden::executor::{
    ExecIo, ExecRequest, Executor, Outcome, PassedFds, Started, StreamIn, StreamOut,
};
use clawrden_warden::identity::{RunAs, WardenIdentity};
use tokio::sync::{mpsc, oneshot, watch};

const GRACE: Duration = Duration::from_millis(200);
const MARKER: &str = "CLAWRDEN_PARENT_REQUEST";

/// The shim binary next to this test's executable (target/debug/clawrden-shim).
fn shim_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let shim = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|debug| debug.join("clawrden-shim"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        shim.is_file(),
        "{} is missing: run cargo build -p clawrden-shim first",
        shim.display()
    );
    shim
}

/// Where the tests look commands up (and their PATH).
const COMMAND_PATH: &str = "/usr/bin:/bin";

/// A local executor whose commands may run as this test process's own uid (so the tests
/// below run as any user); the identity tests further down use [`executor_with`].
fn executor() -> LocalExecutor {
    executor_with(None, true, None)
}

fn executor_with(
    run_as: Option<&str>,
    allow_run_as_warden: bool,
    cgroups: Option<RequestCgroups>,
) -> LocalExecutor {
    LocalExecutor::new(LocalOptions {
        exec_helper: shim_binary(),
        command_path: COMMAND_PATH.into(),
        run_as: RunAs::new(WardenIdentity::current(), run_as, allow_run_as_warden)
            .expect("run-as settings"),
        cgroups,
    })
    .expect("exec-helper usable")
}

/// A request id unique to this test process and call.
fn unique_id(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A request from this test process's own uid and gid.
fn request(tag: &str, argv: &[&str]) -> ExecRequest {
    let id = unique_id(tag);
    ExecRequest {
        request_id: id.clone(),
        prisoner: "default".into(),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        tool_path: format!("/usr/bin/{}", argv[0]).into_bytes(),
        cwd: b"/".to_vec(),
        env: vec![(MARKER.as_bytes().to_vec(), id.into_bytes())],
        stdio: [FdKind::Closed, FdKind::Pipe, FdKind::Pipe],
        terminal: None,
        timeout: Duration::from_secs(30),
        grace: GRACE,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: Vec::new(),
        run_as: None,
        fds: None,
    }
}

/// The settings a fresh pseudo-terminal starts with (cooked: echo, icanon, onlcr...).
fn fresh_terminal_settings() -> Termios {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    clawrden_warden::sys::get_termios(std::os::fd::AsFd::as_fd(&pty.slave))
        .expect("settings of a fresh pty")
}

/// A caller's terminal of `rows` x `cols` with `settings`.
fn terminal(rows: u16, cols: u16, settings: Termios) -> Terminal {
    Terminal {
        termios: settings,
        size: WinSize {
            rows,
            cols,
            xpixel: 0,
            ypixel: 0,
        },
        term: b"xterm".to_vec(),
    }
}

/// `req` with every standard descriptor on the caller's (cooked) terminal.
fn on_terminal(mut req: ExecRequest, rows: u16, cols: u16) -> ExecRequest {
    req.stdio = [FdKind::Terminal; 3];
    req.terminal = Some(terminal(rows, cols, fresh_terminal_settings()));
    req
}

fn marker_of(req: &ExecRequest) -> Vec<u8> {
    let id = &req
        .env
        .iter()
        .find(|(k, _)| k == MARKER.as_bytes())
        .expect("marker")
        .1;
    [MARKER.as_bytes(), b"=", id].concat()
}

/// Pids of live processes whose environment holds `marker` (`NAME=value`).
fn processes_with(marker: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|var| var == marker) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{} {}",
                name.to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// Everything a run produced.
#[derive(Debug)]
struct Run {
    outcome: Outcome,
    started: Option<Started>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Output of the command's terminal.
    tty: Vec<u8>,
    /// Terminal settings sent back, in order.
    settings: Vec<Termios>,
    /// Output frames in arrival order.
    frames: usize,
}

/// Runs `req`, feeding `input` in order (then keeping the input channel open until the
/// run ends, since closing it means the shim disconnected).
async fn run_with(exec: &LocalExecutor, req: ExecRequest, input: Vec<StreamIn>) -> Run {
    run_controlled(exec, req, input, |_| {}).await
}

/// Like [`run_with`]; `control` gets the cancel sender to keep or use.
async fn run_controlled(
    exec: &LocalExecutor,
    req: ExecRequest,
    input: Vec<StreamIn>,
    control: impl FnOnce(watch::Sender<bool>),
) -> Run {
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(4);
    let (started_tx, started_rx) = oneshot::channel();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    control(cancel_tx);
    let io = ExecIo {
        input: in_rx,
        output: out_tx,
        started: started_tx,
        cancel: cancel_rx,
    };
    let run = async {
        let outcome = exec.run(req, io).await;
        drop(done_tx);
        outcome
    };
    let feed = async move {
        for message in input {
            if in_tx.send(message).await.is_err() {
                return;
            }
        }
        let _ = done_rx.await;
    };
    let collect = async {
        let mut run = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
        while let Some(out) = out_rx.recv().await {
            run.4 += 1;
            match out {
                StreamOut::Stdout(b) => run.0.extend_from_slice(&b),
                StreamOut::Stderr(b) => run.1.extend_from_slice(&b),
                StreamOut::TtyOut(b) => run.2.extend_from_slice(&b),
                StreamOut::Termios(t) => run.3.push(t),
            }
        }
        run
    };
    let (outcome, (), (stdout, stderr, tty, settings, frames)) = tokio::join!(run, feed, collect);
    Run {
        outcome,
        started: started_rx.await.ok(),
        stdout,
        stderr,
        tty,
        settings,
        frames,
    }
}

#[tokio::test]
async fn stdout_and_stderr_arrive_byte_exact_on_their_own_streams() {
    let req = request(
        "echo",
        &[
            "sh",
            "-c",
            r"printf 'out\001\377 line\n'; printf 'err\000x' >&2; printf tail",
        ],
    );
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(run.stdout, b"out\x01\xff line\ntail");
    assert_eq!(run.stderr, b"err\0x");
    let started = run.started.expect("Started sent");
    assert!(started.pid > 0);
    assert!(
        started.program.ends_with(b"/sh"),
        "{:?}",
        String::from_utf8_lossy(&started.program)
    );
}

#[tokio::test]
async fn exit_codes_are_mirrored() {
    let exec = executor();
    for code in [0, 1, 42, 255] {
        let script = format!("exit {code}");
        let run = run_with(&exec, request("exit", &["sh", "-c", &script]), vec![]).await;
        assert_eq!(run.outcome, Outcome::Exited(code), "exit {code}");
    }
}

#[tokio::test]
async fn death_by_signal_is_reported_as_signaled() {
    let req = request("signal", &["sh", "-c", "kill -TERM $$"]);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Signaled(libc::SIGTERM));
}

#[tokio::test]
async fn one_mebibyte_of_stdin_goes_through_cat_unchanged() {
    let mut req = request("cat", &["cat"]);
    req.stdio[0] = FdKind::Pipe;
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut input: Vec<StreamIn> = data
        .chunks(64 * 1024)
        .map(|c| StreamIn::Stdin(c.to_vec()))
        .collect();
    input.push(StreamIn::StdinEof);
    let run = run_with(&executor(), req, input).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(run.stdout.len(), data.len());
    assert!(run.stdout == data, "stdout differs from stdin");
    assert!(run.stderr.is_empty());
}

#[tokio::test]
async fn closed_stdin_reads_as_empty() {
    let req = request("nostdin", &["sh", "-c", "wc -c"]);
    let run = run_with(&executor(), req, vec![StreamIn::Stdin(b"ignored".to_vec())]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "0");
}

#[tokio::test]
async fn pty_mode_gives_a_terminal_of_the_requested_size() {
    let req = on_terminal(request("tty", &["sh", "-c", "tty; stty size"]), 33, 101);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert!(run.stdout.is_empty());
    let text = String::from_utf8_lossy(&run.tty);
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{text:?}");
    assert_eq!(&lines[1..], ["33 101", ""], "{text:?}");
    assert!(run.stderr.is_empty());
}

#[tokio::test]
async fn pty_mode_types_stdin_resizes_and_ends_input_with_veof() {
    let req = on_terminal(
        request(
            "ttyin",
            &[
                "sh",
                "-c",
                "read line; echo \"got $line\"; stty size; cat; echo end",
            ],
        ),
        24,
        80,
    );
    let input = vec![
        StreamIn::Resize {
            rows: 50,
            cols: 132,
        },
        StreamIn::Stdin(b"hello\n".to_vec()),
        StreamIn::StdinEof,
    ];
    let run = run_with(&executor(), req, input).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    // The terminal echoes the typed line; ^D at the start of a line is not echoed.
    assert_eq!(
        String::from_utf8_lossy(&run.tty),
        "hello\r\ngot hello\r\n50 132\r\nend\r\n"
    );
    assert!(run.stdout.is_empty() && run.settings.is_empty());
}

#[tokio::test]
async fn forwarded_sigint_reaches_the_command() {
    let req = request(
        "sigint",
        &[
            "sh",
            "-c",
            "trap 'echo caught; exit 7' INT; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let exec = executor();
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(4);
    let (started_tx, _started_rx) = oneshot::channel();
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let io = ExecIo {
        input: in_rx,
        output: out_tx,
        started: started_tx,
        cancel: cancel_rx,
    };
    let drive = async {
        let mut stdout = Vec::new();
        let mut signalled = false;
        while let Some(out) = out_rx.recv().await {
            if let StreamOut::Stdout(b) = out {
                stdout.extend_from_slice(&b);
            }
            if !signalled && stdout.starts_with(b"ready\n") {
                signalled = true;
                // Not in the forwarded set: must be ignored, not kill the command.
                in_tx
                    .send(StreamIn::Signal(libc::SIGUSR1))
                    .await
                    .expect("send");
                in_tx
                    .send(StreamIn::Signal(libc::SIGINT))
                    .await
                    .expect("send");
            }
        }
        (stdout, in_tx)
    };
    let (outcome, (stdout, _in_tx)) = tokio::join!(exec.run(req, io), drive);
    assert_eq!(outcome, Outcome::Exited(7));
    assert_eq!(stdout, b"ready\ncaught\n");
}

const TREE: &str = "sleep 1000 & setsid sh -c 'sleep 1000' & sleep 1000";
const TREE_THEN_READY: &str = "sleep 1000 & setsid sh -c 'sleep 1000' & echo ready; sleep 1000";

#[tokio::test]
async fn timeout_kills_the_whole_tree_including_setsid_grandchildren() {
    let mut req = request("timeout", &["sh", "-c", TREE]);
    req.timeout = Duration::from_millis(500);
    let marker = marker_of(&req);
    let begun = Instant::now();
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(
        run.outcome,
        Outcome::TimedOut {
            after: Duration::from_millis(500)
        }
    );
    assert!(
        begun.elapsed() < Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn processes_that_ignore_sigterm_die_after_the_grace_period() {
    let mut req = request(
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; sh -c \"trap '' TERM; sleep 1000\" & sleep 1000",
        ],
    );
    req.timeout = Duration::from_millis(300);
    let marker = marker_of(&req);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(
        run.outcome,
        Outcome::TimedOut {
            after: Duration::from_millis(300)
        }
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn shim_disconnect_cancels_and_kills_the_tree() {
    let req = request("disconnect", &["sh", "-c", TREE_THEN_READY]);
    let marker = marker_of(&req);
    let marker = marker.as_slice();
    let exec = executor();
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(4);
    let (started_tx, _started_rx) = oneshot::channel();
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let io = ExecIo {
        input: in_rx,
        output: out_tx,
        started: started_tx,
        cancel: cancel_rx,
    };
    let drive = async move {
        // Once the command is running, the shim goes away.
        let first = out_rx.recv().await;
        let running = processes_with(marker).len();
        drop(in_tx);
        while out_rx.recv().await.is_some() {}
        (first, running)
    };
    let (outcome, (first, running)) = tokio::join!(exec.run(req, io), drive);
    assert_eq!(first, Some(StreamOut::Stdout(b"ready\n".to_vec())));
    // The helper, sh, its background sleep and the setsid'd sh were all there.
    assert!(
        running >= 3,
        "only {running} marked processes while running"
    );
    assert_eq!(
        outcome,
        Outcome::Cancelled {
            reason: "the shim disconnected".into()
        }
    );
    assert_eq!(processes_with(marker), Vec::<String>::new());
}

#[tokio::test]
async fn dropping_the_run_future_still_kills_the_tree() {
    let req = request("drop", &["sh", "-c", TREE_THEN_READY]);
    let marker = marker_of(&req);
    let exec = executor();
    let (_in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(4);
    let (started_tx, _started_rx) = oneshot::channel();
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let io = ExecIo {
        input: in_rx,
        output: out_tx,
        started: started_tx,
        cancel: cancel_rx,
    };
    let run = exec.run(req, io);
    tokio::select! {
        outcome = run => panic!("the command ended on its own: {outcome:?}"),
        first = out_rx.recv() => assert_eq!(first, Some(StreamOut::Stdout(b"ready\n".to_vec()))),
    }
    assert!(!processes_with(&marker).is_empty());
    // The run future is gone; the tree is killed by a background task, which cannot be
    // awaited from here: poll /proc, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&marker).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn warden_cancel_kills_the_tree() {
    let req = request("cancel", &["sh", "-c", TREE]);
    let marker = marker_of(&req);
    let run = run_controlled(&executor(), req, vec![], |cancel| {
        cancel.send_replace(true);
    })
    .await;
    assert_eq!(
        run.outcome,
        Outcome::Cancelled {
            reason: "cancelled by the warden".into()
        }
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn background_leftovers_die_when_the_command_exits() {
    let req = request(
        "leftover",
        &[
            "sh",
            "-c",
            "sleep 1000 & setsid sh -c 'sleep 1000' & echo main done",
        ],
    );
    let marker = marker_of(&req);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(run.stdout, b"main done\n");
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_command_is_not_found() {
    let req = request("missing", &["/opt/x/clawrden-no-such-command-here", "arg"]);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(
        run.outcome,
        Outcome::SpawnFailed {
            not_found: true,
            message: "command not found: clawrden-no-such-command-here (searched the warden's \
                      command_path /usr/bin:/bin)"
                .into()
        }
    );
    assert!(run.started.is_none());
}

#[tokio::test]
async fn missing_working_directory_fails_to_spawn_naming_it() {
    let mut req = request("cwd", &["true"]);
    req.cwd = b"/nonexistent/clawrden-cwd".to_vec();
    let run = run_with(&executor(), req, vec![]).await;
    match run.outcome {
        Outcome::SpawnFailed {
            not_found: false,
            message,
        } => assert!(
            message.starts_with("working directory /nonexistent/clawrden-cwd is not usable"),
            "{message}"
        ),
        other => panic!("expected SpawnFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn the_command_runs_in_the_requested_directory_with_exactly_the_given_env() {
    let mut req = request("env", &["env"]);
    req.cwd = b"/tmp".to_vec();
    req.env.push((b"LANG".to_vec(), b"C.UTF-8".to_vec()));
    req.env.push((b"BIN".to_vec(), b"\xff\x01".to_vec()));
    let marker = marker_of(&req);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    // Exactly: the fixed PATH, the identity's HOME (and USER, LOGNAME when it has a
    // name), then the session's entries byte-exact; nothing from the warden's own env.
    let me = nix::unistd::User::from_uid(nix::unistd::getuid()).expect("getpwuid");
    let mut want: Vec<u8> = b"PATH=/usr/bin:/bin\n".to_vec();
    let home = me.as_ref().map_or(PathBuf::from("/"), |u| u.dir.clone());
    want.extend_from_slice(format!("HOME={}\n", home.display()).as_bytes());
    if let Some(u) = &me {
        want.extend_from_slice(format!("USER={0}\nLOGNAME={0}\n", u.name).as_bytes());
    }
    want.extend_from_slice(&marker);
    want.extend_from_slice(b"\nLANG=C.UTF-8\nBIN=\xff\x01\n");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(run.stdout, want);
}

#[tokio::test]
async fn passed_fds_become_the_commands_stdio_and_nothing_streams() {
    let (stdin_r, stdin_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let (stdout_r, stdout_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let (stderr_r, stderr_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    std::fs::File::from(stdin_w)
        .write_all(b"through the fd\n")
        .expect("write stdin");
    let mut req = request("fds", &["sh", "-c", "cat; echo oops >&2; exit 3"]);
    req.stdio = [FdKind::Pipe; 3];
    req.fds = Some(PassedFds {
        stdio: [Some(stdin_r), Some(stdout_w), Some(stderr_w)],
        extra: Vec::new(),
    });
    let run = run_with(
        &executor(),
        req,
        vec![StreamIn::Stdin(b"not used".to_vec())],
    )
    .await;
    assert_eq!(run.outcome, Outcome::Exited(3));
    assert_eq!(run.frames, 0);
    assert_eq!(read_all(stdout_r), b"through the fd\n");
    assert_eq!(read_all(stderr_r), b"oops\n");
}

fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut out)
        .expect("read pipe");
    out
}

#[test]
fn a_missing_exec_helper_is_refused_with_a_hint() {
    let err = LocalExecutor::new(LocalOptions {
        exec_helper: PathBuf::from("/nonexistent/clawrden-shim"),
        command_path: COMMAND_PATH.into(),
        run_as: RunAs::new(WardenIdentity::current(), None, true).expect("run-as"),
        cgroups: None,
    })
    .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "cannot use exec-helper /nonexistent/clawrden-shim: No such file or directory (os error 2); \
         install clawrden-shim there or pass --exec-helper PATH"
    );
}

#[test]
fn resolution_skips_the_shim_in_the_search_path() {
    let shim = shim_binary();
    let dir = shim.parent().expect("dir").to_path_buf();
    let mut search = dir.into_os_string();
    search.push(":/usr/bin:/bin");
    let exec = LocalExecutor::new(LocalOptions {
        exec_helper: shim,
        command_path: search,
        run_as: RunAs::new(WardenIdentity::current(), None, true).expect("run-as"),
        cgroups: None,
    })
    .expect("usable");
    assert_eq!(exec.resolve(b"clawrden-shim"), None);
    let sh = exec.resolve(b"/somewhere/else/sh").expect("sh found");
    assert!(
        sh == Path::new("/usr/bin/sh") || sh == Path::new("/bin/sh"),
        "{sh:?}"
    );
}

// The exec-helper on its own: paths the local executor does not take.

fn helper(args: &[&str]) -> std::process::Output {
    std::process::Command::new(shim_binary())
        .arg("exec-helper")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run exec-helper")
}

#[test]
fn exec_helper_reports_exec_failures_with_127_and_126() {
    let missing = helper(&["--", "/nonexistent/clawrden-prog", "prog"]);
    assert_eq!(missing.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "clawrden: cannot execute /nonexistent/clawrden-prog: No such file or directory\n"
    );
    let dir = std::env::temp_dir().join(unique_id("noexec"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let plain = dir.join("plain");
    std::fs::write(&plain, "echo never\n").expect("write");
    let plain_path = plain.to_str().expect("utf-8 path");
    let not_executable = helper(&["--", plain_path, "plain"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(not_executable.status.code(), Some(126));
    assert_eq!(
        String::from_utf8_lossy(&not_executable.stderr),
        format!("clawrden: cannot execute {plain_path}: Permission denied\n")
    );
    assert!(missing.stdout.is_empty() && not_executable.stdout.is_empty());
}

#[test]
fn exec_helper_rejects_a_bad_command_line_with_126() {
    let out = helper(&["--grace-ms", "soon", "--", "/bin/true", "true"]);
    assert_eq!(out.status.code(), Some(126));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "clawrden: exec-helper: --grace-ms wants a non-negative integer, not \"soon\"\nusage: "
        ),
        "{stderr}"
    );
}

#[test]
fn exec_helper_drops_privileges_and_runs_a_script_through_its_open_fd() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    let dir = std::env::temp_dir().join(unique_id("uid"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = dir.join("ids.sh");
    std::fs::write(&script, "#!/bin/sh\nid -u; id -g; id -G; echo \"$0 $*\"\n").expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let script_path = script.to_str().expect("utf-8 path");
    let out = helper(&[
        "--uid",
        "65534",
        "--gid",
        "65533",
        "--groups",
        "65532",
        "--",
        script_path,
        "ids",
        "a",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..3], ["65534", "65533", "65533 65532"], "{text}");
    assert!(
        lines[3].starts_with("/dev/fd/") && lines[3].ends_with(" a"),
        "{text}"
    );
}

/// A pipe whose read end is returned, with `data` already written into it and its write
/// end closed.
fn pipe_with(data: &[u8]) -> OwnedFd {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    std::fs::File::from(w).write_all(data).expect("fill pipe");
    r
}

#[tokio::test]
async fn the_pty_starts_with_the_callers_settings() {
    let exec = executor();
    let mut cooked = fresh_terminal_settings();
    cooked.cc[libc::VINTR] = 0x18;
    let mut req = on_terminal(
        request("settings", &["sh", "-c", "printf 'a\\nb\\n'; stty -a"]),
        24,
        200,
    );
    req.terminal = Some(terminal(24, 200, cooked.clone()));
    let run = run_with(&exec, req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    let text = String::from_utf8_lossy(&run.tty);
    assert!(text.starts_with("a\r\nb\r\n"), "{text:?}");
    assert!(text.contains("intr = ^X;"), "{text:?}");
    assert!(text.contains(" onlcr"), "{text:?}");

    // The same without output processing: no '\r' is added.
    let mut raw_out = cooked;
    raw_out.oflag &= !libc::ONLCR;
    let mut req = on_terminal(request("settings", &["printf", "a\\nb\\n"]), 24, 80);
    req.terminal = Some(terminal(24, 80, raw_out));
    let run = run_with(&exec, req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(run.tty, b"a\nb\n");
}

#[tokio::test]
async fn settings_the_command_changes_come_back_before_its_outcome() {
    let start = fresh_terminal_settings();
    let req = on_terminal(
        request("stty", &["sh", "-c", "stty -echo -icanon; printf done"]),
        24,
        80,
    );
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(run.tty, b"done");
    let last = run.settings.last().expect("the changed settings came back");
    let mut want = start;
    want.lflag &= !(libc::ECHO | libc::ICANON);
    assert_eq!(*last, want);

    // A command that changes nothing sends no settings.
    let req = on_terminal(request("stty", &["true"]), 24, 80);
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert!(run.settings.is_empty(), "{:?}", run.settings);
}

#[tokio::test]
async fn each_standard_descriptor_keeps_its_kind_in_all_eight_combinations() {
    let exec = executor();
    for combo in 0..8u8 {
        let is_tty = |fd: u8| combo & (1 << fd) != 0;
        let mut req = request(
            "kinds",
            &[
                "sh",
                "-c",
                "for fd in 0 1 2; do if [ -t $fd ]; then printf T >&3; else printf F >&3; fi; done",
            ],
        );
        let (answer_r, answer_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let mut passed = PassedFds::default();
        let mut keep = Vec::new();
        for fd in 0..3u8 {
            if is_tty(fd) {
                req.stdio[fd as usize] = FdKind::Terminal;
            } else {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
                req.stdio[fd as usize] = FdKind::Pipe;
                let (theirs, ours) = if fd == 0 { (r, w) } else { (w, r) };
                passed.stdio[fd as usize] = Some(theirs);
                keep.push(ours);
            }
        }
        passed.extra.push((3, answer_w));
        if combo != 0 {
            req.terminal = Some(terminal(24, 80, fresh_terminal_settings()));
        }
        req.fds = Some(passed);
        let run = run_with(&exec, req, vec![]).await;
        assert_eq!(run.outcome, Outcome::Exited(0), "combination {combo}");
        let want: String = (0..3)
            .map(|fd| if is_tty(fd) { 'T' } else { 'F' })
            .collect();
        assert_eq!(
            String::from_utf8(read_all(answer_r)).unwrap(),
            want,
            "isatty of 0, 1, 2 through the local executor"
        );
        drop(keep);
    }
}

#[tokio::test]
async fn extra_descriptors_reach_the_command_at_the_callers_numbers() {
    let (ten_r, ten_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let mut req = request(
        "extra",
        &["sh", "-c", "cat /dev/fd/63 /dev/fd/3; echo nine >&9"],
    );
    req.stdio = [FdKind::Closed, FdKind::Pipe, FdKind::Pipe];
    req.fds = Some(PassedFds {
        stdio: [None, None, None],
        extra: vec![
            (3, pipe_with(b"three\n")),
            (9, ten_w),
            (63, pipe_with(b"sixty-three\n")),
        ],
    });
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    assert_eq!(run.stdout, b"sixty-three\nthree\n");
    assert!(run.stderr.is_empty(), "{run:?}");
    assert_eq!(read_all(ten_r), b"nine\n");
}

#[tokio::test]
async fn no_descriptor_of_the_warden_reaches_the_command() {
    // A descriptor the warden inherited without close-on-exec (from its parent: a service
    // manager, a test runner) is inherited by the exec-helper too; it must not reach the
    // command. Only the passed one does.
    let stray = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open an inheritable descriptor");
    let mut req = request("leak", &["sh", "-c", "exec ls -l /proc/self/fd"]);
    req.stdio = [FdKind::Closed, FdKind::Pipe, FdKind::Pipe];
    req.fds = Some(PassedFds {
        stdio: [None, None, None],
        extra: vec![(7, pipe_with(b""))],
    });
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    // 0-2, the passed 7, and the descriptor ls itself has open on /proc/self/fd.
    let listing = String::from_utf8_lossy(&run.stdout).into_owned();
    let mut fds: Vec<u32> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split(" -> ").next()?.rsplit(' ').next()?.parse().ok())
        .collect();
    fds.sort_unstable();
    let _ = nix::unistd::close(stray);
    assert!(
        !fds.contains(&(stray as u32)),
        "the warden's {stray} leaked: {listing}"
    );
    assert_eq!(fds, [0, 1, 2, 3, 7], "{listing}");
    assert!(listing.contains("3 -> /proc/"), "{listing}");
}

// Who runs, and what it can reach: these need root to switch ids and to use cgroups. They
// skip with a reason otherwise, and fail instead with CLAWRDEN_REQUIRE_ROOT=1 (CI).

/// `nobody`, the unprivileged caller of the identity tests.
const NOBODY: u32 = 65534;

/// Whether this test can run: true as root; otherwise prints `SKIP` (or panics when
/// `CLAWRDEN_REQUIRE_ROOT=1`).
fn require_root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CLAWRDEN_REQUIRE_ROOT").as_deref() != Ok("1"),
        "{test}: CLAWRDEN_REQUIRE_ROOT=1 but this test runs as uid {}",
        nix::unistd::geteuid()
    );
    eprintln!("SKIP {test}: switching identities and using cgroups needs root");
    false
}

/// The per-request cgroups of a throwaway state directory (root only: the cgroup v2
/// hierarchy must be writable, which it is here; CLAWRDEN_REQUIRE_ROOT=1 makes its absence
/// a failure, since CI has it).
fn cgroups(test: &str) -> Option<(RequestCgroups, PathBuf)> {
    let state = std::env::temp_dir().join(unique_id("cgroup-state"));
    match RequestCgroups::detect(&state) {
        Ok(c) => Some((c, state)),
        Err(why) if std::env::var("CLAWRDEN_REQUIRE_ROOT").as_deref() == Ok("1") => {
            panic!("{test}: CLAWRDEN_REQUIRE_ROOT=1 but per-request cgroups are unavailable: {why}")
        }
        Err(why) => {
            eprintln!("SKIP {test}: per-request cgroups unavailable: {why}");
            None
        }
    }
}

fn as_nobody(mut req: ExecRequest) -> ExecRequest {
    req.uid = NOBODY;
    req.gid = NOBODY;
    req.groups = vec![NOBODY, 100];
    req
}

#[tokio::test]
async fn a_root_warden_runs_a_command_as_the_caller_with_its_groups_and_its_home() {
    if !require_root_or_skip(
        "a_root_warden_runs_a_command_as_the_caller_with_its_groups_and_its_home",
    ) {
        return;
    }
    let req = as_nobody(request(
        "as-caller",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; echo \"$HOME $USER $LOGNAME $PATH\"",
        ],
    ));
    let run = run_with(&executor_with(None, false, None), req, vec![]).await;
    assert_eq!(
        run.outcome,
        Outcome::Exited(0),
        "{:?}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "65534\n65534\n65534 100\n/nonexistent nobody nobody /usr/bin:/bin\n"
    );
    assert_eq!(run.started.expect("started").run_as, Some((NOBODY, NOBODY)));
}

#[tokio::test]
async fn a_command_run_as_another_user_owns_its_terminal() {
    if !require_root_or_skip("a_command_run_as_another_user_owns_its_terminal") {
        return;
    }
    // As a login gives a user their terminal: a program that reopens its terminal by
    // name (`ttyname`), not through /dev/tty, must be able to.
    let req = on_terminal(
        as_nobody(request(
            "tty-owner",
            &[
                "sh",
                "-c",
                "t=$(tty); stat -c %u \"$t\"; echo by-name > \"$t\"",
            ],
        )),
        24,
        80,
    );
    let run = run_with(&executor_with(None, false, None), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0), "{run:?}");
    assert_eq!(String::from_utf8_lossy(&run.tty), "65534\r\nby-name\r\n");
}

#[tokio::test]
async fn run_as_of_the_warden_and_of_the_rule_decide_the_user() {
    if !require_root_or_skip("run_as_of_the_warden_and_of_the_rule_decide_the_user") {
        return;
    }
    let exec = executor_with(Some("nobody"), false, None);
    // A root caller, which would be refused on its own, runs as the warden's run_as user.
    let run = run_with(&exec, request("warden-run-as", &["id", "-un"]), vec![]).await;
    assert_eq!(
        (run.outcome, run.stdout),
        (Outcome::Exited(0), b"nobody\n".to_vec())
    );
    let mut req = request("rule-run-as", &["sh", "-c", "id -un; echo $HOME"]);
    req.run_as = Some("daemon".into());
    let run = run_with(&exec, req, vec![]).await;
    assert_eq!(
        (
            run.outcome,
            String::from_utf8_lossy(&run.stdout).into_owned()
        ),
        (Outcome::Exited(0), "daemon\n/usr/sbin\n".to_owned())
    );
}

#[tokio::test]
async fn a_command_that_would_run_as_the_warden_is_refused_and_nothing_runs() {
    if !require_root_or_skip("a_command_that_would_run_as_the_warden_is_refused_and_nothing_runs") {
        return;
    }
    let dir = std::env::temp_dir().join(unique_id("refused"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let marker = dir.join("ran");
    let script = format!("touch {}", marker.display());
    let exec = executor_with(None, false, None);
    let run = run_with(&exec, request("refused", &["sh", "-c", &script]), vec![]).await;
    let mut req = request("refused-rule", &["sh", "-c", &script]);
    req.run_as = Some("root".into());
    let by_rule = run_with(&exec, as_nobody(req), vec![]).await;
    let ran = marker.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        run.outcome,
        Outcome::SpawnFailed {
            not_found: false,
            message: "refused to run: the command would run as uid 0 (root), the warden's own \
                      uid, which could read its state (tokens, store, audit); name another user \
                      with run_as, or set allow_run_as_warden: true"
                .into()
        }
    );
    assert!(run.started.is_none());
    assert!(matches!(
        by_rule.outcome,
        Outcome::SpawnFailed {
            not_found: false,
            ..
        }
    ));
    assert!(!ran, "a refused command ran");
}

/// A command that kills its own supervisor (`kill -9 $PPID`) and leaves sleeps behind.
const KILL_SUPERVISOR: &str =
    "sleep 1000 & setsid sleep 1000 & kill -9 $PPID; echo \"kill $?\"; sleep 1000";

#[tokio::test]
async fn a_command_cannot_kill_its_supervisor_and_nothing_outlives_the_limit() {
    if !require_root_or_skip("a_command_cannot_kill_its_supervisor_and_nothing_outlives_the_limit")
    {
        return;
    }
    let mut req = as_nobody(request("kill-ppid", &["sh", "-c", KILL_SUPERVISOR]));
    req.timeout = Duration::from_millis(1500);
    let marker = marker_of(&req);
    let run = run_with(&executor_with(None, false, None), req, vec![]).await;
    assert_eq!(
        run.outcome,
        Outcome::TimedOut {
            after: Duration::from_millis(1500)
        }
    );
    let said = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(said.starts_with("kill ") && said != "kill 0\n", "{said:?}");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("Operation not permitted"),
        "{:?}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn with_a_cgroup_nothing_outlives_a_supervisor_killed_by_a_command_of_its_own_uid() {
    let test = "with_a_cgroup_nothing_outlives_a_supervisor_killed_by_a_command_of_its_own_uid";
    if !require_root_or_skip(test) {
        return;
    }
    let Some((cgroups, _state)) = cgroups(test) else {
        return;
    };
    // allow_run_as_warden: the command shares the helper's uid, so its kill succeeds.
    let exec = executor_with(None, true, Some(cgroups));
    let mut req = request("kill-ppid-cgroup", &["sh", "-c", KILL_SUPERVISOR]);
    req.timeout = Duration::from_millis(1500);
    let marker = marker_of(&req);
    let run = run_with(&exec, req, vec![]).await;
    assert_eq!(run.stdout, b"kill 0\n");
    assert_eq!(run.outcome, Outcome::Signaled(libc::SIGKILL));
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn each_command_runs_in_a_cgroup_of_its_own_that_is_gone_afterwards() {
    let test = "each_command_runs_in_a_cgroup_of_its_own_that_is_gone_afterwards";
    if !require_root_or_skip(test) {
        return;
    }
    let Some((cgroups, _state)) = cgroups(test) else {
        return;
    };
    let parent = cgroups.parent().to_path_buf();
    let exec = executor_with(None, false, Some(cgroups));
    let req = as_nobody(request("cgroup", &["cat", "/proc/self/cgroup"]));
    let id = req.request_id.clone();
    let run = run_with(&exec, req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    let name = parent.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with("0::/") && l.ends_with(&format!("/{name}/{id}"))),
        "{text}"
    );
    assert!(
        !parent.join(&id).exists(),
        "the request's cgroup was not removed"
    );
    drop(exec);
    assert!(!parent.exists(), "the warden's cgroup was not removed");
}

#[tokio::test]
async fn leftovers_of_a_crashed_warden_are_killed_by_its_successor() {
    let test = "leftovers_of_a_crashed_warden_are_killed_by_its_successor";
    if !require_root_or_skip(test) {
        return;
    }
    let Some((cgroups, _state)) = cgroups(test) else {
        return;
    };
    // What a crashed warden leaves: a request cgroup with a process in it, and an
    // exec-helper still supervising another request.
    let stray_id = unique_id("stray");
    let dir = cgroups.create(&stray_id).expect("create a request cgroup");
    let mut stray = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    std::fs::write(dir.join("cgroup.procs"), stray.id().to_string()).expect("move into cgroup");
    let helper_id = unique_id("helper");
    let mut helper = std::process::Command::new(shim_binary())
        .args([
            "exec-helper",
            "--request-id",
            &helper_id,
            "--",
            "/bin/sleep",
            "sleep",
            "1000",
        ])
        .spawn()
        .expect("spawn a helper");
    let exec = executor_with(None, false, Some(cgroups));
    let abandoned = [
        clawrden_warden::executor::AbandonedRequest {
            id: helper_id.clone(),
            prisoner: "default".into(),
        },
        clawrden_warden::executor::AbandonedRequest {
            id: unique_id("gone"),
            prisoner: "default".into(),
        },
    ];
    let mut report = exec.reap_abandoned(&abandoned).await;
    report.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (helper_id, clawrden_warden::executor::Leftovers::Killed),
        (
            abandoned[1].id.clone(),
            clawrden_warden::executor::Leftovers::NoneLeft,
        ),
        (stray_id, clawrden_warden::executor::Leftovers::Killed),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(report, want);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        stray.wait().expect("wait sleep").signal(),
        Some(libc::SIGKILL)
    );
    assert_eq!(
        helper.wait().expect("wait helper").signal(),
        Some(libc::SIGKILL)
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_command_inherits_no_descriptor_beyond_0_1_2() {
    // Not marked close-on-exec, as a careless parent of the warden would leave one.
    let stray = nix::unistd::dup(2).expect("dup");
    let req = request("fds", &["sh", "-c", "ls /proc/$$/fd"]);
    let run = run_with(&executor(), req, vec![]).await;
    let _ = nix::unistd::close(stray);
    assert_eq!(run.outcome, Outcome::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "0\n1\n2\n",
        "stray fd {stray}"
    );
}

#[test]
fn exec_helper_kills_the_tree_at_its_own_time_limit_when_nobody_else_does() {
    // What happens when the executor that should end the command is gone (a warden
    // killed with -9): the helper's own limit still ends the tree, and says so.
    let id = unique_id("time-limit");
    let marker = format!("{MARKER}={id}");
    let mut cmd = std::process::Command::new(shim_binary());
    cmd.args([
        "exec-helper",
        "--no-parent-death",
        "--grace-ms",
        "100",
        "--time-limit-ms",
        "300",
        "--",
        "/bin/sh",
        "sh",
        "-c",
        "sleep 1000 & setsid sleep 1000 & sleep 1000",
    ])
    .env_clear()
    .env("PATH", "/usr/bin:/bin")
    .env(MARKER, &id);
    let out = cmd.output().expect("run exec-helper");
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "clawrden: time limit of 300 ms reached; process tree killed\n"
    );
    assert_eq!(processes_with(marker.as_bytes()), Vec::<String>::new());
}
