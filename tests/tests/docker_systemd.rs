//! contrib/systemd/ for real: in a Debian container booted with systemd as PID 1,
//! contrib/systemd/install.sh installs the warden (local executor) for an agent account,
//! and the hardened unit runs it. Checked through real shims, as the agent and as another
//! user: a call runs and prints what running the command directly prints; a deny exits
//! 126; someone outside the group clawrden-agents cannot reach the socket (exit 125); the
//! unit's sandbox holds for the commands it runs (read-only system, no other user's home,
//! the agent's home writable, no_new_privs, the three-capability bounding set); the warden
//! itself runs with exactly CAP_SETUID, CAP_SETGID and CAP_KILL; the audit records the
//! agent's uid; `systemctl reload` reloads the policy.
//!
//! The container needs CAP_SYS_ADMIN and no seccomp profile (systemd sets up the unit's
//! namespaces and filters), not --privileged. Needs a Docker engine (skips without one
//! unless CLAWRDEN_REQUIRE_DOCKER=1), root, and the static shim.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clawrden_e2e::docker::{
    ensure_test_image, musl_shim, repo_root, require_docker_or_skip, Container, ExecOutput,
};
use clawrden_e2e::tools::{readme_exposure_claim, systemd_exposure};
use clawrden_e2e::{binaries, parse_audit, poll_until, AuditEvent};

const POLICY: &str = "\
version: 1
default_action: deny
default_timeout: 30s
approval_timeout: 10s
default_executor: local
rules:
  - name: no-rm
    command: rm
    action: deny
    reason: no deleting here
  - name: tools
    command: [cat, touch]
    action: allow
";

const SHIMS: &str = "/usr/local/lib/clawrden/shims";
const SOCKET: &str = "/run/clawrden/agent/warden.sock";

fn docker_cp(from: &Path, c: &Container, to: &str) -> Result<(), String> {
    let out = Command::new("docker")
        .arg("cp")
        .arg(from)
        .arg(format!("{}:{to}", c.name()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker cp: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker cp {} {to}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `argv` run by `user` with the shim directory first in PATH, from the agent's home.
fn through_shim(c: &Container, user: &str, argv: &[&str]) -> ExecOutput {
    let path = format!("PATH={SHIMS}:/usr/bin:/bin");
    let socket = format!("CLAWRDEN_SOCKET={SOCKET}");
    let mut full = vec!["env", path.as_str(), socket.as_str()];
    full.extend_from_slice(argv);
    c.exec(user, &full)
        .unwrap_or_else(|e| panic!("{user} {argv:?}: {e}"))
}

/// The `Name:\tvalue` lines of a /proc/PID/status text for `names`.
fn status_fields(status: &str, names: &[&str]) -> Vec<String> {
    status
        .lines()
        .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n}:"))))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn systemd_unit_runs_the_warden_hardened_for_the_agent_group_only() {
    let test = "systemd_unit_runs_the_warden_hardened_for_the_agent_group_only";
    if !require_docker_or_skip(test) {
        return;
    }
    let image = ensure_test_image("bookworm-systemd").unwrap_or_else(|e| panic!("{test}: {e}"));
    let shim = musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let c = Container::start_command(
        &image,
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--cgroupns=private",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--stop-signal",
            "SIGRTMIN+3",
        ],
        "/lib/systemd/systemd",
        &[],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let state = poll_until("systemd to finish booting", Duration::from_secs(60), || {
        let out = c.exec("root", &["systemctl", "is-system-running"]).ok()?;
        let state = out.stdout_text().trim().to_string();
        matches!(state.as_str(), "running" | "degraded").then_some(state)
    });
    eprintln!("systemd in the container: {state}");

    // The agent, and a user who is not one.
    c.sh_ok(
        "root",
        "useradd --create-home --uid 1000 --user-group agent && \
         useradd --create-home --uid 1001 --user-group outsider && \
         chmod 0755 /home/outsider && echo hello >/home/outsider/note && \
         chmod 0644 /home/outsider/note && mkdir -p /tmp/install/contrib",
        &[],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let root = repo_root();
    let bins = binaries();
    docker_cp(
        &root.join("contrib/systemd"),
        &c,
        "/tmp/install/contrib/systemd",
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    for (from, to) in [
        (bins.warden.as_path(), "/tmp/install/clawrden-warden"),
        (bins.clawctl.as_path(), "/tmp/install/clawctl"),
        (shim.as_path(), "/tmp/install/clawrden-shim"),
    ] {
        docker_cp(from, &c, to).unwrap_or_else(|e| panic!("{test}: {e}"));
    }
    let policy = std::env::temp_dir().join(format!("clawrden-systemd-{}.yaml", std::process::id()));
    std::fs::write(&policy, POLICY).expect("write the policy");
    let copied = docker_cp(&policy, &c, "/tmp/install/policy.yaml");
    let _ = std::fs::remove_file(&policy);
    copied.unwrap_or_else(|e| panic!("{test}: {e}"));

    let install = c
        .exec(
            "root",
            &[
                "/tmp/install/contrib/systemd/install.sh",
                "--agent",
                "agent",
                "--tools",
                "cat touch rm",
                "--policy",
                "/tmp/install/policy.yaml",
                "--warden",
                "/tmp/install/clawrden-warden",
                "--clawctl",
                "/tmp/install/clawctl",
                "--shim",
                "/tmp/install/clawrden-shim",
            ],
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let journal = || {
        c.exec(
            "root",
            &[
                "journalctl",
                "-u",
                "clawrden-warden",
                "--no-pager",
                "-n",
                "40",
            ],
        )
        .map(|o| o.stdout_text())
        .unwrap_or_default()
    };
    assert!(install.success(), "install.sh: {install:?}\n{}", journal());
    poll_until("the warden's socket", Duration::from_secs(30), || {
        c.exec("root", &["test", "-S", SOCKET])
            .ok()
            .filter(ExecOutput::success)
    });
    let active = c
        .exec("root", &["systemctl", "is-active", "clawrden-warden"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(active.stdout_text(), "active\n", "{}", journal());
    let dir = c
        .sh_ok(
            "root",
            "stat -c '%U:%G %a' /run/clawrden /run/clawrden/agent",
            &[],
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(dir, "root:root 755\nroot:clawrden-agents 750\n");

    // A call runs, byte for byte as running the command directly.
    let direct = c
        .exec("agent", &["cat", "/etc/debian_version", "/etc/hostname"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert!(direct.success(), "{direct:?}");
    let shimmed = through_shim(
        &c,
        "agent",
        &["cat", "/etc/debian_version", "/etc/hostname"],
    );
    assert_eq!(shimmed, direct, "{}", journal());

    // A deny.
    let out = through_shim(&c, "agent", &["rm", "/home/agent/.profile"]);
    assert_eq!(
        (out.status, out.stderr_text().as_str()),
        (Some(126), "clawrden: denied: no deleting here\n"),
        "{out:?}"
    );

    // Not in the group: the socket's directory is closed.
    let out = through_shim(&c, "outsider", &["cat", "/etc/hostname"]);
    assert_eq!(
        (out.status, out.stdout_text().as_str(), out.stderr_text().as_str()),
        (
            Some(125),
            "",
            "clawrden: warden unavailable (/run/clawrden/agent/warden.sock): cannot connect: Permission denied (os error 13)\n"
        ),
    );

    // The sandbox holds for commands: the agent's home is mounted writable (a directory
    // in it that anyone may write to, so this checks the mount, whoever the command runs
    // as), the system is read-only, and other users' homes are not there at all (the
    // agent itself can read this one).
    c.sh_ok(
        "root",
        "install -d -m 1777 -o agent -g agent /home/agent/shared",
        &[],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    let out = through_shim(
        &c,
        "agent",
        &["touch", "/home/agent/shared/made-by-a-command"],
    );
    assert_eq!(out.status, Some(0), "{out:?}");
    c.sh_ok("root", "test -f /home/agent/shared/made-by-a-command", &[])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let out = through_shim(&c, "agent", &["touch", "/etc/forbidden"]);
    assert_eq!(
        (out.status, out.stderr_text().as_str()),
        (
            Some(1),
            "touch: cannot touch '/etc/forbidden': Read-only file system\n"
        ),
        "{out:?}"
    );
    let direct = c
        .exec("agent", &["cat", "/home/outsider/note"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(direct.stdout_text(), "hello\n", "{direct:?}");
    let out = through_shim(&c, "agent", &["cat", "/home/outsider/note"]);
    assert_eq!(
        (out.status, out.stderr_text().as_str()),
        (
            Some(1),
            "cat: /home/outsider/note: No such file or directory\n"
        ),
        "{out:?}"
    );
    let out = through_shim(&c, "agent", &["cat", "/proc/self/status"]);
    assert_eq!(
        status_fields(&out.stdout_text(), &["NoNewPrivs", "CapBnd"]),
        ["CapBnd: 00000000000000e0", "NoNewPrivs: 1"],
        "a command's own status: {out:?}"
    );

    // The warden: root with CAP_KILL, CAP_SETGID and CAP_SETUID (bits 5, 6, 7) only.
    let status = c
        .sh_ok(
            "root",
            "cat /proc/$(systemctl show -p MainPID --value clawrden-warden)/status",
            &[],
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert_eq!(
        status_fields(
            &status,
            &["Uid", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"]
        ),
        [
            "Uid: 0 0 0 0",
            "CapPrm: 00000000000000e0",
            "CapEff: 00000000000000e0",
            "CapBnd: 00000000000000e0",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1",
        ]
    );

    // The audit names the agent by its uid, from the kernel.
    let audit = c
        .exec("root", &["cat", "/var/lib/clawrden/audit/audit.jsonl"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let events: Vec<AuditEvent> = parse_audit(&audit.stdout_text());
    let uids: Vec<u64> = events
        .iter()
        .filter(|e| e.event() == "request")
        .filter_map(|e| e.get("uid").and_then(serde_json::Value::as_u64))
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|&u| u == 1000),
        "request uids: {uids:?}"
    );

    // `systemctl reload` reloads the policy: cat becomes a deny.
    c.sh_ok(
        "root",
        "sed -i 's/command: \\[cat, touch\\]/command: [touch]/' /etc/clawrden/policy.yaml && \
         systemctl reload clawrden-warden",
        &[],
    )
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    poll_until(
        "the reloaded policy to deny cat",
        Duration::from_secs(20),
        || {
            let out = through_shim(&c, "agent", &["cat", "/etc/hostname"]);
            (out.status == Some(126)).then_some(())
        },
    );

    // What an operator sees on the running system is what README.md says.
    let report = c
        .exec(
            "root",
            &["systemd-analyze", "security", "clawrden-warden.service"],
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let score = systemd_exposure(&report.stdout_text())
        .unwrap_or_else(|| panic!("{test}: no exposure level: {report:?}"));
    eprintln!("systemd-analyze security, live: {score}");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.contains(&readme_exposure_claim(&score)),
        "README.md should say: {}",
        readme_exposure_claim(&score)
    );
}
