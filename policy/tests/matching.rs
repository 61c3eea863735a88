//! Decisions and explanations through the public API.

use std::time::Duration;

use clawrden_policy::{Action, Call, ExecutorKind, Policy};

fn argv(tokens: &[&[u8]]) -> Vec<Vec<u8>> {
    tokens.iter().map(|t| t.to_vec()).collect()
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|t| t.as_bytes().to_vec()).collect()
}

/// (argv, cwd, uid, prisoner, expected rule).
type CallCase<'a> = (&'a str, &'a [u8], u32, &'a str, Option<&'a str>);
/// (argv, rule that catches it, why the case is interesting).
type SlipCase = (Vec<Vec<u8>>, Option<&'static str>, &'static str);

fn policy(src: &str) -> Policy {
    Policy::parse(src, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// (rule name or None, action) for argv in cwd /work as uid 1000, prisoner agent-1.
fn decide(p: &Policy, argv: &[Vec<u8>]) -> (Option<String>, Action) {
    let call = Call {
        argv,
        cwd: b"/work",
        uid: 1000,
        prisoner: "agent-1",
    };
    let v = p.decide(&call);
    (v.rule, v.action)
}

fn rule_of(p: &Policy, line: &str) -> Option<String> {
    decide(p, &words(line)).0
}

#[test]
fn first_matching_rule_wins_and_no_match_falls_to_default() {
    let p = policy(
        "version: 1\ndefault_action: ask\nrules:\n\
         - {name: deny-push, command: git, args: [push, '**'], action: deny}\n\
         - {name: allow-git, command: git, action: allow}\n\
         - {name: deny-git, command: git, action: deny}\n",
    );
    assert_eq!(
        decide(&p, &words("git push origin")),
        (Some("deny-push".into()), Action::Deny)
    );
    assert_eq!(
        decide(&p, &words("git status")),
        (Some("allow-git".into()), Action::Allow)
    );
    assert_eq!(decide(&p, &words("curl x")), (None, Action::Ask));
}

#[test]
fn defaults_when_the_policy_says_nothing() {
    let p = policy("version: 1\n");
    assert_eq!(p.default_action(), Action::Deny);
    assert_eq!(p.default_timeout(), Duration::from_secs(120));
    assert_eq!(p.approval_timeout(), Duration::from_secs(600));
    assert_eq!(p.default_executor(), ExecutorKind::Mirror);
    assert!(p.rules().is_empty());
    let call = Call {
        argv: &words("ls"),
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    let v = p.decide(&call);
    assert_eq!(v.reason, "no rule matched; default_action is deny");
    assert_eq!(v.rule, None);
    assert_eq!(v.executor, ExecutorKind::Mirror);
    assert_eq!(v.timeout, Duration::from_secs(120));
}

#[test]
fn verdict_carries_rule_settings_and_generated_reasons() {
    let p = policy(
        "version: 1\ndefault_timeout: 1m\ndefault_executor: local\nrules:\n\
         - name: fetch\n  command: [curl, wget]\n  action: ask\n  timeout: 30s\n  executor: ghost\n\
         \x20 ghost: { image: clawrden/fetch, network: egress, memory: 256m, cpus: 1.5, pids: 128 }\n\
         \x20 env: { pass: [HTTP_PROXY, LC_*], drop: [TERM] }\n\
         - {name: git-read, command: git, action: allow}\n\
         - {name: no-rm, command: rm, action: deny, reason: use the trash}\n\
         - {name: deploy, command: kubectl, action: allow, run_as: deploy}\n",
    );
    let call = Call {
        argv: &words("wget http://x"),
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    let v = p.decide(&call);
    assert_eq!(v.action, Action::Ask);
    assert_eq!(v.reason, "rule fetch asks for approval");
    assert_eq!(v.timeout, Duration::from_secs(30));
    assert_eq!(v.executor, ExecutorKind::Ghost);
    let g = v.ghost.unwrap();
    assert_eq!(
        (
            g.image.as_str(),
            g.network.as_str(),
            g.memory,
            g.cpus,
            g.pids
        ),
        (
            "clawrden/fetch",
            "egress",
            Some(256 << 20),
            Some(1.5),
            Some(128)
        )
    );
    assert_eq!(v.env.pass, ["HTTP_PROXY", "LC_*"]);
    assert_eq!(v.env.drop, ["TERM"]);
    assert!(v.env.passes("LC_ALL") && v.env.passes("HTTP_PROXY") && !v.env.passes("HTTP"));
    assert!(v.env.drops("TERM") && !v.env.drops("TERMINAL"));
    assert_eq!(v.run_as, None);
    let call = Call {
        argv: &words("kubectl apply"),
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    let v = p.decide(&call);
    assert_eq!(v.run_as.as_deref(), Some("deploy"));
    assert_eq!(p.rules()[3].run_as(), Some("deploy"));

    let call = Call {
        argv: &words("git log"),
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    let v = p.decide(&call);
    assert_eq!(v.reason, "rule git-read allows");
    assert_eq!(
        (v.timeout, v.executor, v.ghost),
        (Duration::from_secs(60), ExecutorKind::Local, None)
    );
    let call = Call {
        argv: &words("rm -rf /"),
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    assert_eq!(p.decide(&call).reason, "use the trash");
    let call = Call {
        argv: &words("ls"),
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    assert_eq!(
        p.decide(&call).reason,
        "no rule matched; default_action is deny"
    );
}

#[test]
fn double_star_at_start_middle_and_end() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: end, command: a, args: [x, '**'], action: allow}\n\
         - {name: start, command: b, args: ['**', x], action: allow}\n\
         - {name: middle, command: c, args: [x, '**', y], action: allow}\n\
         - {name: only, command: d, args: ['**'], action: allow}\n\
         - {name: two, command: e, args: ['**', x, '**', y, '**'], action: allow}\n\
         - {name: none, command: f, args: [], action: allow}\n",
    );
    let cases: &[(&str, Option<&str>)] = &[
        ("a x", Some("end")),
        ("a x 1 2 3", Some("end")),
        ("a y x", None),
        ("a", None),
        ("b x", Some("start")),
        ("b 1 2 x", Some("start")),
        ("b x 1", None),
        ("c x y", Some("middle")),
        ("c x 1 2 y", Some("middle")),
        ("c x", None),
        ("c y x", None),
        ("d", Some("only")),
        ("d 1 2", Some("only")),
        ("e x y", Some("two")),
        ("e 0 x 1 y 2", Some("two")),
        ("e y x", None),
        ("e x x", None),
        ("f", Some("none")),
        ("f 1", None),
    ];
    for &(line, want) in cases {
        assert_eq!(rule_of(&p, line).as_deref(), want, "{line}");
    }
}

#[test]
fn command_and_prisoner_lists_cwd_and_uid() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: vcs, command: [git, 'h?'], action: allow}\n\
         - {name: in-work, command: make, cwd: /work/**, action: allow}\n\
         - {name: root-only, command: apt, uid: 0, action: allow}\n\
         - {name: staff, command: id, uid: [1000, 1001], action: allow}\n\
         - {name: agents, command: ls, prisoner: [agent-*, ci], action: allow}\n",
    );
    let at = |argv: &str, cwd: &[u8], uid: u32, prisoner: &str| {
        let argv = words(argv);
        p.decide(&Call {
            argv: &argv,
            cwd,
            uid,
            prisoner,
        })
        .rule
    };
    let cases: &[CallCase<'_>] = &[
        ("git status", b"/", 0, "x", Some("vcs")),
        ("hg status", b"/", 0, "x", Some("vcs")),
        ("svn status", b"/", 0, "x", None),
        ("make", b"/work", 0, "x", Some("in-work")),
        ("make", b"/work/a/b", 0, "x", Some("in-work")),
        ("make", b"/workshop", 0, "x", None),
        ("make", b"/tmp", 0, "x", None),
        ("apt install", b"/", 0, "x", Some("root-only")),
        ("apt install", b"/", 1000, "x", None),
        ("id", b"/", 1001, "x", Some("staff")),
        ("id", b"/", 1002, "x", None),
        ("ls", b"/", 0, "agent-7", Some("agents")),
        ("ls", b"/", 0, "ci", Some("agents")),
        ("ls", b"/", 0, "cid", None),
    ];
    for &(argv, cwd, uid, prisoner, want) in cases {
        assert_eq!(
            at(argv, cwd, uid, prisoner).as_deref(),
            want,
            "{argv} {cwd:?} {uid} {prisoner}"
        );
    }
}

#[test]
fn all_present_match_keys_must_match() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: r, command: git, args: [push, '**'], cwd: /work/**, uid: 1000, prisoner: agent-*, action: allow}\n",
    );
    let argv = words("git push");
    let ok = Call {
        argv: &argv,
        cwd: b"/work",
        uid: 1000,
        prisoner: "agent-1",
    };
    assert_eq!(p.decide(&ok).action, Action::Allow);
    for call in [
        Call { cwd: b"/etc", ..ok },
        Call { uid: 0, ..ok },
        Call {
            prisoner: "other",
            ..ok
        },
        Call {
            argv: &words("git pull"),
            ..ok
        },
    ] {
        assert_eq!(p.decide(&call).action, Action::Deny, "{call:?}");
    }
}

#[test]
fn args_regex_sees_basename_and_shell_quoted_tokens() {
    let p = policy(
        r#"version: 1
rules:
  - name: quoted
    args_regex: "git commit -m 'fix: a bug'"
    action: allow
  - name: prefix-only
    args_regex: "echo hi"
    action: allow
  - name: bytes
    args_regex: 'cat \$''\\xff'''
    action: allow
  - name: any-curl
    args_regex: "curl( .*)?"
    action: ask
"#,
    );
    let cases: &[(Vec<Vec<u8>>, Option<&str>)] = &[
        (
            argv(&[b"/usr/bin/git", b"commit", b"-m", b"fix: a bug"]),
            Some("quoted"),
        ),
        (
            argv(&[b"git", b"commit", b"-m", b"fix:", b"a", b"bug"]),
            None,
        ),
        (argv(&[b"echo", b"hi"]), Some("prefix-only")),
        (argv(&[b"echo", b"hi", b"there"]), None),
        (argv(&[b"xecho", b"hi"]), None),
        (argv(&[b"cat", b"\xff"]), Some("bytes")),
        (argv(&[b"curl"]), Some("any-curl")),
        (argv(&[b"curl", b"-sS", b"http://x"]), Some("any-curl")),
    ];
    for (argv, want) in cases {
        assert_eq!(decide(&p, argv).0.as_deref(), *want, "{argv:?}");
    }
}

const NO_FORCE_PUSH: &str = "version: 1\ndefault_action: allow\nrules:\n\
    - {name: no-force, command: git, args: [push, '**', '--force*', '**'], action: deny}\n\
    - {name: no-f, command: git, args: [push, '**', '-f', '**'], action: deny}\n\
    - {name: careful, command: git, args: ['**', push, '**', '--force*', '**'], action: deny}\n";

/// Attempts to slip a force-push past deny rules, and which rule (if any) catches each.
/// `None` means the call falls through to `default_action: allow` in this test policy.
#[test]
fn attempts_to_slip_past_deny_rules() {
    let p = policy(NO_FORCE_PUSH);
    let cases: &[SlipCase] = &[
        (
            words("git push --force origin"),
            Some("no-force"),
            "flag before remote",
        ),
        (
            words("git push origin --force"),
            Some("no-force"),
            "reordered: flag last",
        ),
        (
            words("git push origin main --force"),
            Some("no-force"),
            "more tokens",
        ),
        (
            words("git push --force-with-lease"),
            Some("no-force"),
            "--force* covers it",
        ),
        (
            words("git push -f origin"),
            Some("no-f"),
            "-f is a different token: listed separately",
        ),
        (
            argv(&[b"git", b"push --force"]),
            None,
            "joined into one token: git sees no `push` subcommand",
        ),
        (
            words("git push --forc e"),
            None,
            "split: git sees no --force",
        ),
        (
            words("git -c k=v push --force"),
            Some("careful"),
            "global option before push: only the leading ** rule catches it",
        ),
        (
            words("/usr/bin/git push --force"),
            Some("no-force"),
            "absolute path: matched on basename",
        ),
        (
            words("./git push --force"),
            Some("no-force"),
            "relative path: basename",
        ),
        (
            words("GIT push --force"),
            None,
            "case differs: a different program on Linux",
        ),
        (
            words("git PUSH --force"),
            None,
            "case differs in the subcommand: git rejects PUSH",
        ),
        (
            words("git push --FORCE"),
            None,
            "case differs in the flag: git rejects --FORCE",
        ),
        (words("git push"), None, "no force flag"),
        (words("git pull --force"), None, "different subcommand"),
    ];
    for (argv, want, why) in cases {
        assert_eq!(decide(&p, argv).0.as_deref(), *want, "{why}: {argv:?}");
    }
}

#[test]
fn naive_push_pattern_misses_global_options_and_leading_double_star_catches_them() {
    let naive = policy(
        "version: 1\ndefault_action: allow\nrules:\n\
         - {name: naive, command: git, args: [push, '**', '--force*', '**'], action: deny}\n",
    );
    let careful = policy(
        "version: 1\ndefault_action: allow\nrules:\n\
         - {name: careful, command: git, args: ['**', push, '**', '--force*', '**'], action: deny}\n",
    );
    let sneaky = words("git -c k=v push --force");
    assert_eq!(decide(&naive, &sneaky), (None, Action::Allow));
    assert_eq!(
        decide(&careful, &sneaky),
        (Some("careful".into()), Action::Deny)
    );
    let explanation = naive.explain(&Call {
        argv: &sneaky,
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    });
    assert_eq!(
        explanation.checks[0].why,
        "argument 1 `-c` does not match `push`"
    );
}

#[test]
fn non_utf8_argv_matches_globs_bytewise() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: any-file, command: cat, args: ['?'], action: allow}\n\
         - {name: star, command: rm, args: ['x*'], action: allow}\n",
    );
    assert_eq!(
        decide(&p, &argv(&[b"cat", b"\xff"])).0.as_deref(),
        Some("any-file")
    );
    assert_eq!(
        decide(&p, &argv(&[b"rm", b"x\xff\xfe"])).0.as_deref(),
        Some("star")
    );
    assert_eq!(decide(&p, &argv(&[b"\xffcat", b"a"])).0, None);
}

#[test]
fn empty_argv_is_refused_before_any_rule() {
    let p = policy(
        "version: 1\ndefault_action: allow\nrules:\n\
         - {name: git, command: git, action: allow}\n\
         - {name: empty-args, args: [], action: ask}\n",
    );
    let call = Call {
        argv: &[],
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    };
    let e = p.explain(&call);
    assert!(e.checks.is_empty());
    assert_eq!(e.verdict.rule, None);
    assert_eq!(e.verdict.action, Action::Deny);
    assert_eq!(
        e.render(),
        "refused before any rule: the call has no argv[0]; there is no command to decide\n\
         verdict: deny (argv[0] is not a command name)\n\
         reason: the call has no argv[0]; there is no command to decide\n\
         executor: mirror\n\
         timeout: 2m\n"
    );
    assert_eq!(p.decide(&call), e.verdict);
}

fn explain_whys(
    p: &Policy,
    argv: &[Vec<u8>],
    cwd: &[u8],
    uid: u32,
    prisoner: &str,
) -> Vec<(String, bool, String)> {
    p.explain(&Call {
        argv,
        cwd,
        uid,
        prisoner,
    })
    .checks
    .into_iter()
    .map(|c| (c.rule, c.matched, c.why))
    .collect()
}

#[test]
fn explain_says_why_each_rule_missed() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: curl, command: curl, action: ask}\n\
         - {name: vcs, command: [hg, svn], action: allow}\n\
         - {name: exact, command: git, args: [status], action: allow}\n\
         - {name: three, command: git, args: [push, '**', x, y], action: allow}\n\
         - {name: force, command: git, args: [push, '**', '--force*', '**'], action: deny}\n\
         - {name: tail, command: git, args: ['**', origin], action: allow}\n\
         - {name: re, args_regex: 'git push -q', action: allow}\n\
         - {name: cwd, cwd: /tmp/*, action: allow}\n\
         - {name: uid, uid: [0, 1], action: allow}\n\
         - {name: prisoner, prisoner: ci-*, action: allow}\n\
         - {name: everything, action: ask}\n",
    );
    let got = explain_whys(
        &p,
        &words("git push -f main"),
        b"/work dir",
        1000,
        "agent-1",
    );
    let want: Vec<(&str, bool, &str)> = vec![
        ("curl", false, "command `git` does not match `curl`"),
        ("vcs", false, "command `git` matches none of `hg`, `svn`"),
        (
            "exact",
            false,
            "args: 3 tokens given, pattern needs exactly 1",
        ),
        ("three", false, "argument 2 `-f` does not match `x`"),
        (
            "force",
            false,
            "args: no run of arguments 2..3 matches `--force*`",
        ),
        ("tail", false, "argument 3 `main` does not match `origin`"),
        (
            "re",
            false,
            "args_regex `git push -q` does not match `git push -f main`",
        ),
        ("cwd", false, "cwd `'/work dir'` does not match `/tmp/*`"),
        ("uid", false, "uid 1000 is not 0 or 1"),
        (
            "prisoner",
            false,
            "prisoner `agent-1` does not match `ci-*`",
        ),
        (
            "everything",
            true,
            "the rule has no match keys, so it matches every call",
        ),
    ];
    let got: Vec<(&str, bool, &str)> = got
        .iter()
        .map(|(a, b, c)| (a.as_str(), *b, c.as_str()))
        .collect();
    assert_eq!(got, want);

    let got = explain_whys(&p, &words("git push"), b"/", 0, "p");
    assert_eq!(got[3].2, "args: 1 token given, pattern needs at least 3");
    let got = explain_whys(&p, &words("git push x --force"), b"/", 0, "p");
    assert_eq!(
        got[4],
        (
            "force".to_owned(),
            true,
            "command `git` matches `git`; args match `push ** --force* **`".to_owned()
        )
    );
}

#[test]
fn explain_stops_at_the_match_and_renders_the_verdict() {
    let p = policy(
        "version: 1\nrules:\n\
         - {name: git-read, command: git, args: [status, '**'], action: allow, timeout: 30s}\n\
         - {name: no-force-push, command: git, args: [push, '**', '--force*', '**'], action: deny, reason: force-push is not allowed}\n\
         - {name: later, action: allow}\n",
    );
    let argv = words("git push origin --force");
    let e = p.explain(&Call {
        argv: &argv,
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    });
    assert_eq!(
        e.verdict,
        p.decide(&Call {
            argv: &argv,
            cwd: b"/",
            uid: 0,
            prisoner: "p"
        })
    );
    assert_eq!(
        e.render(),
        "rule 1 git-read: no match: argument 1 `push` does not match `status`\n\
         rule 2 no-force-push: MATCH: command `git` matches `git`; args match `push ** --force* **`\n\
         verdict: deny (rule no-force-push)\n\
         reason: force-push is not allowed\n\
         executor: mirror\n\
         timeout: 2m\n"
    );
    let empty = policy("version: 1\ndefault_action: ask\ndefault_timeout: 1h30m\n");
    let e = empty.explain(&Call {
        argv: &argv,
        cwd: b"/",
        uid: 0,
        prisoner: "p",
    });
    assert_eq!(
        e.render(),
        "the policy has no rules\n\
         verdict: ask (no rule matched; policy default)\n\
         reason: no rule matched; default_action is ask\n\
         executor: mirror\n\
         timeout: 1h30m\n"
    );
}

#[test]
fn sha256_is_of_the_file_bytes() {
    let p = policy("version: 1\n");
    // sha256("version: 1\n")
    assert_eq!(
        p.sha256(),
        "09bfcc6a14b83e2192b8673677725c84883ee9cd0c70e45c9ec09daa8f2b2847"
    );
}
