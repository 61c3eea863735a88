//! Runs the built `clawctl` binary and checks exact output and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn clawctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clawctl"))
        .args(args)
        .output()
        .expect("run clawctl")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("utf-8 output")
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("clawctl-cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, body: &str) -> String {
    std::fs::write(path, body).unwrap();
    path.display().to_string()
}

/// Lowercase hex SHA-256 (what an audit line's `prev` holds of the line before it).
fn sha256_hex(bytes: &[u8]) -> String {
    clawrden_audit::link_hash(bytes)
}

const POLICY: &str = "version: 1\nrules:\n\
  - {name: git-read, command: git, args: [status, '**'], action: allow, timeout: 30s}\n\
  - {name: no-force-push, command: git, args: ['**', push, '**', '--force*', '**'], action: deny, reason: force-push is not allowed}\n";

#[test]
fn policy_check_ok_prints_rule_count_and_hash() {
    let dir = scratch("check-ok");
    let file = write(&dir.join("policy.yaml"), POLICY);
    let out = clawctl(&["policy", "check", &file]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!(
            "ok: {file} (2 rules, sha256 {})\n",
            sha256_hex(POLICY.as_bytes())
        )
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn policy_check_bad_prints_position_and_exits_1() {
    let dir = scratch("check-bad");
    let file = write(
        &dir.join("policy.yaml"),
        "version: 1\ndefault_action: maybe\n",
    );
    let out = clawctl(&["policy", "check", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "{file}:2:17: default_action: unknown action `maybe`; expected allow, deny or ask\n"
        )
    );
}

#[test]
fn policy_explain_renders_and_exits_0_even_on_deny() {
    let dir = scratch("explain");
    let file = write(&dir.join("policy.yaml"), POLICY);
    let out = clawctl(&[
        "policy",
        "explain",
        "--policy",
        &file,
        "--cwd",
        "/work",
        "--uid",
        "1000",
        "--",
        "/usr/bin/git",
        "-c",
        "k=v",
        "push",
        "--force",
    ]);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "rule 1 git-read: no match: argument 1 `-c` does not match `status`\n\
         rule 2 no-force-push: MATCH: command `git` matches `git`; args match `** push ** --force* **`\n\
         verdict: deny (rule no-force-push)\n\
         reason: force-push is not allowed\n\
         executor: mirror\n\
         timeout: 2m\n"
    );
}

#[test]
fn policy_explain_json() {
    let dir = scratch("explain-json");
    let file = write(&dir.join("policy.yaml"), POLICY);
    let out = clawctl(&[
        "policy",
        "explain",
        "--policy",
        &file,
        "--cwd",
        "/",
        "--uid",
        "0",
        "--prisoner",
        "agent-1",
        "--json",
        "--",
        "git",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "verdict": {
                "action": "allow", "rule": "git-read", "reason": "rule git-read allows",
                "timeout": "30s", "timeout_ms": 30000, "executor": "mirror", "ghost": null,
                "env": {"pass": [], "drop": []}
            },
            "checks": [{"index": 0, "rule": "git-read", "matched": true,
                        "why": "command `git` matches `git`; args match `status **`",
                        "flag": null}],
            "refused": null
        })
    );
}

const FLAGS_POLICY: &str = "version: 1\nrules:\n\
  - {name: no-recursive-rm, command: rm, flags: [-r, -R, --recursive], action: deny, reason: \"recursive \\u202edelete\"}\n";

#[test]
fn policy_explain_shows_which_option_matched() {
    let dir = scratch("explain-flags");
    let file = write(&dir.join("policy.yaml"), FLAGS_POLICY);
    let run = |json: bool| {
        let mut args = vec![
            "policy", "explain", "--policy", &file, "--cwd", "/", "--uid", "0",
        ];
        if json {
            args.push("--json");
        }
        args.extend(["--", "rm", "-v", "--recur", "build"]);
        clawctl(&args)
    };
    let out = run(false);
    assert_eq!(out.status.code(), Some(0));
    // The reason holds a bidi override (U+202E): escaped, never printed raw.
    assert_eq!(
        text(&out.stdout),
        "rule 1 no-recursive-rm: MATCH: command `rm` matches `rm`; flags: flag `--recursive` is argument 2 `--recur` (an abbreviation getopt_long accepts)\n\
         verdict: deny (rule no-recursive-rm)\n\
         reason: recursive \\u{202e}delete\n\
         executor: mirror\n\
         timeout: 2m\n"
    );
    let out = run(true);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        value["checks"][0]["flag"],
        serde_json::json!({"flag": "--recursive", "argument": 2, "token": "--recur", "form": "abbreviated"})
    );
}

#[test]
fn policy_explain_refuses_an_argv0_that_is_not_a_command_name() {
    let dir = scratch("explain-name");
    let file = write(&dir.join("policy.yaml"), FLAGS_POLICY);
    let out = clawctl(&[
        "policy",
        "explain",
        "--policy",
        &file,
        "--cwd",
        "/",
        "--uid",
        "0",
        "--",
        "/usr/bin/rm/.",
        "-rf",
        "/",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "refused before any rule: argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name\n\
         verdict: deny (argv[0] is not a command name)\n\
         reason: argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name\n\
         executor: mirror\n\
         timeout: 2m\n"
    );
}

#[test]
fn policy_explain_bad_policy_exits_1_and_usage_errors_exit_2() {
    let dir = scratch("explain-bad");
    let file = write(&dir.join("policy.yaml"), "version: 3\n");
    let out = clawctl(&["policy", "explain", "--policy", &file, "--", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("{file}:1:10: version: unsupported policy version 3; this Clawrden reads `version: 1`\n")
    );
    let out = clawctl(&["policy", "explain", "--policy", &file]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let out = clawctl(&[
        "policy", "explain", "--policy", &file, "--uid", "x", "--", "ls",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// `n` chained audit lines from seq `first`, following `prev`.
fn audit_lines(first: u64, n: u64, prev: &str) -> Vec<String> {
    let mut prev = prev.to_owned();
    (first..first + n)
        .map(|seq| {
            let line = format!(
                r#"{{"seq":{seq},"ts":"2026-11-24T09:01:02.345Z","event":"control","prev":"{prev}"}}"#
            );
            prev = sha256_hex(line.as_bytes());
            line
        })
        .collect()
}

/// What verify says about lines written before the audit was keyed.
const UNKEYED: &str = "integrity only: the hash chain is intact, but no line carries a mac (written before the audit was keyed), so whoever could write the file could have recomputed it";

fn joined(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn audit_verify_file_dir_and_tampering() {
    let zeros = "0".repeat(64);
    let lines = audit_lines(1, 5, &zeros);
    let head = sha256_hex(lines[4].as_bytes());

    // A directory: rotated file first, then audit.jsonl.
    let dir = scratch("audit");
    write(
        &dir.join("audit.00000000000000000001.jsonl"),
        &joined(&lines[..3]),
    );
    let current = write(&dir.join("audit.jsonl"), &joined(&lines[3..]));
    write(&dir.join("unrelated.txt"), "not audit\n");
    let d = dir.display().to_string();
    let out = clawctl(&["audit", "verify", &d]);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("ok: 5 events, seq 1..5, head {head}\n{UNKEYED}\n")
    );

    // Only the current file: a later start is noted, not an error.
    let out = clawctl(&["audit", "verify", &current]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{current}: chain starts at seq 4 (earlier events were not given, so the link to them is not checked)\n\
             ok: 2 events, seq 4..5, head {head}\n{UNKEYED}\n"
        )
    );

    // An edited line.
    let mut edited = lines.clone();
    edited[1] = edited[1].replace("control", "exit");
    let file = write(&dir.join("edited.jsonl"), &joined(&edited));
    let out = clawctl(&["audit", "verify", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!("{file}:2: line was altered: its SHA-256 does not match the prev recorded at line 3, and the line after that confirms line 3 is intact\n")
    );

    let missing = dir.join("nope.jsonl").display().to_string();
    let out = clawctl(&["audit", "verify", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("{missing}: cannot open: No such file or directory (os error 2)\n")
    );

    let empty = scratch("audit-empty");
    std::fs::create_dir(empty.join("audit")).unwrap();
    let out = clawctl(&["audit", "verify", &empty.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: no audit files (audit.jsonl or audit.<seq>.jsonl) in this directory; did you mean {}?\n",
            empty.display(),
            empty.join("audit").display()
        )
    );

    let out = clawctl(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2));
}
