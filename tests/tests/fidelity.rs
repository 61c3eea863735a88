//! A command run through the shim behaves exactly as when run directly: arguments, stdin,
//! stdout, stderr, exit status, death by signal, cwd, environment allowlist, terminals.
//! I/O tests run on both the fd-passing path (default) and the streaming path.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clawrden_e2e::{
    assert_same_output, direct_command, run_command, run_hashing, seeded_bytes, Call, TestWarden,
    Watchdog, RUN_DEADLINE,
};

fn warden(stream_only: bool) -> TestWarden {
    TestWarden::builder().stream_only(stream_only).start()
}

fn direct(call: &Call) -> clawrden_e2e::Output {
    run_command(
        direct_command(call),
        &call.stdin,
        &format!("direct {}", call.tool),
    )
}

fn tricky_args() -> Vec<OsString> {
    vec![
        OsString::from("two words"),
        OsString::from(""),
        OsString::from("it's \"quoted\" and `ticked` $HOME"),
        OsString::from("line one\nline two\n"),
        OsString::from(""),
        OsString::from("-n"),
        OsString::from("--"),
        OsString::from("tab\there\r"),
        OsString::from("ünïcödé ✓"),
        OsString::from_vec(vec![0xff, 0xfe, b'x', 0x80, 0xc3]),
        OsString::from("*?[glob]"),
    ]
}

#[test]
fn tricky_arguments_reach_the_command_byte_exact() {
    let w = warden(false);
    let call = Call::new("printf").arg("%s\n").args(tricky_args());
    let d = direct(&call);
    assert!(d.status.success(), "direct printf failed: {d:?}");
    assert_same_output(&d, &w.run(&call), "printf '%s\\n' ARGS");

    // The same arguments dumped character by character, for a readable diff.
    let call = Call::new("sh")
        .arg("-c")
        .arg("printf '%s\\n' \"$@\" | od -c")
        .arg("sh")
        .args(tricky_args());
    assert_same_output(&direct(&call), &w.run(&call), "printf '%s\\n' ARGS | od -c");
}

fn random_stdin_through_cat(stream_only: bool) {
    let w = warden(stream_only);
    let input = seeded_bytes(0x00c1_a3d7_e2e0_0001, 1 << 20);
    let call = Call::new("cat").stdin(input.clone());
    let out = w.run(&call);
    assert_eq!(out.status.code(), Some(0), "cat through the shim: {out:?}");
    assert!(out.stderr.is_empty(), "cat wrote to stderr: {out:?}");
    assert_eq!(out.stdout.len(), input.len(), "cat output length");
    assert!(
        out.stdout == input,
        "cat through the shim changed the bytes"
    );
}

#[test]
fn fd_path_random_mebibyte_of_stdin_through_cat_is_identical() {
    random_stdin_through_cat(false);
}

#[test]
fn stream_path_random_mebibyte_of_stdin_through_cat_is_identical() {
    random_stdin_through_cat(true);
}

fn hundred_megabytes_out(stream_only: bool) {
    let w = warden(stream_only);
    let call = Call::new("head").args(["-c", "100000000", "/dev/zero"]);
    let (d_digest, d_err, d_status) = run_hashing(direct_command(&call), "direct head");
    let (s_digest, s_err, s_status) = w.run_hashing(&call);
    assert_eq!(d_digest.len, 100_000_000);
    assert_eq!(
        (s_status.code(), s_status.signal()),
        (d_status.code(), d_status.signal()),
        "exit status (left: shim); shim stderr: {}",
        String::from_utf8_lossy(&s_err)
    );
    assert_eq!(s_digest, d_digest, "100 MB of output differ");
    assert_eq!(s_err, d_err, "stderr differs");

    let call = Call::new("seq").args(["1", "2000000"]);
    let (d_digest, _, _) = run_hashing(direct_command(&call), "direct seq");
    let (s_digest, s_err, s_status) = w.run_hashing(&call);
    assert_eq!(s_status.code(), Some(0), "seq through the shim: {s_err:?}");
    assert_eq!(s_digest, d_digest, "seq 1 2000000 output differs");
}

#[test]
fn fd_path_hundred_megabytes_of_output_are_identical() {
    hundred_megabytes_out(false);
}

#[test]
fn stream_path_hundred_megabytes_of_output_are_identical() {
    hundred_megabytes_out(true);
}

fn stdout_and_stderr_separate(stream_only: bool) {
    let w = warden(stream_only);
    let call = Call::new("sh").arg("-c").arg(
        "echo out1; echo err1 >&2; printf 'no newline out'; printf 'no newline err' >&2; exit 3",
    );
    let d = direct(&call);
    assert_eq!(d.stdout, b"out1\nno newline out");
    assert_eq!(d.stderr, b"err1\nno newline err");
    assert_same_output(&d, &w.run(&call), "stdout/stderr separation");
}

#[test]
fn fd_path_stdout_and_stderr_stay_separate() {
    stdout_and_stderr_separate(false);
}

#[test]
fn stream_path_stdout_and_stderr_stay_separate() {
    stdout_and_stderr_separate(true);
}

fn every_exit_status(stream_only: bool) {
    let w = warden(stream_only);
    for code in 0..=255 {
        let call = Call::new("sh").arg("-c").arg(format!("exit {code}"));
        let out = w.run(&call);
        assert_eq!(
            (out.status.code(), out.status.signal()),
            (Some(code), None),
            "sh -c 'exit {code}' through the shim: {out:?}"
        );
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    }
}

#[test]
fn fd_path_every_exit_status_0_to_255_is_reproduced() {
    every_exit_status(false);
}

#[test]
fn stream_path_every_exit_status_0_to_255_is_reproduced() {
    every_exit_status(true);
}

fn death_by_signal(stream_only: bool) {
    let w = warden(stream_only);
    for (sig, name) in [(15, "TERM"), (9, "KILL")] {
        let call = Call::new("sh")
            .arg("-c")
            .arg(format!("echo before; kill -{name} $$; echo after"));
        let d = direct(&call);
        assert_eq!(d.status.signal(), Some(sig), "direct: {d:?}");
        let s = w.run(&call);
        assert_eq!(
            (s.status.signal(), s.status.code()),
            (Some(sig), None),
            "kill -{name} $$ through the shim must end the shim by SIG{name}: {s:?}"
        );
        assert!(!s.status.core_dumped(), "shim dumped core: {s:?}");
        assert_same_output(&d, &s, &format!("kill -{name} $$"));
    }
}

#[test]
fn fd_path_death_by_signal_is_reproduced() {
    death_by_signal(false);
}

#[test]
fn stream_path_death_by_signal_is_reproduced() {
    death_by_signal(true);
}

/// Drives `sh -c 'read a; echo got:$a; read b; echo got:$b'`: the second line is written
/// only after the answer to the first was read, so output must flow while the command runs.
fn converse(mut cmd: Command, what: &str) -> (Vec<String>, std::process::ExitStatus) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child: Child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let dog = Watchdog::new(child.id(), RUN_DEADLINE);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("read stdout line")).is_err() {
                break;
            }
        }
    });
    let next = |rx: &mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{what}: no answer line within 60 s ({e})"))
    };
    let mut got = Vec::new();
    stdin.write_all(b"first line\n").unwrap();
    stdin.flush().unwrap();
    got.push(next(&rx));
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    got.push(next(&rx));
    let status = child.wait().unwrap();
    reader.join().unwrap();
    got.extend(rx.try_iter());
    assert!(!dog.finish(), "{what} hung");
    (got, status)
}

fn interactive_stdin(stream_only: bool) {
    let w = warden(stream_only);
    let call = Call::new("sh")
        .arg("-c")
        .arg("read a; echo got:$a; read b; echo got:$b");
    let (d_lines, d_status) = converse(direct_command(&call), "direct sh");
    assert_eq!(d_lines, ["got:first line", "got:second"]);
    let (s_lines, s_status) = converse(w.shim_command(&call), "shim sh");
    assert_eq!(s_lines, d_lines, "interactive transcript through the shim");
    assert_eq!(s_status.code(), d_status.code());
}

#[test]
fn fd_path_interactive_stdin_is_answered_line_by_line() {
    interactive_stdin(false);
}

#[test]
fn stream_path_interactive_stdin_is_answered_line_by_line() {
    interactive_stdin(true);
}

#[test]
fn cwd_is_honoured_including_a_non_utf8_directory_name() {
    let w = warden(false);
    for name in [&b"plain-dir"[..], &b"spaced dir \xff\xfe non-utf8"[..]] {
        let dir = w.dir().join(OsStr::from_bytes(name));
        std::fs::create_dir(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let call = Call::new("pwd").cwd(&dir);
        let d = direct(&call);
        let mut expected = dir.as_os_str().as_bytes().to_vec();
        expected.push(b'\n');
        assert_eq!(d.stdout, expected, "direct pwd");
        assert_same_output(&d, &w.run(&call), "pwd in a temp subdir");
    }
}

fn env_lines(out: &clawrden_e2e::Output) -> Vec<String> {
    let mut lines: Vec<String> = out.stdout_str().lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn environment_is_scrubbed_to_the_allowlist_plus_rule_pass_minus_rule_drop() {
    let policy = "version: 1\n\
        default_action: allow\n\
        default_timeout: 2m\n\
        approval_timeout: 1s\n\
        default_executor: local\n\
        rules:\n\
        \x20 - name: env-with-pass\n\
        \x20   command: env\n\
        \x20   args: [\"-u\", \"PASS_RULE_MARKER\"]\n\
        \x20   action: allow\n\
        \x20   env:\n\
        \x20     pass: [MY_TOOL_TOKEN]\n\
        \x20     drop: [LANG]\n";
    let w = TestWarden::start(policy);
    let base = Call::new("env")
        .env("LANG", "C.UTF-8")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-test-secret")
        .env("MY_TOOL_TOKEN", "token-value")
        .env("LD_PRELOAD", "/nonexistent/evil.so")
        .env("PATH", "/home/agent/bin:/usr/bin:/bin")
        .env("HOME", "/home/agent")
        .env("USER", "agent");
    // The command runs as this test's own user (the harness allows the warden's uid):
    // its HOME, USER and LOGNAME, and the warden's command_path, never the caller's.
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("the test's user has a passwd entry");
    let identity = [
        format!("HOME={}", me.dir.display()),
        format!("LOGNAME={}", me.name),
        "PATH=/usr/bin:/bin".to_string(),
        format!("USER={}", me.name),
    ];
    let socket = format!("CLAWRDEN_SOCKET={}", w.socket.display());

    let out = w.run(&base);
    assert_eq!(out.status.code(), Some(0), "env through the shim: {out:?}");
    let lines = env_lines(&out);
    let parent = lines
        .iter()
        .find_map(|l| l.strip_prefix("CLAWRDEN_PARENT_REQUEST="))
        .unwrap_or_else(|| panic!("CLAWRDEN_PARENT_REQUEST not set: {lines:?}"));
    assert!(!parent.is_empty(), "empty CLAWRDEN_PARENT_REQUEST");
    // The warden's secret for this command's nested calls (32 random bytes in hex).
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("CLAWRDEN_PARENT_TOKEN="))
        .unwrap_or_else(|| panic!("CLAWRDEN_PARENT_TOKEN not set: {lines:?}"));
    assert_eq!(token.len(), 64, "{token:?}");
    let mut want = vec![
        format!("CLAWRDEN_PARENT_REQUEST={parent}"),
        format!("CLAWRDEN_PARENT_TOKEN={token}"),
        socket.clone(),
        "LANG=C.UTF-8".to_string(),
    ];
    want.extend(identity.iter().cloned());
    want.sort();
    assert_eq!(
        lines, want,
        "default scrub keeps only the allowlist (LANG passes; the secret, LD_PRELOAD, \
         MY_TOOL_TOKEN and the caller's PATH, HOME and USER do not; the warden sets \
         CLAWRDEN_SOCKET)"
    );

    let out = w.run(&base.clone().args(["-u", "PASS_RULE_MARKER"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "env -u through the shim: {out:?}"
    );
    let lines: Vec<String> = env_lines(&out)
        .into_iter()
        .filter(|l| {
            !l.starts_with("CLAWRDEN_PARENT_REQUEST=") && !l.starts_with("CLAWRDEN_PARENT_TOKEN=")
        })
        .collect();
    let mut want = vec![socket, "MY_TOOL_TOKEN=token-value".to_string()];
    want.extend(identity.iter().cloned());
    want.sort();
    assert_eq!(
        lines, want,
        "rule env.pass adds MY_TOOL_TOKEN, env.drop removes LANG"
    );
    let audit = std::fs::read_to_string(w.audit_path()).unwrap_or_default();
    assert!(
        !audit.contains("wJalrXUtnFEMI-test-secret") && !audit.contains("token-value"),
        "the audit holds an environment value"
    );
}

fn sixty_four_concurrent_calls(stream_only: bool) {
    let w = warden(stream_only);
    let outs: Vec<(usize, clawrden_e2e::Output)> = thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let w = &w;
                s.spawn(move || {
                    let call = Call::new("sh")
                        .arg("-c")
                        .arg("printf 'call %s\\n' \"$1\"; printf 'err %s\\n' \"$1\" >&2; exit $(( $1 % 7 ))")
                        .arg("sh")
                        .arg(i.to_string());
                    (i, w.run(&call))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, out) in outs {
        assert_eq!(
            out.stdout,
            format!("call {i}\n").into_bytes(),
            "call {i}: {out:?}"
        );
        assert_eq!(
            out.stderr,
            format!("err {i}\n").into_bytes(),
            "call {i}: {out:?}"
        );
        assert_eq!(out.status.code(), Some((i % 7) as i32), "call {i}: {out:?}");
    }
}

#[test]
fn fd_path_sixty_four_concurrent_calls_each_get_their_own_output() {
    sixty_four_concurrent_calls(false);
}

#[test]
fn stream_path_sixty_four_concurrent_calls_each_get_their_own_output() {
    sixty_four_concurrent_calls(true);
}

/// The inode of the pipe the command's stdout is on, and the inode of the pipe we read.
fn stdout_pipe_inodes(w: &TestWarden) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut cmd = w.shim_command(&Call::new("stat").args(["-L", "-c", "%i", "/dev/stdout"]));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start shim stat");
    let dog = Watchdog::new(child.id(), RUN_DEADLINE);
    let mut ours = File::from(std::os::fd::OwnedFd::from(child.stdout.take().unwrap()));
    let our_inode = ours.metadata().expect("fstat our pipe").ino();
    let mut text = String::new();
    ours.read_to_string(&mut text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!dog.finish(), "stat through the shim hung");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = text
        .trim_end()
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("stat printed {text:?}"));
    (theirs, our_inode)
}

#[test]
fn fd_path_gives_the_command_the_callers_own_stdout() {
    let w = warden(false);
    let (theirs, ours) = stdout_pipe_inodes(&w);
    assert_eq!(
        theirs, ours,
        "on the fd-passing path the command must write straight into the caller's pipe"
    );
}

#[test]
fn stream_path_never_hands_the_callers_fds_to_the_command() {
    let w = warden(true);
    let (theirs, ours) = stdout_pipe_inodes(&w);
    assert_ne!(
        theirs, ours,
        "with --stream-only the command must not get the caller's pipe"
    );
}

fn sigint_is_forwarded(stream_only: bool) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let w = warden(stream_only);
    let call = Call::new("sh")
        .arg("-c")
        .arg("trap 'echo got-INT; exit 7' INT; echo ready; while :; do sleep 0.05; done");
    let run = |mut cmd: Command, what: &str| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let dog = Watchdog::new(child.id(), RUN_DEADLINE);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(first.as_deref(), Some("ready"), "{what}");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().unwrap();
        assert!(!dog.finish(), "{what}: SIGINT did not end the command");
        (rest, status.code(), status.signal())
    };
    let d = run(direct_command(&call), "direct");
    assert_eq!(d, (vec!["got-INT".to_string()], Some(7), None));
    let s = run(w.shim_command(&call), "shim");
    assert_eq!(
        s, d,
        "SIGINT to the shim must reach the command (left: shim)"
    );
}

#[test]
fn fd_path_sigint_to_the_shim_reaches_the_command() {
    sigint_is_forwarded(false);
}

#[test]
fn stream_path_sigint_to_the_shim_reaches_the_command() {
    sigint_is_forwarded(true);
}

fn reader_closing_early(stream_only: bool) {
    let w = warden(stream_only);
    let token = format!("early-close-{stream_only}");
    let call = Call::new("seq").args(["1", "1000000000000"]);
    let run = |mut cmd: Command, what: &str| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let dog = Watchdog::new(child.id(), Duration::from_secs(60));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert_eq!(first, "1\n", "{what}");
        drop(out);
        let status = child.wait().unwrap();
        assert!(
            !dog.finish(),
            "{what}: still running 60 s after its reader went away"
        );
        (status.code(), status.signal())
    };
    let d = run(direct_command(&call), "direct seq");
    assert_eq!(d, (None, Some(13)), "direct seq dies of SIGPIPE");
    let s = run(w.shim_command(&call), "shim seq");
    assert_eq!(
        s, d,
        "status when the reader goes away (left: shim) [{token}]"
    );
    let id = w
        .audit_events()
        .iter()
        .rev()
        .find(|e| e.event() == "request")
        .and_then(|e| e.request_id().map(str::to_string))
        .expect("the seq request in the audit");
    clawrden_e2e::wait_until_no_process_with_env(
        &format!("CLAWRDEN_PARENT_REQUEST={id}"),
        Duration::from_secs(10),
    );
}

#[test]
fn fd_path_reader_closing_early_ends_the_command_like_sigpipe() {
    reader_closing_early(false);
}

#[test]
fn stream_path_reader_closing_early_ends_the_command_like_sigpipe() {
    reader_closing_early(true);
}

#[test]
fn a_megabyte_of_arguments_arrives_intact() {
    let w = warden(false);
    let args: Vec<String> = (0..12_000)
        .map(|i| format!("{i:06}-{}", "x".repeat(93)))
        .collect();
    let call = Call::new("printf").arg("%s\n").args(&args);
    let d = direct(&call);
    assert_eq!(d.stdout.len(), 12_000 * 101);
    assert_same_output(&d, &w.run(&call), "printf with 12000 arguments");
}

fn empty_stdin(stream_only: bool) {
    let w = warden(stream_only);
    let out = w.run(&Call::new("cat"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let mut cmd = w.shim_command(&Call::new("cat"));
    cmd.stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "cat < /dev/null: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn fd_path_empty_stdin_ends_cat_at_once() {
    empty_stdin(false);
}

#[test]
fn stream_path_empty_stdin_ends_cat_at_once() {
    empty_stdin(true);
}

fn unread_stdin(stream_only: bool) {
    let w = warden(stream_only);
    let call = Call::new("sh")
        .arg("-c")
        .arg("echo did-not-read")
        .stdin(seeded_bytes(7, 1 << 20));
    let d = direct(&call);
    assert_same_output(&d, &w.run(&call), "1 MiB of stdin the command never reads");
}

#[test]
fn fd_path_stdin_the_command_never_reads_does_not_block() {
    unread_stdin(false);
}

#[test]
fn stream_path_stdin_the_command_never_reads_does_not_block() {
    unread_stdin(true);
}

fn big_stdout_and_stderr_at_once(stream_only: bool) {
    let w = warden(stream_only);
    let call = Call::new("sh").arg("-c").arg(
        "head -c 20000000 /dev/urandom | od -An -tx1 -v | head -c 20000000 >&2 & \
         seq 1 3000000; wait",
    );
    let s = w.run(&call);
    assert_eq!(s.status.code(), Some(0), "shim: status {:?}", s.status);
    assert_eq!(s.stderr.len(), 20_000_000, "stderr length through the shim");
    let d = direct(&Call::new("seq").args(["1", "3000000"]));
    assert!(s.stdout == d.stdout, "stdout differs while stderr was busy");
}

#[test]
fn fd_path_large_stdout_and_stderr_at_once_both_arrive() {
    big_stdout_and_stderr_at_once(false);
}

#[test]
fn stream_path_large_stdout_and_stderr_at_once_both_arrive() {
    big_stdout_and_stderr_at_once(true);
}

#[test]
fn non_utf8_values_of_allowed_variables_arrive_byte_exact() {
    let w = warden(false);
    let value = OsStr::from_bytes(b"en_US.\xff\xfe-bytes");
    let out = w.run(&Call::new("env").env("LC_ALL", value).env("TZ", "UTC"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut want = b"LC_ALL=".to_vec();
    want.extend_from_slice(value.as_bytes());
    assert!(
        out.stdout
            .split(|b| *b == b'\n')
            .any(|l| l == want.as_slice()),
        "LC_ALL did not arrive byte-exact: {out:?}"
    );
    assert!(
        out.stdout.split(|b| *b == b'\n').any(|l| l == b"TZ=UTC"),
        "TZ did not pass: {out:?}"
    );
}
