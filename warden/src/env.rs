//! The environment an executed command gets, set by whoever holds the privilege it runs
//! with (README.md, "Threat model"):
//!
//! - `mirror` runs the command as the caller, inside the caller's own container: nothing
//!   is crossed, so the caller's environment passes (`VIRTUAL_ENV`, `PYTHONPATH`,
//!   `GIT_AUTHOR_*` behave as without Clawrden), minus the rule's `env.drop`.
//! - Warden-side executors (`local`) run it on the warden's host as the run-as identity:
//!   `PATH` is the warden's fixed `command_path`, `HOME`, `USER` and `LOGNAME` are the
//!   identity's; from the caller only `LANG`, `LC_*`, `TERM`, `TZ` and the rule's
//!   `env.pass` names pass (minus `env.drop`), and never under one of those fixed names.
//!
//! Every command gets `CLAWRDEN_PARENT_REQUEST=<its request id>` (the caller's value is
//! replaced) and `CLAWRDEN_SOCKET`, so nested calls come back through the shim.

use clawrden_policy::EnvRule;
use clawrden_protocol::{PARENT_REQUEST_ENV, SOCKET_ENV};

/// An environment: `(name, value)` pairs.
pub type Env = Vec<(Vec<u8>, Vec<u8>)>;

/// Names kept from the caller's environment for warden-side commands, whatever the rule
/// says (harmless ones: they select a language and a terminal).
pub const ALLOWED: &[&str] = &["LANG", "TERM", "TZ"];

/// Names a warden-side command always gets from the warden, never from the caller.
pub const FIXED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    SOCKET_ENV,
    PARENT_REQUEST_ENV,
];

fn kept_by_default(name: &[u8]) -> bool {
    ALLOWED.iter().any(|a| a.as_bytes() == name) || name.starts_with(b"LC_")
}

fn is_fixed(name: &[u8]) -> bool {
    FIXED.iter().any(|f| f.as_bytes() == name)
}

/// Well-formed entries of `env` (no empty name, no `=` or NUL in it), first of each name
/// only (as `getenv` sees them), that `keep` accepts.
fn filtered(env: &[(Vec<u8>, Vec<u8>)], keep: impl Fn(&[u8], Option<&str>) -> bool) -> Env {
    let mut out: Env = Vec::new();
    for (name, value) in env {
        if name.is_empty() || name.contains(&b'=') || name.contains(&0) {
            continue;
        }
        // The link to the parent is the warden's to set (session.rs), never the caller's.
        if name.as_slice() == PARENT_REQUEST_ENV.as_bytes()
            || name.as_slice() == crate::lineage::PARENT_TOKEN_ENV.as_bytes()
        {
            continue;
        }
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        if keep(name, std::str::from_utf8(name).ok()) {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// The environment of a `mirror` command: the caller's, minus the rule's `env.drop`, with
/// `CLAWRDEN_PARENT_REQUEST=<request_id>`.
pub fn for_mirror(env: &[(Vec<u8>, Vec<u8>)], rule: &EnvRule, request_id: &str) -> Env {
    let mut out = filtered(env, |name, text| {
        name != PARENT_REQUEST_ENV.as_bytes() && !text.is_some_and(|n| rule.drops(n))
    });
    out.push((
        PARENT_REQUEST_ENV.as_bytes().to_vec(),
        request_id.as_bytes().to_vec(),
    ));
    out
}

/// The caller-derived part of a warden-side command's environment: `LANG`, `LC_*`,
/// `TERM`, `TZ` plus the rule's `env.pass`, minus its `env.drop`, never a [`FIXED`] name;
/// then `CLAWRDEN_SOCKET=<socket>` (the socket the call came in on) and
/// `CLAWRDEN_PARENT_REQUEST=<request_id>`. The executor adds `PATH`, `HOME`, `USER` and
/// `LOGNAME` with [`set_identity`].
pub fn for_warden_side(
    env: &[(Vec<u8>, Vec<u8>)],
    rule: &EnvRule,
    request_id: &str,
    socket: &[u8],
) -> Env {
    let mut out = filtered(env, |name, text| {
        let passed = text.is_some_and(|n| rule.passes(n));
        let dropped = text.is_some_and(|n| rule.drops(n));
        (kept_by_default(name) || passed) && !dropped && !is_fixed(name)
    });
    out.push((SOCKET_ENV.as_bytes().to_vec(), socket.to_vec()));
    out.push((
        PARENT_REQUEST_ENV.as_bytes().to_vec(),
        request_id.as_bytes().to_vec(),
    ));
    out
}

/// Puts the run-as identity's `PATH`, `HOME`, `USER` and `LOGNAME` in front of `env`,
/// replacing any entry of those names.
pub fn set_identity(env: &mut Env, path: &[u8], home: &[u8], user: Option<&[u8]>) {
    let mut fixed: Env = vec![
        (b"PATH".to_vec(), path.to_vec()),
        (b"HOME".to_vec(), home.to_vec()),
    ];
    if let Some(user) = user {
        fixed.push((b"USER".to_vec(), user.to_vec()));
        fixed.push((b"LOGNAME".to_vec(), user.to_vec()));
    }
    env.retain(|(n, _)| !matches!(n.as_slice(), b"PATH" | b"HOME" | b"USER" | b"LOGNAME"));
    fixed.append(env);
    *env = fixed;
}

/// The names of an environment, for the audit and logs (values are never recorded).
pub fn names(env: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    env.iter().map(|(n, _)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn rule(pass: &[&str], drop: &[&str]) -> EnvRule {
        EnvRule {
            pass: pass.iter().map(|s| s.to_string()).collect(),
            drop: drop.iter().map(|s| s.to_string()).collect(),
        }
    }

    const CALLER: &[(&str, &str)] = &[
        ("PATH", "/home/agent/bin:/usr/bin"),
        ("OPENAI_API_KEY", "sk-secret"),
        ("HOME", "/home/agent"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C"),
        ("LCX", "no"),
        ("TERM", "xterm"),
        ("TZ", "UTC"),
        ("USER", "agent"),
        ("VIRTUAL_ENV", "/w/.venv"),
        ("CLAWRDEN_SOCKET", "/run/clawrden/warden.sock"),
        ("CLAWRDEN_PARENT_REQUEST", "forged"),
        ("GIT_AUTHOR_NAME", "a"),
    ];

    #[test]
    fn a_warden_side_command_keeps_only_the_harmless_names_and_gets_the_fixed_ones() {
        let mut got = for_warden_side(&env(CALLER), &rule(&[], &[]), "01REQ", b"/srv/w.sock");
        assert_eq!(
            got,
            env(&[
                ("LANG", "C.UTF-8"),
                ("LC_ALL", "C"),
                ("TERM", "xterm"),
                ("TZ", "UTC"),
                ("CLAWRDEN_SOCKET", "/srv/w.sock"),
                ("CLAWRDEN_PARENT_REQUEST", "01REQ"),
            ])
        );
        set_identity(&mut got, b"/usr/bin:/bin", b"/home/deploy", Some(b"deploy"));
        assert_eq!(
            got[..4],
            env(&[
                ("PATH", "/usr/bin:/bin"),
                ("HOME", "/home/deploy"),
                ("USER", "deploy"),
                ("LOGNAME", "deploy"),
            ])[..]
        );
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn env_pass_adds_names_but_never_the_fixed_ones() {
        let got = for_warden_side(
            &env(CALLER),
            &rule(
                &["GIT_*", "PATH", "HOME", "CLAWRDEN_*", "USER"],
                &["TZ", "LC_*"],
            ),
            "r",
            b"/s",
        );
        assert_eq!(
            got,
            env(&[
                ("LANG", "C.UTF-8"),
                ("TERM", "xterm"),
                ("GIT_AUTHOR_NAME", "a"),
                ("CLAWRDEN_SOCKET", "/s"),
                ("CLAWRDEN_PARENT_REQUEST", "r"),
            ])
        );
    }

    #[test]
    fn a_mirror_command_gets_the_callers_environment_minus_drop() {
        let got = for_mirror(&env(CALLER), &rule(&[], &["OPENAI_*"]), "01REQ");
        let names: Vec<&[u8]> = got.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(
            names,
            [
                &b"PATH"[..],
                b"HOME",
                b"LANG",
                b"LC_ALL",
                b"LCX",
                b"TERM",
                b"TZ",
                b"USER",
                b"VIRTUAL_ENV",
                b"CLAWRDEN_SOCKET",
                b"GIT_AUTHOR_NAME",
                b"CLAWRDEN_PARENT_REQUEST",
            ]
        );
        assert_eq!(got[0].1, b"/home/agent/bin:/usr/bin");
        assert_eq!(got.last().unwrap().1, b"01REQ");
    }

    #[test]
    fn malformed_and_duplicate_names_are_dropped() {
        let mut e = env(&[("PATH", "/a"), ("PATH", "/b"), ("LANG", "x")]);
        e.push((b"PA=TH".to_vec(), b"x".to_vec()));
        e.push((Vec::new(), b"x".to_vec()));
        let got = for_mirror(&e, &rule(&[], &[]), "real");
        assert_eq!(
            got,
            env(&[
                ("PATH", "/a"),
                ("LANG", "x"),
                ("CLAWRDEN_PARENT_REQUEST", "real")
            ])
        );
    }

    #[test]
    fn the_socket_of_nested_calls_passes() {
        // Mirror: the caller's own socket path, which is valid where the command runs.
        let caller = env(&[("CLAWRDEN_SOCKET", "/tmp/w.sock"), ("SECRET", "x")]);
        let got = for_mirror(&caller, &rule(&[], &["SECRET"]), "r");
        assert_eq!(
            got,
            env(&[
                ("CLAWRDEN_SOCKET", "/tmp/w.sock"),
                ("CLAWRDEN_PARENT_REQUEST", "r")
            ])
        );
        // Warden side: the socket the call came in on, whatever the caller said.
        let got = for_warden_side(&caller, &rule(&[], &[]), "r", b"/srv/w.sock");
        assert_eq!(
            got,
            env(&[
                ("CLAWRDEN_SOCKET", "/srv/w.sock"),
                ("CLAWRDEN_PARENT_REQUEST", "r")
            ])
        );
    }

    #[test]
    fn names_carry_no_values() {
        let e = env(&[("API_KEY", "hunter2"), ("PATH", "/bin")]);
        let n = names(&e);
        assert_eq!(n, vec![b"API_KEY".to_vec(), b"PATH".to_vec()]);
        assert!(!n.iter().any(|x| x.windows(7).any(|w| w == b"hunter2")));
    }
}
