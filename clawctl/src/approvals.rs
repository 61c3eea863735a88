//! `clawctl approve ID` and `clawctl deny ID`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};

use crate::client::{encode_component, ApiError, Ctx};
use crate::table::{self, clean, quote_argv, text};

/// The longest remember-grant the warden accepts (api.md).
const MAX_REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// `clawctl approve`
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Approval id: the request id the shim printed (`waiting for approval <id>`)
    id: String,
    /// Also allow this exact command (same prisoner, argv and cwd) without asking for
    /// this long, at most 24h (e.g. 10m, 1h)
    #[arg(long, value_name = "DURATION")]
    remember: Option<String>,
    /// Note recorded in the audit log with the approval
    #[arg(long)]
    note: Option<String>,
}

/// `clawctl deny`
#[derive(Debug, Args)]
pub struct DenyArgs {
    /// Approval id: the request id the shim printed (`waiting for approval <id>`)
    id: String,
    /// Reason shown to the agent (`denied by <you>: <reason>`) and audited
    #[arg(long)]
    reason: Option<String>,
}

/// Checks --remember before sending, so a typo is a usage error with the right hint.
fn check_remember(text: &str) -> Result<(), ApiError> {
    let d = clawrden_policy::parse_duration(text)
        .map_err(|e| ApiError::Usage(format!("bad --remember {text:?}: {e}")))?;
    if d.is_zero() || d > MAX_REMEMBER {
        return Err(ApiError::Usage(format!(
            "bad --remember {text:?}: must be more than 0s and at most 24h"
        )));
    }
    Ok(())
}

/// Runs `clawctl approve`.
pub fn approve(ctx: &Ctx, args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let mut body = Map::new();
    if let Some(r) = &args.remember {
        check_remember(r)?;
        body.insert("remember".into(), json!(r));
    }
    if let Some(n) = &args.note {
        body.insert("note".into(), json!(n));
    }
    let path = format!("/api/v1/requests/{}/approve", encode_component(&args.id));
    let view = ctx
        .client
        .send_json("POST", &path, Some(&Value::Object(body)))
        .map_err(|e| anyhow::Error::new(e).context(format!("approve {}", clean(&args.id))))?;
    if ctx.json {
        table::print_api_json(&view);
    } else {
        let mut line = format!("approved {}", summary(&view));
        if let Some(r) = &args.remember {
            line.push_str(&format!("; remembered for {r}"));
        }
        println!("{}", clean(&line));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `clawctl deny`.
pub fn deny(ctx: &Ctx, args: DenyArgs) -> anyhow::Result<ExitCode> {
    let mut body = Map::new();
    if let Some(r) = &args.reason {
        body.insert("reason".into(), json!(r));
    }
    let path = format!("/api/v1/requests/{}/deny", encode_component(&args.id));
    let view = ctx
        .client
        .send_json("POST", &path, Some(&Value::Object(body)))
        .map_err(|e| anyhow::Error::new(e).context(format!("deny {}", clean(&args.id))))?;
    if ctx.json {
        table::print_api_json(&view);
    } else {
        println!("{}", clean(&format!("denied {}", summary(&view))));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID (prisoner): argv in cwd`
fn summary(view: &Value) -> String {
    format!(
        "{} ({}): {} in {}",
        text(&view["id"]),
        text(&view["prisoner"]),
        quote_argv(&view["argv"]),
        quote_argv(&view["cwd"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_must_be_a_duration_up_to_a_day() {
        assert!(check_remember("1h").is_ok());
        assert!(check_remember("24h").is_ok());
        assert_eq!(check_remember("25h").unwrap_err().exit_code(), 2);
        assert_eq!(check_remember("0s").unwrap_err().exit_code(), 2);
        assert_eq!(check_remember("soon").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn summary_names_id_prisoner_argv_and_cwd() {
        let v =
            serde_json::json!({"id": "01J", "prisoner": "p", "argv": ["rm", "a b"], "cwd": "/w"});
        assert_eq!(summary(&v), "01J (p): rm 'a b' in /w");
    }
}
