//! Loading: YAML -> validated [`Policy`], with every error positioned.
//!
//! Per-value checks live in the `Deserialize` impls below so serde_yaml attaches the
//! position of the offending value. Checks that need more than one value (duplicate
//! names, `ghost` vs `executor`) run afterwards and name a path; a second, read-only
//! walk over the document ([`locate`]) finds where that path is.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{
    self, DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Deserializer};

use crate::flags::Flag;
use crate::glob::{Glob, GlobMode};
use crate::matcher::{ArgPattern, ArgsRegex};
use crate::{Action, EnvRule, ExecutorKind, GhostSpec, Policy, PolicyError, Rule};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a policy mapping with `version: 1`")]
struct RawPolicy {
    #[serde(rename = "version")]
    _version: Version,
    #[serde(default, deserialize_with = "some")]
    default_action: Option<Action>,
    #[serde(default, deserialize_with = "some")]
    default_timeout: Option<DurationValue>,
    #[serde(default, deserialize_with = "some")]
    approval_timeout: Option<DurationValue>,
    #[serde(default, deserialize_with = "some")]
    default_executor: Option<ExecutorKind>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rule mapping with `name` and `action`"
)]
struct RawRule {
    name: RuleName,
    #[serde(default, deserialize_with = "some")]
    command: Option<CommandPatterns>,
    #[serde(default, deserialize_with = "some")]
    args: Option<ArgsList>,
    #[serde(default, deserialize_with = "some")]
    args_regex: Option<ArgsRegex>,
    #[serde(default, deserialize_with = "some")]
    flags: Option<FlagList>,
    #[serde(default, deserialize_with = "some")]
    cwd: Option<PathGlob>,
    #[serde(default, deserialize_with = "some")]
    uid: Option<OneOrMany<u32>>,
    #[serde(default, deserialize_with = "some")]
    prisoner: Option<OneOrMany<PlainGlob>>,
    action: Action,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, deserialize_with = "some")]
    timeout: Option<DurationValue>,
    #[serde(default, deserialize_with = "some")]
    executor: Option<ExecutorKind>,
    #[serde(default, deserialize_with = "some")]
    ghost: Option<RawGhost>,
    #[serde(default, deserialize_with = "some")]
    env: Option<RawEnv>,
    #[serde(default, deserialize_with = "some")]
    run_as: Option<UserName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a ghost mapping with `image`")]
struct RawGhost {
    image: NonEmpty,
    #[serde(default, deserialize_with = "some")]
    network: Option<NonEmpty>,
    #[serde(default, deserialize_with = "some")]
    memory: Option<Memory>,
    #[serde(default, deserialize_with = "some")]
    cpus: Option<Cpus>,
    #[serde(default, deserialize_with = "some")]
    pids: Option<Pids>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an env mapping with `pass` and/or `drop`"
)]
struct RawEnv {
    #[serde(default)]
    pass: Vec<PassedEnvName>,
    #[serde(default)]
    drop: Vec<EnvName>,
}

/// A present key must hold a value: `command:` with nothing after it is an error, not
/// "no constraint" (which would silently widen an allow rule).
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Parses and validates a policy document.
pub(crate) fn parse(src: &str, origin: &str, sha256: String) -> Result<Policy, PolicyError> {
    let raw: RawPolicy =
        serde_yaml::from_str(src).map_err(|e| PolicyError::from_yaml(origin, &e))?;
    let default_executor = raw.default_executor.unwrap_or(ExecutorKind::Mirror);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, r) in raw.rules.into_iter().enumerate() {
        let fail = |path: &[Seg], message: String| Err(located(src, origin, path, message));
        if let Some(first) = seen.get(&r.name.0) {
            return fail(
                &[Seg::Key("rules"), Seg::Index(index), Seg::Key("name")],
                format!(
                    "rules[{index}].name: duplicate rule name `{}` (also rules[{first}]); rule names must be unique",
                    r.name.0
                ),
            );
        }
        seen.insert(r.name.0.clone(), index);
        if r.flags.is_some() && r.action == Action::Allow {
            return fail(
                &[Seg::Key("rules"), Seg::Index(index), Seg::Key("flags")],
                format!(
                    "rules[{index}].flags: rule `{}` allows, but `flags` errs toward matching (an option's value or an operand after `--` that looks like the flag counts too), so in an allow rule it would let through more than written; use flags in deny and ask rules, and `args` in allow rules",
                    r.name.0
                ),
            );
        }
        let executor = r.executor.unwrap_or(default_executor);
        if r.ghost.is_some() && executor != ExecutorKind::Ghost {
            return fail(
                &[Seg::Key("rules"), Seg::Index(index), Seg::Key("ghost")],
                format!(
                    "rules[{index}].ghost: rule `{}` runs in the {executor} executor, so a `ghost` block has no effect; set `executor: ghost` or remove the block",
                    r.name.0
                ),
            );
        }
        if executor == ExecutorKind::Ghost && r.ghost.is_none() {
            let (path, how): (&[Seg], &str) = if r.executor.is_some() {
                (
                    &[Seg::Key("rules"), Seg::Index(index), Seg::Key("executor")],
                    "executor: ghost",
                )
            } else {
                (
                    &[Seg::Key("rules"), Seg::Index(index)],
                    "default_executor: ghost",
                )
            };
            return fail(
                path,
                format!(
                    "rules[{index}]{}: rule `{}` runs in the ghost executor ({how}) but names no image; add `ghost: {{ image: IMAGE }}`",
                    if r.executor.is_some() { ".executor" } else { "" },
                    r.name.0
                ),
            );
        }
        if r.run_as.is_some() && executor == ExecutorKind::Mirror {
            return fail(
                &[Seg::Key("rules"), Seg::Index(index), Seg::Key("run_as")],
                format!(
                    "rules[{index}].run_as: rule `{}` runs in the mirror executor, where a command always runs as its caller inside the prisoner; run_as applies to warden-side executors (local)",
                    r.name.0
                ),
            );
        }
        rules.push(Rule {
            name: r.name.0,
            command: r.command.map(|c| c.0),
            args: r.args.map(|a| a.0),
            args_regex: r.args_regex,
            flags: r.flags.map(|f| f.0),
            cwd: r.cwd.map(|g| g.0),
            uid: r.uid.map(|u| u.0),
            prisoner: r.prisoner.map(|p| p.0.into_iter().map(|g| g.0).collect()),
            action: r.action,
            reason: r.reason,
            timeout: r.timeout.map(|t| t.0),
            executor: r.executor,
            ghost: r.ghost.map(|g| GhostSpec {
                image: g.image.0,
                network: g.network.map_or_else(|| "none".to_owned(), |n| n.0),
                memory: g.memory.map(|m| m.0),
                cpus: g.cpus.map(|c| c.0),
                pids: g.pids.map(|p| p.0),
            }),
            env: r.env.map_or_else(EnvRule::default, |e| EnvRule {
                pass: e.pass.into_iter().map(|n| n.0).collect(),
                drop: e.drop.into_iter().map(|n| n.0).collect(),
            }),
            run_as: r.run_as.map(|u| u.0),
        });
    }
    Ok(Policy {
        origin: origin.to_owned(),
        sha256,
        default_action: raw.default_action.unwrap_or(Action::Deny),
        default_timeout: raw.default_timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
        approval_timeout: raw
            .approval_timeout
            .map_or(DEFAULT_APPROVAL_TIMEOUT, |d| d.0),
        default_executor,
        rules,
    })
}

// ---------------------------------------------------------------------------------------
// Locating a path in the document.

#[derive(Clone, Copy, Debug)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// An error at `path`, positioned by re-walking the (already valid) document.
fn located(src: &str, origin: &str, path: &[Seg], message: String) -> PolicyError {
    let (line, column) = locate(src, path).unwrap_or((1, 1));
    PolicyError::at(origin, line, column, message)
}

/// Line and column of the value at `path`: the walk fails on purpose when it reaches
/// the value, and serde_yaml stamps that failure with the value's position.
fn locate(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(src);
    match (Locate { path }).deserialize(de) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

struct Locate<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            // Every visit of `Found` fails, which is what stamps the position.
            None => d.deserialize_any(Found),
            Some((Seg::Key(key), rest)) => d.deserialize_map(WalkMap { key, rest }),
            Some((Seg::Index(index), rest)) => d.deserialize_seq(WalkSeq {
                index: *index,
                rest,
            }),
        }
    }
}

struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing (locating a value)")
    }
}

struct WalkMap<'p> {
    key: &'p str,
    rest: &'p [Seg],
}

impl<'de> Visitor<'de> for WalkMap<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key {
                return map.next_value_seed(Locate { path: self.rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

struct WalkSeq<'p> {
    index: usize,
    rest: &'p [Seg],
}

impl<'de> Visitor<'de> for WalkSeq<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate { path: self.rest })?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Values that validate themselves.

/// Deserializes a string scalar and converts it, the error becoming a positioned one.
fn from_str_with<'de, D, T>(
    d: D,
    expecting: &'static str,
    convert: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        convert: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.convert)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, convert })
}

struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the number 1")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Version, E> {
                if v == 1 {
                    Ok(Version)
                } else {
                    Err(E::custom(format!(
                        "unsupported policy version {v}; this Clawrden reads `version: 1`"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "unsupported policy version {v}; this Clawrden reads `version: 1`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "allow, deny or ask", |s| match s {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            "ask" => Ok(Action::Ask),
            other => Err(format!(
                "unknown action `{other}`; expected allow, deny or ask"
            )),
        })
    }
}

impl<'de> Deserialize<'de> for ExecutorKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "local, mirror or ghost", |s| {
            s.parse::<ExecutorKind>().map_err(|e| e.to_string())
        })
    }
}

struct DurationValue(Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a duration like 30s", |s| {
            crate::parse_duration(s).map(DurationValue)
        })
    }
}

struct RuleName(String);

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a rule name", |s| {
            if s.trim().is_empty() {
                Err("rule name is empty; give every rule a unique name".to_owned())
            } else if s.chars().any(char::is_control) {
                Err(format!("rule name {s:?} contains control characters"))
            } else {
                Ok(RuleName(s.to_owned()))
            }
        })
    }
}

struct NonEmpty(String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a non-empty string", |s| {
            if s.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(NonEmpty(s.to_owned()))
            }
        })
    }
}

struct PlainGlob(Glob);

impl<'de> Deserialize<'de> for PlainGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a glob", |s| {
            Glob::new(s, GlobMode::Plain).map(PlainGlob)
        })
    }
}

struct CommandGlob(Glob);

impl<'de> Deserialize<'de> for CommandGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a command glob", |s| {
            let glob = Glob::new(s, GlobMode::Plain)?;
            if glob.has_slash() {
                let base = s.rsplit('/').next().unwrap_or(s);
                return Err(format!(
                    "command pattern `{s}` contains `/`, but commands are matched on the basename of argv[0]; write `{base}`"
                ));
            }
            Ok(CommandGlob(glob))
        })
    }
}

struct PathGlob(Glob);

impl<'de> Deserialize<'de> for PathGlob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a path glob", |s| {
            Glob::new(s, GlobMode::Path).map(PathGlob)
        })
    }
}

impl<'de> Deserialize<'de> for ArgPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an argument glob", |s| {
            if s == "**" {
                Ok(ArgPattern::AnyTokens)
            } else {
                Glob::new(s, GlobMode::Plain).map(ArgPattern::Token)
            }
        })
    }
}

impl<'de> Deserialize<'de> for ArgsRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a regular expression", ArgsRegex::new)
    }
}

struct UserName(String);

impl<'de> Deserialize<'de> for UserName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "a user name", |s| {
            let stem = s.strip_suffix('$').unwrap_or(s);
            let valid = (1..=32).contains(&s.len())
                && stem
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if valid {
                Ok(UserName(s.to_owned()))
            } else {
                Err(format!(
                    "run_as `{s}` is not a user name (letters, digits, '_', '.', '-', starting with a letter or '_')"
                ))
            }
        })
    }
}

struct EnvName(String);

/// `NAME` or `PREFIX*`, with NAME made of letters, digits and `_`, not starting with a digit.
fn env_name(s: &str) -> Result<String, String> {
    let stem = s.strip_suffix('*').unwrap_or(s);
    let valid = stem
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "bad environment variable name `{s}`; write a name like HTTP_PROXY, or a prefix like LC_*"
        ))
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an environment variable name", |s| {
            env_name(s).map(EnvName)
        })
    }
}

/// An `env.pass` entry: a valid name that is not a loader, shell or tool hook.
struct PassedEnvName(String);

impl<'de> Deserialize<'de> for PassedEnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an environment variable name", |s| {
            let name = env_name(s)?;
            let Some((hook, why)) = crate::env_hooks::hook_passed_by(&name) else {
                return Ok(PassedEnvName(name));
            };
            let what = if name.ends_with('*') {
                format!("`{name}` would pass {hook}")
            } else if hook == name {
                format!("`{name}` cannot be passed to commands")
            } else {
                format!("`{name}` cannot be passed to commands ({hook})")
            };
            Err(format!(
                "{what}: {why}, so whoever sets it chooses what the command runs; remove it from env.pass"
            ))
        })
    }
}

struct FlagList(Vec<Flag>);

impl<'de> Deserialize<'de> for FlagList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = d.deserialize_any(OneOrManyVisitor::<FlagEntry> {
            empty_error: Some(
                "flags list is empty, so the rule could never match; list at least one option (like -r or --recursive) or remove the key",
            ),
            marker: PhantomData,
        })?;
        Ok(FlagList(list.0.into_iter().map(|f| f.0).collect()))
    }
}

struct FlagEntry(Flag);

impl<'de> Deserialize<'de> for FlagEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_with(d, "an option like -r or --recursive", |s| {
            Flag::parse(s).map(FlagEntry)
        })
    }
}

/// One value or a list of them (`command: git` or `command: [git, hg]`).
struct OneOrMany<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OneOrManyVisitor {
            empty_error: None,
            marker: PhantomData,
        })
    }
}

struct OneOrManyVisitor<T> {
    /// Set when an empty list is an error; checked inside the visit so the error is
    /// stamped with the list's position.
    empty_error: Option<&'static str>,
    marker: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
    type Value = OneOrMany<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value or a list of values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            out.push(item);
        }
        match self.empty_error {
            Some(message) if out.is_empty() => Err(de::Error::custom(message)),
            _ => Ok(OneOrMany(out)),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(|x| OneOrMany(vec![x]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(|x| OneOrMany(vec![x]))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        T::deserialize(v.into_deserializer()).map(|x| OneOrMany(vec![x]))
    }
}

struct CommandPatterns(Vec<Glob>);

impl<'de> Deserialize<'de> for CommandPatterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = d.deserialize_any(OneOrManyVisitor::<CommandGlob> {
            // An empty list would match nothing; say so rather than keep a dead rule.
            empty_error: Some(
                "command list is empty, so the rule could never match; list at least one command or remove the key",
            ),
            marker: PhantomData,
        })?;
        Ok(CommandPatterns(list.0.into_iter().map(|c| c.0).collect()))
    }
}

struct ArgsList(Vec<ArgPattern>);

impl<'de> Deserialize<'de> for ArgsList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ArgsList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of argument globs (`[]` for no arguments)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArgsList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(ArgsList(out))
            }
        }
        d.deserialize_any(V)
    }
}

struct Memory(u64);

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 256m or 1g")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Memory, E> {
                parse_memory(&v.to_string()).map(Memory).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                parse_memory(&v.to_string()).map(Memory).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                parse_memory(v).map(Memory).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `256m`, `1g`, `512k`, `2t` (powers of 1024, case-insensitive, optional `b`), or bytes.
pub(crate) fn parse_memory(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, shift) = match trimmed.char_indices().last() {
        Some((i, 'k')) => (&trimmed[..i], 10),
        Some((i, 'm')) => (&trimmed[..i], 20),
        Some((i, 'g')) => (&trimmed[..i], 30),
        Some((i, 't')) => (&trimmed[..i], 40),
        _ => (trimmed, 0),
    };
    let bad = || format!("bad memory size `{text}`; write e.g. 256m or 1g");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("memory size `{text}` is too large"))?;
    if bytes == 0 {
        return Err(format!("memory size `{text}` must be greater than zero"));
    }
    Ok(bytes)
}

struct Cpus(f64);

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cpus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of CPUs like 1 or 0.5")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cpus, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpus, E> {
                if v.is_finite() && v > 0.0 {
                    Ok(Cpus(v))
                } else {
                    Err(E::custom(format!(
                        "cpus must be a number greater than zero, not {v}"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

struct Pids(u64);

impl<'de> Deserialize<'de> for Pids {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Pids;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a process limit like 128")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Pids, E> {
                if v == 0 {
                    Err(E::custom("pids must be greater than zero"))
                } else {
                    Ok(Pids(v))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("256m"), Ok(256 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("512kb"), Ok(512 << 10));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert_eq!(
            parse_memory("1.5g"),
            Err("bad memory size `1.5g`; write e.g. 256m or 1g".to_owned())
        );
        assert_eq!(
            parse_memory("m"),
            Err("bad memory size `m`; write e.g. 256m or 1g".to_owned())
        );
        assert_eq!(
            parse_memory("0m"),
            Err("memory size `0m` must be greater than zero".to_owned())
        );
        assert_eq!(
            parse_memory("99999999999t"),
            Err("memory size `99999999999t` is too large".to_owned())
        );
    }
}
