//! `explain`: the verdict plus, rule by rule, why each did or did not match.

use std::fmt::Write as _;

use crate::{format_duration, FlagMatch, Verdict};

/// The verdict for a call and the rule checks that led to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// What `decide` returns for the same call.
    pub verdict: Verdict,
    /// Every rule up to and including the one that matched (all rules if none did);
    /// empty when the call was refused before any rule.
    pub checks: Vec<RuleCheck>,
    /// Why the call was refused before any rule was consulted (`argv[0]` is not a
    /// command name), if it was.
    pub refused: Option<String>,
}

/// One rule checked against the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCheck {
    /// 0-based position of the rule in the policy.
    pub index: usize,
    /// The rule's name.
    pub rule: String,
    /// Whether the rule matched (only the last check can have `true`).
    pub matched: bool,
    /// Why it did or did not match, concretely.
    pub why: String,
    /// For a matching rule with `flags`: which argument gave which flag.
    pub flag: Option<FlagMatch>,
}

impl Explanation {
    /// A readable multi-line report ending with the verdict, executor and timeout.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(refused) = &self.refused {
            let _ = writeln!(out, "refused before any rule: {refused}");
        } else if self.checks.is_empty() {
            out.push_str("the policy has no rules\n");
        }
        for check in &self.checks {
            let _ = writeln!(
                out,
                "rule {} {}: {}: {}",
                check.index + 1,
                check.rule,
                if check.matched { "MATCH" } else { "no match" },
                check.why
            );
        }
        let v = &self.verdict;
        match &v.rule {
            Some(rule) => {
                let _ = writeln!(out, "verdict: {} (rule {rule})", v.action);
            }
            None if self.refused.is_some() => {
                let _ = writeln!(out, "verdict: {} (argv[0] is not a command name)", v.action);
            }
            None => {
                let _ = writeln!(
                    out,
                    "verdict: {} (no rule matched; policy default)",
                    v.action
                );
            }
        }
        let _ = writeln!(out, "reason: {}", v.reason);
        match &v.ghost {
            Some(g) => {
                let _ = writeln!(
                    out,
                    "executor: {} (image {}, network {})",
                    v.executor, g.image, g.network
                );
            }
            None => {
                let _ = writeln!(out, "executor: {}", v.executor);
            }
        }
        let _ = writeln!(out, "timeout: {}", format_duration(v.timeout));
        out
    }
}
