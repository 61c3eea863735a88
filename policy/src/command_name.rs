//! Whether `argv[0]` names a command at all.
//!
//! Rules match `command` on the basename of `argv[0]`, and executors derive the program
//! to run from that same name. A basename that is not a plain file name would let the two
//! disagree: `/usr/bin/rm/.` has the basename `.`, which no rule about `rm` sees, while a
//! path-resolving executor still reaches `/usr/bin/rm`. So such calls are refused before
//! any rule is consulted (README, "Policy reference").

use std::fmt;

use crate::quote::{is_invisible_or_control, shell_quote};

/// Longest part of a refused `argv[0]` quoted in the reason (the rest is cut with `…`):
/// the reason reaches the audit and the agent, and `argv[0]` may be megabytes long.
const QUOTED_MAX: usize = 80;

/// Why `argv[0]` is not a command name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadCommandName {
    /// The call has no `argv[0]`.
    NoArgv,
    /// `argv[0]` is the empty string.
    Empty,
    /// `argv[0]` ends in `/`: it names a directory.
    TrailingSlash(Vec<u8>),
    /// The last path component is `.` or `..`.
    DotComponent(Vec<u8>),
    /// `argv[0]` holds a control character (NUL, newline, ESC, DEL, C1, …) or a character
    /// that is invisible or reorders text (bidi controls, zero-width characters).
    HiddenCharacter(Vec<u8>),
    /// `argv[0]` is not valid UTF-8.
    NotUtf8(Vec<u8>),
}

fn quoted(name: &[u8]) -> String {
    if name.len() <= QUOTED_MAX {
        return shell_quote(name);
    }
    let mut cut = QUOTED_MAX;
    // Cut on a character boundary where the text is UTF-8, so the quote stays readable.
    while cut > 0 && (name[cut] & 0xc0) == 0x80 {
        cut -= 1;
    }
    format!("{}…", shell_quote(&name[..cut]))
}

impl fmt::Display for BadCommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadCommandName::NoArgv => f.write_str("the call has no argv[0]; there is no command to decide"),
            BadCommandName::Empty => f.write_str("argv[0] is empty; call the tool by its name"),
            BadCommandName::TrailingSlash(n) => write!(
                f,
                "argv[0] {} ends in `/`, so it names a directory, not a command; call the tool by its name",
                quoted(n)
            ),
            BadCommandName::DotComponent(n) => write!(
                f,
                "argv[0] {} ends in `.` or `..`, which is not a command name; call the tool by its name",
                quoted(n)
            ),
            BadCommandName::HiddenCharacter(n) => write!(
                f,
                "argv[0] {} holds control or invisible characters; call the tool by its name",
                quoted(n)
            ),
            BadCommandName::NotUtf8(n) => write!(
                f,
                "argv[0] {} is not valid UTF-8; call the tool by its name",
                quoted(n)
            ),
        }
    }
}

impl std::error::Error for BadCommandName {}

/// The command name of a call: the basename of `argv[0]`, when it is a plain file name.
///
/// Refused: no `argv[0]`; an empty one; one ending in `/`; a last component `.` or `..`;
/// control characters, invisible or bidi characters anywhere in `argv[0]`; bytes that are
/// not UTF-8. Everything else (`rm`, `/usr/bin/rm`, `./rm`, `../bin/rm`) gives `rm`.
pub fn command_name(argv: &[Vec<u8>]) -> Result<&[u8], BadCommandName> {
    let Some(first) = argv.first() else {
        return Err(BadCommandName::NoArgv);
    };
    if first.is_empty() {
        return Err(BadCommandName::Empty);
    }
    let Ok(text) = std::str::from_utf8(first) else {
        return Err(BadCommandName::NotUtf8(first.clone()));
    };
    if text.chars().any(is_invisible_or_control) {
        return Err(BadCommandName::HiddenCharacter(first.clone()));
    }
    if first.ends_with(b"/") {
        return Err(BadCommandName::TrailingSlash(first.clone()));
    }
    let base = crate::matcher::basename(first);
    if base == b"." || base == b".." {
        return Err(BadCommandName::DotComponent(first.clone()));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(argv0: &[u8]) -> Result<Vec<u8>, String> {
        command_name(&[argv0.to_vec(), b"-rf".to_vec()])
            .map(<[u8]>::to_vec)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plain_names_and_paths_give_their_basename() {
        for (argv0, want) in [
            (&b"rm"[..], &b"rm"[..]),
            (b"/usr/bin/rm", b"rm"),
            (b"./rm", b"rm"),
            (b"../bin/rm", b"rm"),
            (b"/usr/bin/../bin/rm", b"rm"),
            (b"-sh", b"-sh"),
            (b"my tool", b"my tool"),
            ("café".as_bytes(), "café".as_bytes()),
        ] {
            assert_eq!(name(argv0), Ok(want.to_vec()), "{argv0:?}");
        }
    }

    #[test]
    fn names_that_are_not_commands_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "argv[0] is empty; call the tool by its name"),
            (b"/usr/bin/rm/.", "argv[0] /usr/bin/rm/. ends in `.` or `..`, which is not a command name; call the tool by its name"),
            (b"/usr/bin/rm/..", "argv[0] /usr/bin/rm/.. ends in `.` or `..`, which is not a command name; call the tool by its name"),
            (b".", "argv[0] . ends in `.` or `..`, which is not a command name; call the tool by its name"),
            (b"..", "argv[0] .. ends in `.` or `..`, which is not a command name; call the tool by its name"),
            (b"/usr/bin/rm/", "argv[0] /usr/bin/rm/ ends in `/`, so it names a directory, not a command; call the tool by its name"),
            (b"/", "argv[0] / ends in `/`, so it names a directory, not a command; call the tool by its name"),
            (b"rm\n", "argv[0] $'rm\\n' holds control or invisible characters; call the tool by its name"),
            (b"r\x00m", "argv[0] $'r\\x00m' holds control or invisible characters; call the tool by its name"),
            (b"\x1b[2Jrm", "argv[0] $'\\x1b[2Jrm' holds control or invisible characters; call the tool by its name"),
            ("rm\u{202e}".as_bytes(), "argv[0] $'rm\\xe2\\x80\\xae' holds control or invisible characters; call the tool by its name"),
            ("r\u{200b}m".as_bytes(), "argv[0] $'r\\xe2\\x80\\x8bm' holds control or invisible characters; call the tool by its name"),
            (b"r\xffm", "argv[0] $'r\\xffm' is not valid UTF-8; call the tool by its name"),
        ];
        for &(argv0, want) in cases {
            assert_eq!(name(argv0), Err(want.to_owned()), "{argv0:?}");
        }
        assert_eq!(
            command_name(&[]).map_err(|e| e.to_string()),
            Err("the call has no argv[0]; there is no command to decide".to_owned())
        );
    }

    #[test]
    fn a_long_refused_name_is_cut_in_the_reason() {
        let mut long = vec![b'a'; 5000];
        long.push(b'/');
        let reason = name(&long).unwrap_err();
        assert_eq!(
            reason,
            format!(
                "argv[0] {}… ends in `/`, so it names a directory, not a command; call the tool by its name",
                "a".repeat(80)
            )
        );
    }
}
