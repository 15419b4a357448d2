//! Counters and latency histograms in the Prometheus text format (version 0.0.4), and the
//! middleware that traces and times every request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::bank::{MonitorError, MonitorReport};
use crate::policy::{Decision, DenyReason};
use crate::refusal::GateRefusal;

/// The longest a request may take inside the server before it is answered 504.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The families, with their help text and type, in the order they are exposed.
const FAMILIES: [(&str, &str, &str); 8] = [
    (
        "consent_broker_decisions_total",
        "Access decisions by the broker, by outcome.",
        "counter",
    ),
    (
        "consent_broker_denials_total",
        "Reasons of the broker's denials (a denial may carry several).",
        "counter",
    ),
    (
        "consent_broker_gate_decisions_total",
        "The bank's gate: accesses served, refused, or failed (nothing served).",
        "counter",
    ),
    (
        "consent_broker_gate_refusals_total",
        "The bank's gate refusals, by reason.",
        "counter",
    ),
    (
        "consent_broker_monitor_passes_total",
        "The bank's passes over the platform's published log: clean, with an alarm, or failed \
         (the bank's own journal could not be read).",
        "counter",
    ),
    (
        "consent_broker_monitor_alarms_total",
        "What the bank's monitor reported, by kind: each served token missing from the log once \
         (and again by a monitor's first pass after a restore); each attestation without an \
         approval in the log, and the log's error, at every pass.",
        "counter",
    ),
    (
        "consent_broker_http_requests_total",
        "HTTP requests by route template, method and status.",
        "counter",
    ),
    (
        "consent_broker_http_request_duration_seconds",
        "HTTP request latency by route template.",
        "histogram",
    ),
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Series {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<String, Histogram>,
}

/// A server's metrics: decisions and denials by reason, gate outcomes and refusals by reason,
/// requests and latencies by route. Labels hold codes and route templates only, never ids.
/// Shared (`Clone` shares) between the routers of one process; [`Metrics::render`] is what
/// `GET /metrics` answers.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    series: Arc<Mutex<Series>>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, family: &'static str, labels: String) {
        self.add_n(family, labels, 1);
    }

    fn add_n(&self, family: &'static str, labels: String, n: u64) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let counter = series.counters.entry((family, labels)).or_default();
        *counter = counter.saturating_add(n);
    }

    /// Counts one pass of the bank's [`LogMonitor`](crate::LogMonitor): its outcome (`clean`,
    /// `alarm`, or `failed` for a pass that returned an error), and its alarms by kind
    /// (`missing_token` for each token reported, `missing_approval` for each attestation still
    /// without an approval, `undelivered_revocation` for each stop the log shows that the
    /// revocation feed passed over, `feed_behind_log` and `feed_ahead_of_log` for feeds that
    /// disagree with the witnessed log about its length, `token_after_revocation` for each token
    /// the log shows issued for a consent it showed stopped, and the log's error by its code:
    /// `stale_checkpoint`, `checkpoint`, `tiles`, `journal`, `journal_differs`). No ids.
    pub fn record_monitor(&self, pass: Result<&MonitorReport, &MonitorError>) {
        let family = "consent_broker_monitor_alarms_total";
        let report = match pass {
            Ok(report) => report,
            Err(error) => {
                self.add(
                    "consent_broker_monitor_passes_total",
                    label("outcome", "failed"),
                );
                self.add(family, label("kind", monitor_code(error)));
                return;
            }
        };
        let outcome = if report.is_clean() { "clean" } else { "alarm" };
        self.add(
            "consent_broker_monitor_passes_total",
            label("outcome", outcome),
        );
        let counts = [
            ("missing_token", report.missing_tokens.len()),
            ("missing_approval", report.missing_approvals.len()),
            (
                "undelivered_revocation",
                report.undelivered_revocations.len(),
            ),
            (
                "feed_behind_log",
                report
                    .feed_mismatches
                    .iter()
                    .filter(|m| matches!(m, crate::bank::FeedMismatch::Behind { .. }))
                    .count(),
            ),
            (
                "feed_ahead_of_log",
                report
                    .feed_mismatches
                    .iter()
                    .filter(|m| matches!(m, crate::bank::FeedMismatch::Ahead { .. }))
                    .count(),
            ),
            (
                "token_after_revocation",
                report.tokens_after_revocation.len(),
            ),
        ];
        for (kind, n) in counts {
            if n > 0 {
                self.add_n(
                    family,
                    label("kind", kind),
                    u64::try_from(n).unwrap_or(u64::MAX),
                );
            }
        }
        if let Some(error) = &report.log_error {
            self.add(family, label("kind", monitor_code(error)));
        }
    }

    /// Counts one of the broker's decisions, and each reason of a denial.
    pub fn record_decision(&self, decision: &Decision) {
        match decision {
            Decision::Permit => {
                self.add("consent_broker_decisions_total", label("outcome", "permit"));
            }
            Decision::Deny { reasons } => {
                self.add("consent_broker_decisions_total", label("outcome", "deny"));
                for reason in reasons {
                    self.add(
                        "consent_broker_denials_total",
                        label("reason", deny_code(reason)),
                    );
                }
            }
        }
    }

    /// Counts one of the gate's outcomes: `served`, `refused` (with `refusal`), or `failed`.
    pub fn record_gate(&self, outcome: &str, refusal: Option<&GateRefusal>) {
        self.add(
            "consent_broker_gate_decisions_total",
            label("outcome", outcome),
        );
        if let Some(refusal) = refusal {
            self.add(
                "consent_broker_gate_refusals_total",
                label("reason", refusal_code(refusal)),
            );
        }
    }

    fn record_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let labels = format!(
            "route=\"{}\",method=\"{}\",status=\"{status}\"",
            escape(route),
            escape(method)
        );
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        *series
            .counters
            .entry(("consent_broker_http_requests_total", labels))
            .or_default() += 1;
        let histogram = series
            .histograms
            .entry(format!("route=\"{}\"", escape(route)))
            .or_default();
        for (count, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The value of one counter series (`labels` as exposed, e.g. `reason="token_replayed"`):
    /// for tests and dashboards of the embedder.
    pub fn counter(&self, family: &str, labels: &str) -> u64 {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        series
            .counters
            .iter()
            .filter(|((name, l), _)| *name == family && l == labels)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (family, help, kind) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            if kind == "histogram" {
                for (labels, histogram) in &series.histograms {
                    for (count, bound) in histogram.buckets.iter().zip(BUCKETS) {
                        let _ = writeln!(out, "{family}_bucket{{{labels},le=\"{bound}\"}} {count}");
                    }
                    let _ = writeln!(
                        out,
                        "{family}_bucket{{{labels},le=\"+Inf\"}} {}\n{family}_sum{{{labels}}} {}\n\
                         {family}_count{{{labels}}} {}",
                        histogram.count, histogram.sum, histogram.count
                    );
                }
            } else {
                for ((name, labels), value) in &series.counters {
                    if *name == family {
                        let _ = writeln!(out, "{family}{{{labels}}} {value}");
                    }
                }
            }
        }
        out
    }
}

/// A monitor error's code, for a label.
fn monitor_code(error: &MonitorError) -> &'static str {
    match error {
        MonitorError::StaleCheckpoint { .. } => "stale_checkpoint",
        MonitorError::Checkpoint(_) => "checkpoint",
        MonitorError::Tiles(_) => "tiles",
        MonitorError::Journal(_) => "journal",
        MonitorError::JournalDiffers { .. } => "journal_differs",
        _ => "other",
    }
}

fn label(name: &str, value: &str) -> String {
    format!("{name}=\"{}\"", escape(value))
}

/// Label values escaped as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The code of a deny reason: its tag in the audit format.
pub(crate) fn deny_code(reason: &DenyReason) -> &'static str {
    tag_of(serde_json::to_value(reason).ok().as_ref(), "reason")
}

/// The code of a gate refusal: its tag in the audit format (`token`, `proof`, `expired`, ...).
pub(crate) fn refusal_code(refusal: &GateRefusal) -> &'static str {
    tag_of(serde_json::to_value(refusal).ok().as_ref(), "refusal")
}

/// The tag member of a serialised enum, interned: the set of codes is small and fixed (the
/// variants' names), so label values never carry data.
fn tag_of(value: Option<&serde_json::Value>, member: &str) -> &'static str {
    let tag = value.and_then(|v| match v {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Object(map) => map.get(member).and_then(|t| t.as_str()),
        _ => None,
    });
    intern(tag.unwrap_or("other"))
}

fn intern(code: &str) -> &'static str {
    static CODES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut codes = CODES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = codes.iter().find(|c| **c == code) {
        return known;
    }
    // Only the enum's variant names reach here; cap the set all the same.
    if codes.len() >= 256 || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return "other";
    }
    let leaked: &'static str = Box::leak(code.to_owned().into_boxed_str());
    codes.push(leaked);
    leaked
}

/// The middleware of every router: a `tracing` span per request named by its route template
/// (never the path), and the request's count and latency.
pub(crate) async fn observe(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // A fixed set: a method is any token a client sends, and labels must stay bounded.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let span = tracing::info_span!("http", route = %route, method = %method, status = tracing::field::Empty);
    let started = Instant::now();
    let response = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        tracing::Instrument::instrument(next.run(request), span.clone()),
    )
    .await
    {
        Ok(response) => response,
        // The handler's blocking call may still finish (and commit); its answer is lost,
        // which the client sees as a timeout with an unknown outcome.
        Err(_) => super::Problem::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "The server did not answer in time",
        )
        .into_response(),
    };
    // Answers made by axum itself (no route, wrong method, body too large, unreadable path or
    // query) become problem documents too: every error answer has one format.
    let response = as_problem(response);
    let status = response.status().as_u16();
    span.record("status", status);
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(parent: &span, status, micros = (seconds * 1e6) as u64, "answered");
    metrics.record_request(&route, &method, status, seconds);
    response
}

/// Marks an answer whose body a protocol fixes (the witness's C2SP answers): the middleware
/// leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verbatim;

/// An error answer that is neither a problem document nor a page, as a problem of its status
/// (unless marked [`Verbatim`]).
fn as_problem(response: Response) -> Response {
    if response.extensions().get::<Verbatim>().is_some() {
        return response;
    }
    let status = response.status();
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return response;
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let mut problem =
        super::Problem::new(status, &format!("http/{}", status.as_u16()), title).into_response();
    // Keep what the answer said about how to go on (`Allow` for a 405, say).
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

/// `GET /metrics`.
pub(crate) async fn expose(State(metrics): State<Metrics>) -> Response {
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Scope;

    #[test]
    fn codes_are_the_audit_tags_and_labels_hold_nothing_else() {
        assert_eq!(refusal_code(&GateRefusal::TokenReplayed), "token_replayed");
        assert_eq!(
            refusal_code(&GateRefusal::ScopeNotAttested(Scope::Balance)),
            "scope_not_attested"
        );
        let metrics = Metrics::new();
        metrics.record_gate("refused", Some(&GateRefusal::TokenReplayed));
        metrics.record_request("/data", "GET", 401, 0.0003);
        let text = metrics.render();
        assert!(text.contains("consent_broker_gate_refusals_total{reason=\"token_replayed\"} 1"));
        assert!(text.contains(
            "consent_broker_http_request_duration_seconds_bucket{route=\"/data\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "consent_broker_http_request_duration_seconds_bucket{route=\"/data\",le=\"0.00025\"} 0"
        ));
        assert_eq!(
            metrics.counter(
                "consent_broker_gate_refusals_total",
                "reason=\"token_replayed\""
            ),
            1
        );
    }

    #[test]
    fn a_monitors_passes_are_counted_by_outcome_and_its_alarms_by_kind() {
        let metrics = Metrics::new();
        let clean = MonitorReport {
            log_size: 3,
            witnessed_by: vec!["w".into()],
            cosigned_at: None,
            log_error: None,
            missing_tokens: Vec::new(),
            missing_approvals: Vec::new(),
            pending: 0,
            undelivered_revocations: Vec::new(),
            feed_mismatches: Vec::new(),
            tokens_after_revocation: Vec::new(),
            pending_revocations: 0,
        };
        metrics.record_monitor(Ok(&clean));
        let missing = crate::bank::MissingToken {
            token_id: "tok_secret-id".into(),
            attestation: "att_1".into(),
            served_at: time::OffsetDateTime::UNIX_EPOCH,
            journal_seq: 7,
            terms: crate::bank::TokenTerms {
                consent: crate::ids::ConsentId::new("cns_1").unwrap_or_else(|_| unreachable!()),
                scope: Scope::Balance,
                purpose: crate::vocab::Purpose::CustomerService,
                presence: crate::policy::Presence::SubjectPresent,
                token_digest: None,
            },
        };
        let alarm = MonitorReport {
            log_error: Some(MonitorError::StaleCheckpoint {
                cosigned_at: None,
                max_age: time::Duration::days(1),
            }),
            missing_tokens: vec![missing.clone(), missing],
            missing_approvals: vec!["att_2".into()],
            undelivered_revocations: vec![crate::bank::UndeliveredRevocation {
                consent: crate::ids::ConsentId::new("cns_2").unwrap_or_else(|_| unreachable!()),
                seq: 5,
                fed_to: 9,
            }],
            feed_mismatches: vec![crate::bank::FeedMismatch::Behind {
                fed_to: 3,
                generated_at: time::OffsetDateTime::UNIX_EPOCH,
                log_size: 9,
                cosigned_at: time::OffsetDateTime::UNIX_EPOCH,
            }],
            tokens_after_revocation: vec![crate::bank::TokenAfterRevocation {
                consent: crate::ids::ConsentId::new("cns_3").unwrap_or_else(|_| unreachable!()),
                stopped_seq: 5,
                token_id: "tok_after".into(),
                issued_seq: 7,
            }],
            ..clean
        };
        metrics.record_monitor(Ok(&alarm));
        metrics.record_monitor(Err(&MonitorError::JournalDiffers { position: 4 }));
        let unavailable = crate::store::StoreError::Unavailable(String::new());
        metrics.record_monitor(Err(&MonitorError::Journal(unavailable)));
        let tiles = crate::tiles::TileError::Io(String::new());
        metrics.record_monitor(Err(&MonitorError::Tiles(tiles)));
        let count = |family: &str, labels: &str| metrics.counter(family, labels);
        let passes = "consent_broker_monitor_passes_total";
        let alarms = "consent_broker_monitor_alarms_total";
        assert_eq!(count(passes, "outcome=\"clean\""), 1);
        assert_eq!(count(passes, "outcome=\"alarm\""), 1);
        assert_eq!(count(passes, "outcome=\"failed\""), 3);
        assert_eq!(count(alarms, "kind=\"journal\""), 1);
        assert_eq!(count(alarms, "kind=\"tiles\""), 1);
        assert_eq!(count(alarms, "kind=\"other\""), 0);
        assert_eq!(count(alarms, "kind=\"missing_token\""), 2);
        assert_eq!(count(alarms, "kind=\"missing_approval\""), 1);
        assert_eq!(count(alarms, "kind=\"undelivered_revocation\""), 1);
        assert_eq!(count(alarms, "kind=\"feed_behind_log\""), 1);
        assert_eq!(count(alarms, "kind=\"feed_ahead_of_log\""), 0);
        assert_eq!(count(alarms, "kind=\"token_after_revocation\""), 1);
        assert_eq!(count(alarms, "kind=\"stale_checkpoint\""), 1);
        assert_eq!(count(alarms, "kind=\"journal_differs\""), 1);
        let text = metrics.render();
        assert!(text.contains("# TYPE consent_broker_monitor_alarms_total counter"));
        assert!(!text.contains("tok_") && !text.contains("att_") && !text.contains("cns_"));
    }
}
