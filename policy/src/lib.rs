//! Clawrden policy: the YAML schema, loading with file:line:column errors, matching a
//! call to a verdict, and `explain`.
//!
//! Pure: no I/O except reading the policy file in [`Policy::load`].

#![forbid(unsafe_code)]

mod command_name;
mod duration;
mod env_hooks;
mod error;
mod explain;
mod flags;
mod glob;
mod matcher;
mod quote;
mod schema;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use command_name::{command_name, BadCommandName};
pub use duration::{format_duration, parse_duration};
pub use error::PolicyError;
pub use explain::{Explanation, RuleCheck};
pub use flags::{Flag, FlagForm, FlagMatch};
pub use glob::Glob;
pub use matcher::{ArgPattern, ArgsRegex};
pub use quote::{is_invisible_or_control, shell_quote, INVISIBLE_OR_CONTROL};

use matcher::Prepared;

/// One command the prisoner wants to run, as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The full argv; rules match `command` on the basename of argv[0].
    pub argv: &'a [Vec<u8>],
    /// Working directory of the call.
    pub cwd: &'a [u8],
    /// Uid the call runs as in the prisoner.
    pub uid: u32,
    /// Name of the prisoner (container) the call came from.
    pub prisoner: &'a str,
}

/// What the policy says to do with a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Run it.
    Allow,
    /// Refuse it.
    Deny,
    /// Ask a human; no answer in time means deny.
    Ask,
}

impl Action {
    /// `"allow"`, `"deny"` or `"ask"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Ask => "ask",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an allowed command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutorKind {
    /// On the warden's host, as the warden.
    Local,
    /// In a mirror of the prisoner's container.
    Mirror,
    /// In a throwaway container from a given image.
    Ghost,
}

impl ExecutorKind {
    /// `"local"`, `"mirror"` or `"ghost"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Mirror => "mirror",
            ExecutorKind::Ghost => "ghost",
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not `local`, `mirror` or `ghost`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor `{0}`; expected local, mirror or ghost")]
pub struct UnknownExecutor(pub String);

impl FromStr for ExecutorKind {
    type Err = UnknownExecutor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(ExecutorKind::Local),
            "mirror" => Ok(ExecutorKind::Mirror),
            "ghost" => Ok(ExecutorKind::Ghost),
            other => Err(UnknownExecutor(other.to_owned())),
        }
    }
}

/// Environment names a rule passes through or drops, on top of the default scrub.
/// A trailing `*` makes a name a prefix (`LC_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvRule {
    /// Names (or `PREFIX*`) to keep in addition to the defaults.
    pub pass: Vec<String>,
    /// Names (or `PREFIX*`) to remove.
    pub drop: Vec<String>,
}

impl EnvRule {
    /// Whether `name` is named by `pass`.
    pub fn passes(&self, name: &str) -> bool {
        self.pass.iter().any(|p| env_name_matches(p, name))
    }

    /// Whether `name` is named by `drop`.
    pub fn drops(&self, name: &str) -> bool {
        self.drop.iter().any(|p| env_name_matches(p, name))
    }
}

/// `pattern` is a name, or a prefix followed by `*`.
pub fn env_name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// How the ghost executor should run a command.
#[derive(Clone, Debug, PartialEq)]
pub struct GhostSpec {
    /// Container image.
    pub image: String,
    /// Network name; `none` unless the policy says otherwise.
    pub network: String,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU limit.
    pub cpus: Option<f64>,
    /// Process-count limit.
    pub pids: Option<u64>,
}

/// The decision for one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Allow, deny or ask.
    pub action: Action,
    /// The matching rule's name; `None` when the policy default applied.
    pub rule: Option<String>,
    /// Human-readable reason (the rule's `reason`, or a generated one).
    pub reason: String,
    /// Execution time limit.
    pub timeout: Duration,
    /// Where to run it.
    pub executor: ExecutorKind,
    /// Ghost settings when the executor is ghost and the rule gave them.
    pub ghost: Option<GhostSpec>,
    /// Environment pass/drop lists of the rule.
    pub env: EnvRule,
    /// The rule's `run_as` user: who a warden-side command runs as.
    pub run_as: Option<String>,
}

/// One rule of a policy.
#[derive(Clone, Debug)]
pub struct Rule {
    name: String,
    command: Option<Vec<Glob>>,
    args: Option<Vec<ArgPattern>>,
    args_regex: Option<ArgsRegex>,
    flags: Option<Vec<Flag>>,
    cwd: Option<Glob>,
    uid: Option<Vec<u32>>,
    prisoner: Option<Vec<Glob>>,
    action: Action,
    reason: Option<String>,
    timeout: Option<Duration>,
    executor: Option<ExecutorKind>,
    ghost: Option<GhostSpec>,
    env: EnvRule,
    run_as: Option<String>,
}

impl Rule {
    /// The rule's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Globs on the basename of argv[0], if the rule has `command`.
    pub fn command(&self) -> Option<&[Glob]> {
        self.command.as_deref()
    }
    /// The `args` pattern, if any.
    pub fn args(&self) -> Option<&[ArgPattern]> {
        self.args.as_deref()
    }
    /// The `args_regex`, if any.
    pub fn args_regex(&self) -> Option<&ArgsRegex> {
        self.args_regex.as_ref()
    }
    /// The options of `flags`, if any (any one of them must appear).
    pub fn flags(&self) -> Option<&[Flag]> {
        self.flags.as_deref()
    }
    /// The `cwd` path glob, if any.
    pub fn cwd(&self) -> Option<&Glob> {
        self.cwd.as_ref()
    }
    /// Allowed uids, if the rule has `uid`.
    pub fn uid(&self) -> Option<&[u32]> {
        self.uid.as_deref()
    }
    /// Prisoner globs, if any.
    pub fn prisoner(&self) -> Option<&[Glob]> {
        self.prisoner.as_deref()
    }
    /// The rule's action.
    pub fn action(&self) -> Action {
        self.action
    }
    /// The rule's own `reason`, if set.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// The rule's own `timeout`, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// The rule's own `executor`, if set.
    pub fn executor(&self) -> Option<ExecutorKind> {
        self.executor
    }
    /// The rule's ghost settings, if any.
    pub fn ghost(&self) -> Option<&GhostSpec> {
        self.ghost.as_ref()
    }
    /// The rule's env pass/drop lists.
    pub fn env(&self) -> &EnvRule {
        &self.env
    }
    /// The user a warden-side command of this rule runs as, if the rule names one.
    pub fn run_as(&self) -> Option<&str> {
        self.run_as.as_deref()
    }
}

/// A loaded, validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    origin: String,
    sha256: String,
    default_action: Action,
    default_timeout: Duration,
    approval_timeout: Duration,
    default_executor: ExecutorKind,
    rules: Vec<Rule>,
}

impl Policy {
    /// Reads and parses the policy at `path`; errors name the path.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| PolicyError::at(&origin, 0, 0, format!("cannot read the policy: {e}")))?;
        let src = match std::str::from_utf8(&bytes) {
            Ok(src) => src,
            Err(e) => {
                let valid = &bytes[..e.valid_up_to()];
                let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&valid[line_start..])
                    .chars()
                    .count()
                    + 1;
                return Err(PolicyError::at(
                    &origin,
                    line,
                    column,
                    "the policy is not valid UTF-8; save it as UTF-8",
                ));
            }
        };
        Policy::parse(src, &origin)
    }

    /// Parses policy text; `origin` names it in errors (usually the file path).
    /// Never panics, whatever the input.
    pub fn parse(src: &str, origin: &str) -> Result<Policy, PolicyError> {
        let sha256 = hex(&Sha256::digest(src.as_bytes()));
        schema::parse(src, origin, sha256)
    }

    /// Where the policy came from (the `origin` given to `parse`, or the path).
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// Lowercase hex SHA-256 of the policy file's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Action for calls no rule matches.
    pub fn default_action(&self) -> Action {
        self.default_action
    }
    /// Execution limit for rules without `timeout`.
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }
    /// How long an `ask` waits before it becomes a deny.
    pub fn approval_timeout(&self) -> Duration {
        self.approval_timeout
    }
    /// Executor for rules without `executor`.
    pub fn default_executor(&self) -> ExecutorKind {
        self.default_executor
    }
    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The verdict for `call`: a deny when `argv[0]` is not a command name (see
    /// [`command_name`]), else the first matching rule's, else the policy default.
    pub fn decide(&self, call: &Call<'_>) -> Verdict {
        if let Err(bad) = command_name(call.argv) {
            return self.refusal(&bad);
        }
        let prepared = Prepared::new(call);
        match self.rules.iter().find(|r| r.miss(&prepared).is_none()) {
            Some(rule) => self.rule_verdict(rule),
            None => self.default_verdict(),
        }
    }

    /// The verdict for `call` and, for every rule up to the match, why it did or did not
    /// match.
    pub fn explain(&self, call: &Call<'_>) -> Explanation {
        if let Err(bad) = command_name(call.argv) {
            return Explanation {
                verdict: self.refusal(&bad),
                checks: Vec::new(),
                refused: Some(bad.to_string()),
            };
        }
        let prepared = Prepared::new(call);
        let mut checks = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            match rule.miss(&prepared) {
                Some(miss) => checks.push(RuleCheck {
                    index,
                    rule: rule.name.clone(),
                    matched: false,
                    why: miss.to_string(),
                    flag: None,
                }),
                None => {
                    checks.push(RuleCheck {
                        index,
                        rule: rule.name.clone(),
                        matched: true,
                        why: rule.describe_match(&prepared),
                        flag: rule
                            .flags
                            .as_deref()
                            .and_then(|f| flags::find(f, call.argv)),
                    });
                    return Explanation {
                        verdict: self.rule_verdict(rule),
                        checks,
                        refused: None,
                    };
                }
            }
        }
        Explanation {
            verdict: self.default_verdict(),
            checks,
            refused: None,
        }
    }

    /// The deny for a call whose `argv[0]` is not a command name: no rule is consulted.
    fn refusal(&self, bad: &BadCommandName) -> Verdict {
        Verdict {
            action: Action::Deny,
            rule: None,
            reason: bad.to_string(),
            timeout: self.default_timeout,
            executor: self.default_executor,
            ghost: None,
            env: EnvRule::default(),
            run_as: None,
        }
    }

    fn rule_verdict(&self, rule: &Rule) -> Verdict {
        let reason = rule.reason.clone().unwrap_or_else(|| {
            let verb = match rule.action {
                Action::Allow => "allows",
                Action::Deny => "denies",
                Action::Ask => "asks for approval",
            };
            format!("rule {} {verb}", rule.name)
        });
        Verdict {
            action: rule.action,
            rule: Some(rule.name.clone()),
            reason,
            timeout: rule.timeout.unwrap_or(self.default_timeout),
            executor: rule.executor.unwrap_or(self.default_executor),
            ghost: rule.ghost.clone(),
            env: rule.env.clone(),
            run_as: rule.run_as.clone(),
        }
    }

    fn default_verdict(&self) -> Verdict {
        Verdict {
            action: self.default_action,
            rule: None,
            reason: format!("no rule matched; default_action is {}", self.default_action),
            timeout: self.default_timeout,
            executor: self.default_executor,
            ghost: None,
            env: EnvRule::default(),
            run_as: None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}
