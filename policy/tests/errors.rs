//! Every class of load error, with its exact position and message.

use clawrden_policy::{Policy, PolicyError};

fn err(src: &str) -> PolicyError {
    Policy::parse(src, "p.yaml").expect_err("the policy should be rejected")
}

const RULE: &str = "version: 1\nrules:\n  - name: a\n    action: allow\n";

#[test]
fn each_error_class_points_at_the_offending_value() {
    let cases: Vec<(String, usize, usize, &str)> = vec![
        // Unknown keys: at the key.
        ("version: 1\nrulez: []\n".into(), 2, 1,
         "unknown field `rulez`, expected one of `version`, `default_action`, `default_timeout`, `approval_timeout`, `default_executor`, `rules`"),
        (format!("{RULE}    comand: git\n"), 5, 5,
         "rules[0]: unknown field `comand`, expected one of `name`, `command`, `args`, `args_regex`, `flags`, `cwd`, `uid`, `prisoner`, `action`, `reason`, `timeout`, `executor`, `ghost`, `env`, `run_as`"),
        (format!("{RULE}    executor: ghost\n    ghost: {{image: x, gpu: 1}}\n"), 6, 23,
         "rules[0].ghost: unknown field `gpu`, expected one of `image`, `network`, `memory`, `cpus`, `pids`"),
        // Unknown actions and executors.
        ("version: 1\nrules:\n  - name: a\n    action: alow\n".into(), 4, 13,
         "rules[0].action: unknown action `alow`; expected allow, deny or ask"),
        ("version: 1\ndefault_action: maybe\n".into(), 2, 17,
         "default_action: unknown action `maybe`; expected allow, deny or ask"),
        ("version: 1\ndefault_executor: docker\n".into(), 2, 19,
         "default_executor: unknown executor `docker`; expected local, mirror or ghost"),
        ("version: 1\nrules:\n  - {name: a, action: allow, executor: vm}\n".into(), 3, 40,
         "rules[0].executor: unknown executor `vm`; expected local, mirror or ghost"),
        // Durations.
        ("version: 1\ndefault_timeout: 10x\n".into(), 2, 18,
         "default_timeout: bad duration `10x`: unknown unit `x` (units: d, h, m, s, ms, us, ns)"),
        ("version: 1\ndefault_timeout: \"\"\n".into(), 2, 18,
         "default_timeout: empty duration; write e.g. 30s, 2m, 1h30m, 500ms or 1d"),
        ("version: 1\napproval_timeout: 0s\n".into(), 2, 19,
         "approval_timeout: bad duration `0s`: must be greater than zero"),
        (format!("{RULE}    timeout: -5s\n"), 5, 14,
         "rules[0].timeout: bad duration `-5s`: expected a number at `-5s`; write e.g. 30s, 2m, 1h30m, 500ms or 1d"),
        // Globs and regexes.
        ("version: 1\nrules:\n  - name: a\n    command: \"[abc\"\n    action: allow\n".into(), 4, 14,
         "rules[0].command: bad glob `[abc`: unclosed `[` at character 1; close the class with `]` or write `\\[` for a literal `[`"),
        ("version: 1\nrules:\n  - name: a\n    args: [push, \"x[\"]\n    action: allow\n".into(), 4, 18,
         "rules[0].args[1]: bad glob `x[`: unclosed `[` at character 2; close the class with `]` or write `\\[` for a literal `[`"),
        ("version: 1\nrules:\n  - name: a\n    cwd: \"/w/[\"\n    action: allow\n".into(), 4, 10,
         "rules[0].cwd: bad glob `/w/[`: unclosed `[` at character 4; close the class with `]` or write `\\[` for a literal `[`"),
        ("version: 1\nrules:\n  - name: a\n    prisoner: [ok, \"[\"]\n    action: allow\n".into(), 4, 20,
         "rules[0].prisoner[1]: bad glob `[`: unclosed `[` at character 1; close the class with `]` or write `\\[` for a literal `[`"),
        ("version: 1\nrules:\n  - name: a\n    args_regex: \"git (push\"\n    action: allow\n".into(), 4, 17,
         "rules[0].args_regex: bad args_regex `git (push`: unclosed group"),
        ("version: 1\nrules:\n  - name: a\n    command: /usr/bin/git\n    action: allow\n".into(), 4, 14,
         "rules[0].command: command pattern `/usr/bin/git` contains `/`, but commands are matched on the basename of argv[0]; write `git`"),
        // Duplicate names: at the second name.
        (format!("{RULE}  - name: b\n    action: deny\n  - name: a\n    action: deny\n"), 7, 11,
         "rules[2].name: duplicate rule name `a` (also rules[0]); rule names must be unique"),
        // Empty command list: at the list.
        ("version: 1\nrules:\n  - name: a\n    command: []\n    action: allow\n".into(), 4, 14,
         "rules[0].command: command list is empty, so the rule could never match; list at least one command or remove the key"),
        // Present but empty match keys.
        ("version: 1\nrules:\n  - name: a\n    command:\n    action: allow\n".into(), 4, 13,
         "rules[0].command: invalid type: unit value, expected a value or a list of values"),
        ("version: 1\nrules:\n  - name: a\n    args:\n    action: allow\n".into(), 4, 10,
         "rules[0].args: invalid type: unit value, expected a list of argument globs (`[]` for no arguments)"),
        // Ghost block without the ghost executor: at the block.
        (format!("{RULE}    ghost: {{image: x}}\n"), 5, 12,
         "rules[0].ghost: rule `a` runs in the mirror executor, so a `ghost` block has no effect; set `executor: ghost` or remove the block"),
        // Ghost executor without an image: at the executor, or the rule when inherited.
        (format!("{RULE}    executor: ghost\n"), 5, 15,
         "rules[0].executor: rule `a` runs in the ghost executor (executor: ghost) but names no image; add `ghost: { image: IMAGE }`"),
        ("version: 1\ndefault_executor: ghost\nrules:\n  - name: a\n    action: allow\n".into(), 4, 5,
         "rules[0]: rule `a` runs in the ghost executor (default_executor: ghost) but names no image; add `ghost: { image: IMAGE }`"),
        (format!("{RULE}    executor: ghost\n    ghost: {{network: x}}\n"), 6, 12,
         "rules[0].ghost: missing field `image`"),
        (format!("{RULE}    executor: ghost\n    ghost: {{image: x, memory: 12q}}\n"), 6, 31,
         "rules[0].ghost.memory: bad memory size `12q`; write e.g. 256m or 1g"),
        (format!("{RULE}    executor: ghost\n    ghost: {{image: x, cpus: 0}}\n"), 6, 29,
         "rules[0].ghost.cpus: cpus must be a number greater than zero, not 0"),
        // run_as: a user name, and only where a warden-side executor runs the command.
        (format!("{RULE}    executor: local\n    run_as: \"de ploy\"\n"), 6, 13,
         "rules[0].run_as: run_as `de ploy` is not a user name (letters, digits, '_', '.', '-', starting with a letter or '_')"),
        (format!("{RULE}    run_as: deploy\n"), 5, 13,
         "rules[0].run_as: rule `a` runs in the mirror executor, where a command always runs as its caller inside the prisoner; run_as applies to warden-side executors (local)"),
        // Other values.
        ("version: 2\n".into(), 1, 10, "version: unsupported policy version 2; this Clawrden reads `version: 1`"),
        ("rules: []\n".into(), 1, 1, "missing field `version`"),
        ("".into(), 1, 1, "missing field `version`"),
        ("- 1\n".into(), 1, 1, "invalid type: sequence, expected a policy mapping with `version: 1`"),
        ("version: 1\nrules:\n  - action: allow\n".into(), 3, 5, "rules[0]: missing field `name`"),
        ("version: 1\nrules:\n  - name: \"\"\n    action: allow\n".into(), 3, 11,
         "rules[0].name: rule name is empty; give every rule a unique name"),
        ("version: 1\nrules:\n  - name: a\n    uid: -1\n    action: allow\n".into(), 4, 10,
         "rules[0].uid: invalid value: integer `-1`, expected u32"),
        ("version: 1\nrules:\n  - name: a\n    env: {pass: [\"1X\"]}\n    action: allow\n".into(), 4, 18,
         "rules[0].env.pass[0]: bad environment variable name `1X`; write a name like HTTP_PROXY, or a prefix like LC_*"),
        // YAML syntax.
        ("version: 1\nrules: [\n".into(), 3, 1, "did not find expected node content, while parsing a flow node"),
        ("version: 1: 2\n".into(), 1, 11, "mapping values are not allowed in this context"),
    ];
    for (src, line, column, message) in cases {
        let e = err(&src);
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (line, column, message),
            "policy:\n{src}"
        );
        assert_eq!(e.file, "p.yaml");
    }
}

#[test]
fn display_is_file_line_column_message() {
    let e = err("version: 1\ndefault_action: maybe\n");
    assert_eq!(
        e.to_string(),
        "p.yaml:2:17: default_action: unknown action `maybe`; expected allow, deny or ask"
    );
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-errors");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn load_names_the_file_in_errors() {
    let path = temp_file("bad-action.yaml", b"version: 1\ndefault_action: maybe\n");
    let e = Policy::load(&path).unwrap_err();
    assert_eq!(e.file, path.display().to_string());
    assert_eq!((e.line, e.column), (2, 17));

    let missing = path.with_file_name("does-not-exist.yaml");
    let e = Policy::load(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read the policy: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn load_positions_invalid_utf8() {
    let path = temp_file("latin1.yaml", b"version: 1\nrules:\n  - name: caf\xe9\n");
    let e = Policy::load(&path).unwrap_err();
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (3, 14, "the policy is not valid UTF-8; save it as UTF-8")
    );
}

#[test]
fn load_hashes_the_file_bytes() {
    let path = temp_file("ok.yaml", b"version: 1\n");
    let p = Policy::load(&path).unwrap();
    assert_eq!(
        p.sha256(),
        "09bfcc6a14b83e2192b8673677725c84883ee9cd0c70e45c9ec09daa8f2b2847"
    );
    assert_eq!(p.origin(), path.display().to_string());
}
