//! `clawctl policy check` and `clawctl policy explain`, offline, against real files.

use std::fs;
use std::path::PathBuf;

use clawrden_e2e::{clawctl, sha256_hex, TempDir};
use serde_json::Value;

const POLICY: &str = "version: 1\n\
    default_action: deny\n\
    default_timeout: 2m\n\
    approval_timeout: 10m\n\
    default_executor: local\n\
    rules:\n\
    \x20 - name: git-read\n\
    \x20   command: git\n\
    \x20   args: [status, \"**\"]\n\
    \x20   action: allow\n\
    \x20   timeout: 30s\n\
    \x20 - name: no-force-push\n\
    \x20   command: git\n\
    \x20   args: [\"push\", \"**\", \"--force*\", \"**\"]\n\
    \x20   action: deny\n\
    \x20   reason: force-push is not allowed; push a branch and open a PR\n";

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn policy_check_accepts_a_good_policy_naming_rules_and_sha256() {
    let dir = TempDir::new("clawctl");
    let p = write(&dir, "policy.yaml", POLICY);
    let out = clawctl(["policy".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_str(),
        format!(
            "ok: {} (2 rules, sha256 {})\n",
            p.display(),
            sha256_hex(POLICY.as_bytes())
        )
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn policy_check_rejects_an_unknown_key_with_file_line_column() {
    let dir = TempDir::new("clawctl");
    let p = write(
        &dir,
        "bad.yaml",
        "version: 1\ndefault_action: deny\nbogus_key: true\n",
    );
    let out = clawctl(["policy".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = out.stderr_str();
    let prefix = format!("{}:3:1: ", p.display());
    assert!(
        err.starts_with(&prefix) && err.contains("bogus_key") && err.matches('\n').count() == 1,
        "expected one line `{prefix}...bogus_key...`, got {err:?}"
    );
}

#[test]
fn policy_check_rejects_a_bad_duration_naming_its_line() {
    let dir = TempDir::new("clawctl");
    let p = write(
        &dir,
        "bad.yaml",
        "version: 1\ndefault_action: deny\ndefault_timeout: 2 fortnights\n",
    );
    let out = clawctl(["policy".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = out.stderr_str();
    let prefix = format!("{}:3:", p.display());
    assert!(
        err.starts_with(&prefix),
        "expected `{prefix}COL: ...`, got {err:?}"
    );
}

#[test]
fn policy_check_on_a_missing_file_says_it_cannot_read_it() {
    let dir = TempDir::new("clawctl");
    let p = dir.path().join("absent.yaml");
    let out = clawctl(["policy".as_ref(), "check".as_ref(), p.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let prefix = format!("{}: cannot read the policy: ", p.display());
    assert!(out.stderr_str().starts_with(&prefix), "{out:?}");
}

fn explain(extra: &[&str], argv: &[&str]) -> clawrden_e2e::Output {
    let dir = TempDir::new("clawctl");
    let p = write(&dir, "policy.yaml", POLICY);
    let mut args: Vec<std::ffi::OsString> = vec!["policy".into(), "explain".into()];
    args.push("--policy".into());
    args.push(p.into_os_string());
    args.extend(extra.iter().map(Into::into));
    args.push("--".into());
    args.extend(argv.iter().map(Into::into));
    clawctl(args)
}

#[test]
fn policy_explain_shows_the_matching_rule_and_why_earlier_ones_missed() {
    let out = explain(&["--cwd", "/work"], &["git", "push", "origin", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].starts_with("rule 1 git-read: no match: "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("rule 2 no-force-push: MATCH"),
        "{text}"
    );
    assert_eq!(
        lines[2..],
        [
            "verdict: deny (rule no-force-push)",
            "reason: force-push is not allowed; push a branch and open a PR",
            "executor: local",
            "timeout: 2m",
        ],
        "{text}"
    );
}

#[test]
fn policy_explain_falls_back_to_the_default_when_nothing_matches() {
    let out = explain(&[], &["curl", "https://example.com"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = out.stdout_str();
    assert!(
        text.ends_with(
            "verdict: deny (no rule matched; policy default)\n\
             reason: no rule matched; default_action is deny\n\
             executor: local\n\
             timeout: 2m\n"
        ),
        "{text}"
    );
    assert!(text.starts_with("rule 1 git-read: no match: "), "{text}");
}

#[test]
fn policy_explain_json_names_the_rule_and_the_checks() {
    let out = explain(&["--json"], &["git", "status", "--short"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("explain --json prints JSON");
    assert_eq!(v["verdict"]["action"], "allow");
    assert_eq!(v["verdict"]["rule"], "git-read");
    assert_eq!(v["verdict"]["timeout_ms"], 30_000);
    let checks = v["checks"].as_array().expect("checks array");
    assert_eq!(checks.len(), 1, "{v}");
    assert_eq!(checks[0]["rule"], "git-read");
    assert_eq!(checks[0]["matched"], true);
}
