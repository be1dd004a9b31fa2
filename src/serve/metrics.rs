//! `/metrics`: the Prometheus text exposition format (version 0.0.4), what monitoring stacks
//! scrape. Counters for frames and what went wrong with them, gauges for the present, and a
//! histogram of each latency stage in seconds with fixed buckets.

use std::fmt::Write;

/// Upper bounds of the latency buckets, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// A Prometheus histogram: cumulative counts come out at exposition.
#[derive(Clone, Debug, Default)]
pub struct Buckets {
    /// Values per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Buckets {
    /// Records one value in seconds (NaN is ignored).
    pub fn push(&mut self, seconds: f64) {
        if seconds.is_nan() {
            return;
        }
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Writes Prometheus text: one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A counter or gauge without labels.
    pub fn value(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        let _ = writeln!(self.text, "{name} {}", number(value));
    }

    /// A gauge (or counter) with one sample per label set: `(labels, value)`, labels as
    /// `key="value"` pairs already escaped.
    pub fn labelled(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
        self.family(name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(self.text, "{name}{{{labels}}} {}", number(*value));
        }
    }

    /// A histogram family: one `(label name, label value, buckets)` per series.
    pub fn histograms(&mut self, name: &str, help: &str, label: &str, series: &[(&str, &Buckets)]) {
        self.family(name, "histogram", help);
        for (value, b) in series {
            let mut cumulative = 0;
            for (i, count) in b.counts.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| number(*b));
                let _ = writeln!(
                    self.text,
                    "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                self.text,
                "{name}_sum{{{label}=\"{value}\"}} {}",
                number(b.sum)
            );
            let _ = writeln!(self.text, "{name}_count{{{label}=\"{value}\"}} {}", b.count);
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value escaped for the exposition format (backslash, quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction, `NaN` and infinities spelled as Prometheus
/// spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_values_well_formed() {
        let mut b = Buckets::default();
        for v in [0.0004, 0.003, 0.003, 7.0, f64::NAN] {
            b.push(v);
        }
        let mut e = Exposition::default();
        e.value("pleura_frames_total", "counter", "Frames inferred.", 12.0);
        e.labelled(
            "pleura_task_probability",
            "gauge",
            "Smoothed probability.",
            &[(format!("task=\"{}\"", escape("vi\"ew")), 0.25)],
        );
        e.histograms(
            "pleura_stage_seconds",
            "Latency.",
            "stage",
            &[("backbone", &b)],
        );
        let text = e.finish();
        assert!(text.contains("# TYPE pleura_frames_total counter\npleura_frames_total 12\n"));
        assert!(
            text.contains("pleura_task_probability{task=\"vi\\\"ew\"} 0.25\n"),
            "{text}"
        );
        assert!(text.contains("pleura_stage_seconds_bucket{stage=\"backbone\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("pleura_stage_seconds_bucket{stage=\"backbone\",le=\"0.005\"} 3\n"));
        assert!(text.contains("pleura_stage_seconds_bucket{stage=\"backbone\",le=\"5\"} 3\n"));
        assert!(text.contains("pleura_stage_seconds_bucket{stage=\"backbone\",le=\"+Inf\"} 4\n"));
        assert!(text.contains("pleura_stage_seconds_count{stage=\"backbone\"} 4\n"));
        assert_eq!(number(f64::NAN), "NaN");
    }
}
