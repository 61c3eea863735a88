//! The environment an executed command gets: the agent's environment holds API keys, so
//! only an allowlist survives, plus what the deciding rule passes, minus what it drops.

use clawrden_policy::EnvRule;
use clawrden_protocol::{PARENT_REQUEST_ENV, SOCKET_ENV};

/// Names kept from the caller's environment whatever the rule says.
pub const ALLOWED: &[&str] = &["PATH", "HOME", "LANG", "TERM", "TZ", "USER"];

fn kept_by_default(name: &[u8]) -> bool {
    ALLOWED.iter().any(|a| a.as_bytes() == name)
        || name.starts_with(b"LC_")
        // Nested calls of the command come back through the shim, to the same socket.
        || name == SOCKET_ENV.as_bytes()
}

/// Builds the command's environment from the request's: allowlist (`PATH`, `HOME`, `LANG`,
/// `LC_*`, `TERM`, `TZ`, `USER`, and `CLAWRDEN_SOCKET` so nested calls reach the warden)
/// plus `rule.pass`, minus `rule.drop` (entries there are names or `PREFIX*`), then
/// `CLAWRDEN_PARENT_REQUEST=<request_id>`. Malformed names (empty, with `=` or NUL) are
/// dropped; of duplicated names the first wins, as with `getenv`.
pub fn scrub(
    env: &[(Vec<u8>, Vec<u8>)],
    rule: &EnvRule,
    request_id: &str,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (name, value) in env {
        if name.is_empty() || name.contains(&b'=') || name.contains(&0) {
            continue;
        }
        if name.as_slice() == PARENT_REQUEST_ENV.as_bytes() {
            continue;
        }
        let text = std::str::from_utf8(name).ok();
        let passed = text.is_some_and(|n| rule.passes(n));
        let dropped = text.is_some_and(|n| rule.drops(n));
        if !(kept_by_default(name) || passed) || dropped {
            continue;
        }
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    out.push((
        PARENT_REQUEST_ENV.as_bytes().to_vec(),
        request_id.as_bytes().to_vec(),
    ));
    out
}

/// The names of an environment, for the audit and logs (values are never recorded).
pub fn names(env: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    env.iter().map(|(n, _)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
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

    #[test]
    fn keeps_only_the_allowlist_and_sets_parent_request() {
        let got = scrub(
            &env(&[
                ("PATH", "/usr/bin"),
                ("OPENAI_API_KEY", "sk-secret"),
                ("HOME", "/home/a"),
                ("LANG", "C.UTF-8"),
                ("LC_ALL", "C"),
                ("LC_TIME", "de_DE"),
                ("LCX", "no"),
                ("TERM", "xterm"),
                ("TZ", "UTC"),
                ("USER", "agent"),
                ("AWS_SECRET_ACCESS_KEY", "x"),
            ]),
            &rule(&[], &[]),
            "01REQ",
        );
        assert_eq!(
            got,
            env(&[
                ("PATH", "/usr/bin"),
                ("HOME", "/home/a"),
                ("LANG", "C.UTF-8"),
                ("LC_ALL", "C"),
                ("LC_TIME", "de_DE"),
                ("TERM", "xterm"),
                ("TZ", "UTC"),
                ("USER", "agent"),
                ("CLAWRDEN_PARENT_REQUEST", "01REQ"),
            ])
        );
    }

    #[test]
    fn rule_pass_adds_and_drop_removes_even_allowlisted_names() {
        let got = scrub(
            &env(&[
                ("GIT_AUTHOR_NAME", "a"),
                ("HOME", "/h"),
                ("TZ", "UTC"),
                ("X", "1"),
                ("LC_ALL", "C"),
            ]),
            &rule(&["GIT_*"], &["TZ", "LC_*"]),
            "r",
        );
        assert_eq!(
            got,
            env(&[
                ("GIT_AUTHOR_NAME", "a"),
                ("HOME", "/h"),
                ("CLAWRDEN_PARENT_REQUEST", "r")
            ])
        );
    }

    #[test]
    fn callers_parent_request_is_replaced_and_malformed_names_dropped() {
        let mut e = env(&[
            ("CLAWRDEN_PARENT_REQUEST", "forged"),
            ("PATH", "/a"),
            ("PATH", "/b"),
        ]);
        e.push((b"PA=TH".to_vec(), b"x".to_vec()));
        e.push((Vec::new(), b"x".to_vec()));
        let got = scrub(&e, &rule(&["PA=TH"], &[]), "real");
        assert_eq!(
            got,
            env(&[("PATH", "/a"), ("CLAWRDEN_PARENT_REQUEST", "real")])
        );
    }

    #[test]
    fn the_socket_of_nested_calls_passes() {
        let got = scrub(
            &env(&[("CLAWRDEN_SOCKET", "/tmp/w.sock"), ("SECRET", "x")]),
            &rule(&[], &[]),
            "r",
        );
        assert_eq!(
            got,
            env(&[
                ("CLAWRDEN_SOCKET", "/tmp/w.sock"),
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
