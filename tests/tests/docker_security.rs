//! Attacks on the mirror executor from inside a real prisoner (docs/security.md, sections
//! 1, 2, 4 and 5), each pinned in a container of a locally built, hardened image:
//!
//! - a raw protocol client (perl, which the Debian prisoner has) sends `argv[0]=cat` with
//!   `tool_path=/usr/bin/rm`: cat's original runs, the victim file survives, the audit
//!   records the forged path and what really ran;
//! - hooks, pagers, aliases and `-exec` children of approved originals (git's
//!   `core.fsmonitor`, `core.pager` and `!` aliases from the agent's own repository
//!   config; `find -exec`) try `/proc/$PPID/exe`, `/proc/$PPID/fd/` and `ptrace` on the
//!   original that spawned them: all fail, because binary originals are execute-only;
//! - the caller's environment reaches the command (VIRTUAL_ENV, GIT_AUTHOR_*) but never
//!   the root exec-helper's own environment;
//! - `kill -9` of the warden in the middle of a call takes the command along (the helper's
//!   channel ends); a helper that did not notice is killed by the restarted warden, which
//!   says so in the audit.
//!
//! Needs a Docker engine (skips without one unless CLAWRDEN_REQUIRE_DOCKER=1), root, the
//! static shim (`cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl`)
//! and the warden binary built next to this test.

use std::time::{Duration, Instant};

use clawrden_e2e::docker::{
    checkout_tag, ensure_test_image, harden_image, musl_shim, require_docker_or_skip, Container,
    MirrorWarden,
};
use clawrden_e2e::{argv_strings, decode_bytes, AuditEvent};
use clawrden_protocol::channel::{ChannelFrame, ChannelMsg, Start, StdioPlan};
use clawrden_protocol::{decode_frame, Action, Message, Request, MAGIC, VERSION};
use serde_json::Value;

const PRISONER: &str = "agent-1";

/// Everything runs in the prisoner, for up to two minutes; `rm` is denied.
const POLICY: &str = "\
version: 1
default_action: allow
default_timeout: 2m
approval_timeout: 30s
default_executor: mirror
rules:
  - name: no-rm
    command: rm
    action: deny
    reason: deleting files needs a person
";

/// A hardened prisoner of `image` with `tools` shimmed, and a mirror warden for it.
fn prisoner(test: &str, image: &str, tools: &[&str]) -> Option<(MirrorWarden, Container)> {
    if !require_docker_or_skip(test) {
        return None;
    }
    musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let base = ensure_test_image(image).unwrap_or_else(|e| panic!("{test}: base {image}: {e}"));
    let tag = checkout_tag(&format!("{image}-security"));
    harden_image(&base, tools, &tag).unwrap_or_else(|e| panic!("{test}: hardening {base}: {e}"));
    let mut warden = MirrorWarden::prepare(PRISONER);
    let mount = warden.mount_arg();
    let container =
        Container::start(&tag, &["--volume", &mount]).unwrap_or_else(|e| panic!("{test}: {e}"));
    warden
        .start(PRISONER, container.name(), POLICY)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    Some((warden, container))
}

/// Sends the bytes on its stdin to the warden's socket and copies every frame back to
/// stdout, until the one that ends the call (exit, signal, error). Any process in the
/// prisoner can do this: the socket is 0666 and perl is in the Debian base image.
const RAW_CLIENT: &str = r#"
use IO::Socket::UNIX;
binmode STDIN; binmode STDOUT;
local $/; my $req = <STDIN>;
my $s = IO::Socket::UNIX->new(Peer => ($ENV{CLAWRDEN_SOCKET} || "/run/clawrden/warden.sock"))
    or die "connect: $!\n";
binmode $s;
syswrite($s, $req) == length($req) or die "write: $!\n";
sub readn { my ($n) = @_; my $d = "";
    while (length($d) < $n) { my $r = sysread($s, my $b, $n - length($d));
        die "read: $!\n" unless defined $r; last if $r == 0; $d .= $b } $d }
while (1) {
    my $h = readn(5); last if length($h) < 5;
    my ($k, $l) = unpack("CN", $h);
    syswrite(STDOUT, $h . readn($l));
    last if $k == 0x30 || $k == 0x31 || $k == 0x3f;
}
"#;

/// The frames the warden answered `request` with, sent by the raw client as `user`.
fn raw_call(c: &Container, user: &str, request: Request) -> Result<Vec<Message>, String> {
    let mut bytes = Vec::new();
    for m in [
        Message::Hello {
            magic: MAGIC,
            version: VERSION,
        },
        Message::Request(request),
    ] {
        m.encode(&mut bytes).map_err(|e| e.to_string())?;
    }
    let out = c.exec_with_stdin(user, &["perl", "-e", RAW_CLIENT], &bytes)?;
    if !out.success() {
        return Err(format!("the raw client failed: {out:?}"));
    }
    let mut frames = Vec::new();
    let mut rest = out.stdout.as_slice();
    while let Some((m, used)) = decode_frame(rest).map_err(|e| e.to_string())? {
        frames.push(m);
        rest = &rest[used..];
    }
    Ok(frames)
}

/// Polls the warden's audit (20 s) for the events of the request whose argv holds `token`,
/// once one of them satisfies `done`.
fn events_of(w: &MirrorWarden, token: &str, done: impl Fn(&AuditEvent) -> bool) -> Vec<AuditEvent> {
    w.wait_audit(
        &format!("the audit of the request with {token:?}"),
        |events| {
            let id = events
                .iter()
                .find(|e| {
                    e.event() == "request"
                        && e.get("argv")
                            .is_some_and(|a| argv_strings(a).iter().any(|t| t == token.as_bytes()))
                })?
                .request_id()?
                .to_owned();
            let mine: Vec<AuditEvent> = events
                .iter()
                .filter(|e| e.request_id() == Some(id.as_str()))
                .cloned()
                .collect();
            mine.iter().any(&done).then_some(mine)
        },
    )
}

#[test]
fn a_forged_tool_path_runs_the_original_of_argv0_and_the_victim_survives() {
    let test = "a_forged_tool_path_runs_the_original_of_argv0_and_the_victim_survives";
    let Some((warden, c)) = prisoner(test, "bookworm", &["cat", "rm", "env"]) else {
        return;
    };
    c.sh_ok("agent", "echo still here > /workspace/victim", &[])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let frames = raw_call(
        &c,
        "agent",
        Request {
            argv: vec![b"cat".to_vec(), b"/workspace/victim".to_vec()],
            tool_path: b"/usr/bin/rm".to_vec(),
            cwd: b"/workspace".to_vec(),
            env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
            ..Request::default()
        },
    )
    .unwrap_or_else(|e| panic!("{test}: {e}\n{}", warden.log()));
    assert!(
        matches!(&frames[..2], [Message::Hello { .. }, Message::Decision(d)] if d.action == Action::Allow),
        "{test}: {frames:?}"
    );
    assert_eq!(
        frames[2..],
        [Message::Stdout(b"still here\n".to_vec()), Message::Exit(0)],
        "{test}: {frames:?}\n{}",
        warden.log()
    );
    c.sh_ok("agent", "test -e /workspace/victim", &[])
        .unwrap_or_else(|e| panic!("{test}: the victim is gone: {e}"));
    let events = events_of(&warden, "/workspace/victim", |e| e.event() == "exit");
    let request = events.iter().find(|e| e.event() == "request").unwrap();
    assert_eq!(
        request.get("tool_path").map(decode_bytes),
        Some(b"/usr/bin/rm".to_vec()),
        "{}",
        request.raw
    );
    let start = events.iter().find(|e| e.event() == "start").unwrap();
    // What ran, as the helper reports it: the original it found for the name `cat`.
    assert_eq!(
        start.str_field("program"),
        Some("/usr/lib/clawrden/originals/usr/bin/cat"),
        "{}",
        start.raw
    );
    assert_eq!(start.get("run_uid").and_then(Value::as_u64), Some(1000));
}

/// Walks up from the probe to the nearest ancestor whose comm is `$1` (the original that
/// spawned it, through any shell in between) and tries to reach that original: read its
/// exe link, run it, list its fds, ptrace-seize it. Prints `NAME=ok` or `NAME=denied`
/// per probe to `$2`, and the control `self-exe=ok` (its own /proc is open).
const PROBE: &str = r#"#!/bin/sh
name=$1; out=$2
pid=$$; target=
while [ "$pid" -gt 1 ]; do
    pid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status")
    read -r comm < "/proc/$pid/comm"
    if [ "$comm" = "$name" ]; then target=$pid; break; fi
done
{
    echo "target=${target:-none}"
    readlink "/proc/$$/exe" >/dev/null 2>&1 && echo self-exe=ok || echo self-exe=denied
    readlink "/proc/$target/exe" >/dev/null 2>&1 && echo exe-link=ok || echo exe-link=denied
    "/proc/$target/exe" --version >/dev/null 2>&1 && echo exe-run=ok || echo exe-run=denied
    ls "/proc/$target/fd/" >/dev/null 2>&1 && echo fd=ok || echo fd=denied
    perl -e 'exit(syscall(101, 0x4206, $ARGV[0], 0, 0) == 0 ? 0 : 1)' "$target" \
        && echo ptrace=ok || echo ptrace=denied
} > "$out"
cat >/dev/null 2>&1 || true
"#;

const PROBE_DENIED: &str =
    "self-exe=ok\nexe-link=denied\nexe-run=denied\nfd=denied\nptrace=denied\n";

/// The probe's report for `route`, minus the `target=PID` line (which must name a pid).
fn probe_report(c: &Container, route: &str) -> Result<String, String> {
    let out = c.sh_ok(
        "root",
        r#"cat "/tmp/probe-$1" 2>/dev/null || true"#,
        &[route],
    )?;
    let mut lines = out.lines();
    match lines.next() {
        Some(t) if t.starts_with("target=") && t != "target=none" => {}
        other => {
            return Err(format!(
                "{route}: the probe found no original: {other:?} in {out:?}"
            ))
        }
    }
    Ok(lines.map(|l| format!("{l}\n")).collect())
}

#[test]
fn hooks_pagers_aliases_and_exec_children_cannot_reach_the_original_that_spawned_them() {
    let test = "hooks_pagers_aliases_and_exec_children_cannot_reach_the_original_that_spawned_them";
    let Some((warden, c)) = prisoner(test, "bookworm-git", &["git", "find", "cat"]) else {
        return;
    };
    let setup = format!(
        "cat > /tmp/probe.sh <<'EOF'\n{PROBE}EOF\nchmod 755 /tmp/probe.sh\n\
         mkdir -p /workspace/repo && cd /workspace/repo && git init -q && \
         git config core.fsmonitor 'sh /tmp/probe.sh git /tmp/probe-fsmonitor' && \
         git config alias.probe '!sh /tmp/probe.sh git /tmp/probe-alias' && \
         git config core.pager 'sh /tmp/probe.sh git /tmp/probe-pager'"
    );
    // `cat` and `git` here are the shims: the agent sets this up through the warden.
    c.sh_ok("agent", &setup, &[])
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", warden.log()));
    let runs: [(&str, Vec<&str>, bool); 4] = [
        (
            "fsmonitor",
            vec!["git", "-C", "/workspace/repo", "status"],
            false,
        ),
        (
            "alias",
            vec!["git", "-C", "/workspace/repo", "probe"],
            false,
        ),
        (
            "pager",
            vec!["git", "-C", "/workspace/repo", "-p", "log", "--all"],
            true,
        ),
        (
            "find",
            vec![
                "find",
                "/workspace",
                "-maxdepth",
                "0",
                "-exec",
                "sh",
                "/tmp/probe.sh",
                "find",
                "/tmp/probe-find",
                ";",
            ],
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (route, argv, tty) in runs {
        let out = if tty {
            c.exec_tty("agent", &argv)
        } else {
            c.exec("agent", &argv)
        }
        .unwrap_or_else(|e| panic!("{test}: {e}"));
        match probe_report(&c, route) {
            Ok(report) if report == PROBE_DENIED => {}
            Ok(report) => failures.push(format!(
                "{route}: the probe reached the original:\n{report}(call: {out:?})"
            )),
            Err(e) => failures.push(format!("{e} (call: {out:?})")),
        }
    }
    assert!(
        failures.is_empty(),
        "{test}:\n{}\n--- warden log\n{}",
        failures.join("\n"),
        warden.log()
    );
}

/// Prints `HELPER_PID TAIL_PID` of the exec-helper running `tail -f /dev/null` (after its
/// exec), polling up to 5 s. Run as root: the helper's /proc entries are root's.
const FIND_TAIL: &str = r#"
i=0
while [ $i -lt 100 ]; do
  for d in /proc/[0-9]*; do
    c=$(tr '\000' ' ' < "$d/cmdline" 2>/dev/null) || continue
    [ "$c" = "$1 " ] || continue
    pp=$(awk '/^PPid:/ { print $2 }' "$d/status" 2>/dev/null)
    case "$(tr '\000' ' ' < "/proc/$pp/cmdline" 2>/dev/null)" in
      *" exec-helper "*) echo "$pp ${d#/proc/}"; exit 0 ;;
    esac
  done
  i=$((i + 1))
  sleep 0.05
done
echo "no exec-helper running '$1' appeared" >&2
exit 1
"#;

/// The names in a `/proc/PID/environ` (read on the host: a container's root lacks
/// CAP_SYS_PTRACE, and a process started by `docker exec` is not dumpable) that start with
/// `CLAWRDEN_` or are `PROBE_VAR`, sorted.
fn environ_names(host_pid: &str) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{host_pid}/environ")).expect("read environ");
    let mut names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter_map(|e| e.iter().position(|&b| b == b'=').map(|i| &e[..i]))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("CLAWRDEN_") || n == "PROBE_VAR")
        .collect();
    names.sort();
    names
}

/// Host pids of the exec-helper running `tail -f /dev/null` and of that tail (its child;
/// the agent's shim has the same command line), from `docker top` (polled up to 5 s).
fn helper_and_tail(c: &Container) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = std::process::Command::new("docker")
            .args(["top", c.name(), "-o", "pid,ppid,args"])
            .output()
            .expect("docker top");
        let procs: Vec<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (pid, ppid) = (w.next()?.to_owned(), w.next()?.to_owned());
                Some((pid, ppid, w.collect::<Vec<_>>().join(" ")))
            })
            .collect();
        let helper = procs.iter().find(|(_, _, args)| {
            args.contains(" exec-helper ") && args.ends_with(" -- tail tail -f /dev/null")
        });
        if let Some((helper, _, _)) = helper {
            if let Some((tail, _, _)) = procs
                .iter()
                .find(|(_, ppid, args)| ppid == helper && args == "tail -f /dev/null")
            {
                return (helper.clone(), tail.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no helper running tail: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_callers_environment_reaches_the_command_never_the_root_helper() {
    let test = "the_callers_environment_reaches_the_command_never_the_root_helper";
    let Some((warden, c)) = prisoner(test, "bookworm", &["env", "tail", "cat"]) else {
        return;
    };
    let out = c
        .sh(
            "agent",
            "VIRTUAL_ENV=/workspace/.venv GIT_AUTHOR_NAME=Agent CLAWRDEN_PARENT_REQUEST=forged env",
            &[],
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let text = out.stdout_text();
    for line in [
        "VIRTUAL_ENV=/workspace/.venv",
        "GIT_AUTHOR_NAME=Agent",
        "CLAWRDEN_SOCKET=/run/clawrden/warden.sock",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{test}: `env` through the shim lacks {line}: {out:?}\n{}",
            warden.log()
        );
    }
    let parent = text
        .lines()
        .find_map(|l| l.strip_prefix("CLAWRDEN_PARENT_REQUEST="))
        .unwrap_or_else(|| panic!("{test}: no CLAWRDEN_PARENT_REQUEST: {out:?}"));
    assert!(parent != "forged" && parent.len() == 26, "{test}: {parent}");

    std::thread::scope(|scope| {
        let call = scope.spawn(|| c.sh("agent", "PROBE_VAR=agents exec tail -f /dev/null", &[]));
        let (helper, tail) = helper_and_tail(&c);
        let helper_env = environ_names(&helper);
        let tail_env = environ_names(&tail);
        let _ = std::process::Command::new("kill").arg(&tail).status();
        let _ = call.join();
        assert_eq!(
            helper_env,
            ["CLAWRDEN_EXEC_ENV_0", "CLAWRDEN_SOCKET"],
            "{test}: the root helper's own environment (its image's CLAWRDEN_SOCKET, the \
             opaque block, nothing of the caller's)"
        );
        assert_eq!(
            tail_env,
            [
                "CLAWRDEN_PARENT_REQUEST",
                "CLAWRDEN_PARENT_TOKEN",
                "CLAWRDEN_SOCKET",
                "PROBE_VAR"
            ],
            "{test}: the command's environment (with the warden's parent-link secret, by \
             which its nested calls prove where they come from)"
        );
    });
}

/// Exits 0 when one of the pids is a running process: it exists and is not a zombie (a
/// killed process whose parent died waits for the container's PID 1 to reap it, which
/// `sleep` never does).
const RUNNING: &str = r#"
for p in "$@"; do
    s=$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null) || continue
    [ -z "$s" ] || [ "$s" = Z ] || exit 0
done
exit 1
"#;

/// A root exec-helper for request `id` running `tail -f /dev/null TOKEN` in `c`, started
/// by hand with `docker exec` so that its channel stays open (the test holds the exec's
/// stdin): a helper that did not notice its warden die. Returns the `docker exec` child.
fn stand_in_helper(c: &Container, id: &str, token: &str) -> std::process::Child {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args(["exec", "-i", "--user", "0:0", c.name()])
        .args([
            "/usr/lib/clawrden/bin/clawrden-shim",
            "exec-helper",
            "--original-root",
            "/usr/lib/clawrden/originals",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--request-id",
            id,
            "--no-parent-death",
            "--framed",
            "--",
            "tail",
            "tail",
            "-f",
            "/dev/null",
            token,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker exec the stand-in helper");
    let mut start = Vec::new();
    ChannelFrame::single(ChannelMsg::Start(Start {
        stdio: [StdioPlan::Pipe; 3],
        terminal: None,
    }))
    .encode(&mut start)
    .unwrap();
    let stdin = child.stdin.as_mut().expect("the exec's stdin");
    stdin.write_all(&start).unwrap();
    stdin.flush().unwrap();
    child
}

/// Whether none of `pids` runs any more in `c` within `limit` (polled).
fn gone_within(c: &Container, pids: &[&str], limit: Duration) -> bool {
    let began = Instant::now();
    loop {
        if !c.sh("root", RUNNING, pids).unwrap().success() {
            return true;
        }
        if began.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_warden_killed_mid_call_takes_its_command_along_and_a_restart_kills_any_leftover() {
    let test = "a_warden_killed_mid_call_takes_its_command_along_and_a_restart_kills_any_leftover";
    let Some((mut warden, c)) = prisoner(test, "bookworm", &["tail", "cat"]) else {
        return;
    };
    let mut stand_in = None;
    std::thread::scope(|scope| {
        let call = scope.spawn(|| c.exec("agent", &["tail", "-f", "/dev/null", "crash-token"]));
        let found = c
            .sh_ok("root", FIND_TAIL, &["tail -f /dev/null crash-token"])
            .unwrap_or_else(|e| panic!("{test}: {e}\n{}", warden.log()));
        let (helper, tail) = found.trim().split_once(' ').expect("two pids");
        let (helper, tail) = (helper.to_owned(), tail.to_owned());
        warden.kill_hard();
        let out = call.join().expect("the call's thread").unwrap();
        assert_eq!(
            out.status,
            Some(125),
            "{test}: the shim of a killed warden: {out:?}"
        );
        // The command does not outlive its warden: the end of the helper's channel (the
        // exec's stdin, closed with the warden's connection) makes the helper kill it.
        assert!(
            gone_within(&c, &[&helper, &tail], Duration::from_secs(20)),
            "{test}: the command outlived its warden by 20 s"
        );
        // A helper that did not notice (its channel still open): the restart must kill it.
        let id = events_of(&warden, "crash-token", |e| e.event() == "start")
            .iter()
            .find_map(|e| e.request_id().map(str::to_owned))
            .expect("the call's request id");
        stand_in = Some(stand_in_helper(&c, &id, "leftover-token"));
        let found = c
            .sh_ok("root", FIND_TAIL, &["tail -f /dev/null leftover-token"])
            .unwrap_or_else(|e| panic!("{test}: the stand-in helper: {e}"));
        let (helper, tail) = found.trim().split_once(' ').expect("two pids");
        warden
            .restart()
            .unwrap_or_else(|e| panic!("{test}: restart: {e}"));
        assert!(
            gone_within(&c, &[helper, tail], Duration::from_secs(20)),
            "{test}: the leftover still runs 20 s after the restart\n{}",
            warden.log()
        );
    });
    if let Some(mut child) = stand_in {
        let _ = child.kill();
        let _ = child.wait();
    }
    let events = events_of(&warden, "crash-token", |e| {
        e.event() == "cancel" && e.str_field("by") == Some("warden")
    });
    let cancel = events
        .iter()
        .find(|e| e.event() == "cancel")
        .expect("cancel");
    assert_eq!(
        (
            cancel.str_field("reason"),
            cancel.str_field("leftovers"),
            cancel.str_field("executor")
        ),
        (
            Some("abandoned: the warden restarted while it ran"),
            Some("killed"),
            Some("mirror")
        ),
        "{test}: {}",
        cancel.raw
    );
}
