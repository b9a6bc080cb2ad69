//! Counters and failures, shared by every task of the run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

/// How many examples of each failure kind the summary keeps.
const EXAMPLES: usize = 5;

/// Named counters (`honest.sent`, `chaos.flood.ok`, ...) and failures
/// (`fail.lost`, ...), each failure with a few examples.
#[derive(Default)]
pub struct Stats {
    counters: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stats {
    pub fn add(&self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        *lock(&self.counters).entry(name.to_string()).or_default() += n;
    }

    pub fn inc(&self, name: &str) {
        self.add(name, 1);
    }

    pub fn get(&self, name: &str) -> u64 {
        lock(&self.counters).get(name).copied().unwrap_or(0)
    }

    /// Records `n` failures of `kind`, with an example.
    pub fn fail_n(&self, kind: &str, n: u64, example: impl Into<String>) {
        if n == 0 {
            return;
        }
        let mut f = lock(&self.failures);
        let entry = f.entry(kind.to_string()).or_default();
        entry.0 += n;
        if entry.1.len() < EXAMPLES {
            entry.1.push(example.into());
        }
    }

    pub fn fail(&self, kind: &str, example: impl Into<String>) {
        self.fail_n(kind, 1, example);
    }

    pub fn failure_count(&self) -> u64 {
        lock(&self.failures).values().map(|(n, _)| n).sum()
    }

    pub fn counters_json(&self) -> Value {
        let c = lock(&self.counters);
        Value::Object(c.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
    }

    pub fn failures_json(&self) -> Value {
        let f = lock(&self.failures);
        Value::Object(
            f.iter()
                .map(|(k, (n, ex))| (k.clone(), json!({"count": n, "examples": ex})))
                .collect(),
        )
    }
}
