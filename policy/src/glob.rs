//! Shell-style globs matched against bytes.
//!
//! `*` any run, `?` one character, `[abc]` / `[a-z]` / `[!x]` classes, `\` escapes.
//! Input is matched as bytes: where the input holds valid UTF-8, `?` and classes take
//! one whole character; a byte that is not part of valid UTF-8 counts as one character
//! that no class item names (so only `?`, `*` and negated classes match it).
//!
//! In path mode (`cwd`), `*` and `?` do not match `/`, `**` does, `**/` matches zero or
//! more whole directories and a trailing `/**` also matches the directory itself.

use std::fmt;

/// How `*` treats `/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GlobMode {
    /// `*` matches any bytes, `**` is the same as `*`.
    Plain,
    /// `*` stops at `/`; `**` crosses it.
    Path,
}

#[derive(Clone, Debug)]
enum Tok {
    Lit(Vec<u8>),
    One,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `*`: any run (in path mode, without `/`).
    Star,
    /// `**` not bounded by `/` in path mode: any run, `/` included.
    DeepStar,
    /// `**/` in path mode: empty, or any run that ends in `/`.
    DeepDirs,
    /// Trailing `/**` in path mode: empty, or `/` followed by anything.
    DeepTail,
}

/// A compiled glob pattern.
#[derive(Clone)]
pub struct Glob {
    source: String,
    mode: GlobMode,
    toks: Vec<Tok>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub(crate) fn new(pattern: &str, mode: GlobMode) -> Result<Glob, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks: Vec<Tok> = Vec::new();
        let mut i = 0;
        let push_lit = |toks: &mut Vec<Tok>, c: char| {
            let mut buf = [0u8; 4];
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            if let Some(Tok::Lit(v)) = toks.last_mut() {
                v.extend_from_slice(bytes);
            } else {
                toks.push(Tok::Lit(bytes.to_vec()));
            }
        };
        while i < chars.len() {
            match chars[i] {
                '\\' => {
                    let Some(&c) = chars.get(i + 1) else {
                        return Err(format!(
                            "bad glob `{pattern}`: trailing backslash escapes nothing; write `\\\\` for a literal backslash"
                        ));
                    };
                    push_lit(&mut toks, c);
                    i += 2;
                }
                '?' => {
                    toks.push(Tok::One);
                    i += 1;
                }
                '*' => {
                    let mut n = 0;
                    while chars.get(i + n) == Some(&'*') {
                        n += 1;
                    }
                    let deep = n >= 2;
                    if !deep || mode == GlobMode::Plain {
                        if !matches!(toks.last(), Some(Tok::Star)) {
                            toks.push(Tok::Star);
                        }
                        i += n;
                        continue;
                    }
                    let at_start = i == 0;
                    let after_slash = i > 0 && chars[i - 1] == '/';
                    let before_slash = chars.get(i + n) == Some(&'/');
                    let at_end = i + n == chars.len();
                    if (at_start || after_slash) && before_slash {
                        toks.push(Tok::DeepDirs);
                        i += n + 1;
                    } else if after_slash && at_end {
                        // Turn the literal's trailing '/' into part of DeepTail.
                        if let Some(Tok::Lit(v)) = toks.last_mut() {
                            v.pop();
                            if v.is_empty() {
                                toks.pop();
                            }
                        }
                        toks.push(Tok::DeepTail);
                        i += n;
                    } else {
                        toks.push(Tok::DeepStar);
                        i += n;
                    }
                }
                '[' => {
                    let (tok, next) =
                        parse_class(&chars, i).map_err(|e| format!("bad glob `{pattern}`: {e}"))?;
                    toks.push(tok);
                    i = next;
                }
                c => {
                    push_lit(&mut toks, c);
                    i += 1;
                }
            }
        }
        Ok(Glob {
            source: pattern.to_owned(),
            mode,
            toks,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True if the pattern contains `/` outside a class (used to reject command globs).
    pub(crate) fn has_slash(&self) -> bool {
        self.toks
            .iter()
            .any(|t| matches!(t, Tok::Lit(v) if v.contains(&b'/')))
    }

    /// Whether `input` matches the whole pattern.
    ///
    /// Runs token by token over the set of input positions reachable so far: time
    /// O(tokens x input) and no recursion, so a long argv token cannot make matching
    /// slow or deep, whatever the pattern.
    pub fn matches(&self, input: &[u8]) -> bool {
        let n = input.len();
        let path = self.mode == GlobMode::Path;
        let mut here = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        here[0] = true;
        for tok in &self.toks {
            next.iter_mut().for_each(|b| *b = false);
            match tok {
                Tok::Lit(lit) => {
                    for p in (0..=n).filter(|&p| here[p]) {
                        if input[p..].starts_with(lit) {
                            next[p + lit.len()] = true;
                        }
                    }
                }
                Tok::One | Tok::Class { .. } => {
                    for p in (0..n).filter(|&p| here[p]) {
                        if let Some((unit, len)) = next_unit(input, p) {
                            if single_matches(tok, unit, path) {
                                next[p + len] = true;
                            }
                        }
                    }
                }
                Tok::Star | Tok::DeepStar => {
                    // Forward propagation: a reachable position reaches the one after
                    // its character, unless that character is a `/` `*` may not cross.
                    let stop_at_slash = path && matches!(tok, Tok::Star);
                    next.copy_from_slice(&here);
                    for p in 0..n {
                        if next[p] {
                            if let Some((unit, len)) = next_unit(input, p) {
                                if !(stop_at_slash && unit == Unit::Char('/')) {
                                    next[p + len] = true;
                                }
                            }
                        }
                    }
                }
                Tok::DeepDirs => {
                    next.copy_from_slice(&here);
                    let mut started = false;
                    for p in 0..n {
                        started |= here[p];
                        if started && input[p] == b'/' {
                            next[p + 1] = true;
                        }
                    }
                }
                Tok::DeepTail => {
                    // Always the last token: the rest is empty or starts with '/'.
                    return (0..=n).any(|p| here[p] && (p == n || input[p] == b'/'));
                }
            }
            if !next.iter().any(|&b| b) {
                return false;
            }
            std::mem::swap(&mut here, &mut next);
        }
        here[n]
    }
}

/// Whether a `?` or class token takes this one character.
fn single_matches(tok: &Tok, unit: Unit, path: bool) -> bool {
    if path && unit == Unit::Char('/') {
        return false;
    }
    match tok {
        Tok::One => true,
        Tok::Class { negated, ranges } => {
            let inside = match unit {
                Unit::Char(c) => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi),
                Unit::Byte(_) => false,
            };
            inside != *negated
        }
        _ => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Char(char),
    Byte(u8),
}

/// The character (or stray byte) at `pos`, and its length in bytes.
fn next_unit(input: &[u8], pos: usize) -> Option<(Unit, usize)> {
    let first = *input.get(pos)?;
    let len = match first {
        0x00..=0x7f => return Some((Unit::Char(first as char), 1)),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Some((Unit::Byte(first), 1)),
    };
    match input
        .get(pos..pos + len)
        .and_then(|b| std::str::from_utf8(b).ok())
    {
        Some(s) => s.chars().next().map(|c| (Unit::Char(c), len)),
        None => Some((Unit::Byte(first), 1)),
    }
}

/// Parses a `[...]` class starting at `chars[start] == '['`; returns the token and the
/// index just past the closing `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(Tok, usize), String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(format!(
                "unclosed `[` at character {}; close the class with `]` or write `\\[` for a literal `[`",
                start + 1
            ));
        };
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i).ok_or_else(|| {
                format!(
                    "unclosed `[` at character {}; close the class with `]`",
                    start + 1
                )
            })?
        } else {
            c
        };
        i += 1;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let mut hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i).ok_or_else(|| {
                    format!(
                        "unclosed `[` at character {}; close the class with `]`",
                        start + 1
                    )
                })?;
                i += 1;
            }
            if hi < lo {
                return Err(format!("range `{lo}-{hi}` is reversed; write `{hi}-{lo}`"));
            }
            ranges.push((lo, hi));
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok((Tok::Class { negated, ranges }, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(p: &str) -> Glob {
        Glob::new(p, GlobMode::Plain).unwrap()
    }
    fn path(p: &str) -> Glob {
        Glob::new(p, GlobMode::Path).unwrap()
    }

    #[test]
    fn plain_glob_table() {
        let cases: &[(&str, &[u8], bool)] = &[
            ("git", b"git", true),
            ("git", b"gitk", false),
            ("git", b"Git", false),
            ("git*", b"git-lfs", true),
            ("git*", b"git", true),
            ("*", b"", true),
            ("*", b"a/b", true),
            ("**", b"a/b", true),
            ("?", b"a", true),
            ("?", b"", false),
            ("?", b"ab", false),
            ("?", "é".as_bytes(), true),
            ("?", b"\xff", true),
            ("??", b"\xc3", false),
            ("[abc]", b"b", true),
            ("[abc]", b"d", false),
            ("[a-z]x", b"qx", true),
            ("[a-z]x", b"Qx", false),
            ("[!x]", b"y", true),
            ("[!x]", b"x", false),
            ("[^x]", b"y", true),
            ("[!x]", b"\xfe", true),
            ("[]]", b"]", true),
            ("[a-]", b"-", true),
            ("[é]", "é".as_bytes(), true),
            ("\\*", b"*", true),
            ("\\*", b"a", false),
            ("a\\?b", b"a?b", true),
            ("a\\?b", b"axb", false),
            ("[\\]]", b"]", true),
            ("--force*", b"--force-with-lease", true),
            ("--force*", b"-f", false),
            ("*.tar.gz", b"x.tar.gz", true),
            ("*a*a*a*a*a*b", &[b'a'; 60], false),
            ("\u{fffd}", b"\xff", false),
        ];
        for &(pat, input, want) in cases {
            assert_eq!(
                plain(pat).matches(input),
                want,
                "pattern {pat:?} on {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn long_adversarial_input_matches_in_linear_passes() {
        let mut input = vec![b'a'; 1 << 20];
        assert!(!plain("*a*a*a*a*a*a*b").matches(&input));
        input.push(b'b');
        assert!(plain("*a*a*a*a*a*a*b").matches(&input));
        assert!(!path("/**/*a*a*a*/x").matches(&input));
    }

    #[test]
    fn path_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/work/*", "/work/a", true),
            ("/work/*", "/work/a/b", false),
            ("/work/**", "/work/a/b", true),
            ("/work/**", "/work", true),
            ("/work/**", "/work/", true),
            ("/work/**", "/workshop", false),
            ("/work/**/src", "/work/src", true),
            ("/work/**/src", "/work/a/b/src", true),
            ("/work/**/src", "/work/a/bsrc", false),
            ("**/src", "/x/src", true),
            ("**/src", "src", true),
            ("/home/?", "/home/a", true),
            ("/home/?", "/home//", false),
            ("/home/[!a]", "/home//", false),
            ("/a**b", "/a/x/b", true),
            ("/tmp", "/tmp", true),
            ("/tmp", "/tmp/", false),
        ];
        for &(pat, input, want) in cases {
            assert_eq!(
                path(pat).matches(input.as_bytes()),
                want,
                "{pat} on {input}"
            );
        }
    }

    #[test]
    fn bad_globs_are_rejected_with_a_reason() {
        let cases = [
            (
                "[abc",
                "bad glob `[abc`: unclosed `[` at character 1; close the class with `]` or write `\\[` for a literal `[`",
            ),
            (
                "x[",
                "bad glob `x[`: unclosed `[` at character 2; close the class with `]` or write `\\[` for a literal `[`",
            ),
            (
                "a\\",
                "bad glob `a\\`: trailing backslash escapes nothing; write `\\\\` for a literal backslash",
            ),
            ("[z-a]", "bad glob `[z-a]`: range `z-a` is reversed; write `a-z`"),
        ];
        for (pat, want) in cases {
            assert_eq!(Glob::new(pat, GlobMode::Plain).unwrap_err(), want);
        }
    }
}
