//! `clawctl queue [--watch]`: requests waiting for approval.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use crate::client::{ApiJson, Client, Ctx};
use crate::sse::{self, Follow};
use crate::table::{self, quote_argv, text, when, Table};

/// `clawctl queue`
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Keep running: print the queue again whenever a request arrives or is decided
    #[arg(long)]
    watch: bool,
}

/// Event kinds that change the queue.
const QUEUE_EVENTS: &[&str] = &[
    "request.pending",
    "request.decided",
    "request.finished",
    "reset",
];

fn fetch(client: &Client) -> anyhow::Result<ApiJson> {
    Ok(client.get_json("/api/v1/requests?state=pending&limit=500")?)
}

/// Runs `clawctl queue`.
pub fn run(ctx: &Ctx, args: QueueArgs) -> anyhow::Result<ExitCode> {
    if !args.watch {
        if ctx.json {
            table::print_api_json(&fetch(&ctx.client)?);
        } else {
            show(ctx, &fetch(&ctx.client)?, false);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let clear = !ctx.json && std::io::stdout().is_terminal();
    // Subscribe first, then fetch: a change between the two shows up as an event.
    sse::follow(&ctx.client, |f| {
        let refresh = match f {
            Follow::Connected => true,
            Follow::Event(ev) => QUEUE_EVENTS.contains(&ev.event.as_str()),
        };
        if refresh {
            show(ctx, &fetch(&ctx.client)?, clear);
        }
        Ok(true)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &Ctx, queue: &ApiJson, clear: bool) {
    if ctx.json {
        // Watching: one compact document per update, so a script can read line by line.
        println!("{}", table::json_escape_hidden(&queue.value.to_string()));
    } else {
        let mut out = String::new();
        if clear {
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&render(queue, table::now_ms()));
        print!("{out}");
    }
    let _ = std::io::stdout().flush();
}

/// The human view of `{"requests": [..]}` (pending ones).
pub fn render(queue: &Value, now: i64) -> String {
    let mut t = Table::new(&[
        "ID", "PRISONER", "WAITING", "EXPIRES", "RULE", "CWD", "COMMAND",
    ]);
    for r in queue["requests"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&r["id"]),
            text(&r["prisoner"]),
            when(&r["created_at"], now).replace(" ago", ""),
            when(&r["approval"]["expires_at"], now),
            text(&r["rule"]),
            quote_argv(&r["cwd"]),
            quote_argv(&r["argv"]),
        ]);
    }
    if t.is_empty() {
        "no requests waiting for approval\n".to_owned()
    } else {
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queue_table_shows_waiting_time_and_quoted_argv() {
        let now = table::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let q = json!({"requests": [{
            "id": "01JABC", "prisoner": "default", "created_at": "2026-01-01T00:00:48.000Z",
            "rule": "ask-cat", "cwd": "/tmp/a b", "argv": ["cat", "/etc/hosts"],
            "approval": {"state": "pending", "expires_at": "2026-01-01T00:06:00.000Z"}
        }]});
        assert_eq!(
            render(&q, now),
            "ID      PRISONER  WAITING  EXPIRES  RULE     CWD         COMMAND\n\
             01JABC  default   12s      in 5m    ask-cat  '/tmp/a b'  cat /etc/hosts\n"
        );
    }

    #[test]
    fn empty_queue_says_so() {
        assert_eq!(
            render(&json!({"requests": []}), 0),
            "no requests waiting for approval\n"
        );
    }
}
