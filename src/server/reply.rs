//! The replies every handler of `/graphql` shares: the JSON media types' responses, a
//! refusal before GraphQL, and the admission of a long-lived connection. Handlers import
//! this; it imports no handler.

use super::accept::Media;
use super::AppState;
use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// An HTTP-level refusal: the request never reached GraphQL.
pub(super) fn refuse(
    status: StatusCode,
    media: Option<Media>,
    message: impl Into<String>,
) -> Response {
    let media = media.unwrap_or(Media::Json);
    let body = super::error_body(&message.into(), None);
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    res
}

/// A refusal before GraphQL, in the media type `headers` accept (JSON when neither).
pub(super) fn refusal(
    status: StatusCode,
    headers: &HeaderMap,
    message: impl Into<String>,
) -> Response {
    refuse(
        status,
        super::accept::negotiate(headers).json.map(|(m, _)| m),
        message,
    )
}

/// Admits a long-lived connection (WebSocket, SSE) under the connection limits.
pub(super) fn admit(
    state: &AppState,
    peer: Option<std::net::SocketAddr>,
) -> Result<super::limits::Admitted, Box<Response>> {
    let ip = peer
        .map(|p| p.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    state
        .connections
        .admit(ip, state.limits.long_lived())
        .map_err(|why| {
            state
                .runtime
                .metrics
                .reject(crate::metrics::Rejection::Limit);
            Box::new(refuse(StatusCode::SERVICE_UNAVAILABLE, None, why))
        })
}

pub(super) fn respond(status: StatusCode, media: Media, body: Bytes) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    res
}

/// Who `headers` say is calling (see [`crate::auth`]), or the `401` that refuses the
/// request: `extensions.code: UNAUTHENTICATED` and a `WWW-Authenticate: Bearer`
/// challenge (RFC 6750), in `media` (JSON when `None`).
pub(super) async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    media: Option<Media>,
) -> Result<Option<std::sync::Arc<crate::auth::Identity>>, Box<Response>> {
    state
        .auth
        .identify(headers)
        .await
        .map_err(|failure| Box::new(unauthenticated(&failure, media)))
}

/// The `401` for `failure`.
pub(super) fn unauthenticated(failure: &crate::auth::Failure, media: Option<Media>) -> Response {
    use axum::http::HeaderValue;
    let media = media.unwrap_or(Media::Json);
    let body = super::error_body(&failure.message(), Some("UNAUTHENTICATED"));
    let mut res = (StatusCode::UNAUTHORIZED, body).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    let challenge = match failure {
        crate::auth::Failure::Missing => HeaderValue::from_static("Bearer"),
        _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
    };
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    res
}
