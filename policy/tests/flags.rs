//! `flags`: loading, matching through the public API, and what explain says.

use clawrden_policy::{Action, Call, FlagForm, FlagMatch, Policy, PolicyError};

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|t| t.as_bytes().to_vec()).collect()
}

fn policy(src: &str) -> Policy {
    Policy::parse(src, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn err(src: &str) -> PolicyError {
    Policy::parse(src, "p.yaml").expect_err("the policy should be rejected")
}

/// (policy text, line, column, message) of a load error, as `p.yaml:LINE:COLUMN: message`.
type ErrorCase<'a> = (&'a str, usize, usize, &'a str);

fn assert_load_errors(cases: &[ErrorCase<'_>]) {
    for &(src, line, column, message) in cases {
        let e = err(src);
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (line, column, message),
            "policy:\n{src}"
        );
        assert_eq!(e.to_string(), format!("p.yaml:{line}:{column}: {message}"));
    }
}

fn call(argv: &[Vec<u8>]) -> Call<'_> {
    Call {
        argv,
        cwd: b"/work",
        uid: 1000,
        prisoner: "agent-1",
    }
}

const RM: &str = "version: 1\ndefault_action: allow\nrules:\n\
    - name: no-recursive-rm\n  command: rm\n  flags: [-r, -R, --recursive]\n  action: deny\n\
    - name: push-force\n  command: git\n  args: ['**', push, '**']\n  flags: -f\n  action: ask\n";

#[test]
fn flags_match_wherever_the_option_is_written() {
    let p = policy(RM);
    let cases: &[(&str, Option<&str>)] = &[
        ("rm -r d", Some("no-recursive-rm")),
        ("rm -R d", Some("no-recursive-rm")),
        ("rm -Rf d", Some("no-recursive-rm")),
        ("rm -fr d", Some("no-recursive-rm")),
        ("rm d -r", Some("no-recursive-rm")),
        ("rm --recursive d", Some("no-recursive-rm")),
        ("rm --recurs d", Some("no-recursive-rm")),
        ("rm -f d", None),
        ("rm d", None),
        // A flag rule with args: both must hold.
        ("git push -fu origin main", Some("push-force")),
        ("git -C /w push origin -vf", Some("push-force")),
        ("git fetch -f", None),
        ("git push origin main", None),
    ];
    for &(line, want) in cases {
        let v = p.decide(&call(&words(line)));
        assert_eq!(v.rule.as_deref(), want, "{line}");
    }
}

#[test]
fn explain_names_the_flag_and_the_argument_that_gave_it() {
    let p = policy(RM);
    let argv = words("rm -v -Rf build");
    let e = p.explain(&call(&argv));
    assert_eq!(e.verdict.action, Action::Deny);
    assert_eq!(
        e.checks[0].flag,
        Some(FlagMatch {
            flag: "-R".to_owned(),
            argument: 2,
            token: b"-Rf".to_vec(),
            form: FlagForm::Combined,
        })
    );
    assert_eq!(
        e.checks[0].why,
        "command `rm` matches `rm`; flags: flag `-R` is inside argument 2 `-Rf` (combined short options)"
    );
    let argv = words("rm -v build");
    let e = p.explain(&call(&argv));
    assert_eq!(
        e.checks[0].why,
        "flags: no argument gives `-r`, `-R` or `--recursive`"
    );
    assert_eq!(e.checks[0].flag, None);
}

#[test]
fn bad_flags_and_flags_in_allow_rules_are_load_errors_with_positions() {
    assert_load_errors(&[
        ("version: 1\nrules:\n  - name: a\n    flags: [-r, -rf]\n    action: deny\n", 4, 17,
         "rules[0].flags[1]: `-rf` is 2 short options written together; list each (`-r`, `-f`): a rule matches when any one of its flags appears, combined or not"),
        ("version: 1\nrules:\n  - name: a\n    flags: recursive\n    action: deny\n", 4, 12,
         "rules[0].flags: bad flag `recursive`: write a short option like `-r` or a long one like `--recursive`"),
        ("version: 1\nrules:\n  - name: a\n    flags: []\n    action: deny\n", 4, 12,
         "rules[0].flags: flags list is empty, so the rule could never match; list at least one option (like -r or --recursive) or remove the key"),
        ("version: 1\nrules:\n  - name: a\n    flags: [--force=yes]\n    action: ask\n", 4, 13,
         "rules[0].flags[0]: write the option without a value: `--force` also matches `--force=VALUE`"),
        ("version: 1\nrules:\n  - name: dry-push\n    command: git\n    flags: [--dry-run]\n    action: allow\n", 5, 12,
         "rules[0].flags: rule `dry-push` allows, but `flags` errs toward matching (an option's value or an operand after `--` that looks like the flag counts too), so in an allow rule it would let through more than written; use flags in deny and ask rules, and `args` in allow rules"),
    ]);
}

#[test]
fn loader_and_shell_hooks_are_refused_in_env_pass_with_positions() {
    assert_load_errors(&[
        ("version: 1\nrules:\n  - name: a\n    action: allow\n    env: {pass: [HTTP_PROXY, LD_PRELOAD]}\n", 5, 30,
         "rules[0].env.pass[1]: `LD_PRELOAD` cannot be passed to commands (LD_*): the dynamic loader loads libraries it names, so whoever sets it chooses what the command runs; remove it from env.pass"),
        ("version: 1\nrules:\n  - name: a\n    action: allow\n    env:\n      pass:\n        - BASH_ENV\n", 7, 11,
         "rules[0].env.pass[0]: `BASH_ENV` cannot be passed to commands: bash runs the file it names, so whoever sets it chooses what the command runs; remove it from env.pass"),
        ("version: 1\nrules:\n  - name: a\n    action: allow\n    env: {pass: [GIT_*]}\n", 5, 18,
         "rules[0].env.pass[0]: `GIT_*` would pass GIT_CONFIG*: git reads configuration (hooks, aliases, core.fsmonitor) from it, so whoever sets it chooses what the command runs; remove it from env.pass"),
        ("version: 1\nrules:\n  - name: a\n    action: ask\n  - name: b\n    action: allow\n    env: {pass: [PYTHONSTARTUP]}\n", 7, 18,
         "rules[1].env.pass[0]: `PYTHONSTARTUP` cannot be passed to commands: python runs the file it names, so whoever sets it chooses what the command runs; remove it from env.pass"),
        ("version: 1\nrules:\n  - name: a\n    action: allow\n    env: {pass: [NODE_OPTIONS]}\n", 5, 18,
         "rules[0].env.pass[0]: `NODE_OPTIONS` cannot be passed to commands: node takes options such as --require from it, so whoever sets it chooses what the command runs; remove it from env.pass"),
        ("version: 1\nrules:\n  - name: a\n    action: allow\n    env: {pass: [PERL5OPT]}\n", 5, 18,
         "rules[0].env.pass[0]: `PERL5OPT` cannot be passed to commands: perl takes options such as -M from it, so whoever sets it chooses what the command runs; remove it from env.pass"),
    ]);
    // Dropping a hook is fine, and so are ordinary names.
    policy(
        "version: 1\nrules:\n  - name: a\n    action: allow\n    env: {pass: [HTTP_PROXY, LC_*, GIT_AUTHOR_*], drop: [LD_PRELOAD, BASH_ENV]}\n",
    );
}
