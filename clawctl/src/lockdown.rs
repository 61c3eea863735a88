//! `clawctl lockdown on|off`: deny every new call (and optionally stop running ones).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::json;

use crate::client::{ApiError, Ctx};
use crate::table;

/// `clawctl lockdown`
#[derive(Debug, Args)]
pub struct LockdownArgs {
    /// on: deny every new call with reason `lockdown`; off: back to the policy
    state: Switch,
    /// With `on`: also cancel every running command
    #[arg(long)]
    kill: bool,
    /// Why (audited, shown in `clawctl status`)
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// Runs `clawctl lockdown`.
pub fn run(ctx: &Ctx, args: LockdownArgs) -> anyhow::Result<ExitCode> {
    let on = args.state == Switch::On;
    if args.kill && !on {
        return Err(ApiError::Usage("--kill goes with `lockdown on` only".into()).into());
    }
    let mut body = json!({ "on": on, "kill_running": args.kill });
    if let Some(r) = &args.reason {
        body["reason"] = json!(r);
    }
    let view = ctx
        .client
        .send_json("POST", "/api/v1/lockdown", Some(&body))
        .map_err(|e| anyhow::Error::new(e).context("lockdown"))?;
    if ctx.json {
        table::print_api_json(&view);
    } else {
        println!(
            "lockdown {}",
            table::clean(&crate::status::lockdown_text(&view, table::now_ms()))
        );
    }
    Ok(ExitCode::SUCCESS)
}
