//! The repository's docker-compose.yml, brought up with scripts/up.sh (prisoner built from
//! the locally built clawrden-test/bookworm; nothing is pulled) under a unique project name,
//! and taken down with `down -v` at the end.
//!
//! Checked: a shimmed `cat` runs back in the prisoner byte-exact; a deny exits 126; an ask
//! approved through the API (admin token read off the warden's state volume) runs; a
//! timeout exits 124 and leaves no process; the prisoner reaches neither the warden's API
//! nor the host (its network's gateway and the Docker bridge's); pause, resume and kill of
//! the prisoner through the API, each audited as a `control` event; the audit survives
//! `restart warden` and `clawctl audit verify` accepts a copy of it.
//!
//! Needs a Docker engine (skips without one unless CLAWRDEN_REQUIRE_DOCKER=1), root,
//! docker compose (plugin or v1), cargo (scripts/up.sh builds the static binaries) and
//! clawctl built next to this test.

use std::time::{Duration, Instant};

use clawrden_e2e::api::Api;
use clawrden_e2e::docker::{
    ensure_test_image, read_audit_dir, require_docker_or_skip, ComposeStack, Container,
};
use clawrden_e2e::{clawctl, poll_until, AuditEvent, TempDir};
use serde_json::json;

const PRISONER: &str = "agent-1";

const POLICY: &str = "\
version: 1
default_action: ask
default_timeout: 2m
approval_timeout: 1m
default_executor: mirror
rules:
  - name: no-rm
    command: rm
    action: deny
    reason: deleting files needs a person
  - name: read
    command: cat
    action: allow
  - name: short-tail
    command: tail
    action: allow
    timeout: 2s
";

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn check(&mut self, property: &str, run: impl FnOnce() -> Result<(), String>) {
        let started = Instant::now();
        if let Err(why) = run() {
            self.failures.push(format!("{property}: {why}"));
        }
        eprintln!("{property}: {:?}", started.elapsed());
    }
}

fn cat_runs_in_the_prisoner(c: &Container) -> Result<(), String> {
    c.sh_ok("agent", "printf 'a\\000b\\377\\n' >/workspace/bytes", &[])?;
    let out = c.exec("agent", &["cat", "/workspace/bytes", "/etc/hostname"])?;
    ensure(
        out.status == Some(0) && out.stdout == b"a\0b\xff\nprisoner\n" && out.stderr.is_empty(),
        || format!("cat as agent: {out:?}"),
    )
}

fn deny_exits_126(c: &Container) -> Result<(), String> {
    let out = c.exec("agent", &["rm", "/workspace/bytes"])?;
    ensure(
        out.status == Some(126)
            && out.stderr == b"clawrden: denied: deleting files needs a person\n",
        || format!("rm as agent: {out:?}"),
    )
}

fn ask_approved_through_the_api_runs(c: &Container, api: &Api) -> Result<(), String> {
    std::thread::scope(|scope| {
        let call = scope.spawn(|| c.exec("agent", &["head", "-c", "8", "/etc/hostname"]));
        let id = poll_until("the ask to be pending", Duration::from_secs(20), || {
            api.pending_ids(10).into_iter().next()
        });
        api.post_json(
            &format!("/api/v1/requests/{id}/approve"),
            &json!({"note": "compose test"}),
            200,
        );
        let out = call
            .join()
            .map_err(|_| "the head call's thread panicked".to_string())??;
        ensure(out.status == Some(0) && out.stdout == b"prisoner", || {
            format!("head after approval: {out:?}")
        })
    })
}

fn timeout_exits_124_and_leaves_no_process(c: &Container) -> Result<(), String> {
    let out = c.exec("agent", &["tail", "-f", "/dev/null"])?;
    ensure(
        out.status == Some(124)
            && out.stderr == b"clawrden: timed out after 2s; process tree killed\n",
        || format!("tail -f /dev/null: {out:?}"),
    )?;
    let left: Vec<String> = c
        .processes()?
        .into_iter()
        .filter(|p| p.contains("tail -f") || p.contains("exec-helper"))
        .collect();
    ensure(left.is_empty(), || format!("left behind: {left:?}"))
}

/// Only our own containers are ever contacted: the warden by name, the prisoner network's
/// gateway and the default Docker bridge's gateway (both the host), on the API port.
fn prisoner_reaches_neither_the_warden_nor_the_host(c: &Container) -> Result<(), String> {
    let bridge_gateway = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            "bridge",
        ])
        .output()
        .map_err(|e| format!("docker network inspect bridge: {e}"))?;
    let bridge_gateway = String::from_utf8_lossy(&bridge_gateway.stdout)
        .trim()
        .to_string();
    let gateway = c.sh_ok(
        "agent",
        r#"while read iface dest gw rest; do [ "$dest" = 00000000 ] && echo "$gw"; done </proc/net/route; true"#,
        &[],
    )?;
    // /proc/net/route prints the gateway as little-endian hex.
    let gateway = gateway.trim();
    let gateway_ip = u32::from_str_radix(gateway, 16)
        .map(|n| std::net::Ipv4Addr::from(n.swap_bytes()).to_string())
        .unwrap_or_default();
    let mut targets = vec!["warden".to_string(), bridge_gateway];
    if !gateway_ip.is_empty() {
        targets.push(gateway_ip);
    }
    for target in targets.iter().filter(|t| !t.is_empty()) {
        let out = c.exec(
            "agent",
            &[
                "timeout",
                "5",
                "bash",
                "-c",
                "exec 3<>\"/dev/tcp/$1/8080\"",
                "bash",
                target,
            ],
        )?;
        ensure(out.status != Some(0), || {
            format!("the prisoner connected to {target}:8080: {out:?}")
        })?;
    }
    Ok(())
}

fn control_events(stack: &ComposeStack) -> Vec<AuditEvent> {
    stack
        .volume_dir("warden-state")
        .map(|d| read_audit_dir(&d.join("audit")))
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.event() == "control")
        .collect()
}

fn wait_control(stack: &ComposeStack, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if control_events(stack)
            .iter()
            .any(|e| e.str_field("control") == Some(what))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no `control` audit event {what}"))
}

fn pause_and_resume_through_the_api(
    stack: &ComposeStack,
    c: &Container,
    api: &Api,
) -> Result<(), String> {
    api.post_json(
        &format!("/api/v1/prisoners/{PRISONER}/pause"),
        &json!({"reason": "compose test"}),
        200,
    );
    let paused = c.inspect("{{.State.Paused}}")?;
    ensure(paused == "true", || format!("after pause: Paused={paused}"))?;
    wait_control(stack, "pause")?;
    api.post_json(
        &format!("/api/v1/prisoners/{PRISONER}/resume"),
        &json!({"reason": "compose test"}),
        200,
    );
    let state = c.inspect("{{.State.Paused}} {{.State.Running}}")?;
    ensure(state == "false true", || {
        format!("after resume: Paused Running = {state}")
    })?;
    wait_control(stack, "resume")
}

fn audit_survives_a_warden_restart_and_verifies(stack: &ComposeStack) -> Result<(), String> {
    let before = control_events(stack).len();
    let out = stack.compose(&["restart", "warden"])?;
    ensure(out.success(), || format!("restart warden: {out:?}"))?;
    let readyz = format!("http://127.0.0.1:{}/readyz", stack.api_port);
    poll_until(
        "the warden to answer /readyz",
        Duration::from_secs(30),
        || {
            std::process::Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", &readyz])
                .status()
                .is_ok_and(|s| s.success())
                .then_some(())
        },
    );
    let after = control_events(stack).len();
    ensure(after > before, || {
        format!("control events before restart {before}, after {after}")
    })?;
    let copy = TempDir::new("compose-audit");
    let audit = stack.volume_dir("warden-state")?.join("audit");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&audit)
        .arg(copy.path())
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    ensure(status.success(), || format!("cp -a {}", audit.display()))?;
    let key = copy.path().join("audit.key");
    std::fs::copy(stack.volume_dir("warden-state")?.join("audit.key"), &key)
        .map_err(|e| format!("copy audit.key: {e}"))?;
    let verify = clawctl([
        std::ffi::OsString::from("audit"),
        "verify".into(),
        "--key".into(),
        key.into_os_string(),
        copy.path().join("audit").into_os_string(),
    ]);
    ensure(
        verify.status.code() == Some(0) && verify.stdout_str().contains("\nauthentic: "),
        || format!("clawctl audit verify --key: {verify:?}"),
    )
}

fn kill_through_the_api(stack: &ComposeStack, c: &Container, api: &Api) -> Result<(), String> {
    api.post_json(
        &format!("/api/v1/prisoners/{PRISONER}/kill"),
        &json!({"reason": "compose test"}),
        200,
    );
    wait_control(stack, "kill")?;
    let running = c.inspect("{{.State.Running}} {{.State.ExitCode}}")?;
    ensure(running.starts_with("false"), || {
        format!("after kill: Running ExitCode = {running}")
    })
}

#[test]
fn compose_stack_mirrors_decides_controls_and_isolates() {
    let test = "compose_stack_mirrors_decides_controls_and_isolates";
    if !require_docker_or_skip(test) {
        return;
    }
    let base = ensure_test_image("bookworm").unwrap_or_else(|e| panic!("{test}: {e}"));
    let (stack, took) = ComposeStack::up(&base, POLICY).unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!("scripts/up.sh: {took:?}");
    let token = stack
        .admin_token()
        .unwrap_or_else(|e| panic!("{test}: admin.token: {e}"));
    let api = Api {
        addr: format!("127.0.0.1:{}", stack.api_port)
            .parse()
            .expect("addr"),
        token: Some(token),
    };
    let c = stack.prisoner();
    let mut checks = Checks {
        failures: Vec::new(),
    };
    checks.check("cat runs in the prisoner", || cat_runs_in_the_prisoner(&c));
    checks.check("a deny exits 126", || deny_exits_126(&c));
    checks.check("an ask approved through the API runs", || {
        ask_approved_through_the_api_runs(&c, &api)
    });
    checks.check("a timeout exits 124 and leaves no process", || {
        timeout_exits_124_and_leaves_no_process(&c)
    });
    checks.check(
        "the prisoner reaches neither the warden nor the host",
        || prisoner_reaches_neither_the_warden_nor_the_host(&c),
    );
    checks.check("pause and resume through the API", || {
        pause_and_resume_through_the_api(&stack, &c, &api)
    });
    checks.check("the audit survives a warden restart and verifies", || {
        audit_survives_a_warden_restart_and_verifies(&stack)
    });
    checks.check("kill through the API", || {
        kill_through_the_api(&stack, &c, &api)
    });
    let log = stack
        .compose(&["logs", "--no-color", "--tail", "40", "warden"])
        .map(|o| o.stdout_text())
        .unwrap_or_default();
    assert!(
        checks.failures.is_empty(),
        "{test}: {} check(s) failed:\n- {}\n--- warden log\n{log}",
        checks.failures.len(),
        checks.failures.join("\n- ")
    );
}
