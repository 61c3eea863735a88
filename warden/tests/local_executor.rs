//! The local executor against the real exec-helper (the clawrden-shim binary, which must
//! be built first: `cargo build -p clawrden-shim`).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clawrden_protocol::{FdKind, Terminal, Termios, WinSize};
use clawrden_warden::executor::local::LocalExecutor;
use clawrden_warden::executor::{
    ExecIo, ExecRequest, Executor, Outcome, PassedFds, Started, StreamIn, StreamOut,
};
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

fn executor() -> LocalExecutor {
    LocalExecutor::new(shim_binary(), None).expect("exec-helper usable")
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

fn request(tag: &str, argv: &[&str]) -> ExecRequest {
    let id = unique_id(tag);
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    ExecRequest {
        request_id: id.clone(),
        prisoner: "default".into(),
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        tool_path: format!("/usr/bin/{}", argv[0]).into_bytes(),
        cwd: b"/".to_vec(),
        env: vec![
            (b"PATH".to_vec(), path.as_bytes().to_vec()),
            (MARKER.as_bytes().to_vec(), id.into_bytes()),
        ],
        stdio: [FdKind::Closed, FdKind::Pipe, FdKind::Pipe],
        terminal: None,
        timeout: Duration::from_secs(30),
        grace: GRACE,
        uid: 0,
        gid: 0,
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
            message:
                "command not found: clawrden-no-such-command-here (searched the warden's PATH)"
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
    let mut req = request("env", &["sh", "-c", "pwd; env | sort"]);
    req.cwd = b"/tmp".to_vec();
    let marker = String::from_utf8(marker_of(&req)).expect("utf-8");
    let run = run_with(&executor(), req, vec![]).await;
    assert_eq!(run.outcome, Outcome::Exited(0));
    let text = String::from_utf8(run.stdout).expect("utf-8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("/tmp"));
    let names: Vec<&str> = lines.map(|l| l.split('=').next().unwrap_or("")).collect();
    // sh itself adds PWD (and may add SHLVL / _); nothing from the warden's env leaks.
    let expected_extra = ["PWD", "SHLVL", "_"];
    for name in &names {
        assert!(
            ["PATH", MARKER].contains(name) || expected_extra.contains(name),
            "unexpected variable {name} in {text}"
        );
    }
    assert!(text.contains(&marker), "{text}");
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
    let err = LocalExecutor::new(PathBuf::from("/nonexistent/clawrden-shim"), None)
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
    let exec = LocalExecutor::new(shim, Some(search)).expect("usable");
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
