//! What operators monitor the warden with, checked against the real thing: the alerting
//! rules in docker/prometheus/alerts.yml pass `promtool check rules` and their unit tests
//! (`promtool test rules`, one test per alert), and every PromQL expression of the rules
//! and of the Grafana dashboard (contrib/grafana/) parses with promtool and selects only
//! metrics that a real warden's `GET /metrics` exports (plus `up`, which Prometheus
//! itself records per target); the dashboard shows every metric family the warden exports.
//!
//! Needs promtool (Debian: prometheus); skips without it unless CLAWRDEN_REQUIRE_TOOLS=1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use clawrden_e2e::api::Api;
use clawrden_e2e::docker::repo_root;
use clawrden_e2e::tools::require_tool_or_skip;
use clawrden_e2e::{policy_allow_all, Call, TempDir, TestWarden};
use serde_json::{json, Value};

const ALERTS: &str = "docker/prometheus/alerts.yml";
const ALERTS_TEST: &str = "docker/prometheus/alerts_test.yml";
const DASHBOARD: &str = "contrib/grafana/clawrden-dashboard.json";
/// Series Prometheus records itself for every scrape target.
const SCRAPE_SERIES: &[&str] = &["up"];

fn promtool(test: &str) -> Option<std::path::PathBuf> {
    require_tool_or_skip(test, "promtool", "prometheus")
}

fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn read_yaml(rel: &str) -> serde_yaml::Value {
    let path = repo_root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(alert name, expr)` of every rule in alerts.yml.
fn alert_rules() -> Vec<(String, String)> {
    let doc = read_yaml(ALERTS);
    let mut rules = Vec::new();
    for group in doc["groups"].as_sequence().expect("alerts.yml: groups") {
        for rule in group["rules"].as_sequence().expect("alerts.yml: rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            rules.push((name.to_string(), expr.to_string()));
        }
    }
    rules
}

#[test]
fn alert_rules_pass_promtool_and_each_has_a_unit_test_that_fires_it() {
    let test = "alert_rules_pass_promtool_and_each_has_a_unit_test_that_fires_it";
    let Some(promtool) = promtool(test) else {
        return;
    };
    let root = repo_root();
    let rules = alert_rules();
    let (code, text) = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(root.join(ALERTS)));
    assert_eq!(code, Some(0), "promtool check rules:\n{text}");
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "promtool check rules:\n{text}"
    );
    let (code, text) = run(Command::new(&promtool)
        .args(["test", "rules"])
        .arg(root.join(ALERTS_TEST)));
    assert_eq!(code, Some(0), "promtool test rules:\n{text}");
    assert!(text.contains("SUCCESS"), "promtool test rules:\n{text}");

    // Each alert has a test case in which it fires (a non-empty exp_alerts), so no rule
    // passes only because nothing ever expected it to fire.
    let tests = read_yaml(ALERTS_TEST);
    let mut fired: BTreeSet<String> = BTreeSet::new();
    for case in tests["tests"]
        .as_sequence()
        .expect("alerts_test.yml: tests")
    {
        for check in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let expected = check["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                fired.insert(check["alertname"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let untested: Vec<&str> = rules
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !fired.contains(*name))
        .collect();
    assert!(
        untested.is_empty(),
        "alerts with no test case in {ALERTS_TEST} that makes them fire: {untested:?}"
    );
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "ClawrdenWardenDown",
        "ClawrdenApprovalWaitingTooLong",
        "ClawrdenApprovalQueueGrowing",
        "ClawrdenAuditWriteFailing",
        "ClawrdenProtocolErrorsSpiking",
    ] {
        assert!(
            names.contains(wanted),
            "{ALERTS} has no {wanted}: {names:?}"
        );
    }
}

/// Every PromQL expression of the dashboard, with where it is (panel title and refId, or
/// template variable), Grafana's interval variables replaced by durations. A template
/// query `label_values(SELECTOR, LABEL)` contributes its SELECTOR.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = repo_root().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dash: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut exprs = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().into_iter().flatten().collect();
    while let Some(panel) = panels.pop() {
        // Rows may nest panels.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{DASHBOARD}: a target without expr: {target}"));
            exprs.push((
                format!(
                    "panel {} {}",
                    panel["title"].as_str().unwrap_or_default(),
                    target["refId"].as_str().unwrap_or_default()
                ),
                expr.to_string(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .unwrap_or_else(|| panic!("{DASHBOARD}: variable without a query: {var}"));
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map_or(query, |(selector, _label)| selector);
        exprs.push((
            format!("variable {}", var["name"].as_str().unwrap_or_default()),
            selector.to_string(),
        ));
    }
    exprs
        .into_iter()
        .map(|(at, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h");
            (at, e)
        })
        .collect()
}

/// Keywords of PromQL that look like identifiers (aggregation operators among them: their
/// `by (...)` may stand between the name and its parenthesis).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index after the bracket that closes the one at `open` (`(`/`)` or `{`/`}`),
/// stepping over string literals.
fn skip_group(b: &[u8], open: usize) -> usize {
    let (left, right) = (b[open], if b[open] == b'(' { b')' } else { b'}' });
    let mut depth = 0;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(b, i);
                continue;
            }
            c if c == left => depth += 1,
            c if c == right => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The index after the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' && quote != b'`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The metric names a PromQL expression selects: identifiers that are not functions
/// (followed by `(`), keywords, label names (inside `{...}` or the label list after `by`,
/// `on`, ...), numbers or durations, and not inside string literals.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i);
        } else if c == b'{' {
            i = skip_group(b, i);
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < b.len() && b[next].is_ascii_whitespace() {
                next += 1;
            }
            let paren = b.get(next) == Some(&b'(');
            if LABEL_LISTS.contains(&word) && paren {
                i = skip_group(b, next);
            } else if !KEYWORDS.contains(&word) && !paren {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_the_selected_series_only() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"sum by (action) (rate(clawrden_requests_total{instance=~"$instance", prisoner="x y"}[5m]))"#,
            &["clawrden_requests_total"],
        ),
        (
            r#"up{job="clawrden-warden"} == 0 or absent(up{job="clawrden-warden"})"#,
            &["up"],
        ),
        (
            "time() - (clawrden_oldest_pending_approval_timestamp_seconds > 0) > 300",
            &["clawrden_oldest_pending_approval_timestamp_seconds"],
        ),
        (
            "histogram_quantile(0.9, sum without (instance) (rate(a_bucket[1h30m] offset 5m)))",
            &["a_bucket"],
        ),
        (
            "a / on (instance) group_left (version) b and bool_c unless ignoring(le) d:rate5m",
            &["a", "b", "bool_c", "d:rate5m"],
        ),
        (
            r#"count(x{l="not_a_metric", m='nor}this'}) by (job) + 1e3 * .5 + max without(a) (y)"#,
            &["x", "y"],
        ),
    ];
    for (expr, want) in cases {
        let got = metric_names(expr);
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "metric names of {expr}");
    }
}

/// Sample names a real warden exports after one call of each policy action, and the
/// families (`# TYPE` lines).
fn exported_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let w = TestWarden::builder()
        .policy(policy_allow_all())
        .api()
        .start();
    assert_eq!(w.run(&Call::new("true")).status.code(), Some(0));
    let text = Api::of(&w).metrics();
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap_or_default().to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    assert!(
        samples.contains("clawrden_requests_total"),
        "after a call, /metrics has requests:\n{text}"
    );
    (samples, families)
}

/// Runs `promtool check rules` over a generated rules file recording every expression,
/// so Prometheus' own parser checks their syntax; panics naming the failures.
fn promtool_parses(promtool: &Path, exprs: &[(String, String)]) {
    let dir = TempDir::new("promql");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("check:expr_{i}"), "expr": e}))
        .collect();
    // JSON is YAML: promtool reads it as a rules file.
    let file = dir.path().join("exprs.rules.json");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "exprs", "rules": rules}]}).to_string(),
    )
    .expect("write the rules file");
    let (code, text) = run(Command::new(promtool).args(["check", "rules"]).arg(&file));
    let listing: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, (at, e))| format!("expr_{i} ({at}): {e}"))
        .collect();
    assert_eq!(
        code,
        Some(0),
        "promtool cannot parse every expression:\n{text}\n{}",
        listing.join("\n")
    );
}

#[test]
fn alerts_and_dashboard_select_only_metrics_the_warden_exports() {
    let test = "alerts_and_dashboard_select_only_metrics_the_warden_exports";
    let Some(promtool) = promtool(test) else {
        return;
    };
    let (samples, families) = exported_names();
    let mut exprs: Vec<(String, String)> = alert_rules()
        .into_iter()
        .map(|(name, e)| (format!("alert {name}"), e))
        .collect();
    let dashboard = dashboard_exprs();
    assert!(
        dashboard.len() >= 10,
        "{DASHBOARD}: only {} expressions found",
        dashboard.len()
    );
    exprs.extend(dashboard.iter().cloned());
    promtool_parses(&promtool, &exprs);

    let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (at, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{at} selects no metric: {expr}");
        for name in names {
            if !samples.contains(&name) && !SCRAPE_SERIES.contains(&name.as_str()) {
                unknown.entry(name).or_default().push(at.clone());
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metric names the warden does not export: {unknown:#?}\nit exports: {samples:#?}"
    );

    // And the converse: the dashboard shows every family the warden exports.
    let shown: BTreeSet<String> = dashboard
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    let missing: Vec<&String> = families
        .iter()
        .filter(|family| {
            !["", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| shown.contains(&format!("{family}{suffix}")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metric families the warden exports but {DASHBOARD} does not show: {missing:?}"
    );
}
