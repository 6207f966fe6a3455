//! OpenTelemetry traces, as a collector sees them: a test OTLP/HTTP receiver decodes
//! every export with the official protobuf definitions (`opentelemetry-proto`) and the
//! tests check the spans, their parents, links and attributes — for a nested query with
//! a batch, a mutation that wakes a live query on another replica through a real
//! `redis-server`, and a webhook.

mod common;

use common::redis::RedisServer;
use common::{next_json, subscribe, websocket, Gateway, Upstream};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Any::StringValue(s) => s.clone(),
                Any::IntValue(i) => i.to_string(),
                Any::BoolValue(b) => b.to_string(),
                Any::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            })
    }

    fn is_child_of(&self, parent: &Got) -> bool {
        self.span.trace_id == parent.span.trace_id
            && self.span.parent_span_id == parent.span.span_id
    }

    fn links_to(&self, other: &Got) -> bool {
        self.span
            .links
            .iter()
            .any(|l| l.trace_id == other.span.trace_id && l.span_id == other.span.span_id)
    }
}

/// The test collector: an OTLP/HTTP endpoint on a free port that keeps what it is sent.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
    changed: Arc<tokio::sync::Notify>,
    _server: Upstream,
}

impl Collector {
    async fn start() -> Collector {
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let changed = Arc::new(tokio::sync::Notify::new());
        let (keep, tell) = (spans.clone(), changed.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (keep, tell) = (keep.clone(), tell.clone());
                    async move {
                        assert_eq!(
                            headers.get("content-type").and_then(|v| v.to_str().ok()),
                            Some("application/x-protobuf")
                        );
                        let req = <ExportTraceServiceRequest as prost::Message>::decode(body)
                            .expect("an OTLP protobuf export");
                        let mut kept = keep.lock().expect("lock");
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                    Any::StringValue(s) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    kept.push(Got {
                                        service: service.clone(),
                                        span,
                                    });
                                }
                            }
                        }
                        drop(kept);
                        tell.notify_waiters();
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let server = Upstream::start(app).await;
        Collector {
            url: server.url(),
            spans,
            changed,
            _server: server,
        }
    }

    /// The spans received once `done` holds of them (waiting for exports as they come).
    async fn until(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.changed.notified();
            {
                let spans = self.spans.lock().expect("lock");
                if done(&spans) {
                    return spans.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let spans = self.spans.lock().expect("lock");
                let names: Vec<String> = spans
                    .iter()
                    .map(|g| format!("{}:{}", g.service, g.span.name))
                    .collect();
                panic!("never received {what}; got {names:?}");
            }
        }
    }
}

fn named<'a>(spans: &'a [Got], name: &str) -> Vec<&'a Got> {
    spans.iter().filter(|g| g.span.name == name).collect()
}

/// A gateway on `schema` tracing to `collector` as `gw`.
async fn traced_gateway(collector: &Collector, schema: &str) -> Gateway {
    Gateway::start(
        schema,
        livegate::Options {
            telemetry: traced(collector, "gw"),
            ..Default::default()
        },
    )
    .await
}

fn traced(collector: &Collector, service: &str) -> livegate::telemetry::Options {
    livegate::telemetry::Options {
        endpoint: Some(collector.url.clone()),
        service_name: service.into(),
        delay: Duration::from_millis(20),
        ..Default::default()
    }
}

/// A client's trace: `traceparent` of trace `t`, span `s`, sampled.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn a_nested_query_with_a_batch_is_one_trace_under_the_clients_span() {
    let collector = Collector::start().await;
    let seen_traceparents: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = seen_traceparents.clone();
    let up = Upstream::start(
        axum::Router::new()
            .route(
                "/users",
                axum::routing::get(|| async {
                    axum::Json(json!([{"id": "1", "team": "a"}, {"id": "2", "team": "b"}]))
                }),
            )
            .route(
                "/teams",
                axum::routing::get(move |headers: axum::http::HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
                            seen.lock().expect("lock").push(tp.to_string());
                        }
                        axum::Json(json!([{"id": "a", "name": "A"}, {"id": "b", "name": "B"}]))
                    }
                }),
            ),
    )
    .await;
    let schema = r#"
extend schema @upstream(name: "api", url: "{up}/?apikey=SECRET-KEY-123")
type Query { users: [User!]! @rest(upstream: "api", path: "/users") @cache(maxAge: 60) }
type User {
  id: ID!
  team: String
  squad: Team @rest(upstream: "api", path: "/teams", query: {id: "{parent.team}"}, batchKey: "id")
}
type Team { id: ID! name: String! }
"#;
    let gw = traced_gateway(&collector, &schema.replace("{up}", &up.url())).await;
    let res = gw
        .client
        .post(gw.url())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"query": "query Squads { users { id squad { name } } }", "operationName": "Squads"}))
        .send()
        .await
        .expect("answered")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(res["data"]["users"][1]["squad"]["name"], "B", "{res}");
    let spans = collector
        .until("the batch's HTTP span", |s| {
            s.iter().any(|g| g.span.name == "GET /teams")
                && s.iter().any(|g| g.span.name == "graphql.request")
        })
        .await;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let request = named(&spans, "graphql.request")[0].clone();
    // Under the client's span, in its trace.
    assert_eq!(hex(&request.span.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&request.span.parent_span_id), CLIENT_SPAN);
    assert_eq!(request.service, "gw");
    assert_eq!(request.attr("livegate.transport").as_deref(), Some("http"));
    assert_eq!(
        request.attr("graphql.operation.type").as_deref(),
        Some("query")
    );
    assert_eq!(
        request.attr("graphql.operation.name").as_deref(),
        Some("Squads")
    );
    assert_eq!(
        request.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    // Not the document, unless --trace-documents.
    assert_eq!(request.attr("graphql.document"), None);
    let prepare = named(&spans, "graphql.prepare")[0].clone();
    assert!(prepare.is_child_of(&request));
    assert_eq!(prepare.attr("livegate.prepared").as_deref(), Some("miss"));
    let execute = named(&spans, "graphql.execute")[0].clone();
    assert!(execute.is_child_of(&request));
    let fetches = named(&spans, "upstream.fetch");
    let users = fetches
        .iter()
        .find(|g| g.attr("url.template").as_deref() == Some("/users"))
        .expect("the users fetch");
    assert!(users.is_child_of(&execute));
    assert_eq!(users.attr("livegate.cache").as_deref(), Some("miss"));
    assert_eq!(users.attr("livegate.upstream").as_deref(), Some("api"));
    let get_users = named(&spans, "GET /users")[0].clone();
    assert!(get_users.is_child_of(users));
    assert_eq!(
        get_users.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    // Two parents, one batch, one HTTP request under it.
    let squads: Vec<_> = fetches
        .iter()
        .filter(|g| g.attr("url.template").as_deref() == Some("/teams"))
        .collect();
    assert_eq!(squads.len(), 2);
    assert!(squads
        .iter()
        .all(|g| g.attr("livegate.cache").as_deref() == Some("batched")));
    let batch = named(&spans, "upstream.batch")[0].clone();
    assert_eq!(batch.attr("livegate.batch.keys").as_deref(), Some("2"));
    assert!(squads.iter().any(|g| batch.is_child_of(g)));
    let get_teams = named(&spans, "GET /teams");
    assert_eq!(get_teams.len(), 1);
    assert!(get_teams[0].is_child_of(&batch));
    // The upstream got the trace on: its request's parent is that span.
    let sent = seen_traceparents.lock().expect("lock").clone();
    assert_eq!(
        sent,
        vec![format!(
            "00-{CLIENT_TRACE}-{}-01",
            hex(&get_teams[0].span.span_id)
        )]
    );
    // No secret of the upstream's URL in any span.
    for g in &spans {
        for kv in &g.span.attributes {
            let text = format!("{:?}", kv.value);
            assert!(
                !text.contains("SECRET-KEY-123"),
                "{} {}: {text}",
                g.span.name,
                kv.key
            );
        }
    }
    // A second run: prepared, and served from the cache (no HTTP span for /users).
    let before = named(&spans, "GET /users").len();
    gw.client
        .post(gw.url())
        .json(&json!({"query": "query Squads { users { id } }"}))
        .send()
        .await
        .expect("answered");
    let spans = collector
        .until("the second request", |s| {
            named(s, "graphql.request").len() >= 2
        })
        .await;
    let second = named(&spans, "graphql.request")
        .into_iter()
        .find(|g| g.span.trace_id != request.span.trace_id)
        .expect("a trace of its own")
        .clone();
    assert!(spans
        .iter()
        .any(|g| g.is_child_of(&second) && g.span.name == "graphql.prepare"));
    let cached = spans
        .iter()
        .find(|g| g.span.name == "upstream.fetch" && g.span.trace_id == second.span.trace_id)
        .expect("its fetch");
    assert_eq!(cached.attr("livegate.cache").as_deref(), Some("hit"));
    assert_eq!(named(&spans, "GET /users").len(), before);
}

#[tokio::test]
async fn a_mutation_on_one_replica_is_a_change_traced_to_the_push_on_another() {
    let collector = Collector::start().await;
    let redis = RedisServer::start();
    let version = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let (read, bump) = (version.clone(), version.clone());
    let up = Upstream::start(
        axum::Router::new().route(
            "/things/{id}",
            axum::routing::get(move || {
                let v = read.load(std::sync::atomic::Ordering::SeqCst);
                async move { axum::Json(json!({"id": "1", "v": v})) }
            })
            .put(move || {
                let v = bump.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                async move { axum::Json(json!({"id": "1", "v": v})) }
            }),
        ),
    )
    .await;
    let schema = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query { thing(id: ID!): Thing @rest(upstream: "api", path: "/things/{args.id}") @cache(maxAge: 600, tags: ["thing:{args.id}"]) }
type Mutation { touch(id: ID!): Thing @rest(upstream: "api", method: PUT, path: "/things/{args.id}") @invalidates(tags: ["thing:{args.id}"]) }
type Subscription { thing(id: ID!): Thing @live }
type Thing { id: ID! v: Int! }
"#
    .replace("{up}", &up.url());
    let options = |service: &str| livegate::Options {
        telemetry: traced(&collector, service),
        redis: Some(livegate::bus::redis::RedisOptions {
            url: redis.url(),
            cluster: false,
            prefix: "tr".into(),
            timeout: Duration::from_millis(500),
            fill_wait: Duration::from_secs(5),
            lease: Duration::from_millis(1_000),
        }),
        ..Default::default()
    };
    let a = Gateway::start(&schema, options("replica-a")).await;
    let b = Gateway::start(&schema, options("replica-b")).await;
    let mut ws = websocket(b.addr, "graphql-transport-ws").await;
    subscribe(&mut ws, "s", r#"subscription { thing(id: "1") { v } }"#).await;
    assert!(next_json(&mut ws).await["payload"]["data"]["thing"].is_object());
    let done = a
        .client
        .post(a.url())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"query": r#"mutation { touch(id: "1") { v } }"#}))
        .send()
        .await
        .expect("answered")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(done["data"]["touch"]["v"], 2, "{done}");
    let pushed = next_json(&mut ws).await;
    assert_eq!(pushed["type"], "next", "{pushed}");
    let spans = collector
        .until("the mutation, both changes and the re-run", |s| {
            let has = |service: &str, name: &str| {
                s.iter()
                    .any(|g| g.service == service && g.span.name == name)
            };
            has("replica-b", "live.rerun")
                && has("replica-b", "live.change")
                && has("replica-a", "live.change")
                && s.iter().any(|g| {
                    g.service == "replica-a"
                        && g.attr("graphql.operation.type").as_deref() == Some("mutation")
                        && g.span.name == "graphql.request"
                })
        })
        .await;
    let mutation = spans
        .iter()
        .find(|g| {
            g.service == "replica-a"
                && g.span.name == "graphql.request"
                && g.attr("graphql.operation.type").as_deref() == Some("mutation")
        })
        .expect("the mutation's request span");
    // Its change is a trace of its own, linked to the mutation.
    let change_a = spans
        .iter()
        .find(|g| g.service == "replica-a" && g.span.name == "live.change")
        .expect("replica a's change");
    assert_eq!(change_a.attr("livegate.cause").as_deref(), Some("mutation"));
    assert_ne!(change_a.span.trace_id, mutation.span.trace_id);
    // (to the mutation field's span, which invalidated).
    let touch = spans
        .iter()
        .find(|g| g.span.name == "upstream.fetch" && g.span.trace_id == mutation.span.trace_id)
        .expect("the mutation field's span");
    assert_eq!(touch.attr("graphql.field.name").as_deref(), Some("touch"));
    assert!(change_a.links_to(touch), "{change_a:?}");
    // Replica b heard it through Redis: its change links to replica a's.
    let change_b = spans
        .iter()
        .find(|g| g.service == "replica-b" && g.span.name == "live.change")
        .expect("replica b's change");
    assert_eq!(change_b.attr("livegate.cause").as_deref(), Some("replica"));
    assert!(change_b.links_to(change_a), "{change_b:?}");
    // The re-run of the shared subscription, under b's change, reaching its subscriber.
    let rerun = spans
        .iter()
        .find(|g| g.service == "replica-b" && g.span.name == "live.rerun")
        .expect("the re-run");
    assert!(rerun.is_child_of(change_b));
    assert_eq!(
        rerun.attr("livegate.subscription").as_deref(),
        Some("thing")
    );
    assert_eq!(
        rerun.attr("livegate.subscribers.reached").as_deref(),
        Some("1")
    );
    assert_eq!(
        rerun.attr("livegate.subscribers.dropped").as_deref(),
        Some("0")
    );
    // Its refetch is in it.
    let refetch = spans
        .iter()
        .find(|g| {
            g.service == "replica-b"
                && g.span.name == "GET /things/{args.id}"
                && g.span.trace_id == rerun.span.trace_id
        })
        .expect("the refetch under the re-run");
    assert_eq!(
        refetch.attr("http.response.status_code").as_deref(),
        Some("200")
    );
}

#[tokio::test]
async fn a_webhook_is_a_span_and_its_change_links_to_it() {
    let collector = Collector::start().await;
    let up = Upstream::start(axum::Router::new().route(
        "/things/{id}",
        axum::routing::get(|| async { axum::Json(json!({"id": "1", "v": 1})) }),
    ))
    .await;
    let schema = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query { thing(id: ID!): Thing @rest(upstream: "api", path: "/things/{args.id}") @cache(maxAge: 600, tags: ["thing:{args.id}"]) }
type Thing { id: ID! v: Int! }
"#;
    let mut options = livegate::Options {
        telemetry: traced(&collector, "gw"),
        ..Default::default()
    };
    options.webhook.token = Some("t".into());
    let gw = Gateway::start(&schema.replace("{up}", &up.url()), options).await;
    let res = gw
        .client
        .post(format!("http://{}/hooks/invalidate", gw.addr))
        .bearer_auth("t")
        .json(&json!({"tags": ["thing:1"]}))
        .send()
        .await
        .expect("webhook");
    assert_eq!(res.status(), 200);
    let spans = collector
        .until("the webhook's change", |s| {
            s.iter().any(|g| g.span.name == "live.change")
                && s.iter().any(|g| g.span.name == "webhook")
        })
        .await;
    let hook = named(&spans, "webhook")[0].clone();
    assert_eq!(hook.attr("url.path").as_deref(), Some("/hooks/invalidate"));
    assert_eq!(
        hook.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    let change = named(&spans, "live.change")[0].clone();
    assert_eq!(change.attr("livegate.cause").as_deref(), Some("webhook"));
    assert!(change.links_to(&hook));
    // The bearer token is in no span.
    for g in &spans {
        for kv in &g.span.attributes {
            assert!(!format!("{:?}", kv.value).contains("Bearer"), "{}", kv.key);
        }
    }
}

#[tokio::test]
async fn a_poll_that_finds_a_difference_is_a_change_of_its_own() {
    let collector = Collector::start().await;
    let version = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let read = version.clone();
    let up = Upstream::start(axum::Router::new().route(
        "/things/{id}",
        axum::routing::get(move || {
            let v = read.load(std::sync::atomic::Ordering::SeqCst);
            async move { axum::Json(json!({"id": "1", "v": v})) }
        }),
    ))
    .await;
    let schema = r#"
extend schema @upstream(name: "api", url: "{up}")
type Query { thing(id: ID!): Thing @rest(upstream: "api", path: "/things/{args.id}") @cache(maxAge: 600) }
type Subscription { thing(id: ID!): Thing @live(pollMs: 50) }
type Thing { id: ID! v: Int! }
"#;
    let gw = traced_gateway(&collector, &schema.replace("{up}", &up.url())).await;
    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut ws, "s", r#"subscription { thing(id: "1") { v } }"#).await;
    assert_eq!(next_json(&mut ws).await["payload"]["data"]["thing"]["v"], 1);
    version.store(2, std::sync::atomic::Ordering::SeqCst);
    let pushed = next_json(&mut ws).await;
    assert_eq!(pushed["payload"]["data"]["thing"]["v"], 2, "{pushed}");
    let spans = collector
        .until("the poll's change and its re-run", |s| {
            !named(s, "live.rerun").is_empty() && !named(s, "live.change").is_empty()
        })
        .await;
    // Polls that found nothing new made no trace: one change, the one that did.
    let changes = named(&spans, "live.change");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].attr("livegate.cause").as_deref(), Some("poll"));
    let rerun = named(&spans, "live.rerun")[0].clone();
    assert!(rerun.is_child_of(changes[0]));
    assert_eq!(
        rerun.attr("livegate.subscribers.reached").as_deref(),
        Some("1")
    );
    // The subscription's start was a request span on the socket.
    let start = named(&spans, "graphql.request")[0].clone();
    assert_eq!(
        start.attr("livegate.transport").as_deref(),
        Some("websocket")
    );
    assert_eq!(
        start.attr("graphql.operation.type").as_deref(),
        Some("subscription")
    );
}
