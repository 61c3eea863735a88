//! contrib/systemd/clawrden-warden.service checked by systemd's own tools, without booting
//! anything: `systemd-analyze verify` finds nothing to say about it (no unknown keys, no
//! unparsable values, every program it runs exists), and `systemd-analyze security` rates
//! it exactly as README.md says. (tests/tests/docker_systemd.rs runs it for real.)
//!
//! Both run offline against a scratch root directory holding the unit, the programs it
//! names and the system's own units (for the default dependencies). Needs systemd-analyze
//! (Debian: systemd); skips without it unless CLAWRDEN_REQUIRE_TOOLS=1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use clawrden_e2e::docker::repo_root;
use clawrden_e2e::tools::{readme_exposure_claim, require_tool_or_skip, systemd_exposure};
use clawrden_e2e::{binaries, TempDir};

const UNIT: &str = "clawrden-warden.service";

/// The programs the unit's Exec*= lines run (the first word, without systemd's prefixes).
fn programs(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| l.starts_with("Exec"))
        .filter_map(|l| l.split_once('='))
        .filter_map(|(_, cmd)| cmd.split_whitespace().next())
        .map(|p| p.trim_start_matches(['+', '-', '@', '!', ':']).to_string())
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).expect("readlink"), &target)
                .expect("symlink");
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A root directory for `systemd-analyze --root`: the unit in /etc/systemd/system, the
/// warden where ExecStart= expects it, the other programs copied from this host.
fn scratch_root(dir: &Path) -> PathBuf {
    let unit_text =
        fs::read_to_string(repo_root().join("contrib/systemd").join(UNIT)).expect("read the unit");
    let root = dir.join("root");
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units).expect("create the unit dir");
    fs::write(units.join(UNIT), &unit_text).expect("write the unit");
    for program in programs(&unit_text) {
        assert!(
            program.starts_with('/'),
            "{UNIT}: {program} is not absolute"
        );
        let inside = root.join(program.trim_start_matches('/'));
        fs::create_dir_all(inside.parent().expect("parent")).expect("create dir");
        let source = if program == "/usr/local/bin/clawrden-warden" {
            binaries().warden.clone()
        } else {
            PathBuf::from(&program)
        };
        fs::copy(&source, &inside)
            .unwrap_or_else(|e| panic!("{UNIT} runs {program}: {}: {e}", source.display()));
    }
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
    root
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn systemd_unit_verifies_clean_and_scores_as_the_readme_says() {
    let test = "systemd_unit_verifies_clean_and_scores_as_the_readme_says";
    let Some(analyze) = require_tool_or_skip(test, "systemd-analyze", "systemd") else {
        return;
    };
    let dir = TempDir::new("systemd-unit");
    let root = scratch_root(dir.path());
    let (code, stdout, stderr) = run(Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(UNIT));
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (Some(0), "", ""),
        "systemd-analyze verify {UNIT}"
    );

    let (code, stdout, stderr) = run(Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(UNIT));
    assert_eq!(code, Some(0), "systemd-analyze security: {stdout}{stderr}");
    let score = systemd_exposure(&format!("{stdout}{stderr}"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}{stderr}"));
    eprintln!("systemd-analyze security {UNIT}: {score}");
    let readme = fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let claim = readme_exposure_claim(&score);
    assert!(
        readme.contains(&claim),
        "README.md should say: {claim}\n(the figure changed with the unit: update the README)"
    );
}
