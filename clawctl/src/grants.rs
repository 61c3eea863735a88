//! `clawctl grants` and `clawctl grants revoke ID`: remembered approvals.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{encode_component, Ctx};
use crate::table::{self, quote_argv, text, when, Table};

/// `clawctl grants`
#[derive(Debug, Args)]
pub struct GrantsArgs {
    #[command(subcommand)]
    action: Option<GrantsAction>,
}

#[derive(Debug, Subcommand)]
enum GrantsAction {
    /// Revoke a grant: the command asks again from now on
    Revoke {
        /// Grant id (from `clawctl grants`)
        id: String,
    },
}

/// Runs `clawctl grants ...`.
pub fn run(ctx: &Ctx, args: GrantsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        None => {
            let grants = ctx.client.get_json("/api/v1/grants")?;
            if ctx.json {
                table::print_api_json(&grants);
            } else {
                table::emit(&render(&grants, table::now_ms()));
            }
        }
        Some(GrantsAction::Revoke { id }) => {
            let path = format!("/api/v1/grants/{}", encode_component(&id));
            let grant = ctx.client.send_json("DELETE", &path, None).map_err(|e| {
                anyhow::Error::new(e).context(format!("revoke grant {}", table::clean(&id)))
            })?;
            if ctx.json {
                table::print_api_json(&grant);
            } else {
                println!(
                    "{}",
                    table::clean(&format!(
                        "revoked grant {} ({}: {} in {})",
                        text(&grant["id"]),
                        text(&grant["prisoner"]),
                        quote_argv(&grant["argv"]),
                        quote_argv(&grant["cwd"])
                    ))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The human view of `{"grants": [..]}`.
pub fn render(grants: &Value, now: i64) -> String {
    let mut t = Table::new(&[
        "ID",
        "PRISONER",
        "FOR",
        "BY",
        "CREATED",
        "EXPIRES",
        "USES",
        "LAST USED",
        "CWD",
        "COMMAND",
    ]);
    for g in grants["grants"].as_array().into_iter().flatten() {
        let expires = if g["revoked_at"].is_null() {
            when(&g["expires_at"], now)
        } else {
            format!("revoked {}", when(&g["revoked_at"], now))
        };
        // Grants made before they bound uid and executor answer no call: shown as `-`.
        let bound = match (&g["uid"], g["executor"].as_str()) {
            (Value::Number(uid), Some(executor)) => format!("uid {uid}/{executor}"),
            _ => "-".to_owned(),
        };
        t.row(vec![
            text(&g["id"]),
            text(&g["prisoner"]),
            bound,
            text(&g["created_by"]),
            when(&g["created_at"], now),
            expires,
            text(&g["uses"]),
            when(&g["last_used_at"], now),
            quote_argv(&g["cwd"]),
            quote_argv(&g["argv"]),
        ]);
    }
    if t.is_empty() {
        "no grants\n".to_owned()
    } else {
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grants_table_shows_expiry_and_uses() {
        let now = table::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        let g = json!({"grants": [{
            "id": 3, "prisoner": "default", "uid": 1000, "executor": "mirror",
            "argv": ["cat", "/etc/hosts"], "cwd": "/",
            "created_by": "admin", "created_at": "2026-01-01T00:30:00.000Z",
            "expires_at": "2026-01-01T01:30:00.000Z", "revoked_at": null, "uses": 2,
            "last_used_at": "2026-01-01T00:59:50.000Z"
        }]});
        assert_eq!(
            render(&g, now),
            "ID  PRISONER  FOR              BY     CREATED  EXPIRES  USES  LAST USED  CWD  COMMAND\n\
             3   default   uid 1000/mirror  admin  30m ago  in 30m   2     10s ago    /    cat /etc/hosts\n"
        );
    }
}
