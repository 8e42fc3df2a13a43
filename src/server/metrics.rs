//! Prometheus metrics: this module owns every series the service counts
//! (counters and histograms, with their names, labels, help and buckets) and
//! writes `GET /metrics` through the `prometheus-client` crate, in the
//! Prometheus text format 0.0.4. Gauges read from the store at scrape time are
//! handed to [`Metrics::render`].

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as GaugeMetric;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::time::Duration;

/// The Content-Type of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Buckets for the time to a first human reply, in seconds: a minute to a day.
const REPLY_BUCKETS: [f64; 10] = [
    60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0,
];

/// A series' labels: names and values.
pub type Labels = Vec<(&'static str, String)>;

/// A gauge computed at scrape time: name, help, and `(labels, value)` samples.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(Labels, i64)>);

/// Histograms by one label; a function pointer builds each with its buckets.
type Histograms = Family<[(&'static str, String); 1], Histogram, fn() -> Histogram>;

/// The counters, by their exposed name (with `_total`), and their help text.
const COUNTERS: [(&str, &str); 10] = [
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

/// The service's metrics: the registry that [`Metrics::render`] encodes, and
/// handles onto its families to count with.
pub struct Metrics {
    registry: Registry,
    counters: Vec<(&'static str, Family<Labels, Counter>)>,
    latency: Histograms,
    first_reply: Histograms,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let counters = COUNTERS
            .iter()
            .map(|&(name, help)| {
                let family = Family::<Labels, Counter>::default();
                // The encoder appends `_total` to a counter's name itself.
                let base = name.strip_suffix("_total").unwrap_or(name);
                register(&mut registry, base, help, family.clone());
                (name, family)
            })
            .collect();
        let first_reply: Histograms =
            Family::new_with_constructor(|| Histogram::new(REPLY_BUCKETS));
        register(
            &mut registry,
            "handoff_first_reply_seconds",
            "Time from a thread entering its queue to its first human reply, by queue.",
            first_reply.clone(),
        );
        let latency: Histograms = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        register(
            &mut registry,
            "handoff_request_seconds",
            "Request latency by route.",
            latency.clone(),
        );
        Self {
            registry,
            counters,
            latency,
            first_reply,
        }
    }
}

/// Registers `metric` with its help text as written here: the registry adds
/// a full stop to every help text, and ours already end with one.
fn register(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

impl Metrics {
    /// Adds `by` to counter `name` (as exposed, with `_total`) with `labels`.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        let Some((_, family)) = self.counters.iter().find(|(n, _)| *n == name) else {
            // A counter missing from `COUNTERS` is a bug to see in the logs,
            // not a reason to fail the request that counts it.
            tracing::warn!(name, "no such counter");
            return;
        };
        let labels: Labels = labels.iter().map(|&(k, v)| (k, v.to_string())).collect();
        family.get_or_create(&labels).inc_by(by);
    }

    /// Records a request's latency for `route`.
    pub fn observe(&self, route: &str, took: Duration) {
        self.latency
            .get_or_create(&[("route", route.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Records how long a thread waited in `queue` for its first human reply.
    pub fn first_reply(&self, queue: &str, after: Duration) {
        self.first_reply
            .get_or_create(&[("queue", queue.to_string())])
            .observe(after.as_secs_f64());
    }

    /// The exposition text; `extra` adds gauges computed at scrape time.
    pub fn render(&self, extra: &[Gauge<'_>]) -> String {
        // The gauges are a registry of their own, made for this scrape, so that
        // two scrapes at once never see each other's values half set.
        let mut scraped = Registry::default();
        for (name, help, samples) in extra {
            let family = Family::<Labels, GaugeMetric>::default();
            for (labels, value) in samples {
                family.get_or_create(labels).set(*value);
            }
            register(&mut scraped, name, help, family);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut out, &scraped))
        {
            // Writing into a String does not fail; an encoder that refuses a
            // metric leaves the rest out, and that should be seen.
            tracing::error!(error = %e, "metrics could not be encoded in full");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `text` has `line` as one whole line, so that a value of `1`
    /// is never found inside `10`.
    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

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
            vec![(vec![("ruleset", "abc".into())], 1)],
        )]);
        for line in [
            "handoff_leads_total{account=\"acme\",channel=\"api\"} 2",
            "handoff_request_seconds_bucket{route=\"/v1/leads\",le=\"0.001\"} 0",
            "handoff_request_seconds_bucket{route=\"/v1/leads\",le=\"0.005\"} 1",
            "handoff_request_seconds_bucket{route=\"/v1/leads\",le=\"+Inf\"} 1",
            "handoff_request_seconds_count{route=\"/v1/leads\"} 1",
            "# HELP handoff_rules_loaded Rules in force.",
            "# TYPE handoff_rules_loaded gauge",
            "handoff_rules_loaded{ruleset=\"abc\"} 1",
        ] {
            assert!(has(&text, line), "{line}\n{text}");
        }
        // The Prometheus text format 0.0.4, which has no end marker.
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn every_counter_keeps_its_name_type_and_help() {
        let m = Metrics::default();
        for (name, _) in COUNTERS {
            m.add(name, &[("kind", "x")], 1);
        }
        let text = m.render(&[]);
        for (name, help) in COUNTERS {
            assert!(has(&text, &format!("# HELP {name} {help}")), "{text}");
            assert!(has(&text, &format!("# TYPE {name} counter")), "{text}");
            assert!(has(&text, &format!("{name}{{kind=\"x\"}} 1")), "{text}");
        }
    }

    #[test]
    fn a_counter_adds_up_and_an_unknown_one_is_left_out() {
        let m = Metrics::default();
        m.add("handoff_webhook_events_total", &[("source", "form")], 1);
        m.add("handoff_webhook_events_total", &[("source", "form")], 2);
        m.add("handoff_no_such_total", &[("source", "form")], 1);
        let text = m.render(&[]);
        assert!(
            has(&text, "handoff_webhook_events_total{source=\"form\"} 3"),
            "{text}"
        );
        assert!(!text.contains("handoff_no_such"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.add(
            "handoff_assignments_total",
            &[("account", "a\"b\\c\nd"), ("queue", "q")],
            1,
        );
        let text = m.render(&[(
            "handoff_threads_waiting",
            "Waiting.",
            vec![(vec![("queue", "say \"hi\"".into())], 4)],
        )]);
        assert!(
            has(
                &text,
                "handoff_assignments_total{account=\"a\\\"b\\\\c\\nd\",queue=\"q\"} 1"
            ),
            "{text}"
        );
        assert!(
            has(&text, "handoff_threads_waiting{queue=\"say \\\"hi\\\"\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn a_gauge_without_labels_has_no_braces() {
        let text = Metrics::default().render(&[(
            "handoff_rules_last_reload_failed",
            "1 when the last rules load was rejected (the previous rules stay in force).",
            vec![(Vec::new(), 0)],
        )]);
        assert!(has(&text, "handoff_rules_last_reload_failed 0"), "{text}");
        assert!(
            has(
                &text,
                "# HELP handoff_rules_last_reload_failed 1 when the last rules load was rejected (the previous rules stay in force)."
            ),
            "{text}"
        );
    }

    #[test]
    fn the_time_to_a_first_reply_is_a_histogram_by_queue() {
        let m = Metrics::default();
        m.first_reply("events-closers", Duration::from_secs(90));
        m.first_reply("events-closers", Duration::from_secs(4000));
        let text = m.render(&[]);
        for line in [
            "# HELP handoff_first_reply_seconds Time from a thread entering its queue to its first human reply, by queue.",
            "# TYPE handoff_first_reply_seconds histogram",
            "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"60\"} 0",
            "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"120\"} 1",
            "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"3600\"} 1",
            "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"7200\"} 2",
            "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"86400\"} 2",
            "handoff_first_reply_seconds_bucket{queue=\"events-closers\",le=\"+Inf\"} 2",
            "handoff_first_reply_seconds_count{queue=\"events-closers\"} 2",
        ] {
            assert!(has(&text, line), "{line}\n{text}");
        }
        // Sums are floats: `4090` or `4090.0` both read as the same number.
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("handoff_first_reply_seconds_sum{queue=\"events-closers\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(sum, Some(4090.0), "{text}");
    }
}
