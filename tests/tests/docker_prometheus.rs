//! docker-compose.yml's `metrics` profile for real: `scripts/up.sh --metrics` starts the
//! warden, a prisoner and Prometheus (prom/prometheus where it can be pulled, else the image
//! built locally from Debian's prometheus package). After a known number of calls in the
//! prisoner, Prometheus' HTTP API shows the warden's target `up`,
//! `sum(clawrden_requests_total)` equal to the calls made (and split by action), the rules
//! of docker/prometheus/alerts.yml loaded and evaluating without error, and
//! ClawrdenWardenDown going pending once the warden stops.
//!
//! Needs a Docker engine (skips without one unless CLAWRDEN_REQUIRE_DOCKER=1), root (the
//! local Prometheus image is built with debootstrap), docker compose and cargo.

use std::time::{Duration, Instant};

use clawrden_e2e::api::{url_encode, Api};
use clawrden_e2e::docker::{
    ensure_test_image, require_docker_or_skip, ComposeOptions, ComposeStack,
};
use serde_json::Value;

const POLICY: &str = "\
version: 1
default_action: deny
default_timeout: 1m
approval_timeout: 1m
default_executor: mirror
rules:
  - name: read
    command: cat
    action: allow
  - name: no-rm
    command: rm
    action: deny
    reason: nothing is deleted here
";

/// Prometheus scrapes and evaluates every 15 s (docker/prometheus/prometheus.yml): a few
/// rounds of that, plus start-up.
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(90);

struct Prometheus {
    api: Api,
}

impl Prometheus {
    fn get(&self, path: &str) -> Value {
        let response = self.api.get(path);
        assert_eq!(response.status, 200, "GET {path}: {}", response.text());
        let v = response.json();
        assert_eq!(v["status"], "success", "GET {path}: {v}");
        v["data"].clone()
    }

    /// The instant vector of `query` as (labels, value) pairs.
    fn query(&self, query: &str) -> Vec<(Value, f64)> {
        let data = self.get(&format!("/api/v1/query?query={}", url_encode(query)));
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: no result array: {data}"))
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().unwrap_or_default();
                let v: f64 = v.parse().unwrap_or_else(|_| panic!("{query}: value {s}"));
                (s["metric"].clone(), v)
            })
            .collect()
    }

    /// Polls `probe` (bounded by [`PROMETHEUS_DEADLINE`]) until it returns `Ok`; panics
    /// with its last `Err` otherwise.
    fn wait<T>(&self, what: &str, mut probe: impl FnMut(&Self) -> Result<T, String>) -> T {
        let started = Instant::now();
        loop {
            match probe(self) {
                Ok(v) => {
                    eprintln!("{what}: {:?}", started.elapsed());
                    return v;
                }
                Err(why) if started.elapsed() > PROMETHEUS_DEADLINE => {
                    panic!("gave up after {PROMETHEUS_DEADLINE:?} waiting for {what}: {why}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

#[test]
fn prometheus_scrapes_the_warden_counts_every_call_and_evaluates_the_alerts() {
    let test = "prometheus_scrapes_the_warden_counts_every_call_and_evaluates_the_alerts";
    if !require_docker_or_skip(test) {
        return;
    }
    let base = ensure_test_image("bookworm").unwrap_or_else(|e| panic!("{test}: {e}"));
    let stack = ComposeStack::start(ComposeOptions {
        base_image: Some(base),
        policy: Some(POLICY.to_string()),
        metrics: true,
        ..ComposeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{test}: {e}"));
    eprintln!("scripts/up.sh --metrics: {:?}", stack.took);
    // Which images it pulled or built.
    for line in stack.up_stderr.lines().filter(|l| l.starts_with("up.sh: ")) {
        eprintln!("{line}");
    }
    let prom = Prometheus {
        api: Api {
            addr: format!("127.0.0.1:{}", stack.prometheus_port)
                .parse()
                .expect("addr"),
            token: None,
        },
    };

    prom.wait("the warden's target to be up", |p| {
        let up = p.query(r#"up{job="clawrden-warden"}"#);
        match up.as_slice() {
            [(labels, v)] if *v == 1.0 && labels["instance"] == "warden:8080" => Ok(()),
            other => Err(format!("up = {other:?}")),
        }
    });
    // Nothing has called the warden yet.
    assert!(
        prom.query("sum(clawrden_requests_total)")
            .iter()
            .all(|(_, v)| *v == 0.0),
        "requests counted before any call"
    );

    let c = stack.prisoner();
    for _ in 0..3 {
        let out = c
            .exec("agent", &["cat", "/etc/hostname"])
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        assert_eq!(
            (out.status, out.stdout.as_slice()),
            (Some(0), &b"prisoner\n"[..]),
            "{out:?}"
        );
    }
    for _ in 0..2 {
        let out = c
            .exec("agent", &["rm", "/workspace/nothing"])
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        assert_eq!(
            (out.status, out.stderr_text().as_str()),
            (Some(126), "clawrden: denied: nothing is deleted here\n"),
            "{out:?}"
        );
    }
    let calls = 5.0;

    prom.wait("Prometheus to count the 5 calls", |p| {
        let total = p.query("sum(clawrden_requests_total)");
        let by_action = p.query("sum by (action) (clawrden_requests_total)");
        let mut actions: Vec<(String, f64)> = by_action
            .iter()
            .map(|(l, v)| (l["action"].as_str().unwrap_or_default().to_string(), *v))
            .collect();
        actions.sort_by(|a, b| a.0.cmp(&b.0));
        let want = vec![("allow".to_string(), 3.0), ("deny".to_string(), 2.0)];
        match total.as_slice() {
            [(_, v)] if *v == calls && actions == want => Ok(()),
            _ => Err(format!("total {total:?}, by action {actions:?}")),
        }
    });

    // Every rule of alerts.yml is loaded and has been evaluated without error.
    let rules_file = std::fs::read_to_string(stack.root().join("docker/prometheus/alerts.yml"))
        .expect("read alerts.yml");
    let shipped = rules_file.matches("- alert: ").count();
    prom.wait("every alerting rule to evaluate", |p| {
        let groups = p.get("/api/v1/rules");
        let rules: Vec<&Value> = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["name"] == "clawrden")
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let healthy = rules.iter().filter(|r| r["health"] == "ok").count();
        if rules.len() == shipped && healthy == shipped {
            Ok(())
        } else {
            Err(format!(
                "{} rules, {healthy} healthy: {groups}",
                rules.len()
            ))
        }
    });
    let firing = prom.get("/api/v1/alerts");
    assert_eq!(
        firing["alerts"].as_array().map(Vec::len),
        Some(0),
        "alerts while everything is fine: {firing}"
    );

    let out = stack
        .compose(&["stop", "warden"])
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    assert!(out.success(), "stop warden: {out:?}");
    prom.wait("ClawrdenWardenDown to go pending", |p| {
        let alerts = p.get("/api/v1/alerts");
        let down = alerts["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "ClawrdenWardenDown");
        match down {
            Some(a)
                if a["labels"]["severity"] == "critical"
                    && a["labels"]["instance"] == "warden:8080"
                    && (a["state"] == "pending" || a["state"] == "firing") =>
            {
                Ok(())
            }
            _ => Err(format!("alerts: {alerts}")),
        }
    });
}
