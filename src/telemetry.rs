//! Logs, request ids and metrics.
//!
//! Logs are human-readable in development and JSON when `LOG_JSON` is on (the default in
//! production). Every request gets a span carrying its `x-request-id`, so a log line of any
//! layer below can be traced back to the request. Metrics go to one process-wide Prometheus
//! recorder, rendered by `GET /metrics`.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global tracing subscriber. Safe to call more than once (tests): later calls
/// are ignored.
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,ticketing=debug,sqlx=warn,apalis=info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
    // An already-installed subscriber is fine: the process (or test binary) keeps the first.
    let _ = result;
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder. The `metrics` facade allows one global recorder per
/// process, and the test binary runs many apps in one process, so it is created once and
/// shared.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            // Latency buckets from 1 ms to 10 s: most of our answers are a few ms, the
            // payment path and Paystack calls reach seconds.
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe_metrics();
            // The exporter's own upkeep runs only with its HTTP listener, which we do not use.
            // A plain thread (not a tokio task) so it outlives any one runtime, e.g. a test's.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

/// The counters the alert rules and the dashboard read, registered at 0 when the process
/// starts, for every label value the code uses. A counter the `metrics` crate creates on its
/// first increment appears in Prometheus already at that value, and `increase()`/`rate()`
/// over a series' first sample are 0: without this, the first failed refund after a deploy
/// would never fire `RefundsFailing` and the first tickets of a sale would not show
/// (monitoring/alerts.yml; the real-Prometheus test in tests/api/monitoring.rs caught both).
fn zero_watched_series() {
    for reason in crate::domain::status::RefundReason::ALL {
        for outcome in ["processed", "retry", "failed", "needs_attention"] {
            metrics::counter!("ticketing_refunds_total", "outcome" => outcome, "reason" => reason.as_str())
                .increment(0);
        }
    }
    for outcome in ["success", "retry", "failed", "reversed"] {
        metrics::counter!("ticketing_payouts_total", "outcome" => outcome).increment(0);
    }
    // A delivery whose signature fails is not read, so its event is "other".
    for result in ["invalid_signature", "unreadable"] {
        metrics::counter!("ticketing_webhooks_total", "event" => "other", "result" => result)
            .increment(0);
    }
    for event in ["charge.success", "refund", "transfer", "other"] {
        for result in ["queued", "recorded", "duplicate", "not_queued"] {
            metrics::counter!("ticketing_webhooks_total", "event" => event, "result" => result)
                .increment(0);
        }
    }
    for kind in [
        "welcome",
        "password_reset",
        "tickets_issued",
        "purchase_failed",
        "refund_started",
        "refund_processed",
        "payout_account_changed",
    ] {
        for outcome in ["sent", "retry", "failed"] {
            metrics::counter!("ticketing_mail_total", "kind" => kind, "outcome" => outcome)
                .increment(0);
        }
    }
    for result in [
        "admitted",
        "already_used",
        "duplicate",
        "void",
        "wrong_event",
        "unknown",
    ] {
        metrics::counter!("ticketing_checkins_total", "result" => result).increment(0);
    }
    for outcome in [
        "success",
        "invalid_credentials",
        "invalid_code",
        "two_factor_required",
        "locked",
    ] {
        metrics::counter!("ticketing_logins_total", "outcome" => outcome).increment(0);
    }
    for outcome in [
        "held",
        "held_link_pending",
        "free",
        "sold_out",
        "sold_out_shed",
        "gateway_failed",
        "rate_limited",
        "invalid",
        "replayed",
        "replay_in_progress",
        "too_many_holds",
        "free_ticket_limit",
        "event_closed",
    ] {
        metrics::counter!("ticketing_purchases_total", "outcome" => outcome).increment(0);
    }
    for name in [
        "ticketing_tickets_issued_total",
        "ticketing_payments_failed_total",
        "ticketing_refunded_kobo_total",
        "ticketing_paid_out_kobo_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

fn describe_metrics() {
    zero_watched_series();
    metrics::describe_counter!(
        "ticketing_deferred_checkouts_total",
        "Checkout links made by the paced initializer, by outcome (linked, rate_limited, failed)"
    );
    metrics::describe_counter!(
        "ticketing_auth_fallbacks_total",
        "Authenticated requests answered from PostgreSQL because Redis could not answer"
    );
    metrics::describe_counter!(
        "ticketing_http_requests_total",
        "HTTP requests by method, matched route and status"
    );
    metrics::describe_histogram!(
        "ticketing_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and matched route"
    );
    metrics::describe_counter!(
        "ticketing_mail_total",
        "Messages by kind and outcome: sent (accepted by the mailer), retry (a send failed and will be tried again) or failed (given up)"
    );
    metrics::describe_gauge!(
        "ticketing_mail_backlog",
        "Messages in the outbox not yet accepted by the mailer"
    );
    metrics::describe_gauge!(
        "ticketing_websocket_connections",
        "Open websocket connections on this instance"
    );
    metrics::describe_counter!(
        "ticketing_websocket_messages_total",
        "Order status messages pushed on websockets"
    );
    metrics::describe_counter!(
        "ticketing_websocket_closed_total",
        "Websocket connections closed, by reason (slow_consumer, token_revoked, ...)"
    );
}

/// The method as a metric label: the standard ones by name, anything a client invents as
/// `OTHER`, so a stream of random methods cannot grow the series without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Records `ticketing_http_requests_total` and `ticketing_http_request_duration_seconds`
/// labelled by the matched route template (never the raw path, which would explode the
/// series count), and opens the request's tracing span.
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method()).to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = tracing::info_span!(
        "http",
        %method,
        %route,
        request_id = %request_id,
        status = tracing::field::Empty
    );
    let response = {
        use tracing::Instrument;
        next.run(req).instrument(span.clone()).await
    };
    let status = response.status().as_u16();
    span.record("status", status);
    let elapsed = start.elapsed();
    metrics::counter!(
        "ticketing_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "ticketing_http_request_duration_seconds",
        "method" => method.clone(),
        "route" => route.clone()
    )
    .record(elapsed.as_secs_f64());
    if status >= 500 {
        tracing::warn!(parent: &span, status, elapsed_ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(parent: &span, status, elapsed_ms = elapsed.as_millis() as u64, "request done");
    }
    response
}

/// Accepts a client's request id when it is short and printable; otherwise makes a new one.
#[derive(Clone, Copy, Default)]
pub struct MakeRequestId;

impl tower_http::request_id::MakeRequestId for MakeRequestId {
    fn make_request_id<B>(
        &mut self,
        _request: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let id = uuid::Uuid::now_v7().to_string();
        HeaderValue::from_str(&id)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// Drops a client-sent request id that is too long to be useful in logs, so a fresh one is
/// generated instead of echoing kilobytes back.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    let bad = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|v| v.len() > 128 || v.to_str().is_err());
    if bad {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(req).await
}
