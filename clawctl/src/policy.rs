//! `clawctl policy ...`: offline checks of policy files.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use clawrden_policy::{format_duration, Call, Explanation, Policy};
use serde_json::json;

/// `clawctl policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file (exit 0 if usable, 1 with FILE:LINE:COL if not)
    Check {
        /// Policy file
        file: PathBuf,
    },
    /// Show how a policy decides a command, rule by rule (exit 0 whatever the verdict)
    Explain {
        /// Policy file
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// Working directory of the call [default: the current directory]
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        /// Uid of the call [default: your uid]
        #[arg(long, value_name = "N")]
        uid: Option<u32>,
        /// Prisoner the call comes from
        #[arg(long, value_name = "NAME", default_value = "default")]
        prisoner: String,
        /// Print the explanation as JSON
        #[arg(long)]
        json: bool,
        /// The command, after `--`
        #[arg(last = true, required = true, value_name = "ARGV")]
        argv: Vec<OsString>,
    },
}

/// Runs a policy subcommand.
pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let policy = match Policy::load(&file) {
                Ok(policy) => policy,
                Err(e) => return Ok(bad_policy(&e)),
            };
            println!(
                "ok: {} ({} rules, sha256 {})",
                file.display(),
                policy.rules().len(),
                policy.sha256()
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            policy,
            cwd,
            uid,
            prisoner,
            json,
            argv,
        } => {
            let policy = match Policy::load(&policy) {
                Ok(policy) => policy,
                Err(e) => return Ok(bad_policy(&e)),
            };
            let cwd = match cwd {
                Some(cwd) => cwd,
                None => std::env::current_dir()
                    .context("cannot determine the current directory; pass --cwd DIR")?,
            };
            let uid = match uid {
                Some(uid) => uid,
                None => std::fs::metadata("/proc/self")
                    .context("cannot determine your uid from /proc/self; pass --uid N")?
                    .uid(),
            };
            let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
            let call = Call {
                argv: &argv,
                cwd: cwd.as_os_str().as_bytes(),
                uid,
                prisoner: &prisoner,
            };
            let explanation = policy.explain(&call);
            if json {
                let text = serde_json::to_string_pretty(&to_json(&explanation))?;
                println!("{}", crate::table::json_escape_hidden(&text));
            } else {
                print!("{}", crate::table::clean_lines(&explanation.render()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn bad_policy(e: &clawrden_policy::PolicyError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

/// The explanation as JSON (durations both as policy text and milliseconds).
fn to_json(e: &Explanation) -> serde_json::Value {
    let v = &e.verdict;
    json!({
        "verdict": {
            "action": v.action.as_str(),
            "rule": v.rule,
            "reason": v.reason,
            "timeout": format_duration(v.timeout),
            "timeout_ms": u64::try_from(v.timeout.as_millis()).unwrap_or(u64::MAX),
            "executor": v.executor.as_str(),
            "ghost": v.ghost.as_ref().map(|g| json!({
                "image": g.image,
                "network": g.network,
                "memory": g.memory,
                "cpus": g.cpus,
                "pids": g.pids,
            })),
            "env": { "pass": v.env.pass, "drop": v.env.drop },
        },
        "checks": e.checks.iter().map(|c| json!({
            "index": c.index,
            "rule": c.rule,
            "matched": c.matched,
            "why": c.why,
            "flag": c.flag.as_ref().map(|m| json!({
                "flag": m.flag,
                "argument": m.argument,
                "token": token_json(&m.token),
                "form": m.form.as_str(),
            })),
        })).collect::<Vec<_>>(),
        "refused": e.refused,
    })
}

/// An argv token as the API writes it: a string, or `{"hex": ..}` when it is not UTF-8.
fn token_json(token: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(token) {
        Ok(text) => json!(text),
        Err(_) => json!({ "hex": token.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}
