//! The fidelity tier (`tests/fidelity/tier.py`): the same command list run without
//! Clawrden and through it, compared byte for byte, through a persistent bash on a
//! pseudo-terminal driven with pexpect and through one-shot `bash -c` calls with pipes.
//! Once with the local executor, once with mirror in containers (Docker tier).
//!
//! Needs Debian's python3-pexpect (`apt-get install -y python3-pexpect`; CI installs it).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use clawrden_e2e::docker::{
    checkout_tag, ensure_test_image, harden_image, musl_shim, repo_root, require_docker_or_skip,
    Container, MirrorWarden,
};
use clawrden_e2e::{binaries, TestWarden, Watchdog};

/// Where commands are found, for the direct side and for the warden alike.
const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn tier_script() -> PathBuf {
    repo_root().join("tests/fidelity/tier.py")
}

/// The first python3 that can import pexpect: Debian's /usr/bin/python3 (where
/// python3-pexpect installs it), else python3 on PATH.
fn python() -> String {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import pexpect"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate.to_string();
        }
    }
    panic!(
        "no python3 with pexpect: the fidelity tier drives a terminal session with it; \
         install it with `apt-get install -y python3-pexpect`"
    );
}

/// Runs the tier with `args`; panics with its report unless every case matched.
fn run_tier(args: &[&str], log: impl Fn() -> String) {
    let mut cmd = Command::new(python());
    cmd.arg(tier_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start the fidelity tier");
    let dog = Watchdog::new(child.id(), std::time::Duration::from_secs(600));
    let out = child
        .wait_with_output()
        .expect("wait for the fidelity tier");
    let hung = dog.finish();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !hung && out.status.success(),
        "the fidelity tier found differences (status {:?}{}):\n{report}\n--- stderr\n{}\n--- warden log\n{}",
        out.status,
        if hung { ", killed after 600 s" } else { "" },
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    // Every case ran (a case skipped for a missing tool says so here).
    eprintln!("{report}");
}

#[test]
fn local_executor_sessions_and_one_shot_calls_match_direct_runs() {
    let w = TestWarden::builder().command_path(SEARCH_PATH).start();
    let work = w.dir().join("work");
    std::fs::create_dir(&work).expect("create the workspace");
    let shim = binaries().shim.display().to_string();
    let socket = w.socket.display().to_string();
    let bin = w.bin_dir.display().to_string();
    run_tier(
        &[
            "local",
            "--shim",
            &shim,
            "--socket",
            &socket,
            "--bin",
            &bin,
            "--workdir",
            &work.display().to_string(),
            "--path",
            SEARCH_PATH,
        ],
        || w.log(),
    );
}

/// Everything goes to the prisoner with the mirror executor.
const MIRROR_POLICY: &str = "\
version: 1
default_action: allow
default_timeout: 2m
approval_timeout: 30s
default_executor: mirror
rules: []
";

#[test]
fn mirror_sessions_and_one_shot_calls_match_direct_runs_in_containers() {
    let test = "mirror_sessions_and_one_shot_calls_match_direct_runs_in_containers";
    if !require_docker_or_skip(test) {
        return;
    }
    musl_shim().unwrap_or_else(|e| panic!("{test}: {e}"));
    let base = ensure_test_image("bookworm-python").unwrap_or_else(|e| panic!("{test}: {e}"));
    let tools_out = Command::new(python())
        .arg(tier_script())
        .arg("tools")
        .output()
        .expect("list the tier's tools");
    let listed = String::from_utf8_lossy(&tools_out.stdout).into_owned();
    let tools: Vec<&str> = listed.lines().collect();
    // The direct side: the same image prepared the same way, with only an unused tool
    // shimmed (so user, workspace and layout match).
    let plain = checkout_tag("bookworm-python-fidelity-direct");
    harden_image(&base, &["tac"], &plain).unwrap_or_else(|e| panic!("{test}: {e}"));
    let hardened = checkout_tag("bookworm-python-fidelity");
    harden_image(&base, &tools, &hardened).unwrap_or_else(|e| panic!("{test}: {e}"));

    let mut warden = MirrorWarden::prepare("agent-1");
    let mount = warden.mount_arg();
    let direct = Container::start(&plain, &[]).unwrap_or_else(|e| panic!("{test}: {e}"));
    let shimmed = Container::start(&hardened, &["--volume", &mount])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    warden
        .start("agent-1", shimmed.name(), MIRROR_POLICY)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    run_tier(
        &[
            "docker",
            "--direct",
            direct.name(),
            "--clawrden",
            shimmed.name(),
        ],
        || warden.log(),
    );
}
