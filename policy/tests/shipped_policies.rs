//! The two policies Clawrden ships (`docker/policy.yaml`, `examples/policy.yaml`) against
//! the ways people and agents have tried to slip past their deny rules (docs/security.md,
//! section 8). Each row is one call and the verdict each policy must give it.

use clawrden_policy::{Action, Call, Policy};

const DOCKER: &str = include_str!("../../docker/policy.yaml");
const EXAMPLE: &str = include_str!("../../examples/policy.yaml");

/// What a policy must answer: the action and the rule (`None`: no rule decided).
type Want = (Action, Option<&'static str>);

const ASK: Want = (Action::Ask, None);
const DENY_NAME: Want = (Action::Deny, None);
const RM_DENY: Want = (Action::Deny, Some("no-recursive-rm"));
const PUSH_DENY: Want = (Action::Deny, Some("no-force-push"));
const REFSPEC_DENY: Want = (Action::Deny, Some("no-force-push-refspec"));

/// (argv, why the row is here, docker/policy.yaml, examples/policy.yaml).
type Row = (&'static [&'static str], &'static str, Want, Want);

const ROWS: &[Row] = &[
    // Recursive delete, every way rm accepts it.
    (&["rm", "-r", "d"], "plain", RM_DENY, RM_DENY),
    (&["rm", "-rf", "d"], "combined", RM_DENY, RM_DENY),
    (&["rm", "-R", "d"], "capital R", RM_DENY, RM_DENY),
    (&["rm", "-Rf", "d"], "capital R combined", RM_DENY, RM_DENY),
    (
        &["rm", "-fR", "d"],
        "R last in the cluster",
        RM_DENY,
        RM_DENY,
    ),
    (&["rm", "-vfR", "d"], "three combined", RM_DENY, RM_DENY),
    (
        &["rm", "d", "-r"],
        "option after the operand (GNU permutes)",
        RM_DENY,
        RM_DENY,
    ),
    (&["rm", "--recursive", "d"], "long option", RM_DENY, RM_DENY),
    (
        &["rm", "--recur", "d"],
        "abbreviated long option",
        RM_DENY,
        RM_DENY,
    ),
    (
        &["rm", "--r", "d"],
        "shortest abbreviation",
        RM_DENY,
        RM_DENY,
    ),
    (&["rm", "-r", "--", "d"], "before --", RM_DENY, RM_DENY),
    (
        &["/usr/bin/rm", "-rf", "d"],
        "absolute path",
        RM_DENY,
        RM_DENY,
    ),
    (
        &["../../bin/rm", "-rf", "d"],
        "relative path",
        RM_DENY,
        RM_DENY,
    ),
    (
        &["rm", "--", "-r"],
        "a file named -r: over-matched on purpose",
        RM_DENY,
        RM_DENY,
    ),
    // argv[0] that is not a command name: refused before any rule.
    (
        &["/usr/bin/rm/.", "-rf", "d"],
        "basename `.`",
        DENY_NAME,
        DENY_NAME,
    ),
    (
        &["/usr/bin/rm/..", "-rf", "d"],
        "basename `..`",
        DENY_NAME,
        DENY_NAME,
    ),
    (
        &["/usr/bin/rm/", "-rf", "d"],
        "trailing slash",
        DENY_NAME,
        DENY_NAME,
    ),
    (&["", "-rf", "d"], "empty argv[0]", DENY_NAME, DENY_NAME),
    (
        &["rm\u{200b}", "-rf", "d"],
        "zero-width space in the name",
        DENY_NAME,
        DENY_NAME,
    ),
    (
        &["rm\n", "-rf", "d"],
        "newline in the name",
        DENY_NAME,
        DENY_NAME,
    ),
    // Force-push, every way git accepts it.
    (
        &["git", "push", "--force"],
        "long option",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (&["git", "push", "-f"], "short option", PUSH_DENY, PUSH_DENY),
    (
        &["git", "push", "-fu", "origin", "main"],
        "combined -fu",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "-vf"],
        "combined -vf",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "-uf", "origin", "main"],
        "f last",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "origin", "main", "-f"],
        "after the operands",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--forc"],
        "abbreviated",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--force=yes"],
        "with a value",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--force-with-lease"],
        "lease",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--force-with-lease=main:abc"],
        "lease with a value",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--force-with"],
        "lease abbreviated",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--mirror"],
        "mirror forces every ref",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--mirr"],
        "mirror abbreviated",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "-d", "origin", "main"],
        "delete a remote branch",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--delete", "origin", "main"],
        "delete, long",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "--prune", "origin"],
        "prune deletes remote branches",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "-c", "k=v", "push", "--force"],
        "global option first",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "-C", "/w", "push", "-f"],
        "-C first",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "-o", "--", "--force", "origin"],
        "`--` as the value of -o",
        PUSH_DENY,
        PUSH_DENY,
    ),
    (
        &["git", "push", "origin", "+main"],
        "+refspec",
        REFSPEC_DENY,
        REFSPEC_DENY,
    ),
    (
        &["git", "push", "origin", "+main:main"],
        "+src:dst",
        REFSPEC_DENY,
        REFSPEC_DENY,
    ),
    (
        &["git", "push", "origin", "+refs/heads/*:refs/heads/*"],
        "+pattern",
        REFSPEC_DENY,
        REFSPEC_DENY,
    ),
    (
        &["git", "push", "--", "origin", "+main"],
        "+refspec after --",
        REFSPEC_DENY,
        REFSPEC_DENY,
    ),
    (
        &["git", "push", "origin", ":main"],
        "empty source deletes",
        REFSPEC_DENY,
        REFSPEC_DENY,
    ),
    // Residual: what no argv rule can see. A person still reads the whole command line.
    (
        &["git", "-c", "alias.p=push --force", "p"],
        "alias from -c",
        ASK,
        (Action::Ask, Some("git-write")),
    ),
    (
        &[
            "git",
            "-c",
            "remote.origin.push=+refs/heads/*:refs/heads/*",
            "push",
        ],
        "force refspec from configuration",
        ASK,
        (Action::Ask, Some("git-write")),
    ),
    (
        &["git", "send-pack", "--force", "origin", "main"],
        "plumbing push",
        ASK,
        (Action::Ask, Some("git-write")),
    ),
    // What the rules must not catch.
    (
        &["git", "push", "origin", "main"],
        "ordinary push",
        ASK,
        (Action::Ask, Some("git-write")),
    ),
    (
        &["git", "push", "-u", "origin", "feature"],
        "-u alone",
        ASK,
        (Action::Ask, Some("git-write")),
    ),
    (
        &["git", "push", "--dry-run", "origin", "main"],
        "--dry-run is not --delete",
        ASK,
        (Action::Ask, Some("git-write")),
    ),
    (
        &["git", "status"],
        "read",
        (Action::Allow, Some("git-read")),
        (Action::Allow, Some("git-read")),
    ),
    (
        &["rm", "-f", "file"],
        "not recursive",
        ASK,
        (Action::Ask, Some("rm")),
    ),
    (
        &["rm", "--force", "file"],
        "not recursive, long",
        ASK,
        (Action::Ask, Some("rm")),
    ),
];

fn check(policy: &Policy, name: &str, row: &Row, want: Want) -> Option<String> {
    let argv: Vec<Vec<u8>> = row.0.iter().map(|t| t.as_bytes().to_vec()).collect();
    let call = Call {
        argv: &argv,
        cwd: b"/workspace",
        uid: 1000,
        prisoner: "agent-1",
    };
    let v = policy.decide(&call);
    let got = (v.action, v.rule.as_deref());
    (got != want).then(|| {
        format!(
            "{name}: {:?} ({}): got {:?}, want {:?}",
            row.0, row.1, got, want
        )
    })
}

#[test]
fn shipped_policies_deny_every_known_evasion() {
    let docker = Policy::parse(DOCKER, "docker/policy.yaml").unwrap_or_else(|e| panic!("{e}"));
    let example = Policy::parse(EXAMPLE, "examples/policy.yaml").unwrap_or_else(|e| panic!("{e}"));
    let failures: Vec<String> = ROWS
        .iter()
        .flat_map(|row| {
            [
                check(&docker, "docker/policy.yaml", row, row.2),
                check(&example, "examples/policy.yaml", row, row.3),
            ]
        })
        .flatten()
        .collect();
    assert!(
        failures.is_empty(),
        "{} verdicts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_refused_name_says_why_in_the_reason() {
    let docker = Policy::parse(DOCKER, "docker/policy.yaml").unwrap();
    let argv: Vec<Vec<u8>> = ["/usr/bin/rm/.", "-rf", "/workspace"]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
    let v = docker.decide(&Call {
        argv: &argv,
        cwd: b"/workspace",
        uid: 1000,
        prisoner: "agent-1",
    });
    assert_eq!(
        v.reason,
        "argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name"
    );
}
