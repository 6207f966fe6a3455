//! Content negotiation of `/graphql` as HTTP says (RFC 9110 §12.5.1): the client's media
//! ranges in order, each with its `q`; the most specific range that matches a type
//! decides its quality, and `q=0` means "not acceptable". A response is JSON
//! (`application/graphql-response+json` or `application/json`) or a stream (Server-Sent
//! Events, or Apollo's multipart subscriptions); a query or mutation is streamed only
//! when the client prefers a stream to JSON (asks for it first, with a higher `q`, or
//! alone), so a client that lists every type it could read (urql's default) gets JSON.

use http::{header, HeaderMap, HeaderValue};

/// The response media type the client accepts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Media::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            Media::Json => "application/json; charset=utf-8",
        })
    }
}

/// How results are streamed into one response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// Server-Sent Events (graphql-sse).
    Sse,
    /// Apollo's multipart subscriptions.
    Multipart,
}

/// How much the client wants one type: its quality, then where the range that gave it
/// stands in `Accept` (earlier is preferred among equals).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Preference {
    q: f32,
    position: usize,
}

impl Preference {
    /// Whether `self` is preferred to `other`.
    fn over(self, other: Preference) -> bool {
        self.q > other.q || (self.q == other.q && self.position < other.position)
    }
}

/// One media range of `Accept`.
struct Range {
    ty: String,
    sub: String,
    /// Lower-cased parameter names (without `q`).
    params: Vec<String>,
    q: f32,
}

fn ranges(headers: &HeaderMap) -> Option<Vec<Range>> {
    let mut out = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let value = value.to_str().ok()?;
        for part in value.split(',') {
            let mut params = part.split(';').map(str::trim);
            let essence = params.next().unwrap_or("").to_ascii_lowercase();
            let Some((ty, sub)) = essence.split_once('/') else {
                continue;
            };
            let (mut q, mut names) = (1.0f32, Vec::new());
            for p in params {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                let name = name.trim().to_ascii_lowercase();
                if name == "q" {
                    q = value.trim().parse::<f32>().unwrap_or(1.0).clamp(0.0, 1.0);
                } else {
                    names.push(name);
                }
            }
            out.push(Range {
                ty: ty.trim().to_string(),
                sub: sub.trim().to_string(),
                params: names,
                q,
            });
        }
    }
    Some(out)
}

/// The preference for `ty/sub`, from the most specific matching range (`ty/sub` over
/// `ty/*` over `*/*`); `exact` types are matched only by their own range (a client that
/// says `*/*` wants JSON, not a stream), and must carry the parameter `needs`, if any.
fn preference(
    ranges: &[Range],
    ty: &str,
    sub: &str,
    exact: bool,
    needs: Option<&str>,
) -> Option<Preference> {
    let mut best: Option<(u8, Preference)> = None;
    for (position, r) in ranges.iter().enumerate() {
        let specificity = if r.ty == ty && r.sub == sub {
            if needs.is_some_and(|n| !r.params.iter().any(|p| p == n)) {
                continue;
            }
            3
        } else if exact {
            continue;
        } else if r.ty == ty && r.sub == "*" {
            2
        } else if r.ty == "*" && r.sub == "*" {
            1
        } else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, Preference { q: r.q, position }));
        }
    }
    best.map(|(_, p)| p).filter(|p| p.q > 0.0)
}

/// What a request's `Accept` allows, and how much it wants each.
#[derive(Clone, Copy, Debug)]
pub(super) struct Accepted {
    pub json: Option<(Media, Preference)>,
    pub stream: Option<(Format, Preference)>,
}

impl Accepted {
    /// The JSON media type of an answer that is not streamed.
    pub fn media(self) -> Media {
        self.json.map_or(Media::Json, |(m, _)| m)
    }

    /// Whether nothing the gateway writes is acceptable.
    pub fn none(self) -> bool {
        self.json.is_none() && self.stream.is_none()
    }

    /// The stream format for a subscription, if the client reads one.
    pub fn stream_format(self) -> Option<Format> {
        self.stream.map(|(f, _)| f)
    }

    /// The stream format for a query or mutation: only when the client prefers a stream
    /// to JSON.
    pub fn stream_preferred(self) -> Option<Format> {
        match (self.stream, self.json) {
            (Some((f, _)), None) => Some(f),
            (Some((f, s)), Some((_, j))) if s.over(j) => Some(f),
            _ => None,
        }
    }
}

/// Negotiates `headers`' `Accept`. No `Accept` at all is `*/*`.
pub(super) fn negotiate(headers: &HeaderMap) -> Accepted {
    // The common case, one JSON type alone, without parsing ranges.
    let mut all = headers.get_all(header::ACCEPT).iter();
    if let (Some(only), None) = (all.next(), all.next()) {
        let only = only.as_bytes();
        let whole = Preference {
            q: 1.0,
            position: 0,
        };
        for (name, media) in [
            (&b"application/json"[..], Media::Json),
            (b"application/graphql-response+json", Media::GraphqlResponse),
        ] {
            if only.eq_ignore_ascii_case(name) {
                return Accepted {
                    json: Some((media, whole)),
                    stream: None,
                };
            }
        }
    }
    let ranges = if headers.contains_key(header::ACCEPT) {
        ranges(headers).unwrap_or_default()
    } else {
        vec![Range {
            ty: "*".into(),
            sub: "*".into(),
            params: Vec::new(),
            q: 1.0,
        }]
    };
    let graphql = preference(&ranges, "application", "graphql-response+json", false, None)
        .map(|p| (Media::GraphqlResponse, p));
    let json = preference(&ranges, "application", "json", false, None).map(|p| (Media::Json, p));
    // Between the two JSON types, the one preferred; on a tie, the GraphQL one.
    let json = match (graphql, json) {
        (Some(g), Some(j)) => Some(if j.1.q > g.1.q { j } else { g }),
        (g, j) => g.or(j),
    };
    let sse = preference(&ranges, "text", "event-stream", true, None).map(|p| (Format::Sse, p));
    let multipart = preference(
        &ranges,
        "multipart",
        "mixed",
        true,
        Some("subscriptionspec"),
    )
    .map(|p| (Format::Multipart, p));
    let stream = match (sse, multipart) {
        (Some(s), Some(m)) => Some(if m.1.over(s.1) { m } else { s }),
        (s, m) => s.or(m),
    };
    Accepted { json, stream }
}

#[cfg(test)]
mod tests {
    use super::super::accept as headers;
    use super::*;

    fn of(accept: &str) -> Accepted {
        negotiate(&headers(accept))
    }

    #[test]
    fn one_json_type_alone_is_negotiated_as_the_ranges_would_be() {
        for accept in [
            "application/json",
            "APPLICATION/JSON",
            "application/graphql-response+json",
        ] {
            let fast = of(accept);
            let ranges = ranges(&headers(accept)).expect("ranges");
            let media = if accept.contains("graphql") {
                Media::GraphqlResponse
            } else {
                Media::Json
            };
            let slow = preference(
                &ranges,
                "application",
                if accept.contains("graphql") {
                    "graphql-response+json"
                } else {
                    "json"
                },
                false,
                None,
            );
            assert_eq!(fast.json, slow.map(|p| (media, p)), "{accept}");
            assert!(fast.stream.is_none(), "{accept}");
        }
    }

    #[test]
    fn json_types_by_quality() {
        assert_eq!(negotiate(&HeaderMap::new()).media(), Media::GraphqlResponse);
        assert_eq!(of("*/*").media(), Media::GraphqlResponse);
        assert_eq!(of("application/json").media(), Media::Json);
        assert_eq!(
            of("application/graphql-response+json, application/json;q=0.9").media(),
            Media::GraphqlResponse
        );
        assert_eq!(
            of("application/graphql-response+json;q=0, application/json").media(),
            Media::Json
        );
        assert_eq!(of("application/json;q=1, */*;q=0.1").media(), Media::Json);
        assert!(of("text/plain").none());
    }

    #[test]
    fn a_stream_only_when_preferred() {
        let urql = of("application/graphql-response+json, application/graphql+json, application/json, text/event-stream, multipart/mixed");
        assert_eq!(urql.stream_preferred(), None);
        assert_eq!(urql.stream_format(), Some(Format::Sse));
        assert_eq!(urql.media(), Media::GraphqlResponse);
        assert_eq!(
            of("text/event-stream").stream_preferred(),
            Some(Format::Sse)
        );
        assert_eq!(
            of("text/event-stream, application/json").stream_preferred(),
            Some(Format::Sse)
        );
        assert_eq!(
            of("application/json;q=0.5, text/event-stream").stream_preferred(),
            Some(Format::Sse)
        );
        assert_eq!(
            of("application/json, text/event-stream;q=0").stream_format(),
            None
        );
        assert_eq!(of("*/*").stream_format(), None);
        // Apollo Client's HttpLink.
        let apollo =
            of("multipart/mixed;boundary=\"graphql\";subscriptionSpec=1.0,application/json");
        assert_eq!(apollo.stream_format(), Some(Format::Multipart));
        assert_eq!(apollo.stream_preferred(), Some(Format::Multipart));
        assert_eq!(
            of("multipart/mixed;deferSpec=20220824, application/json").stream_format(),
            None
        );
    }
}
