//! Warden-side (`local`) commands never act as the warden: they run as the caller (or a
//! `run_as` user), with the warden's fixed PATH and that identity's HOME, cannot reach the
//! state directory, get no stray descriptors, and still make nested calls. What runs is
//! chosen by `argv[0]`, never by the request's `tool_path`. One warden per state directory.
//!
//! The tests that call as another user (`nobody`) need root: they skip with a reason
//! otherwise, and fail instead with `CLAWRDEN_REQUIRE_ROOT=1` (CI sets it).

use std::io::Write;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clawrden_e2e::{
    argv_strings, binaries, decode_bytes, require_root_or_skip, Call, TempDir, TestWarden, STRAY_FD,
};
use clawrden_protocol::{read_message, write_message, Message, Request, MAGIC, VERSION};
use serde_json::Value;

const NOBODY: u32 = 65534;

/// Everything runs locally.
const ALLOW_ALL: &str = "version: 1\n\
    default_action: allow\n\
    default_timeout: 2m\n\
    approval_timeout: 1s\n\
    default_executor: local\n\
    rules:\n\
    \x20 - name: no-rm\n\
    \x20   command: rm\n\
    \x20   action: deny\n\
    \x20   reason: deleting needs a person\n";

/// A warden whose commands may not run as itself: callers run as themselves.
fn strict_warden() -> TestWarden {
    TestWarden::builder()
        .policy(ALLOW_ALL)
        .allow_run_as_warden(false)
        .command_path("/usr/local/bin:/usr/bin:/bin")
        .start()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The events of the request whose argv holds `token`, once it has an outcome.
fn events_of(w: &TestWarden, token: &str) -> Vec<clawrden_e2e::AuditEvent> {
    let id = w.request_id_for(token);
    w.events_after_outcome(&id)
}

#[test]
fn an_allowed_cat_of_the_admin_token_fails_because_it_runs_as_the_caller() {
    if !require_root_or_skip(
        "an_allowed_cat_of_the_admin_token_fails_because_it_runs_as_the_caller",
    ) {
        return;
    }
    let w = strict_warden();
    let token_path = w.state_dir.join("admin.token");
    let secret = w.admin_token();
    let out = w.run_as_user(&Call::new("cat").arg(&token_path).cwd("/"), NOBODY, NOBODY);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"", "{out:?}");
    // cat names itself by its argv[0], the shim's path.
    assert_eq!(
        out.stderr_str(),
        format!(
            "{}: {}: Permission denied\n",
            w.tool("cat").display(),
            token_path.display()
        )
    );
    assert!(!out.stdout_str().contains(&secret));
    // The state directory itself is the warden's alone.
    let mode = std::fs::metadata(&w.state_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "state dir mode {mode:o}");
    let events = events_of(&w, &token_path.display().to_string());
    let start = events.iter().find(|e| e.event() == "start").expect("start");
    assert_eq!(
        start.get("run_uid").and_then(Value::as_u64),
        Some(NOBODY as u64)
    );
    assert_eq!(
        start.get("run_gid").and_then(Value::as_u64),
        Some(NOBODY as u64)
    );
}

#[test]
fn git_diff_output_cannot_overwrite_a_file_of_the_warden_user() {
    if !require_root_or_skip("git_diff_output_cannot_overwrite_a_file_of_the_warden_user") {
        return;
    }
    let w = strict_warden();
    let dir = TempDir::new("warden-home");
    chmod(dir.path(), 0o755);
    let precious = dir.path().join(".bashrc");
    std::fs::write(&precious, "# the warden user's own\n").unwrap();
    chmod(&precious, 0o644);
    let output = format!("--output={}", precious.display());
    let out = w.run_as_user(
        &Call::new("git")
            .args([
                "diff",
                "--no-index",
                &output,
                "/etc/hostname",
                "/etc/passwd",
            ])
            .cwd(dir.path()),
        NOBODY,
        NOBODY,
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr_str().contains("Permission denied"), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "# the warden user's own\n"
    );
}

/// `clawrden-warden ARGS` as `uid` (files it needs made reachable first).
fn warden_as(uid: u32, dir: &Path, extra: &[&str]) -> std::process::Output {
    let bins = binaries();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    chmod(&policy, 0o644);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    chown(&state, Some(uid), Some(uid)).unwrap();
    let mut cmd = Command::new(&bins.warden);
    cmd.arg("--policy")
        .arg(&policy)
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(dir.join("w.sock"))
        .args(["--executor", "local", "--listen", "none"])
        .arg("--exec-helper")
        .arg(&bins.shim)
        .args(extra)
        .env_clear()
        .stdin(Stdio::null())
        .uid(uid)
        .gid(uid);
    cmd.output().expect("run clawrden-warden")
}

#[test]
fn a_warden_whose_commands_would_run_as_itself_does_not_start() {
    if !require_root_or_skip("a_warden_whose_commands_would_run_as_itself_does_not_start") {
        return;
    }
    let dir = TempDir::new("as-itself");
    chmod(dir.path(), 0o755);
    let out = warden_as(NOBODY, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "clawrden-warden: locally executed commands would run as the warden's own uid 65534: \
         it cannot switch to the callers' ids (it is not root and lacks CAP_SETUID, CAP_SETGID \
         and CAP_KILL), so a command could read the state directory; set run_as: USER \
         (--run-as USER) to a user that is not the warden's, or allow_run_as_warden: true \
         (--allow-run-as-warden) to accept that\n"
    );
    let out = warden_as(NOBODY, dir.path(), &["--run-as", "daemon"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "clawrden-warden: run_as daemon: the warden (uid 65534) cannot start commands as uid 1 (daemon)"
        ),
        "{out:?}"
    );
}

#[test]
fn run_as_root_a_missing_user_or_a_foreign_state_directory_stop_the_start() {
    if !require_root_or_skip(
        "run_as_root_a_missing_user_or_a_foreign_state_directory_stop_the_start",
    ) {
        return;
    }
    let dir = TempDir::new("start-checks");
    chmod(dir.path(), 0o755);
    let out = warden_as(0, dir.path(), &["--run-as", "root"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("clawrden-warden: run_as root: the command would run as uid 0 (root), the warden's own uid"),
        "{out:?}"
    );
    let out = warden_as(0, dir.path(), &["--run-as", "clawrden-no-such-user"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "clawrden-warden: run_as user \"clawrden-no-such-user\" does not exist on this host\n"
    );
    // A state directory of another user: its commands could read it.
    let state = dir.path().join("state");
    chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new(&binaries().warden);
    let out = cmd
        .arg("--policy")
        .arg(dir.path().join("policy.yaml"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(dir.path().join("w.sock"))
        .args(["--executor", "local", "--listen", "none", "--exec-helper"])
        .arg(&binaries().shim)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "clawrden-warden: state directory {} belongs to uid 65534, not to the warden's uid 0: commands running as that user could read its tokens and store; chown it to the warden's user\n",
            state.display()
        )
    );
}

#[test]
fn a_second_warden_on_the_same_state_directory_refuses_to_start() {
    let first = TestWarden::start(ALLOW_ALL);
    let mut second = TestWarden::builder()
        .policy(ALLOW_ALL)
        .state_dir(&first.state_dir)
        .launch();
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", second.log());
    let log = second.log();
    let want = format!(
        "clawrden-warden: state directory {} is in use by another warden (pid {}) (it holds {}/warden.lock); stop that warden first, or give this one its own --state-dir\n",
        first.state_dir.display(),
        first.pid(),
        first.state_dir.display()
    );
    assert!(log.ends_with(&want), "{log}");
    // The first one still serves, and nothing of it was marked abandoned.
    let out = first.run(&Call::new("printf").arg("still-here"));
    assert_eq!(
        (out.status.code(), out.stdout),
        (Some(0), b"still-here".to_vec())
    );
    let abandoned: Vec<_> = first
        .audit_events()
        .into_iter()
        .filter(|e| e.str_field("control") == Some("abandoned"))
        .collect();
    assert!(abandoned.is_empty(), "{abandoned:?}");
}

#[test]
fn nested_calls_of_a_local_command_come_back_through_the_shim() {
    let w = TestWarden::builder()
        .policy(ALLOW_ALL)
        .shims_in_command_path()
        .start();
    w.tool("xargs");
    w.tool("wc");
    let out = w.run(
        &Call::new("xargs")
            .args(["wc", "-l"])
            .stdin("/etc/hostname\n")
            .env("PATH", format!("{}:/usr/bin:/bin", w.bin_dir.display())),
    );
    let lines = std::fs::read_to_string("/etc/hostname")
        .unwrap()
        .lines()
        .count();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_str(), format!("{lines} /etc/hostname\n"));
    let inner = w.request_id_for("/etc/hostname");
    let events = w.events_after_outcome(&inner);
    let outer = w
        .audit_events()
        .into_iter()
        .find(|e| {
            e.event() == "request"
                && e.get("argv")
                    .map(argv_strings)
                    .is_some_and(|a| a[0].ends_with(b"/xargs"))
        })
        .and_then(|e| e.request_id().map(str::to_owned))
        .expect("the xargs request");
    let request = events.iter().find(|e| e.event() == "request").unwrap();
    assert_eq!(request.str_field("parent_request"), Some(outer.as_str()));
    assert_eq!(
        request.get("argv").map(argv_strings),
        Some(vec![
            b"wc".to_vec(),
            b"-l".to_vec(),
            b"/etc/hostname".to_vec()
        ])
    );
}

/// Writes an executable `#!/bin/sh` script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    chmod(path, 0o755);
}

/// Runs `tool args` through `w`'s shim as `uid` on a fresh pseudo-terminal; returns the
/// exit status (the terminal's output is drained and dropped).
fn run_on_pty_as(w: &TestWarden, call: &Call, uid: u32) -> i32 {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let mut cmd = w.shim_command(call);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave))
        .uid(uid)
        .gid(uid);
    let mut child = cmd.spawn().expect("start shim on a pty");
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut master, &mut sink);
        sink
    });
    let status = child.wait().unwrap();
    let _ = drain.join();
    status.code().expect("the shim exited")
}

#[test]
fn the_agents_gitconfig_and_pager_cannot_make_a_local_git_act_as_the_warden() {
    if !require_root_or_skip(
        "the_agents_gitconfig_and_pager_cannot_make_a_local_git_act_as_the_warden",
    ) {
        return;
    }
    let dir = TempDir::new("agent");
    chmod(dir.path(), 0o755);
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    chmod(&marks, 0o1777);
    // The agent's HOME names an fsmonitor hook; the agent's PATH holds a `less`.
    let home = dir.path().join("home");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&home).unwrap();
    std::fs::create_dir(&bin).unwrap();
    script(
        &home.join("hook"),
        &format!("id -u > {}/home-hook", marks.display()),
    );
    std::fs::write(
        home.join(".gitconfig"),
        format!("[core]\n\tfsmonitor = {}/hook\n", home.display()),
    )
    .unwrap();
    script(
        &bin.join("less"),
        &format!("id -u > {}/pager; cat >/dev/null", marks.display()),
    );
    // The agent's repository, with a commit so `git log` has something to page.
    let repo = dir.path().join("repo");
    let git_path = ["/usr/local/bin/git", "/usr/bin/git"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("git is installed (.ci/run installs it)");
    let git = |args: &[&str]| {
        let st = Command::new(git_path)
            .args(args)
            .current_dir(&repo)
            .env("HOME", "/")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    std::fs::create_dir(&repo).unwrap();
    git(&["init", "-q"]);
    git(&[
        "-c",
        "user.name=a",
        "-c",
        "user.email=a@b",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    ]);
    // The repository stays root's (readable by all), as a shared checkout would be; the
    // command-line `safe.directory` lets any caller's git use it.
    for p in [&home, &bin] {
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let agent_env = |call: Call| {
        call.args(["-c", "safe.directory=*"])
            .cwd(&repo)
            .env("TERM", "xterm")
            .env("HOME", &home)
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
            )
    };
    let w = strict_warden();
    let out = w.run_as_user(&agent_env(Call::new("git")).arg("status"), NOBODY, NOBODY);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let code = run_on_pty_as(&w, &agent_env(Call::new("git")).arg("log"), NOBODY);
    assert_eq!(code, 0);
    assert!(
        !marks.join("home-hook").exists(),
        "the hook in the agent's ~/.gitconfig ran"
    );
    assert!(!marks.join("pager").exists(), "the agent's `less` ran");

    // Controls: the same routes do run when the warden itself provides them, and then as
    // the caller, never as the warden. A hook in the repository's own config runs...
    std::fs::write(
        repo.join(".git/config"),
        format!(
            "{}[core]\n\tfsmonitor = {}/hook\n",
            std::fs::read_to_string(repo.join(".git/config")).unwrap(),
            home.display()
        ),
    )
    .unwrap();
    let out = w.run_as_user(&agent_env(Call::new("git")).arg("status"), NOBODY, NOBODY);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(marks.join("home-hook")).unwrap(),
        "65534\n"
    );
    // ...and a pager found in the command_path does too.
    let w = TestWarden::builder()
        .policy(ALLOW_ALL)
        .allow_run_as_warden(false)
        .command_path(format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()))
        .start();
    let code = run_on_pty_as(&w, &agent_env(Call::new("git")).arg("log"), NOBODY);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(marks.join("pager")).unwrap(),
        "65534\n"
    );
}

#[test]
fn stray_descriptors_of_the_wardens_parent_never_reach_a_command() {
    for stream_only in [false, true] {
        let w = TestWarden::builder()
            .policy(ALLOW_ALL)
            .stream_only(stream_only)
            .stray_fd("/etc/hostname")
            .start();
        let held = std::fs::read_link(format!("/proc/{}/fd/{STRAY_FD}", w.pid())).unwrap();
        assert_eq!(
            held,
            Path::new("/etc/hostname"),
            "test premise: the warden holds it"
        );
        // The caller has only 0, 1 and 2: whatever else the command has came from the warden.
        let out = w.run_from_clean_caller(&Call::new("sh").args(["-c", "ls /proc/$$/fd"]));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            out.stdout_str(),
            "0\n1\n2\n",
            "stream_only {stream_only}: {out:?}"
        );
    }
}

/// Sends one raw request (as any process on the prisoner's socket can) and returns the
/// frames until the warden closes.
fn raw_call(w: &TestWarden, request: Request) -> Vec<Message> {
    let mut s = UnixStream::connect(&w.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write_message(
        &mut s,
        &Message::Hello {
            magic: MAGIC,
            version: VERSION,
        },
    )
    .unwrap();
    write_message(&mut s, &Message::Request(request)).unwrap();
    s.flush().unwrap();
    let mut frames = Vec::new();
    while let Ok(Some(m)) = read_message(&mut s) {
        let end = matches!(
            m,
            Message::Exit(_) | Message::Signaled(_) | Message::Error { .. }
        );
        frames.push(m);
        if end {
            break;
        }
    }
    frames
}

#[test]
fn a_forged_tool_path_never_chooses_what_runs_locally() {
    let w = TestWarden::start(ALLOW_ALL);
    let victim = w.dir().join("victim");
    std::fs::write(&victim, "still here\n").unwrap();
    let victim_arg = victim.as_os_str().as_encoded_bytes().to_vec();
    let frames = raw_call(
        &w,
        Request {
            argv: vec![b"cat".to_vec(), victim_arg.clone()],
            tool_path: b"/usr/bin/rm".to_vec(),
            cwd: b"/".to_vec(),
            env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
            ..Request::default()
        },
    );
    assert!(
        matches!(&frames[..2], [Message::Hello { .. }, Message::Decision(d)] if d.action == clawrden_protocol::Action::Allow),
        "{frames:?}"
    );
    assert_eq!(
        frames[2..],
        [Message::Stdout(b"still here\n".to_vec()), Message::Exit(0)],
        "{frames:?}"
    );
    assert!(victim.exists());
    let events = events_of(&w, &victim.display().to_string());
    let request = events.iter().find(|e| e.event() == "request").unwrap();
    assert_eq!(
        request.get("tool_path").map(decode_bytes),
        Some(b"/usr/bin/rm".to_vec())
    );
    let start = events.iter().find(|e| e.event() == "start").unwrap();
    let program = start.get("program").map(decode_bytes).unwrap();
    assert!(
        program == b"/usr/bin/cat" || program == b"/bin/cat",
        "{}",
        start.raw
    );
}
