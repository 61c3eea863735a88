//! What the record (audit and store) keeps of a request: at most
//! `max_request_bytes_kept` bytes of argv and environment names, counted as written
//! (JSON-escaped: a control character costs six bytes, a non-UTF-8 byte two), so a
//! request cannot make the record many times larger than itself. Beyond the cap the
//! record keeps a prefix, marked `truncated` with the totals and the SHA-256 of the whole
//! argv. The policy always decides on the whole request. `cwd` and `tool_path` are kept
//! up to [`MAX_PATH_KEPT`] bytes each. See README.md, "Audit".

use clawrden_protocol::Request;
use serde_json::{json, Value};

use crate::store::argv_sha256;

/// Bytes kept of `cwd` and of `tool_path` (Linux's PATH_MAX).
pub const MAX_PATH_KEPT: usize = 4096;

/// The recorded form of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRequest {
    pub argv: Vec<Vec<u8>>,
    pub env_names: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub tool_path: Vec<u8>,
    /// Set when anything was cut.
    pub truncated: Option<Truncated>,
}

/// The whole request's sizes, for a record that keeps only a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub argv_count: usize,
    pub argv_bytes: usize,
    /// [`argv_sha256`] of the whole argv (length-prefixed tokens).
    pub argv_sha256: String,
    pub env_count: usize,
    pub cwd_bytes: usize,
    pub tool_path_bytes: usize,
}

impl Truncated {
    /// The `truncated` field of the audit `request` line and of the API's request view.
    pub fn to_value(&self) -> Value {
        json!({
            "argv_count": self.argv_count,
            "argv_bytes": self.argv_bytes,
            "argv_sha256": self.argv_sha256,
            "env_count": self.env_count,
            "cwd_bytes": self.cwd_bytes,
            "tool_path_bytes": self.tool_path_bytes,
        })
    }
}

/// Bytes of argv and environment (names and values) a request holds: what an ask keeps
/// in memory until it is answered.
pub fn request_bytes(r: &Request) -> usize {
    let argv: usize = r.argv.iter().map(Vec::len).sum();
    let env: usize = r.env.iter().map(|(n, v)| n.len() + v.len()).sum();
    argv + env + r.cwd.len()
}

/// The size an ask is judged by against `max`: its bytes in memory, and more than `max`
/// whenever the record could not keep it whole (an approver must see all of what they
/// approve).
pub fn ask_bytes(r: &Request, kept: &KeptRequest, max: usize) -> usize {
    // Not truncated means the recorded form fits in `max` already.
    let whole = request_bytes(r);
    if kept.truncated.is_some() {
        whole.max(max.saturating_add(1))
    } else {
        whole
    }
}

/// Bytes `token` takes inside a JSON array as the record encodes it (a string when it is
/// UTF-8, else `{"hex":"…"}`), with its separating comma.
pub fn encoded_len(token: &[u8]) -> usize {
    match std::str::from_utf8(token) {
        Ok(s) => {
            let escaped: usize = s
                .chars()
                .map(|c| match c {
                    '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
                    c if (c as u32) < 0x20 => 6,
                    c => c.len_utf8(),
                })
                .sum();
            escaped + 3
        }
        Err(_) => 2 * token.len() + 11,
    }
}

/// The longest prefix of `token` whose encoding fits in `room` bytes. Reads at most
/// `room` bytes of the token, however long it is.
fn fitting_prefix(token: &[u8], room: usize) -> Vec<u8> {
    // Every byte costs at least one, so no prefix longer than `room` fits.
    let (mut lo, mut hi) = (0usize, token.len().min(room));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if encoded_len(&token[..mid]) <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    // Never split a character: a prefix that ends inside one ends before it instead
    // (and is then written as a string, as the whole token would be).
    let boundary = |end: usize| match std::str::from_utf8(&token[..end]) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => end,
    };
    let mut end = boundary(lo);
    // Cutting back to a boundary can turn a hex prefix into a string one, which escapes
    // control characters at six bytes each: shrink until it fits.
    loop {
        let cost = encoded_len(&token[..end]);
        if end == 0 || cost <= room {
            return token[..end].to_vec();
        }
        end = boundary((end * room / cost).min(end - 1));
    }
}

/// Keeps whole tokens while they fit in `budget`, then the fitting prefix of the next;
/// returns the kept tokens, whether any were cut, and the budget left.
fn keep_tokens<'a>(
    tokens: impl Iterator<Item = &'a [u8]>,
    budget: usize,
) -> (Vec<Vec<u8>>, bool, usize) {
    let mut budget = budget;
    let mut kept = Vec::new();
    for token in tokens {
        // A token longer than the budget cannot fit: do not scan all of it.
        let cost = if token.len() >= budget {
            usize::MAX
        } else {
            encoded_len(token)
        };
        if cost <= budget {
            budget -= cost;
            kept.push(token.to_vec());
            continue;
        }
        if budget > 3 {
            kept.push(fitting_prefix(token, budget));
        }
        return (kept, true, 0);
    }
    (kept, false, budget)
}

fn cut_path(path: &[u8]) -> (Vec<u8>, bool) {
    if path.len() <= MAX_PATH_KEPT {
        (path.to_vec(), false)
    } else {
        (fitting_prefix(path, MAX_PATH_KEPT), true)
    }
}

impl KeptRequest {
    /// What the record keeps of `r` under a budget of `max` bytes.
    pub fn of(r: &Request, max: usize) -> KeptRequest {
        let (argv, argv_cut, left) = keep_tokens(r.argv.iter().map(Vec::as_slice), max);
        let (env_names, env_cut, _) = keep_tokens(r.env.iter().map(|(n, _)| n.as_slice()), left);
        let (cwd, cwd_cut) = cut_path(&r.cwd);
        let (tool_path, tool_cut) = cut_path(&r.tool_path);
        let truncated = (argv_cut || env_cut || cwd_cut || tool_cut).then(|| Truncated {
            argv_count: r.argv.len(),
            argv_bytes: r.argv.iter().map(Vec::len).sum(),
            argv_sha256: argv_sha256(&r.argv),
            env_count: r.env.len(),
            cwd_bytes: r.cwd.len(),
            tool_path_bytes: r.tool_path.len(),
        });
        KeptRequest {
            argv,
            env_names,
            cwd,
            tool_path,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv: &[&[u8]], env: &[&[u8]]) -> Request {
        Request {
            argv: argv.iter().map(|a| a.to_vec()).collect(),
            tool_path: b"/usr/bin/x".to_vec(),
            cwd: b"/work".to_vec(),
            env: env.iter().map(|n| (n.to_vec(), b"v".to_vec())).collect(),
            ..Request::default()
        }
    }

    fn written(tokens: &[Vec<u8>]) -> usize {
        crate::store::encode_argv(tokens).len()
    }

    #[test]
    fn encoded_len_is_what_the_record_writes() {
        for token in [
            &b"plain"[..],
            b"",
            b"\x01\x02\x1f",
            b"quote\" back\\slash\n\t",
            "é\u{7f}".as_bytes(),
            b"\xff\x00a",
        ] {
            let one = vec![token.to_vec()];
            // `[x]` is the token's encoding plus brackets, minus the comma.
            assert_eq!(encoded_len(token), written(&one) - 2 + 1, "{token:?}");
        }
    }

    #[test]
    fn small_requests_are_kept_whole() {
        let r = request(&[b"git", b"status"], &[b"PATH", b"HOME"]);
        let k = KeptRequest::of(&r, 1024);
        assert_eq!(k.argv, r.argv);
        assert_eq!(k.env_names, [b"PATH".to_vec(), b"HOME".to_vec()]);
        assert_eq!(k.truncated, None);
    }

    #[test]
    fn control_characters_are_cut_by_their_written_size() {
        let big = vec![1u8; 4 << 20];
        let r = request(&[b"rm", &big], &[b"PATH"]);
        let k = KeptRequest::of(&r, 64 * 1024);
        assert!(written(&k.argv) <= 64 * 1024 + 2, "{}", written(&k.argv));
        assert_eq!(k.argv[0], b"rm");
        // Six bytes each once escaped: about 64 KiB / 6 of them.
        assert_eq!(k.argv[1].len(), (64 * 1024 - 6 - 3) / 6);
        assert!(k.env_names.is_empty());
        let t = k.truncated.expect("marked truncated");
        assert_eq!(
            (t.argv_count, t.argv_bytes, t.env_count),
            (2, 2 + (4 << 20), 1)
        );
        assert_eq!(t.argv_sha256, argv_sha256(&r.argv));
    }

    #[test]
    fn utf8_tokens_are_cut_on_character_boundaries_and_hex_on_bytes() {
        let r = request(&["ééééé".as_bytes()], &[]);
        let k = KeptRequest::of(&r, 8);
        assert_eq!(k.argv, ["éé".as_bytes().to_vec()]);
        let r = request(&[b"\xff\xfe\xfd\xfc"], &[]);
        let k = KeptRequest::of(&r, 15);
        assert_eq!(k.argv, [b"\xff\xfe".to_vec()]);
    }

    #[test]
    fn a_cut_inside_a_character_never_overshoots_the_budget() {
        let mut token = vec![1u8; 10];
        token.extend_from_slice("é".as_bytes());
        for room in 3..80 {
            let p = fitting_prefix(&token, room);
            assert!(encoded_len(&p) <= room, "room {room}: {p:?}");
            assert!(std::str::from_utf8(&p).is_ok());
        }
    }

    #[test]
    fn long_paths_are_cut_to_path_max() {
        let mut r = request(&[b"ls"], &[]);
        r.cwd = vec![b'a'; MAX_PATH_KEPT + 10];
        let k = KeptRequest::of(&r, 1024);
        assert_eq!(k.cwd.len(), MAX_PATH_KEPT - 3);
        assert_eq!(k.truncated.unwrap().cwd_bytes, MAX_PATH_KEPT + 10);
    }
}
