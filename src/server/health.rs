//! Operating endpoints: `/healthz` (the process serves), `/readyz` (ready for traffic:
//! schema loaded, listening, not shutting down), `/metrics` (Prometheus text format).

use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::Ordering;

pub async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if *state.unready.borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": "shutting down"})),
        )
            .into_response()
    } else {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let rt = &state.runtime;
    let m = &rt.metrics;
    m.cache_entries
        .set(i64::try_from(rt.cache.entry_count()).unwrap_or(i64::MAX));
    m.cache_bytes
        .set(i64::try_from(rt.cache.weighed()).unwrap_or(i64::MAX));
    m.upstream_sockets_open
        .set(rt.sources.stats.open.load(Ordering::Relaxed) as i64);
    m.upstream_socket_connects
        .set(i64::try_from(rt.sources.stats.connects.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    // Counters that mirror counts kept elsewhere: move them up to the count.
    let catch_up = |c: &prometheus::IntCounter, now: u64| c.inc_by(now.saturating_sub(c.get()));
    catch_up(&m.cache_evictions, rt.cache.evictions());
    catch_up(
        &m.upstream_socket_reconnects,
        rt.sources.stats.reconnects.load(Ordering::Relaxed),
    );
    catch_up(
        &m.events_lost,
        rt.sources.stats.lost.load(Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
