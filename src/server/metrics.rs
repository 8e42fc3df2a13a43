//! Prometheus metrics: counters and a latency histogram kept in memory and
//! written in the text exposition format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Buckets for the time to a first human reply, in seconds: a minute to a day.
const REPLY_BUCKETS: [f64; 10] = [
    60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0,
];

/// A gauge computed at scrape time: name, help, and `(labels, value)` samples.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// The service's metrics.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    first_reply: Mutex<BTreeMap<String, ReplyHistogram>>,
}

#[derive(Default, Clone)]
struct ReplyHistogram {
    buckets: [u64; REPLY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Help text for each counter.
const HELP: [(&str, &str); 10] = [
    (
        "handoff_escalations_total",
        "Threads escalated because nobody picked them up, by account, queue and the queue they moved to.",
    ),
    (
        "handoff_assignments_total",
        "Threads given to a queue member, by account and queue.",
    ),
    (
        "handoff_leads_total",
        "Lead events recorded, by account, channel and whether the lead was new.",
    ),
    (
        "handoff_decisions_total",
        "Decisions recorded, by playbook, deciding rule and handoff outcome.",
    ),
    (
        "handoff_intake_errors_total",
        "Requests and webhook events refused or failed, by kind.",
    ),
    (
        "handoff_rules_reloads_total",
        "Rules reload attempts, by result.",
    ),
    (
        "handoff_webhook_events_total",
        "Webhook events stored, by source.",
    ),
    (
        "handoff_outbox_attempts_total",
        "Delivery attempts, by kind (whatsapp, notify) and how they ended (sent, retry, uncertain, failed, fallback, cancelled).",
    ),
    (
        "handoff_whatsapp_errors_total",
        "Cloud API errors, by class (unavailable, rate_limited, window_closed, undeliverable, ...).",
    ),
    (
        "handoff_whatsapp_statuses_total",
        "Status webhooks applied, by status (sent, delivered, read, failed).",
    ),
];

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds `by` to counter `name` with `labels` (already `k="v",...`).
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], by: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels)).or_default() += by;
        }
    }

    /// Records a request's latency for `route`.
    pub fn observe(&self, route: &str, took: Duration) {
        let secs = took.as_secs_f64();
        if let Ok(mut h) = self.latency.lock() {
            let h = h.entry(route.to_string()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// Records how long a thread waited in `queue` for its first human reply.
    pub fn first_reply(&self, queue: &str, after: Duration) {
        let secs = after.as_secs_f64();
        if let Ok(mut h) = self.first_reply.lock() {
            let h = h.entry(queue.to_string()).or_default();
            for (i, b) in REPLY_BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// The exposition text; `extra` adds gauges computed at scrape time.
    pub fn render(&self, extra: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, labels), value) in &counters {
                if *n == name {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        let _ = writeln!(out, "# HELP handoff_first_reply_seconds Time from a thread entering its queue to its first human reply, by queue.\n# TYPE handoff_first_reply_seconds histogram");
        let replies = self
            .first_reply
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        for (queue, h) in &replies {
            let queue = label(queue);
            for (i, b) in REPLY_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "handoff_first_reply_seconds_bucket{{queue=\"{queue}\",le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "handoff_first_reply_seconds_bucket{{queue=\"{queue}\",le=\"+Inf\"}} {}\nhandoff_first_reply_seconds_sum{{queue=\"{queue}\"}} {}\nhandoff_first_reply_seconds_count{{queue=\"{queue}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(out, "# HELP handoff_request_seconds Request latency by route.\n# TYPE handoff_request_seconds histogram");
        let latency = self.latency.lock().map(|l| l.clone()).unwrap_or_default();
        for (route, h) in &latency {
            let route = label(route);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "handoff_request_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "handoff_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "handoff_request_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "handoff_request_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        for (name, help, values) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in values {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_exposition_format() {
        let m = Metrics::default();
        m.add(
            "handoff_leads_total",
            &[("account", "acme"), ("channel", "api")],
            2,
        );
        m.observe("/v1/leads", Duration::from_millis(3));
        let text = m.render(&[(
            "handoff_rules_loaded",
            "Rules in force.",
            vec![("ruleset=\"abc\"".into(), 1.0)],
        )]);
        assert!(
            text.contains("handoff_leads_total{account=\"acme\",channel=\"api\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("handoff_request_seconds_bucket{route=\"/v1/leads\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("handoff_request_seconds_bucket{route=\"/v1/leads\",le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("handoff_rules_loaded{ruleset=\"abc\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn the_time_to_a_first_reply_is_a_histogram_by_queue() {
        let m = Metrics::default();
        m.first_reply("events-closers", Duration::from_secs(90));
        m.first_reply("events-closers", Duration::from_secs(4000));
        let text = m.render(&[]);
        assert!(
            text.contains("# TYPE handoff_first_reply_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains(
                "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"60\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"120\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"+Inf\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("handoff_first_reply_seconds_sum{queue=\"events-closers\"} 4090"),
            "{text}"
        );
        assert!(
            text.contains("handoff_first_reply_seconds_count{queue=\"events-closers\"} 2"),
            "{text}"
        );
    }
}
