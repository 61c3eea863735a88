//! The `mirror` executor against real prisoner containers: a warden on the host, a
//! hardened image (locally built; nothing is pulled) whose socket directory is mounted at
//! /run/clawrden, and calls made by the agent user inside the container through the shim.
//!
//! Per image: allow (the container's own hostname comes back), deny -> 126 with the exact
//! message, exit statuses, timeout -> 124 with no process of the request left in the
//! container, 1 MiB of binary stdin/stdout byte-exact, the agent cannot run an original
//! (directly or through the exec-helper), and a nested call (`env cat ...`) is decided
//! again and linked to its parent in the audit. bookworm-python: `pip` (a script whose
//! interpreter python3 is shimmed too) runs under python3's original; bookworm-node: `npm`
//! runs under node's original with node shimmed. Every image: the agent cannot kill the
//! (root) supervisor of its own command, a root `--kill` ignores a forged helper, and an
//! `ask` made by the agent shows up in `clawctl --json queue`, `clawctl approve ID` exits
//! 0 and the call then runs with its exact output. bookworm: a call made on a terminal
//! (`docker exec --tty`) runs on one (`tty` prints /dev/pts/N) and its binary output, even
//! writes starting with byte 0, 1 or 2, arrives byte-exact. A prisoner configured with
//! `container_label:` runs in the one container with that label, and fails naming the
//! label when two carry it.
//!
//! Needs a Docker engine (skips without one unless CLAWRDEN_REQUIRE_DOCKER=1), root, the
//! static shim (`cargo build --release -p clawrden-shim --target x86_64-unknown-linux-musl`)
//! and the warden binary built next to this test.

use clawrden_e2e::argv_strings;
use clawrden_e2e::docker::{
    checkout_tag, ensure_test_image, harden_image, harden_image_with, musl_shim,
    require_docker_or_skip, Container, MirrorWarden, ACCEPT_SHELL_BYPASS, ORIGINALS_IN_IMAGE,
    SHIM_IN_IMAGE,
};
use clawrden_e2e::raw::{raw_call_in_container, raw_request};
use clawrden_e2e::seeded_bytes;

const PRISONER: &str = "agent-1";
const HOSTNAME: &str = "prisoner-test";

/// Everything goes to the prisoner; `cat /etc/hostname /etc/hostname` asks a person; `rm`
/// is denied; `tail` has a 3 s limit. (`sleep` stays unshimmed: it is the containers' PID 1.)
const POLICY: &str = "\
version: 1
default_action: allow
default_timeout: 2m
approval_timeout: 30s
default_executor: mirror
rules:
  - name: ask-hostname-twice
    command: cat
    args: [/etc/hostname, /etc/hostname]
    action: ask
  - name: no-rm
    command: rm
    action: deny
    reason: deleting files needs a person
  - name: short-tail
    command: tail
    action: allow
    timeout: 3s
";

/// Collects the properties that failed for one image, so one run reports all of them.
struct Report {
    image: String,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, property: &str, result: Result<(), String>) {
        if let Err(why) = result {
            self.failures.push(format!("{property}: {why}"));
        }
    }

    fn finish(self, warden: &MirrorWarden) {
        assert!(
            self.failures.is_empty(),
            "image {}: {} propert{} failed:\n- {}\n--- warden log\n{}",
            self.image,
            self.failures.len(),
            if self.failures.len() == 1 { "y" } else { "ies" },
            self.failures.join("\n- "),
            warden.log()
        );
    }
}

/// The call the policy's `ask-hostname-twice` rule holds for a person.
const ASK_ARGV: [&str; 3] = ["cat", "/etc/hostname", "/etc/hostname"];

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// A hardened prisoner of `image` with `tools` shimmed, and a mirror warden for it.
fn prisoner(test: &str, image: &str, tools: &[&str]) -> Option<(MirrorWarden, Container)> {
    prisoner_with(test, image, tools, &[])
}

/// [`prisoner`], with `hardener_args` for harden-container.sh.
fn prisoner_with(
    test: &str,
    image: &str,
    tools: &[&str],
    hardener_args: &[&str],
) -> Option<(MirrorWarden, Container)> {
    if !require_docker_or_skip(test) {
        return None;
    }
    musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let base = ensure_test_image(image).unwrap_or_else(|e| panic!("{test}: base {image}: {e}"));
    let tag = checkout_tag(&format!("{image}-mirror"));
    harden_image_with(&base, tools, &tag, hardener_args)
        .unwrap_or_else(|e| panic!("{test}: hardening {base}: {e}"));
    let mut warden = MirrorWarden::prepare(PRISONER);
    let mount = warden.mount_arg();
    let container = Container::start(&tag, &["--hostname", HOSTNAME, "--volume", &mount])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    warden
        .start(PRISONER, container.name(), POLICY)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    Some((warden, container))
}

fn allowed_call_runs_in_the_prisoner(c: &Container) -> Result<(), String> {
    let out = c.exec("agent", &["cat", "/etc/hostname"])?;
    ensure(
        out.status == Some(0)
            && out.stdout == format!("{HOSTNAME}\n").as_bytes()
            && out.stderr.is_empty(),
        || format!("cat /etc/hostname as agent: {out:?}"),
    )
}

fn command_runs_as_the_caller_in_its_cwd(c: &Container) -> Result<(), String> {
    let out = c.exec("agent", &["env", "sh", "-c", "id -u; id -g; pwd"])?;
    ensure(
        out.status == Some(0) && out.stdout == b"1000\n1000\n/workspace\n",
        || format!("env sh -c 'id -u; id -g; pwd' as agent: {out:?}"),
    )
}

fn denied_call_exits_126_with_the_reason(c: &Container) -> Result<(), String> {
    c.sh_ok("agent", ": >/workspace/keep", &[])?;
    let out = c.exec("agent", &["rm", "/workspace/keep"])?;
    ensure(
        out.status == Some(126)
            && out.stdout.is_empty()
            && out.stderr == b"clawrden: denied: deleting files needs a person\n",
        || format!("rm as agent: {out:?}"),
    )?;
    c.sh_ok("agent", "test -e /workspace/keep", &[])
        .map(drop)
        .map_err(|e| format!("the denied rm ran anyway: {e}"))
}

fn exit_statuses_come_back_exactly(c: &Container) -> Result<(), String> {
    for code in ["0", "1", "7", "125", "255"] {
        let out = c.exec("agent", &["env", "sh", "-c", &format!("exit {code}")])?;
        ensure(out.status == Some(code.parse().unwrap()), || {
            format!("env sh -c 'exit {code}': {out:?}")
        })?;
    }
    let out = c.exec("agent", &["head", "-c", "1", "/nonexistent"])?;
    ensure(out.status == Some(1) && !out.stderr.is_empty(), || {
        format!("head of a missing file: {out:?}")
    })
}

fn timeout_exits_124_and_leaves_no_process(c: &Container) -> Result<(), String> {
    let out = c.exec("agent", &["tail", "-f", "/dev/null"])?;
    ensure(
        out.status == Some(124)
            && out.stderr == b"clawrden: timed out after 3s; process tree killed\n",
        || format!("tail -f /dev/null with a 3s limit: {out:?}"),
    )?;
    let left: Vec<String> = c
        .processes()?
        .into_iter()
        .filter(|p| p.contains("tail -f") || p.contains("exec-helper"))
        .collect();
    ensure(left.is_empty(), || {
        format!("processes of the timed-out request are still in the container: {left:?}")
    })
}

/// Prints the pid of the exec-helper whose child is `tail -f /dev/null` (the original, after
/// its exec), polling up to 2 s. Run as root: the helper's /proc entries are root's.
const FIND_TAIL_HELPER: &str = r#"
i=0
while [ $i -lt 40 ]; do
  for d in /proc/[0-9]*; do
    c=$(tr '\000' ' ' < "$d/cmdline" 2>/dev/null) || continue
    [ "$c" = "tail -f /dev/null " ] || continue
    pp=$(awk '/^PPid:/ { print $2 }' "$d/status" 2>/dev/null)
    case "$(tr '\000' ' ' < "/proc/$pp/cmdline" 2>/dev/null)" in
      *" exec-helper "*) echo "$pp"; exit 0 ;;
    esac
  done
  i=$((i + 1))
  sleep 0.05
done
echo "no exec-helper with a tail child appeared" >&2
exit 1
"#;

/// The supervisor of the agent's own approved command stays root: the agent's SIGKILL
/// fails with EPERM, the timeout still kills the whole tree (124) and nothing is left.
fn agent_cannot_kill_the_supervisor_of_its_own_command(c: &Container) -> Result<(), String> {
    std::thread::scope(|scope| {
        let call = scope.spawn(|| c.exec("agent", &["tail", "-f", "/dev/null"]));
        let checks = (|| {
            let helper = c.sh_ok("root", FIND_TAIL_HELPER, &[])?.trim().to_string();
            let uids = c.sh_ok(
                "root",
                r#"awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$1/status""#,
                &[&helper],
            )?;
            ensure(uids == "0 0 0 0\n", || {
                format!("the exec-helper {helper} does not run as root: Uid {uids:?}")
            })?;
            let kill = c.sh("agent", r#"kill -9 "$1""#, &[&helper])?;
            ensure(
                kill.status != Some(0) && kill.stderr_text().contains("not permitted"),
                || format!("kill -9 {helper} (the supervisor) as agent: {kill:?}"),
            )?;
            c.sh_ok("root", r#"test -d "/proc/$1""#, &[&helper])
                .map(drop)
                .map_err(|e| format!("the supervisor {helper} died of the agent's kill: {e}"))
        })();
        let out = call
            .join()
            .map_err(|_| "the tail call's thread panicked".to_string())??;
        checks?;
        ensure(
            out.status == Some(124)
                && out.stderr == b"clawrden: timed out after 3s; process tree killed\n",
            || format!("tail -f /dev/null after the agent's kill attempt: {out:?}"),
        )
    })?;
    let left: Vec<String> = c
        .processes()?
        .into_iter()
        .filter(|p| p.contains("tail -f") || p.contains("exec-helper"))
        .collect();
    ensure(left.is_empty(), || {
        format!("processes of the timed-out request are still in the container: {left:?}")
    })
}

/// A process of the agent's that poses as the helper for a request id is not a helper to
/// the warden's root `--kill`: it reports that no helper runs the request (3) and the
/// forgery is not signalled.
fn a_forged_helper_is_not_signalled_by_a_root_kill(c: &Container) -> Result<(), String> {
    let forged = c.sh_ok(
        "agent",
        r#""$1" exec-helper --no-parent-death --request-id forged-1 -- /bin/sleep sleep 30 >/dev/null 2>&1 &
echo $!"#,
        &[SHIM_IN_IMAGE],
    )?;
    let forged = forged.trim().to_string();
    let kill = c.exec(
        "root",
        &[
            SHIM_IN_IMAGE,
            "exec-helper",
            "--kill",
            "--request-id",
            "forged-1",
            "--signal",
            "KILL",
        ],
    )?;
    let alive = c.sh("root", r#"test -d "/proc/$1""#, &[&forged])?;
    let _ = c.sh("agent", r#"kill -9 "$1""#, &[&forged]);
    ensure(
        kill.status == Some(3)
            && kill.stderr
                == b"clawrden: exec-helper --kill: no exec-helper runs request forged-1\n",
        || format!("root --kill of a forged helper: {kill:?}"),
    )?;
    ensure(alive.success(), || {
        format!("the forged helper {forged} was signalled by the root --kill")
    })
}

/// The id of the pending request whose argv is [`ASK_ARGV`], from `clawctl --json queue`
/// (polled for up to 20 s).
fn pending_ask_id(warden: &MirrorWarden) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let queue = warden.clawctl(&["--json", "queue"])?;
        ensure(queue.success(), || {
            format!("clawctl --json queue: {queue:?}")
        })?;
        let value: serde_json::Value = serde_json::from_slice(&queue.stdout)
            .map_err(|e| format!("clawctl --json queue printed no JSON ({e}): {queue:?}"))?;
        let found = value["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| argv_strings(&r["argv"]) == ASK_ARGV.map(|a| a.as_bytes().to_vec()))
            .and_then(|r| r["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return Ok(id);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the ask never showed up in clawctl --json queue within 20 s; last: {}",
                queue.stdout_text()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An `ask` made by the agent shows up in `clawctl --json queue`; `clawctl approve ID`
/// exits 0 and the call then runs in the prisoner with its exact output and status 0.
fn an_approved_ask_runs_in_the_prisoner(
    c: &Container,
    warden: &MirrorWarden,
) -> Result<(), String> {
    std::thread::scope(|scope| {
        let call = scope.spawn(|| c.exec("agent", &ASK_ARGV));
        let approved = (|| {
            let id = pending_ask_id(warden)?;
            let approve = warden.clawctl(&["approve", &id])?;
            ensure(approve.success(), || {
                format!("clawctl approve {id}: {approve:?}")
            })?;
            Ok::<_, String>(id)
        })();
        let out = call
            .join()
            .map_err(|_| "the asking call's thread panicked".to_string())??;
        let id = approved?;
        let stderr = out.stderr_text();
        ensure(
            out.status == Some(0)
                && out.stdout == format!("{HOSTNAME}\n{HOSTNAME}\n").as_bytes()
                && stderr.starts_with(&format!("clawrden: waiting for approval {id}: "))
                && stderr.lines().count() == 1,
            || format!("{} after clawctl approve {id}: {out:?}", ASK_ARGV.join(" ")),
        )
    })
}

/// On a terminal (`docker exec --tty`), a shimmed `tty` prints the /dev/pts path of the
/// terminal the mirror exec gave the original, and exits 0.
fn a_tty_call_runs_on_a_terminal(c: &Container) -> Result<(), String> {
    let out = c.exec_tty("agent", &["tty"])?;
    let text = out.stdout_text().replace('\r', "");
    let pts = text
        .strip_prefix("/dev/pts/")
        .and_then(|rest| rest.strip_suffix('\n'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    ensure(out.status == Some(0) && pts, || {
        format!("tty on a terminal as agent: {out:?}")
    })
}

/// Binary output on a terminal arrives byte-exact, even when a write starts with byte 0, 1
/// or 2 (which a multiplexed-stream decoder would take for a frame header): `cat` of three
/// files, each written separately, starting with 0x00, 0x01 and 0x02. No byte is `\n` or
/// `\r`, which the terminals' output processing could change.
fn binary_output_on_a_terminal_is_byte_exact(c: &Container) -> Result<(), String> {
    let files: [(&str, &[u8]); 3] = [
        (
            "/tmp/clawrden-tty-0",
            &[0x00, 0x01, 0x02, 0xff, 0x00, 0x7f, 0x03, 0x00, 0x00, 0x41],
        ),
        (
            "/tmp/clawrden-tty-1",
            &[0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0xfe],
        ),
        (
            "/tmp/clawrden-tty-2",
            &[0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x42],
        ),
    ];
    for (path, bytes) in files {
        let of = format!("of={path}");
        let out = c.exec_with_stdin("agent", &["dd", &of, "status=none"], bytes)?;
        ensure(out.success(), || {
            format!("writing {path} in the container: {out:?}")
        })?;
    }
    let out = c.exec_tty("agent", &["cat", files[0].0, files[1].0, files[2].0])?;
    let want: Vec<u8> = files.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    ensure(out.status == Some(0) && out.stdout == want, || {
        format!(
            "cat of binary files on a terminal as agent: status {:?}, stdout {:02x?} (want {want:02x?}), stderr {:?}",
            out.status,
            out.stdout,
            out.stderr_text()
        )
    })
}

fn binary_stdin_and_stdout_are_byte_exact(c: &Container) -> Result<(), String> {
    let data = seeded_bytes(0x5eed_0001, 1 << 20);
    let out = c.exec_with_stdin("agent", &["cat"], &data)?;
    ensure(
        out.status == Some(0) && out.stderr.is_empty() && out.stdout == data,
        || {
            format!(
                "1 MiB through cat: status {:?}, {} bytes out (equal: {}), stderr {:?}",
                out.status,
                out.stdout.len(),
                out.stdout == data,
                out.stderr_text()
            )
        },
    )
}

fn agent_cannot_run_an_original(c: &Container) -> Result<(), String> {
    // Through sh: the docker CLI itself would print the runtime's error on stdout.
    for original in [
        format!("{ORIGINALS_IN_IMAGE}/usr/bin/head"),
        format!("{ORIGINALS_IN_IMAGE}/bin/head"),
    ] {
        let run = c.sh("agent", r#""$1" /etc/hostname"#, &[&original])?;
        ensure(run.status == Some(126) && run.stdout.is_empty(), || {
            format!("running {original} as agent: {run:?}")
        })?;
    }
    // The helper itself, started by the agent, cannot open an original either.
    let helper = c.exec(
        "agent",
        &[
            SHIM_IN_IMAGE,
            "exec-helper",
            "--original-root",
            ORIGINALS_IN_IMAGE,
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--",
            "head",
            "head",
            "/etc/hostname",
        ],
    )?;
    ensure(
        helper.status == Some(126)
            && helper.stdout.is_empty()
            && helper.stderr_text().contains("Permission denied"),
        || format!("exec-helper started by the agent: {helper:?}"),
    )
}

fn nested_call_is_decided_again_and_linked(
    c: &Container,
    warden: &MirrorWarden,
) -> Result<(), String> {
    let out = c.exec("agent", &["env", "cat", "/etc/hostname"])?;
    ensure(
        out.status == Some(0) && out.stdout == format!("{HOSTNAME}\n").as_bytes(),
        || format!("env cat /etc/hostname: {out:?}"),
    )?;
    let (outer, inner, decision) = warden.wait_audit("the nested call's decision", |events| {
        let requests: Vec<_> = events.iter().filter(|e| e.event() == "request").collect();
        let outer = requests.iter().rev().find(|e| {
            e.get("argv").map(argv_strings)
                == Some(vec![
                    b"env".to_vec(),
                    b"cat".to_vec(),
                    b"/etc/hostname".to_vec(),
                ])
        })?;
        let outer_id = outer.request_id()?.to_string();
        let inner = requests
            .iter()
            .find(|e| e.str_field("parent_request") == Some(outer_id.as_str()))?;
        let inner_id = inner.request_id()?;
        let decision = events
            .iter()
            .find(|e| e.event() == "decision" && e.request_id() == Some(inner_id))?;
        Some((outer_id, (*inner).clone(), decision.clone()))
    });
    let argv = inner.get("argv").map(argv_strings).unwrap_or_default();
    ensure(
        argv == vec![b"cat".to_vec(), b"/etc/hostname".to_vec()]
            && decision.str_field("action") == Some("allow")
            && decision.str_field("executor") == Some("mirror"),
        || format!("nested call of {outer}: {} / {}", inner.raw, decision.raw),
    )
}

/// A raw request (perl in the prisoner, no shim) whose argv[0] is `/usr/bin/rm/.` and
/// whose tool_path is `/usr/bin/rm`: denied before the policy, the victim survives, and
/// the audit records the denial. Images without perl (busybox) skip it.
fn argv0_that_is_not_a_command_name_is_denied(
    c: &Container,
    warden: &MirrorWarden,
) -> Result<(), String> {
    if !c.sh("agent", "command -v perl >/dev/null", &[])?.success() {
        return Ok(());
    }
    c.sh_ok("agent", "echo keep >/workspace/victim", &[])?;
    let mut request = raw_request(&[b"/usr/bin/rm/.", b"-f", b"/workspace/victim"]);
    request.tool_path = b"/usr/bin/rm".to_vec();
    request.cwd = b"/workspace".to_vec();
    let reply = raw_call_in_container(c, "agent", "/run/clawrden/warden.sock", &request)?;
    let d = reply.decision();
    let reason = "argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name";
    ensure(
        d.action == clawrden_protocol::Action::Deny
            && d.reason == reason
            && d.rule.is_none()
            && reply.frames.len() == 1,
        || format!("raw argv[0]=/usr/bin/rm/.: {reply:?}"),
    )?;
    let kept = c.sh("agent", "cat /workspace/victim", &[])?;
    ensure(kept.stdout == b"keep\n", || {
        format!("the victim after a raw /usr/bin/rm/. call: {kept:?}")
    })?;
    let id = d.request_id.clone();
    let decision = warden.wait_audit("the refused call's decision", |events| {
        events
            .iter()
            .find(|e| e.event() == "decision" && e.request_id() == Some(id.as_str()))
            .cloned()
    });
    ensure(
        decision.str_field("action") == Some("deny")
            && decision.str_field("reason") == Some(reason)
            && decision.get("rule").is_some_and(|r| r.is_null()),
        || format!("decision of the refused call: {}", decision.raw),
    )
}

/// A raw request (perl in the prisoner) that claims an earlier, finished request as its
/// parent: it runs, but the audit records the claim as unverified, never as the parent.
fn a_forged_parent_claim_is_recorded_as_unverified(
    c: &Container,
    warden: &MirrorWarden,
) -> Result<(), String> {
    if !c.sh("agent", "command -v perl >/dev/null", &[])?.success() {
        return Ok(());
    }
    let finished = warden.wait_audit("an earlier finished request", |events| {
        events
            .iter()
            .find(|e| e.event() == "exit")
            .and_then(|e| e.request_id().map(str::to_owned))
    });
    let mut request = raw_request(&[b"cat", b"/etc/hostname"]);
    request.parent_request = Some(finished.clone());
    request.cwd = b"/workspace".to_vec();
    request.tool_path = b"/usr/bin/cat".to_vec();
    let reply = raw_call_in_container(c, "agent", "/run/clawrden/warden.sock", &request)?;
    ensure(
        reply.exit() == Some(0) && reply.stdout() == format!("{HOSTNAME}\n").as_bytes(),
        || format!("raw cat claiming parent {finished}: {reply:?}"),
    )?;
    let id = reply.decision().request_id.clone();
    let req = warden.wait_audit("the forged call's request event", |events| {
        events
            .iter()
            .find(|e| e.event() == "request" && e.request_id() == Some(id.as_str()))
            .cloned()
    });
    let reason = format!("request {finished} is not running (it finished, or never existed)");
    ensure(
        req.get("parent_request").is_some_and(|p| p.is_null())
            && req.str_field("unverified_parent") == Some(finished.as_str())
            && req.str_field("unverified_parent_reason") == Some(reason.as_str()),
        || format!("request event of the forged claim: {}", req.raw),
    )
}

/// `nested`: whether nested calls can be checked. Busybox runs applets in-process
/// (FEATURE_PREFER_APPLETS), so `env cat` there never executes /bin/cat and makes no
/// nested call. `tty`: also shim `tty` and check a call made on a terminal.
/// `hardener_args`: extra options for harden-container.sh.
fn mirror_case(test: &str, image: &str, nested: bool, tty: bool, hardener_args: &[&str]) {
    let mut tools = vec!["cat", "head", "rm", "tail", "env"];
    if tty {
        tools.push("tty");
    }
    let Some((warden, c)) = prisoner_with(test, image, &tools, hardener_args) else {
        return;
    };
    let mut report = Report {
        image: image.to_string(),
        failures: Vec::new(),
    };
    report.check(
        "an allowed call runs in the prisoner",
        allowed_call_runs_in_the_prisoner(&c),
    );
    report.check(
        "the command runs as the caller in its cwd",
        command_runs_as_the_caller_in_its_cwd(&c),
    );
    report.check(
        "a denied call exits 126 with the reason and runs nothing",
        denied_call_exits_126_with_the_reason(&c),
    );
    report.check(
        "exit statuses come back exactly",
        exit_statuses_come_back_exactly(&c),
    );
    report.check(
        "a timeout exits 124 and leaves no process in the container",
        timeout_exits_124_and_leaves_no_process(&c),
    );
    report.check(
        "the agent cannot kill the supervisor of its own command",
        agent_cannot_kill_the_supervisor_of_its_own_command(&c),
    );
    report.check(
        "a forged helper is not signalled by the warden's root --kill",
        a_forged_helper_is_not_signalled_by_a_root_kill(&c),
    );
    report.check(
        "1 MiB of binary stdin/stdout is byte-exact",
        binary_stdin_and_stdout_are_byte_exact(&c),
    );
    report.check(
        "the agent cannot run an original",
        agent_cannot_run_an_original(&c),
    );
    report.check(
        "a raw request whose argv[0] is not a command name is denied",
        argv0_that_is_not_a_command_name_is_denied(&c, &warden),
    );
    report.check(
        "a forged parent claim is recorded as unverified",
        a_forged_parent_claim_is_recorded_as_unverified(&c, &warden),
    );
    if nested {
        report.check(
            "a nested call is decided again and linked to its parent",
            nested_call_is_decided_again_and_linked(&c, &warden),
        );
    }
    report.check(
        "an approved ask shows up in clawctl queue and then runs",
        an_approved_ask_runs_in_the_prisoner(&c, &warden),
    );
    if tty {
        report.check(
            "a call made on a terminal runs on a terminal",
            a_tty_call_runs_on_a_terminal(&c),
        );
        report.check(
            "binary output on a terminal is byte-exact",
            binary_output_on_a_terminal_is_byte_exact(&c),
        );
    }
    report.finish(&warden);
}

#[test]
fn mirror_runs_originals_in_a_bookworm_prisoner() {
    mirror_case(
        "mirror_runs_originals_in_a_bookworm_prisoner",
        "bookworm",
        true,
        true,
        &[],
    );
}

#[test]
fn mirror_runs_originals_in_a_busybox_prisoner() {
    mirror_case(
        "mirror_runs_originals_in_a_busybox_prisoner",
        "busybox",
        false,
        false,
        &[ACCEPT_SHELL_BYPASS],
    );
}

#[test]
fn mirror_runs_originals_in_a_bullseye_prisoner() {
    mirror_case(
        "mirror_runs_originals_in_a_bullseye_prisoner",
        "bullseye",
        true,
        false,
        &[],
    );
}

#[test]
fn pip_runs_under_the_original_python3_when_python3_is_shimmed() {
    let test = "pip_runs_under_the_original_python3_when_python3_is_shimmed";
    let Some((warden, c)) = prisoner(test, "bookworm-python", &["cat", "python3", "pip"]) else {
        return;
    };
    let out = c
        .exec("agent", &["pip", "--version"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert!(
        out.status == Some(0)
            && out.stdout_text().starts_with("pip ")
            && out.stdout_text().contains("python 3"),
        "{test}: pip --version: {out:?}\n{}",
        warden.log()
    );
    let py = c
        .exec("agent", &["python3", "-c", "import os; print(os.getuid())"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(
        py.stdout_text(),
        "1000\n",
        "{test}: python3 as agent: {py:?}"
    );
    // pip ran as one call: no nested python3 call with a /dev/fd path was made.
    let events = warden.audit();
    let nested: Vec<_> = events
        .iter()
        .filter(|e| {
            e.event() == "decision" && e.get("parent_request").is_some_and(|p| !p.is_null())
        })
        .map(|e| e.raw.clone())
        .collect();
    assert!(
        nested.is_empty(),
        "{test}: unexpected nested calls: {nested:?}"
    );
    an_approved_ask_runs_in_the_prisoner(&c, &warden)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", warden.log()));
}

#[test]
fn npm_runs_under_the_original_node_when_node_is_shimmed() {
    let test = "npm_runs_under_the_original_node_when_node_is_shimmed";
    let Some((warden, c)) = prisoner(test, "bookworm-node", &["cat", "node", "npm"]) else {
        return;
    };
    let out = c
        .exec("agent", &["npm", "--version"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let version = out.stdout_text();
    assert!(
        out.status == Some(0)
            && version.trim().split('.').count() == 3
            && version.trim().split('.').all(|p| p.parse::<u32>().is_ok()),
        "{test}: npm --version: {out:?}\n{}",
        warden.log()
    );
    let node = c
        .exec("agent", &["node", "-e", "console.log(process.getuid())"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(
        node.stdout_text(),
        "1000\n",
        "{test}: node as agent: {node:?}"
    );
    an_approved_ask_runs_in_the_prisoner(&c, &warden)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", warden.log()));
}

/// A prisoner configured with `container_label:` is the one running container with that
/// label, found at call time; once a second container carries the label, calls fail with
/// a message naming it and run nowhere.
#[test]
fn a_prisoner_found_by_label_runs_in_the_single_container_with_that_label() {
    let test = "a_prisoner_found_by_label_runs_in_the_single_container_with_that_label";
    if !require_docker_or_skip(test) {
        return;
    }
    musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let base = ensure_test_image("bookworm").unwrap_or_else(|e| panic!("{test}: {e}"));
    let tag = checkout_tag("bookworm-by-label");
    harden_image(&base, &["cat"], &tag).unwrap_or_else(|e| panic!("{test}: {e}"));
    let mut warden = MirrorWarden::prepare(PRISONER);
    let mount = warden.mount_arg();
    let label = format!("org.clawrden.test.prisoner={}", std::process::id());
    let args = [
        "--hostname",
        HOSTNAME,
        "--volume",
        &mount,
        "--label",
        &label,
    ];
    let first = Container::start(&tag, &args).unwrap_or_else(|e| panic!("{test}: {e}"));
    warden
        .start_by_label(PRISONER, &label, POLICY)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let out = first
        .exec("agent", &["cat", "/etc/hostname"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert!(
        out.status == Some(0) && out.stdout == format!("{HOSTNAME}\n").as_bytes(),
        "{test}: cat /etc/hostname with one labelled container: {out:?}\n{}",
        warden.log()
    );
    let second = Container::start(&tag, &["--hostname", "second", "--label", &label])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let out = first
        .exec("agent", &["cat", "/etc/hostname"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let stderr = out.stderr_text();
    assert!(
        out.status == Some(126)
            && out.stdout.is_empty()
            && stderr.starts_with(&format!(
                "clawrden: cannot find the container of prisoner {PRISONER}: 2 running containers have the label {label} ("
            ))
            && stderr.ends_with(
                "); a prisoner's label must select exactly one container: make it unique or use `container:`\n"
            )
            && stderr.contains(first.name())
            && stderr.contains(second.name()),
        "{test}: cat /etc/hostname with two labelled containers: {out:?}\n{}",
        warden.log()
    );
}

/// Prints the p50 over 50 runs of `true` through the mirror executor (timed inside the
/// prisoner: shim -> warden -> docker exec -> exec-helper -> original) next to a raw
/// `docker exec CONTAINER /bin/true` from the host. Reported, not asserted:
/// `cargo test -p clawrden-e2e --test docker_mirror -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_mirror_true_vs_raw_docker_exec() {
    let test = "bench_mirror_true_vs_raw_docker_exec";
    let Some((_warden, c)) = prisoner(test, "bookworm", &["true", "cat"]) else {
        return;
    };
    const RUNS: usize = 50;
    let p50 = |mut v: Vec<u128>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut raw = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = std::time::Instant::now();
        let out = c.exec("agent", &["/usr/lib/clawrden/originals/usr/bin/true"]);
        // The original is root-only; time an unshimmed program instead when it is refused.
        let out = match out {
            Ok(o) if o.success() => o,
            _ => c.exec("agent", &["/usr/bin/test", "1"]).unwrap(),
        };
        assert!(out.success(), "{test}: raw docker exec: {out:?}");
        raw.push(start.elapsed().as_micros());
    }
    let script = format!(
        "i=0; while [ $i -lt {RUNS} ]; do s=$(date +%s%N); /bin/true || exit 1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); i=$((i + 1)); done"
    );
    let out = c
        .sh("agent", &script, &[])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert!(out.success(), "{test}: {out:?}");
    let mirror: Vec<u128> = out
        .stdout_text()
        .lines()
        .map(|l| l.trim().parse().expect("microseconds"))
        .collect();
    let (raw_p50, mirror_p50) = (p50(raw), p50(mirror));
    println!(
        "mirror `true` p50 {:.1} ms; raw `docker exec` p50 {:.1} ms; ratio {:.2}",
        mirror_p50 as f64 / 1000.0,
        raw_p50 as f64 / 1000.0,
        mirror_p50 as f64 / raw_p50 as f64
    );
}
