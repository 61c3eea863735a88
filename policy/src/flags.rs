//! Option-aware matching: a rule's `flags: [-r, -R, --recursive]` matches a call that
//! gives any one of those options, written any way getopt accepts it.
//!
//! What is matched, for every argument after `argv[0]`:
//! - a short flag `-r`: the argument `-r`, and any argument of combined short options
//!   that holds the letter (`-fr`, `-Rf`, `-vfR`);
//! - a long flag `--recursive`: the argument itself, the `--recursive=VALUE` form, and
//!   every abbreviation (`--r`, `--recur`, with or without `=VALUE`), since getopt_long
//!   and git's parse-options accept any unambiguous prefix.
//!
//! `flags` errs toward matching, which is why it is refused in allow rules: arguments
//! after `--` are examined too (the `--` itself may be the value of an option, as in
//! `git push -o -- --force`), so are the values of other options (`git commit -m -f`),
//! and letters after a value-taking short option (`-ofr`). In a deny or ask rule an
//! over-match costs a person's look; a miss would cost the decision.
//!
//! Not matched: single-dash long options (`-recursive`, as `find` and Java tools write
//! them), `+x` options, and whatever reaches the tool outside its argv (environment
//! variables, configuration files, aliases). README, "Policy reference", says the same.

use std::fmt;

use crate::quote::shell_quote;

/// One option a rule's `flags` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `-X`: one ASCII character after a single dash.
    Short(u8),
    /// `--NAME`: the name without the dashes.
    Long(String),
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flag::Short(c) => write!(f, "-{}", *c as char),
            Flag::Long(name) => write!(f, "--{name}"),
        }
    }
}

impl Flag {
    /// Parses a `flags` entry as written in the policy; the error says what to write.
    pub(crate) fn parse(text: &str) -> Result<Flag, String> {
        let graphic = |b: u8| b.is_ascii_graphic();
        if let Some(name) = text.strip_prefix("--") {
            if name.is_empty() {
                return Err(
                    "`--` ends the options; it is not an option a rule can match".to_owned(),
                );
            }
            if let Some((opt, _)) = name.split_once('=') {
                return Err(format!(
                    "write the option without a value: `--{opt}` also matches `--{opt}=VALUE`"
                ));
            }
            if name.starts_with('-') || !name.bytes().all(graphic) {
                return Err(format!(
                    "bad flag `{text}`: a long option is `--` followed by a name of letters, digits and punctuation"
                ));
            }
            return Ok(Flag::Long(name.to_owned()));
        }
        if let Some(rest) = text.strip_prefix('-') {
            return match rest.as_bytes() {
                [c] if graphic(*c) && *c != b'-' => Ok(Flag::Short(*c)),
                [] => Err("`-` alone is an operand (standard input), not an option".to_owned()),
                bytes if bytes.len() > 1 && bytes.iter().all(|&b| graphic(b) && b != b'=') => {
                    let each: Vec<String> = rest.chars().map(|c| format!("`-{c}`")).collect();
                    Err(format!(
                        "`{text}` is {} short options written together; list each ({}): a rule matches when any one of its flags appears, combined or not",
                        each.len(),
                        each.join(", ")
                    ))
                }
                _ => Err(format!(
                    "bad flag `{text}`: a short option is `-` and one letter, digit or punctuation character"
                )),
            };
        }
        Err(format!(
            "bad flag `{text}`: write a short option like `-r` or a long one like `--recursive`"
        ))
    }
}

/// How an argument gives a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagForm {
    /// The argument is the flag (`-f`, `--force`).
    Exact,
    /// Inside combined short options (`-Rf` gives `-R`).
    Combined,
    /// The long option with a value (`--force=yes`).
    WithValue,
    /// An abbreviation of the long option (`--recur`).
    Abbreviated,
    /// An abbreviation with a value (`--force-w=main`).
    AbbreviatedWithValue,
}

impl FlagForm {
    /// `exact`, `combined`, `with_value`, `abbreviated` or `abbreviated_with_value`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagForm::Exact => "exact",
            FlagForm::Combined => "combined",
            FlagForm::WithValue => "with_value",
            FlagForm::Abbreviated => "abbreviated",
            FlagForm::AbbreviatedWithValue => "abbreviated_with_value",
        }
    }
}

/// The first argument that gives one of a rule's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagMatch {
    /// The flag as written in the policy (`-R`, `--recursive`).
    pub flag: String,
    /// Index of the argument in argv (argv[1] is 1).
    pub argument: usize,
    /// The argument, byte-exact.
    pub token: Vec<u8>,
    /// How the argument gives the flag.
    pub form: FlagForm,
}

impl fmt::Display for FlagMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (flag, n, token) = (&self.flag, self.argument, shell_quote(&self.token));
        match self.form {
            FlagForm::Exact => write!(f, "flag `{flag}` is argument {n}"),
            FlagForm::Combined => write!(
                f,
                "flag `{flag}` is inside argument {n} `{token}` (combined short options)"
            ),
            FlagForm::WithValue => {
                write!(f, "flag `{flag}` is argument {n} `{token}` (with a value)")
            }
            FlagForm::Abbreviated => write!(
                f,
                "flag `{flag}` is argument {n} `{token}` (an abbreviation getopt_long accepts)"
            ),
            FlagForm::AbbreviatedWithValue => write!(
                f,
                "flag `{flag}` is argument {n} `{token}` (an abbreviation, with a value)"
            ),
        }
    }
}

/// How `token` gives `flag`, if it does.
fn gives(flag: &Flag, token: &[u8]) -> Option<FlagForm> {
    if token == b"-" || token == b"--" || !token.starts_with(b"-") {
        return None;
    }
    match flag {
        Flag::Long(name) => {
            let spelled = token.strip_prefix(b"--")?;
            let (given, valued) = match spelled.iter().position(|&b| b == b'=') {
                Some(i) => (&spelled[..i], true),
                None => (spelled, false),
            };
            if given.is_empty() || !name.as_bytes().starts_with(given) {
                return None;
            }
            Some(match (given == name.as_bytes(), valued) {
                (true, false) => FlagForm::Exact,
                (true, true) => FlagForm::WithValue,
                (false, false) => FlagForm::Abbreviated,
                (false, true) => FlagForm::AbbreviatedWithValue,
            })
        }
        Flag::Short(c) => {
            let cluster = &token[1..];
            if cluster.starts_with(b"-") || !cluster.contains(c) {
                return None;
            }
            Some(if cluster.len() == 1 {
                FlagForm::Exact
            } else {
                FlagForm::Combined
            })
        }
    }
}

/// The first argument of `argv[1..]` that gives any of `flags` (earliest argument; among
/// flags given by the same argument, the first listed).
pub(crate) fn find(flags: &[Flag], argv: &[Vec<u8>]) -> Option<FlagMatch> {
    argv.iter().enumerate().skip(1).find_map(|(i, token)| {
        flags.iter().find_map(|flag| {
            gives(flag, token).map(|form| FlagMatch {
                flag: flag.to_string(),
                argument: i,
                token: token.clone(),
                form,
            })
        })
    })
}

/// `-r`, `-R` or `--recursive`: the flags for a message.
pub(crate) fn list(flags: &[Flag]) -> String {
    let quoted: Vec<String> = flags.iter().map(|f| format!("`{f}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|t| t.as_bytes().to_vec()).collect()
    }

    fn flags(list: &[&str]) -> Vec<Flag> {
        list.iter().map(|f| Flag::parse(f).unwrap()).collect()
    }

    #[test]
    fn each_way_of_writing_an_option_is_found() {
        let rm = flags(&["-r", "-R", "--recursive"]);
        type Case<'a> = (&'a str, Option<(&'a str, usize, FlagForm)>);
        let cases: &[Case<'_>] = &[
            ("rm -r x", Some(("-r", 1, FlagForm::Exact))),
            ("rm -R x", Some(("-R", 1, FlagForm::Exact))),
            ("rm -Rf x", Some(("-R", 1, FlagForm::Combined))),
            ("rm -fr x", Some(("-r", 1, FlagForm::Combined))),
            ("rm -vfR x", Some(("-R", 1, FlagForm::Combined))),
            ("rm x -r", Some(("-r", 2, FlagForm::Exact))),
            (
                "rm --recursive x",
                Some(("--recursive", 1, FlagForm::Exact)),
            ),
            (
                "rm --recursive=yes x",
                Some(("--recursive", 1, FlagForm::WithValue)),
            ),
            (
                "rm --recur x",
                Some(("--recursive", 1, FlagForm::Abbreviated)),
            ),
            ("rm --r x", Some(("--recursive", 1, FlagForm::Abbreviated))),
            (
                "rm --rec=1 x",
                Some(("--recursive", 1, FlagForm::AbbreviatedWithValue)),
            ),
            ("rm -- -r", Some(("-r", 2, FlagForm::Exact))),
            ("rm -f x", None),
            ("rm x", None),
            ("rm - x", None),
            ("rm -- x", None),
            ("rm --recursivex x", None),
            ("rm --force x", None),
            ("rm -recursive x", Some(("-r", 1, FlagForm::Combined))),
            ("rm ---r x", None),
            ("rm r x", None),
        ];
        for &(line, want) in cases {
            let got = find(&rm, &argv(line)).map(|m| (m.flag, m.argument, m.form));
            let want = want.map(|(f, i, form)| (f.to_owned(), i, form));
            assert_eq!(got, want, "{line}");
        }
        // argv[0] is never an option.
        assert_eq!(find(&rm, &argv("-r x")), None);
    }

    #[test]
    fn a_long_flag_is_not_matched_by_a_longer_option() {
        let force = flags(&["--force"]);
        assert_eq!(find(&force, &argv("git push --force-with-lease")), None);
        assert_eq!(find(&force, &argv("git push --no-force")), None);
        assert_eq!(
            find(&force, &argv("git push --forc")).map(|m| m.form),
            Some(FlagForm::Abbreviated)
        );
    }

    #[test]
    fn bad_flag_entries_say_what_to_write() {
        let cases: &[(&str, &str)] = &[
            ("--", "`--` ends the options; it is not an option a rule can match"),
            ("-", "`-` alone is an operand (standard input), not an option"),
            ("-rf", "`-rf` is 2 short options written together; list each (`-r`, `-f`): a rule matches when any one of its flags appears, combined or not"),
            ("--force=yes", "write the option without a value: `--force` also matches `--force=VALUE`"),
            ("---x", "bad flag `---x`: a long option is `--` followed by a name of letters, digits and punctuation"),
            ("--a b", "bad flag `--a b`: a long option is `--` followed by a name of letters, digits and punctuation"),
            ("-é", "bad flag `-é`: a short option is `-` and one letter, digit or punctuation character"),
            ("r", "bad flag `r`: write a short option like `-r` or a long one like `--recursive`"),
            ("", "bad flag ``: write a short option like `-r` or a long one like `--recursive`"),
        ];
        for &(text, want) in cases {
            assert_eq!(Flag::parse(text), Err(want.to_owned()), "{text:?}");
        }
        assert_eq!(Flag::parse("-1"), Ok(Flag::Short(b'1')));
        assert_eq!(
            Flag::parse("--force-with-lease"),
            Ok(Flag::Long("force-with-lease".to_owned()))
        );
    }

    #[test]
    fn matches_render_which_option_and_how() {
        let rm = flags(&["-r", "-R", "--recursive"]);
        let render = |line: &str| find(&rm, &argv(line)).unwrap().to_string();
        assert_eq!(render("rm x -r"), "flag `-r` is argument 2");
        assert_eq!(
            render("rm -Rf x"),
            "flag `-R` is inside argument 1 `-Rf` (combined short options)"
        );
        assert_eq!(
            render("rm --recursive=1"),
            "flag `--recursive` is argument 1 `--recursive=1` (with a value)"
        );
        assert_eq!(
            render("rm --recu"),
            "flag `--recursive` is argument 1 `--recu` (an abbreviation getopt_long accepts)"
        );
        assert_eq!(list(&rm), "`-r`, `-R` or `--recursive`");
    }
}
