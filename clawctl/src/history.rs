//! `clawctl history`: decided and finished requests, newest first.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use crate::client::{query, ApiError, Client, Ctx};
use crate::table::{self, quote_argv, text, when, Table};

/// Default number of requests shown (tables and --json).
const DEFAULT_LIMIT: u32 = 50;
/// The API's largest page.
const MAX_PAGE: u32 = 500;
/// An export may pause between pages while the warden reads SQLite.
const EXPORT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// `clawctl history`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this prisoner
    #[arg(long)]
    prisoner: Option<String>,
    /// Only this command (argv[0])
    #[arg(long)]
    command: Option<String>,
    /// Only this action: allow, deny or ask
    #[arg(long)]
    action: Option<String>,
    /// From this time: RFC 3339, or a duration meaning "ago" (1h, 2d)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this time: RFC 3339, or a duration meaning "ago"
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Full-text search over argv, cwd and reasons
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// How many requests in total, following pages [default: 50; --csv: all]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// Stream the warden's CSV export instead of a table
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

impl HistoryArgs {
    fn filters(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("prisoner", self.prisoner.clone()),
            ("command", self.command.clone()),
            ("action", self.action.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("q", self.search.clone()),
        ]
    }
}

/// Runs `clawctl history`.
pub fn run(ctx: &Ctx, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    if args.csv {
        return export_csv(&ctx.client, &args);
    }
    let page = fetch(&ctx.client, &args, args.limit.unwrap_or(DEFAULT_LIMIT))?;
    if ctx.json {
        table::print_json(&page);
    } else {
        table::emit(&render(&page, table::now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows `next_cursor` until `limit` requests or the last page; returns the same shape
/// as one page: `{"requests": [..], "next_cursor": ..}` (for --json: with serde_json's
/// sorted keys, as the pages are merged).
fn fetch(client: &Client, args: &HistoryArgs, limit: u32) -> Result<Value, ApiError> {
    let mut requests: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let want = (limit - requests.len() as u32).min(MAX_PAGE);
        let mut pairs = args.filters();
        pairs.push(("limit", Some(want.to_string())));
        pairs.push(("cursor", cursor.clone()));
        let mut page = client
            .get_json(&format!("/api/v1/history{}", query(&pairs)))?
            .value;
        let got = match page["requests"].take() {
            Value::Array(items) => items,
            _ => {
                return Err(ApiError::BadResponse {
                    url: client.url_of("/api/v1/history"),
                    what: "no `requests` array in the answer".into(),
                })
            }
        };
        let empty = got.is_empty();
        requests.extend(
            got.into_iter()
                .take((limit as usize).saturating_sub(requests.len())),
        );
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || empty || requests.len() as u32 >= limit {
            break;
        }
    }
    Ok(json!({ "requests": requests, "next_cursor": cursor }))
}

/// Streams GET /api/v1/history/export?format=csv to stdout, cut after `--limit` records.
fn export_csv(client: &Client, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let mut pairs = vec![("format", Some("csv".to_owned()))];
    pairs.extend(args.filters());
    let path = format!("/api/v1/history/export{}", query(&pairs));
    let mut resp =
        client.open_stream(&path, &[("Accept", "text/csv".into())], EXPORT_READ_TIMEOUT)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut limiter = args.limit.map(|n| CsvLimiter::new(n as u64));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = resp
            .body()
            .read(&mut buf)
            .map_err(|e| ApiError::Unreachable {
                url: client.base.text.clone(),
                cause: format!("the export broke off: {e}"),
            })?;
        if n == 0 {
            break;
        }
        let (keep, done) = match &mut limiter {
            Some(l) => l.feed(&buf[..n]),
            None => (n, false),
        };
        if let Err(e) = out.write_all(&buf[..keep]) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                break; // `| head`: the reader has what it wanted
            }
            return Err(e.into());
        }
        if done {
            break;
        }
    }
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

/// Counts CSV records (a newline inside double quotes is part of a field) and says where
/// to cut after the header plus `limit` records.
#[derive(Debug)]
struct CsvLimiter {
    /// Records still allowed, counting the header line.
    left: u64,
    in_quotes: bool,
}

impl CsvLimiter {
    fn new(limit: u64) -> CsvLimiter {
        CsvLimiter {
            left: limit + 1,
            in_quotes: false,
        }
    }

    /// Returns how many bytes of `chunk` to keep and whether the limit was reached.
    fn feed(&mut self, chunk: &[u8]) -> (usize, bool) {
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => {
                    self.left -= 1;
                    if self.left == 0 {
                        return (i + 1, true);
                    }
                }
                _ => {}
            }
        }
        (chunk.len(), false)
    }
}

/// The human view of a history page.
pub fn render(page: &Value, now: i64) -> String {
    let mut t = Table::new(&[
        "ID", "WHEN", "PRISONER", "ACTION", "STATE", "EXIT", "BY", "COMMAND",
    ]);
    for r in page["requests"].as_array().into_iter().flatten() {
        let exit = match (&r["exit_code"], &r["signal"]) {
            (Value::Number(c), _) => c.to_string(),
            (_, Value::Number(s)) => format!("sig {s}"),
            _ => "-".to_owned(),
        };
        t.row(vec![
            text(&r["id"]),
            when(&r["created_at"], now),
            text(&r["prisoner"]),
            text(&r["action"]),
            text(&r["state"]),
            exit,
            text(&r["approval"]["approver"]),
            quote_argv(&r["argv"]),
        ]);
    }
    let mut out = if t.is_empty() {
        "no requests match\n".to_owned()
    } else {
        t.render()
    };
    if !page["next_cursor"].is_null() {
        out.push_str("(more: raise --limit or narrow with --since/--until)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_limiter_counts_records_not_quoted_newlines() {
        let mut l = CsvLimiter::new(2);
        let data = b"id,argv\n1,\"echo \"\"a\nb\"\"\"\n2,x\n3,y\n";
        let (keep, done) = l.feed(data);
        assert!(done);
        assert_eq!(&data[..keep], b"id,argv\n1,\"echo \"\"a\nb\"\"\"\n2,x\n");
    }

    #[test]
    fn csv_limiter_works_across_chunks() {
        let mut l = CsvLimiter::new(1);
        assert_eq!(l.feed(b"h\n\"a"), (4, false));
        assert_eq!(l.feed(b"\n\"\nrest\n"), (3, true));
    }

    #[test]
    fn history_table_shows_exit_signal_and_approver() {
        let now = table::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let page = json!({"requests": [
            {"id": "A", "created_at": "2026-01-01T00:00:30.000Z", "prisoner": "p", "action": "ask",
             "state": "done", "exit_code": 0, "signal": null, "approval": {"approver": "admin"}, "argv": ["cat", "x"]},
            {"id": "B", "created_at": "2026-01-01T00:00:00.000Z", "prisoner": "p", "action": "allow",
             "state": "done", "exit_code": null, "signal": 9, "approval": null, "argv": ["sleep", "9"]}
        ], "next_cursor": "c"});
        assert_eq!(
            render(&page, now),
            "ID  WHEN     PRISONER  ACTION  STATE  EXIT   BY     COMMAND\n\
             A   30s ago  p         ask     done   0      admin  cat x\n\
             B   1m ago   p         allow   done   sig 9  -      sleep 9\n\
             (more: raise --limit or narrow with --since/--until)\n"
        );
    }
}
