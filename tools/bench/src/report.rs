//! JSON lines from `signal-bench run` (and the script's sockperf lines) to
//! Markdown: per scenario, each server's median and range of each figure, and
//! the ratio of ours to each other server measured in the same repeat.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// JSON-lines files written by `signal-bench run --out` (and bench.sh).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The label of the server the ratios are taken of.
    #[arg(long, default_value = "ours")]
    ours: String,
    /// The label of the raw TCP round-trip lines (sockperf).
    #[arg(long, default_value = "sockperf")]
    tcp: String,
}

struct Rec {
    label: String,
    scenario: String,
    repeat: u64,
    metrics: Vec<(String, f64)>,
}

pub fn run(a: &ReportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut recs = Vec::new();
    for path in &a.inputs {
        for line in std::fs::read_to_string(path)?.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let metrics = v["metrics"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            recs.push(Rec {
                label: v["label"].as_str().unwrap_or("?").to_string(),
                scenario: v["scenario"].as_str().unwrap_or("?").to_string(),
                repeat: v["repeat"].as_u64().unwrap_or(0),
                metrics,
            });
        }
    }
    // Latency as a multiple of the raw TCP round trip of the same repeat.
    let tcp: BTreeMap<u64, (f64, f64)> = recs
        .iter()
        .filter(|r| r.label == a.tcp)
        .filter_map(|r| Some((r.repeat, (get(r, "rtt_p50_us")?, get(r, "rtt_p99_us")?))))
        .collect();
    for r in recs.iter_mut().filter(|r| r.label != a.tcp) {
        if let Some(&(p50, p99)) = tcp.get(&r.repeat) {
            let mut extra = Vec::new();
            for (name, base) in [
                ("hop_p50_us", p50),
                ("hop_p99_us", p99),
                ("rtt_p99_us", p99),
            ] {
                if let (Some(v), true) = (get(r, name), r.scenario.starts_with("open")) {
                    extra.push((format!("{}_x_tcp", name.trim_end_matches("_us")), v / base));
                }
            }
            r.metrics.extend(extra);
        }
    }

    let mut scenarios: Vec<String> = Vec::new();
    for r in &recs {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
    }
    for sc in &scenarios {
        let in_sc: Vec<&Rec> = recs.iter().filter(|r| &r.scenario == sc).collect();
        let mut labels: Vec<String> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for r in &in_sc {
            if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
            for (n, _) in &r.metrics {
                if !names.contains(n) && !n.ends_with("_samples") && !n.starts_with("msgs_4k") {
                    names.push(n.clone());
                }
            }
        }
        // Ours first.
        labels.sort_by_key(|l| l != &a.ours);
        println!("### {sc}\n");
        println!("| server | n | {} |", names.join(" | "));
        println!("|---|---|{}", "---|".repeat(names.len()));
        for l in &labels {
            let runs: Vec<&&Rec> = in_sc.iter().filter(|r| &r.label == l).collect();
            let cells: Vec<String> = names
                .iter()
                .map(|n| summary(runs.iter().filter_map(|r| get(r, n)).collect()))
                .collect();
            println!("| {l} | {} | {} |", runs.len(), cells.join(" | "));
        }
        let ours: Vec<&&Rec> = in_sc.iter().filter(|r| r.label == a.ours).collect();
        if !ours.is_empty() && labels.len() > 1 {
            println!("\nRatio ours ÷ server, per repeat (same run), median [range]:\n");
            println!("| ours ÷ | {} |", names.join(" | "));
            println!("|---|{}", "---|".repeat(names.len()));
            for l in labels.iter().filter(|l| **l != a.ours) {
                let cells: Vec<String> = names
                    .iter()
                    .map(|n| {
                        let ratios: Vec<f64> = ours
                            .iter()
                            .filter_map(|o| {
                                let peer = in_sc
                                    .iter()
                                    .find(|r| &r.label == l && r.repeat == o.repeat)?;
                                Some(get(o, n)? / get(peer, n)?)
                            })
                            .filter(|x| x.is_finite())
                            .collect();
                        summary(ratios)
                    })
                    .collect();
                println!("| {l} | {} |", cells.join(" | "));
            }
        }
        println!();
    }
    Ok(())
}

fn get(r: &Rec, name: &str) -> Option<f64> {
    r.metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
}

fn summary(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "–".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    if v.len() == 1 {
        fmt(med)
    } else {
        format!("{} [{}–{}]", fmt(med), fmt(v[0]), fmt(v[v.len() - 1]))
    }
}

fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}
