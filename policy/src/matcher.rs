//! Matching one rule against one call, with the reason when it does not match.

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};

use crate::flags::{self, Flag};
use crate::glob::Glob;
use crate::quote::shell_quote;
use crate::{Call, Rule};

/// One element of a rule's `args` list.
#[derive(Clone, Debug)]
pub enum ArgPattern {
    /// `**`: any number of tokens, zero included.
    AnyTokens,
    /// A glob for exactly one token.
    Token(Glob),
}

impl fmt::Display for ArgPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgPattern::AnyTokens => f.write_str("**"),
            ArgPattern::Token(g) => f.write_str(g.as_str()),
        }
    }
}

/// An `args_regex`, anchored to the whole quoted command line.
#[derive(Clone, Debug)]
pub struct ArgsRegex {
    source: String,
    regex: Regex,
}

impl ArgsRegex {
    pub(crate) fn new(source: &str) -> Result<ArgsRegex, String> {
        let regex = RegexBuilder::new(&format!(r"\A(?:{source})\z"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                // Parse errors are multi-line drawings of our wrapped pattern; keep the
                // line that says what is wrong.
                let text = e.to_string();
                let what = text
                    .lines()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or(&text)
                    .to_owned();
                format!("bad args_regex `{source}`: {what}")
            })?;
        Ok(ArgsRegex {
            source: source.to_owned(),
            regex,
        })
    }

    /// The regex as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole `line` matches.
    pub fn is_match(&self, line: &[u8]) -> bool {
        self.regex.is_match(line)
    }
}

/// The bits of a call every rule looks at, computed once per call.
pub(crate) struct Prepared<'a> {
    pub call: &'a Call<'a>,
    pub command: &'a [u8],
    line: std::cell::OnceCell<String>,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(call: &'a Call<'a>) -> Prepared<'a> {
        let command = call.argv.first().map_or(&[][..], |a| basename(a));
        Prepared {
            call,
            command,
            line: std::cell::OnceCell::new(),
        }
    }

    /// argv with argv[0] replaced by its basename, each token shell-quoted, joined by
    /// single spaces: what `args_regex` sees.
    pub(crate) fn line(&self) -> &str {
        self.line.get_or_init(|| {
            let mut tokens = Vec::with_capacity(self.call.argv.len());
            if !self.call.argv.is_empty() {
                tokens.push(shell_quote(self.command));
            }
            tokens.extend(self.call.argv.iter().skip(1).map(|t| shell_quote(t)));
            tokens.join(" ")
        })
    }
}

/// The part after the last `/` (the whole thing when there is none).
pub(crate) fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Why a rule did not match a call.
pub(crate) enum Miss<'a> {
    EmptyArgv,
    Command {
        got: &'a [u8],
        patterns: &'a [Glob],
    },
    ArgsCount {
        given: usize,
        need: usize,
        exact: bool,
    },
    Arg {
        index: usize,
        got: &'a [u8],
        pattern: &'a Glob,
    },
    ArgsRun {
        from: usize,
        to: usize,
        run: &'a [ArgPattern],
    },
    Regex {
        line: &'a str,
        regex: &'a ArgsRegex,
    },
    Flags {
        flags: &'a [Flag],
    },
    Cwd {
        got: &'a [u8],
        pattern: &'a Glob,
    },
    Uid {
        got: u32,
        allowed: &'a [u32],
    },
    Prisoner {
        got: &'a str,
        patterns: &'a [Glob],
    },
}

fn list(patterns: &[Glob]) -> String {
    patterns
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn args_text(args: &[ArgPattern]) -> String {
    args.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Miss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::EmptyArgv => f.write_str("the call has an empty argv"),
            Miss::Command { got, patterns } if patterns.len() == 1 => write!(
                f,
                "command `{}` does not match `{}`",
                shell_quote(got),
                patterns[0]
            ),
            Miss::Command { got, patterns } => write!(
                f,
                "command `{}` matches none of {}",
                shell_quote(got),
                list(patterns)
            ),
            Miss::ArgsCount { given, need, exact } => write!(
                f,
                "args: {given} token{} given, pattern needs {} {need}",
                if *given == 1 { "" } else { "s" },
                if *exact { "exactly" } else { "at least" }
            ),
            Miss::Arg {
                index,
                got,
                pattern,
            } => write!(
                f,
                "argument {index} `{}` does not match `{pattern}`",
                shell_quote(got)
            ),
            Miss::ArgsRun { from, to, run } if from > to => write!(
                f,
                "args: no arguments left to match `{}` (it must come after argument {})",
                args_text(run),
                from - 1
            ),
            Miss::ArgsRun { from, to, run } => write!(
                f,
                "args: no run of arguments {from}..{to} matches `{}`",
                args_text(run)
            ),
            Miss::Regex { line, regex } => {
                write!(f, "args_regex `{}` does not match `{line}`", regex.as_str())
            }
            Miss::Flags { flags: listed } => {
                write!(f, "flags: no argument gives {}", flags::list(listed))
            }
            Miss::Cwd { got, pattern } => {
                write!(f, "cwd `{}` does not match `{pattern}`", shell_quote(got))
            }
            Miss::Uid { got, allowed } => write!(
                f,
                "uid {got} is not {}",
                allowed
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Miss::Prisoner { got, patterns } => {
                write!(f, "prisoner `{got}` does not match {}", list(patterns))
            }
        }
    }
}

impl Rule {
    /// `None` when the rule matches the call, else the first key that does not.
    pub(crate) fn miss<'a>(&'a self, p: &'a Prepared<'a>) -> Option<Miss<'a>> {
        let call = p.call;
        if let Some(patterns) = &self.command {
            if call.argv.is_empty() {
                return Some(Miss::EmptyArgv);
            }
            if !patterns.iter().any(|g| g.matches(p.command)) {
                return Some(Miss::Command {
                    got: p.command,
                    patterns,
                });
            }
        }
        if let Some(args) = &self.args {
            let tokens = call.argv.get(1..).unwrap_or_default();
            if let Some(miss) = match_args(args, tokens) {
                return Some(miss);
            }
        }
        if let Some(regex) = &self.args_regex {
            let line = p.line();
            if !regex.is_match(line.as_bytes()) {
                return Some(Miss::Regex { line, regex });
            }
        }
        if let Some(listed) = &self.flags {
            if flags::find(listed, call.argv).is_none() {
                return Some(Miss::Flags { flags: listed });
            }
        }
        if let Some(pattern) = &self.cwd {
            if !pattern.matches(call.cwd) {
                return Some(Miss::Cwd {
                    got: call.cwd,
                    pattern,
                });
            }
        }
        if let Some(allowed) = &self.uid {
            if !allowed.contains(&call.uid) {
                return Some(Miss::Uid {
                    got: call.uid,
                    allowed,
                });
            }
        }
        if let Some(patterns) = &self.prisoner {
            if !patterns.iter().any(|g| g.matches(call.prisoner.as_bytes())) {
                return Some(Miss::Prisoner {
                    got: call.prisoner,
                    patterns,
                });
            }
        }
        None
    }

    /// Why the rule matches (call only after `miss` returned `None`).
    pub(crate) fn describe_match(&self, p: &Prepared<'_>) -> String {
        let mut parts = Vec::new();
        if let Some(patterns) = &self.command {
            let hit = patterns.iter().find(|g| g.matches(p.command));
            if let Some(g) = hit {
                parts.push(format!(
                    "command `{}` matches `{g}`",
                    shell_quote(p.command)
                ));
            }
        }
        if let Some(args) = &self.args {
            parts.push(format!("args match `{}`", args_text(args)));
        }
        if let Some(regex) = &self.args_regex {
            parts.push(format!(
                "args_regex `{}` matches `{}`",
                regex.as_str(),
                p.line()
            ));
        }
        if let Some(hit) = self
            .flags
            .as_deref()
            .and_then(|f| flags::find(f, p.call.argv))
        {
            parts.push(format!("flags: {hit}"));
        }
        if let Some(g) = &self.cwd {
            parts.push(format!("cwd `{}` matches `{g}`", shell_quote(p.call.cwd)));
        }
        if self.uid.is_some() {
            parts.push(format!("uid {} is listed", p.call.uid));
        }
        if let Some(patterns) = &self.prisoner {
            if let Some(g) = patterns
                .iter()
                .find(|g| g.matches(p.call.prisoner.as_bytes()))
            {
                parts.push(format!("prisoner `{}` matches `{g}`", p.call.prisoner));
            }
        }
        if parts.is_empty() {
            "the rule has no match keys, so it matches every call".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Matches `tokens` (argv[1..]) against an `args` list.
///
/// The list is runs of single-token globs separated by `**`. The first run is anchored
/// at the start, the last at the end, and each middle run is placed at its leftmost
/// fit; leftmost placement leaves the most room for later runs, so if it fails no
/// placement succeeds. Argument numbers in misses are argv indexes (argv[1] = 1).
fn match_args<'a>(pattern: &'a [ArgPattern], tokens: &'a [Vec<u8>]) -> Option<Miss<'a>> {
    let runs: Vec<&[ArgPattern]> = pattern
        .split(|p| matches!(p, ArgPattern::AnyTokens))
        .collect();
    let fixed: usize = runs.iter().map(|r| r.len()).sum();
    if runs.len() == 1 {
        if tokens.len() != fixed {
            return Some(Miss::ArgsCount {
                given: tokens.len(),
                need: fixed,
                exact: true,
            });
        }
        return run_miss(runs[0], tokens, 0);
    }
    if tokens.len() < fixed {
        return Some(Miss::ArgsCount {
            given: tokens.len(),
            need: fixed,
            exact: false,
        });
    }
    let first = runs[0];
    if let Some(miss) = run_miss(first, &tokens[..first.len()], 0) {
        return Some(miss);
    }
    let last = runs[runs.len() - 1];
    let end = tokens.len() - last.len();
    if let Some(miss) = run_miss(last, &tokens[end..], end) {
        return Some(miss);
    }
    let mut lo = first.len();
    for run in &runs[1..runs.len() - 1] {
        if run.is_empty() {
            continue;
        }
        let fit = (lo..=end.saturating_sub(run.len()))
            .filter(|&q| q + run.len() <= end)
            .find(|&q| run_miss(run, &tokens[q..q + run.len()], q).is_none());
        match fit {
            Some(q) => lo = q + run.len(),
            None => {
                return Some(Miss::ArgsRun {
                    from: lo + 1,
                    to: end,
                    run,
                })
            }
        }
    }
    None
}

/// First token of `tokens` (starting at argv index `offset + 1`) that misses its glob.
fn run_miss<'a>(run: &'a [ArgPattern], tokens: &'a [Vec<u8>], offset: usize) -> Option<Miss<'a>> {
    run.iter()
        .zip(tokens)
        .enumerate()
        .find_map(|(i, (p, t))| match p {
            ArgPattern::Token(g) if !g.matches(t) => Some(Miss::Arg {
                index: offset + i + 1,
                got: t,
                pattern: g,
            }),
            _ => None,
        })
}
