//! `docs/grafana-dashboard.json` is a dashboard Grafana can import, over
//! series the server really exports: valid JSON of the dashboard model,
//! panels that fit the 24-column grid without overlapping, and every
//! metric and label its queries use found in a real server's `/metrics`.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::TestServer;
use serde_json::Value;

const DASHBOARD: &str = include_str!("../docs/grafana-dashboard.json");

/// The `signal_*` names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("signal_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The labels of `sum by (...)`.
fn by_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let tail = &rest[at + 4..];
        let end = tail.find(')').expect("closed by");
        out.extend(tail[..end].split(',').map(|l| l.trim().to_string()));
        rest = &tail[end..];
    }
    out
}

fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    for c in expr.chars() {
        match c {
            '(' | '{' | '[' => stack.push(c),
            ')' | '}' | ']' => {
                let open = match c {
                    ')' => '(',
                    '}' => '{',
                    _ => '[',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty()
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_series_the_server_exports() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("docs/grafana-dashboard.json is JSON");
    assert_eq!(dash["uid"], "signal-server");
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());

    // What a real server exports: sample names and their label names.
    let server = TestServer::start().await;
    let (status, _, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let mut exported: HashSet<String> = HashSet::new();
    let mut labels: HashSet<(String, String)> = HashSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        exported.insert(name.to_string());
        if let Some(body) = line[name_end..].strip_prefix('{') {
            for pair in body.split('}').next().unwrap_or("").split(',') {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert((name.to_string(), label.to_string()));
                }
            }
        }
    }
    server.stop().await;

    let mut ids = HashSet::new();
    let mut cells: HashSet<(u64, u64)> = HashSet::new();
    let mut used = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("an id")),
            "{title}: id taken"
        );
        let pos = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_u64().expect(k));
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: off the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap_or("")),
            "{title}"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            assert!(balanced(expr), "{title}: unbalanced {expr}");
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr}");
            for name in &names {
                assert!(exported.contains(name), "{title}: {name} is not exported");
                for label in by_labels(expr) {
                    assert!(
                        labels.contains(&(name.clone(), label.clone())),
                        "{title}: {name} has no label {label}"
                    );
                }
            }
            used.extend(names);
        }
    }
    // The families each section is about are shown.
    for family in [
        "signal_connections",
        "signal_rooms",
        "signal_messages_relayed_total",
        "signal_errors_total",
        "signal_slow_peers_dropped_total",
        "signal_queued_bytes",
        "signal_webhook_events_dropped_total",
        "signal_webhook_events_queued",
        "signal_turn_allocations",
        "signal_turn_relayed_bytes_total",
    ] {
        assert!(used.contains(family), "{family} is on no panel");
    }
}
