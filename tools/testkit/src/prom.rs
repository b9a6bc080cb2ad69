//! Reading a Prometheus text exposition (`/metrics`).

use serde_json::{json, Map, Value};

/// The value of `series` (its name and labels exactly as exposed, e.g.
/// `signal_errors_total{code="rate_limited"}`), if present.
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// [`series_value`], 0 when absent (a labelled counter appears once it
/// counts something).
pub fn metric(text: &str, series: &str) -> f64 {
    series_value(text, series).unwrap_or(0.0)
}

/// Every sample that is not zero, as a JSON object from series to value:
/// what a report shows.
pub fn nonzero_samples(text: &str) -> Value {
    let mut out = Map::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.parse::<f64>() {
                if v != 0.0 {
                    out.insert(k.to_string(), json!(v));
                }
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP signal_rooms Rooms.\n# TYPE signal_rooms gauge\n\
        signal_rooms 3\nsignal_errors_total{code=\"bad_message\"} 2\n\
        signal_errors_total{code=\"rate_limited\"} 0\nsignal_rooms_created_total 12\n";

    #[test]
    fn a_series_is_found_by_its_exact_name_and_labels() {
        assert_eq!(series_value(TEXT, "signal_rooms"), Some(3.0));
        assert_eq!(
            series_value(TEXT, "signal_errors_total{code=\"bad_message\"}"),
            Some(2.0)
        );
        // A prefix of another series' name is not that series.
        assert_eq!(series_value(TEXT, "signal_rooms_created"), None);
        assert_eq!(series_value(TEXT, "signal_errors_total"), None);
        assert_eq!(metric(TEXT, "signal_absent_total"), 0.0);
    }

    #[test]
    fn the_report_keeps_only_samples_that_are_not_zero() {
        let v = nonzero_samples(TEXT);
        assert_eq!(v["signal_rooms"], 3.0);
        assert_eq!(v["signal_rooms_created_total"], 12.0);
        assert!(v
            .get("signal_errors_total{code=\"rate_limited\"}")
            .is_none());
        assert_eq!(v.as_object().map(|o| o.len()), Some(3));
    }
}
