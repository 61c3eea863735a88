//! `clawctl tail`: follow the warden's live events, one line each.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::client::Ctx;
use crate::sse::{self, Follow, SseEvent};
use crate::table::{self, clean, quote_argv, text};

/// Runs `clawctl tail`.
pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    sse::follow(&ctx.client, |f| {
        if let Follow::Event(ev) = f {
            let line = if ctx.json {
                let data: Value = serde_json::from_str(&ev.data).unwrap_or_else(|_| json!(ev.data));
                let id = ev
                    .id
                    .as_deref()
                    .map(|i| i.parse::<u64>().map_or_else(|_| json!(i), |n| json!(n)));
                table::json_escape_hidden(
                    &json!({ "id": id, "kind": ev.event, "data": data }).to_string(),
                )
            } else {
                clean(&format_event(ev, table::now_ms()))
            };
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) ends the tail.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `HH:MM:SS  KIND  SUMMARY` (UTC receive time; events carry no time of their own).
pub fn format_event(ev: &SseEvent, now: i64) -> String {
    let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::String(ev.data.clone()));
    let d = &data;
    let reason_suffix = |v: &Value| match v.as_str() {
        Some(r) if !r.is_empty() => format!(": {r}"),
        _ => String::new(),
    };
    let summary = match ev.event.as_str() {
        "request.pending" => format!(
            "{} {}: {} in {} (rule {}) waits for approval",
            text(&d["id"]),
            text(&d["prisoner"]),
            quote_argv(&d["argv"]),
            quote_argv(&d["cwd"]),
            text(&d["rule"])
        ),
        "request.decided" => format!(
            "{} {} by {}{}",
            text(&d["id"]),
            text(&d["action"]),
            text(&d["by"]),
            reason_suffix(&d["reason"])
        ),
        "request.started" => text(&d["id"]),
        "request.finished" => {
            let mut s = format!("{} {}", text(&d["id"]), text(&d["state"]));
            if let Some(c) = d["exit_code"].as_i64() {
                s.push_str(&format!(" exit {c}"));
            }
            if let Some(sig) = d["signal"].as_i64() {
                s.push_str(&format!(" signal {sig}"));
            }
            if let Some(ms) = d["duration_ms"].as_u64() {
                s.push_str(&format!(" after {ms}ms"));
            }
            s
        }
        "control" => format!(
            "{} by {}{}",
            text(&d["what"]),
            text(&d["by"]),
            reason_suffix(&d["reason"])
        ),
        "policy.reloaded" if d["ok"].as_bool() == Some(true) => {
            format!("ok sha256 {}", text(&d["sha256"]))
        }
        "policy.reloaded" => format!("FAILED, old policy kept: {}", text(&d["error"])),
        "reset" => "events were missed (older than the warden keeps); see clawctl history".into(),
        _ => data.to_string(),
    };
    format!("{}  {}  {}", table::clock_utc(now), ev.event, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, data: &str) -> SseEvent {
        SseEvent {
            id: Some("1".into()),
            event: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn event_lines_summarise_each_kind() {
        let t = table::parse_rfc3339("2026-01-01T09:01:02Z").unwrap();
        let cases = [
            (
                ev(
                    "request.decided",
                    r#"{"id":"A","action":"deny","reason":"no","by":"admin"}"#,
                ),
                "09:01:02  request.decided  A deny by admin: no",
            ),
            (
                ev(
                    "request.finished",
                    r#"{"id":"A","state":"done","exit_code":0,"signal":null,"duration_ms":12}"#,
                ),
                "09:01:02  request.finished  A done exit 0 after 12ms",
            ),
            (
                ev(
                    "control",
                    r#"{"what":"lockdown on","by":"admin","reason":null}"#,
                ),
                "09:01:02  control  lockdown on by admin",
            ),
            (
                ev(
                    "policy.reloaded",
                    r#"{"sha256":"ab","ok":false,"error":"p.yaml:1:1: bad"}"#,
                ),
                "09:01:02  policy.reloaded  FAILED, old policy kept: p.yaml:1:1: bad",
            ),
            (
                ev(
                    "request.pending",
                    r#"{"id":"A","prisoner":"p","argv":["cat","a b"],"cwd":"/","rule":"r"}"#,
                ),
                "09:01:02  request.pending  A p: cat 'a b' in / (rule r) waits for approval",
            ),
            (
                ev("something.new", r#"{"x":1}"#),
                "09:01:02  something.new  {\"x\":1}",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(format_event(&e, t), want);
        }
    }
}
