//! `clawctl status`: the warden at a glance.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::Ctx;
use crate::table::{self, clean, text, when, Table};

/// Runs `clawctl status`.
pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let status = ctx.client.get_json("/api/v1/status")?;
    if ctx.json {
        table::print_api_json(&status);
    } else {
        table::emit(&render(&status, table::now_ms()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human view of a StatusView.
pub fn render(s: &Value, now: i64) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<9} {}\n", clean(&v)));
    line(
        "warden",
        format!(
            "{}, up since {} ({})",
            text(&s["version"]),
            text(&s["started_at"]),
            when(&s["started_at"], now)
        ),
    );
    let lock = &s["lockdown"];
    line("lockdown", lockdown_text(lock, now));
    let policy = &s["policy"];
    let reload = &policy["last_reload"];
    let reload_text = if reload.is_null() {
        String::new()
    } else if reload["ok"].as_bool() == Some(true) {
        format!(", last reload ok {}", when(&reload["at"], now))
    } else {
        format!(
            ", last reload FAILED {}: {}",
            when(&reload["at"], now),
            text(&reload["error"])
        )
    };
    line(
        "policy",
        format!(
            "{} (sha256 {}){reload_text}",
            text(&policy["path"]),
            short_hash(&policy["sha256"])
        ),
    );
    line(
        "queue",
        format!(
            "{} pending, {} running",
            text(&s["queue"]["pending"]),
            text(&s["running"])
        ),
    );
    let audit = &s["audit"];
    let failures = audit["failures"].as_u64().unwrap_or(0);
    line(
        "audit",
        if failures == 0 {
            "ok".to_owned()
        } else {
            format!(
                "{failures} write failures, last: {}",
                text(&audit["last_error"])
            )
        },
    );
    let mut t = Table::new(&[
        "PRISONER",
        "STATE",
        "RUNNING",
        "PENDING",
        "CONTAINER",
        "SOCKET",
    ]);
    for p in s["prisoners"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&p["name"]),
            text(&p["state"]),
            text(&p["running"]),
            text(&p["pending"]),
            text(&p["container"]),
            text(&p["socket"]),
        ]);
    }
    if !t.is_empty() {
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

/// "off" or "ON since 5m ago by admin: reason".
pub fn lockdown_text(lock: &Value, now: i64) -> String {
    if lock["on"].as_bool() != Some(true) {
        return "off".to_owned();
    }
    let mut s = format!("ON since {}", when(&lock["since"], now));
    if let Some(by) = lock["by"].as_str() {
        s.push_str(&format!(" by {by}"));
    }
    if let Some(reason) = lock["reason"].as_str().filter(|r| !r.is_empty()) {
        s.push_str(&format!(": {reason}"));
    }
    s
}

fn short_hash(v: &Value) -> String {
    match v.as_str() {
        Some(h) if h.len() > 12 => format!("{}…", &h[..12]),
        _ => text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_renders_summary_and_prisoners() {
        let now = table::parse_rfc3339("2026-01-01T00:10:00Z").unwrap();
        let s = json!({
            "version": "0.1.0", "started_at": "2026-01-01T00:00:00.000Z",
            "lockdown": {"on": true, "by": "admin", "reason": "incident", "since": "2026-01-01T00:09:00.000Z"},
            "policy": {"path": "/etc/p.yaml", "sha256": "0123456789abcdef0123", "last_reload": {"ok": true, "at": "2026-01-01T00:05:00.000Z", "error": null}},
            "queue": {"pending": 2}, "running": 1,
            "prisoners": [{"name": "default", "socket": "/run/w.sock", "container": null, "state": "active", "running": 1, "pending": 2}],
            "audit": {"failures": 0, "last_error": null}
        });
        assert_eq!(
            render(&s, now),
            "warden    0.1.0, up since 2026-01-01T00:00:00.000Z (10m ago)\n\
             lockdown  ON since 1m ago by admin: incident\n\
             policy    /etc/p.yaml (sha256 0123456789ab…), last reload ok 5m ago\n\
             queue     2 pending, 1 running\n\
             audit     ok\n\
             \n\
             PRISONER  STATE   RUNNING  PENDING  CONTAINER  SOCKET\n\
             default   active  1        2        -          /run/w.sock\n"
        );
    }

    #[test]
    fn lockdown_off_is_just_off() {
        assert_eq!(lockdown_text(&json!({"on": false, "by": "x"}), 0), "off");
    }
}
