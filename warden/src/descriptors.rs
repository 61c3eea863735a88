//! The caller's descriptors on the warden's side: which of those the shim attached the
//! command gets, what a call that names a descriptor the executor cannot pass is told,
//! and how descriptors are recorded in the audit (docs/security.md, section 11).

use std::os::fd::OwnedFd;

use clawrden_protocol::{names_inherited_fd, FdKind, Request};
use serde_json::{json, Value};

use crate::executor::PassedFds;

/// The descriptors the shim attached, matched to the numbers its request names. `None`
/// (and every received descriptor closed, by drop) when it attached none, or not exactly
/// the ones it named: the call then streams instead.
pub fn accept(request: &Request, fds: Vec<OwnedFd>) -> Option<PassedFds> {
    if !request.fds_attached {
        if !fds.is_empty() {
            tracing::debug!(
                count = fds.len(),
                "closing descriptors sent without fds_attached"
            );
        }
        return None;
    }
    let numbers = request.attached_fds();
    if fds.len() != numbers.len() {
        tracing::debug!(
            expected = numbers.len(),
            received = fds.len(),
            "the shim attached other descriptors than its request names; streaming instead"
        );
        return None;
    }
    let mut passed = PassedFds::default();
    for (number, fd) in numbers.into_iter().zip(fds) {
        match number {
            0..=2 => passed.stdio[number as usize] = Some(fd),
            n => passed.extra.push((n, fd)),
        }
    }
    Some(passed)
}

/// Why `argv` cannot run with `executor`, which can (`passes`) or cannot give a command the
/// caller's descriptors; with `stream_only` (the warden's --stream-only) none does.
pub fn refusal(
    argv: &[Vec<u8>],
    executor: &str,
    passes: bool,
    stream_only: bool,
) -> Option<String> {
    if passes && !stream_only {
        return None;
    }
    let who = if passes {
        format!("the {executor} executor with --stream-only")
    } else {
        format!("the {executor} executor")
    };
    unreachable_reference(argv, &who)
}

/// Why `argv` cannot run where descriptors cannot be passed (`who`: "the mirror
/// executor"): an argument names a descriptor above 2 of the caller's (`/dev/fd/63` from
/// `diff <(a) <(b)`), which would not exist for the command; it would read nothing or
/// fail confusingly. `None` when no argument does.
pub fn unreachable_reference(argv: &[Vec<u8>], who: &str) -> Option<String> {
    argv.iter().skip(1).find_map(|arg| {
        let fd = names_inherited_fd(arg)?;
        let shown = clawrden_policy::shell_quote(arg);
        let shown = crate::frames::bounded(&shown);
        Some(format!(
            "argument {shown} names descriptor {fd} of the caller, which {who} cannot pass \
             to the command (descriptors reach commands only through the local executor); \
             write the data to a file and pass its path instead"
        ))
    })
}

/// Audit value of the caller's descriptors: the kinds of 0, 1 and 2, and each descriptor
/// above 2 with its number and kind (and how many were beyond the cap, when any).
pub fn described(request: &Request) -> Value {
    let mut v = json!({
        "stdio": request.stdio.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        "extra": request
            .extra_fds
            .iter()
            .map(|f| json!({ "fd": f.fd, "kind": f.kind.as_str() }))
            .collect::<Vec<_>>(),
    });
    if request.extra_fds_dropped > 0 {
        v["extra_not_passed"] = json!(request.extra_fds_dropped);
    }
    v
}

/// Audit value of what the command got: the numbers of the caller's descriptors it was
/// handed as they are, and whether it runs on a PTY.
pub fn given(stdio: &[FdKind; 3], passed: Option<&PassedFds>) -> Value {
    let numbers: Vec<u32> = match passed {
        None => Vec::new(),
        Some(p) => (0..3u32)
            .filter(|&i| p.stdio[i as usize].is_some())
            .chain(p.extra.iter().map(|(n, _)| *n))
            .collect(),
    };
    json!({
        "passed": numbers,
        "terminal": stdio.contains(&FdKind::Terminal),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawrden_protocol::ExtraFd;

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn request() -> Request {
        Request {
            stdio: [FdKind::Pipe, FdKind::File, FdKind::Closed],
            extra_fds: vec![
                ExtraFd {
                    fd: 3,
                    kind: FdKind::File,
                },
                ExtraFd {
                    fd: 63,
                    kind: FdKind::Pipe,
                },
            ],
            fds_attached: true,
            ..Request::default()
        }
    }

    #[test]
    fn attached_descriptors_land_at_the_numbers_the_request_names() {
        let p = accept(&request(), (0..4).map(|_| devnull()).collect()).unwrap();
        assert!(p.stdio[0].is_some() && p.stdio[1].is_some() && p.stdio[2].is_none());
        assert_eq!(p.extra.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [3, 63]);
        assert_eq!(
            given(&request().stdio, Some(&p)),
            json!({ "passed": [0, 1, 3, 63], "terminal": false })
        );
    }

    #[test]
    fn a_count_that_does_not_match_the_request_streams_instead() {
        assert!(accept(&request(), (0..3).map(|_| devnull()).collect()).is_none());
        assert!(accept(&request(), (0..5).map(|_| devnull()).collect()).is_none());
        let mut r = request();
        r.fds_attached = false;
        assert!(accept(&r, vec![devnull()]).is_none());
    }

    #[test]
    fn a_reference_to_a_descriptor_above_2_is_explained() {
        let argv = |args: &[&str]| -> Vec<Vec<u8>> {
            args.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        assert_eq!(
            unreachable_reference(
                &argv(&["diff", "/dev/fd/63", "/dev/fd/62"]),
                "the mirror executor"
            )
            .as_deref(),
            Some(
                "argument /dev/fd/63 names descriptor 63 of the caller, which the mirror \
                 executor cannot pass to the command (descriptors reach commands only \
                 through the local executor); write the data to a file and pass its path \
                 instead"
            )
        );
        let fine = argv(&["cat", "/dev/fd/0", "/dev/stdin"]);
        assert!(unreachable_reference(&fine, "the mirror executor").is_none());
        // argv[0] is the tool's name, never a data path.
        assert!(unreachable_reference(&argv(&["/dev/fd/5"]), "the mirror executor").is_none());
    }

    #[test]
    fn the_audit_names_every_descriptor_by_number_and_kind() {
        let mut r = request();
        r.extra_fds_dropped = 3;
        assert_eq!(
            described(&r),
            json!({
                "stdio": ["pipe", "file", "closed"],
                "extra": [{ "fd": 3, "kind": "file" }, { "fd": 63, "kind": "pipe" }],
                "extra_not_passed": 3,
            })
        );
    }
}
