//! `clawctl token create|list|revoke`: API tokens (admin scope).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{encode_component, ApiError, Ctx};
use crate::table::{self, clean, text, when, Table};

/// `clawctl token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, on stdout, and never shown again
    Create {
        /// Who or what will use it (recorded as the approver/actor in the audit log)
        #[arg(long)]
        name: String,
        /// read (look), approve (also approve/deny, revoke grants) or admin (everything)
        #[arg(long, value_parser = ["read", "approve", "admin"])]
        scope: String,
    },
    /// List tokens (without their secrets)
    List,
    /// Revoke a token by id (from `clawctl token list`)
    Revoke { id: String },
}

/// Runs `clawctl token ...`.
pub fn run(ctx: &Ctx, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { name, scope } => {
            let body = json!({ "name": name, "scope": scope });
            let created = ctx
                .client
                .send_json("POST", "/api/v1/tokens", Some(&body))
                .map_err(|e| anyhow::Error::new(e).context("create token"))?;
            if ctx.json {
                table::print_api_json(&created);
            } else {
                let token = created["token"]
                    .as_str()
                    .ok_or_else(|| ApiError::BadResponse {
                        url: ctx.client.url_of("/api/v1/tokens"),
                        what: "the answer has no `token` field".into(),
                    })?;
                // The secret alone on stdout (`TOKEN=$(clawctl token create ...)`);
                // the rest on stderr.
                println!("{token}");
                eprintln!(
                    "{}",
                    clean(&format!(
                        "created token {} (name {}, scope {}); it is shown only this once",
                        text(&created["id"]),
                        text(&created["name"]),
                        text(&created["scope"])
                    ))
                );
            }
        }
        TokenCommand::List => {
            let tokens = ctx.client.get_json("/api/v1/tokens")?;
            if ctx.json {
                table::print_api_json(&tokens);
            } else {
                table::emit(&render(&tokens, table::now_ms()));
            }
        }
        TokenCommand::Revoke { id } => {
            let path = format!("/api/v1/tokens/{}", encode_component(&id));
            let view = ctx.client.send_json("DELETE", &path, None).map_err(|e| {
                anyhow::Error::new(e).context(format!("revoke token {}", clean(&id)))
            })?;
            if ctx.json {
                table::print_api_json(&view);
            } else {
                println!(
                    "{}",
                    clean(&format!(
                        "revoked token {} (name {}, scope {})",
                        text(&view["id"]),
                        text(&view["name"]),
                        text(&view["scope"])
                    ))
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The human view of `{"tokens": [..]}`.
pub fn render(tokens: &Value, now: i64) -> String {
    let mut t = Table::new(&["ID", "NAME", "SCOPE", "CREATED", "LAST USED", "REVOKED"]);
    for tk in tokens["tokens"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&tk["id"]),
            text(&tk["name"]),
            text(&tk["scope"]),
            when(&tk["created_at"], now),
            when(&tk["last_used_at"], now),
            when(&tk["revoked_at"], now),
        ]);
    }
    if t.is_empty() {
        "no tokens\n".to_owned()
    } else {
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_table_never_needs_the_secret() {
        let now = table::parse_rfc3339("2026-01-01T00:00:10Z").unwrap();
        let v = json!({"tokens": [
            {"id": 1, "name": "admin", "scope": "admin", "created_at": "2026-01-01T00:00:00.000Z", "last_used_at": "2026-01-01T00:00:09.000Z", "revoked_at": null},
            {"id": 2, "name": "ci", "scope": "read", "created_at": "2026-01-01T00:00:05.000Z", "last_used_at": null, "revoked_at": "2026-01-01T00:00:10.000Z"}
        ]});
        assert_eq!(
            render(&v, now),
            "ID  NAME   SCOPE  CREATED  LAST USED  REVOKED\n\
             1   admin  admin  10s ago  1s ago     -\n\
             2   ci     read   5s ago   -          now\n"
        );
    }
}
