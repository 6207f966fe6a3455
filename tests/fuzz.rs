//! Hostile input never panics and always gets a well-formed answer: arbitrary text into
//! the schema loader (and mutations of a real schema); arbitrary requests — documents,
//! variables, extensions, bodies, query strings, headers — into `/graphql` over GET, POST
//! and SSE, and into the webhook; arbitrary frames into a gateway's WebSocket handler,
//! in both subprotocols.
//!
//! Each property runs 300 cases here; `scripts/fuzz` runs them for a million or more
//! (`LIVEGATE_FUZZ_CASES`).

mod common;

use proptest::prelude::*;

const DEMO: &str = include_str!("../schema.graphql");

/// Cases per property: `LIVEGATE_FUZZ_CASES`, else 300.
fn cases() -> u32 {
    std::env::var("LIVEGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_schema_loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = livegate::plan::load("fuzz.graphql", &text, Vec::<(String, String)>::new());
    }

    #[test]
    fn the_schema_loader_never_panics_on_a_damaged_schema(cuts in proptest::collection::vec((0usize..DEMO.len(), "\\PC{0,3}"), 1..6)) {
        let mut text = DEMO.to_string();
        for (at, insert) in cuts {
            let at = at.min(text.len());
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (at + 2).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            text.replace_range(at..end, &insert);
        }
        if let Err(errors) = livegate::plan::load("fuzz.graphql", &text, Vec::<(String, String)>::new()) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(e.to_string().starts_with("fuzz.graphql:"), "{e}");
            }
        }
    }

    #[test]
    fn templates_never_panic(text in "\\PC{0,80}") {
        let _ = livegate::template::Template::parse(&text);
    }
}

#[tokio::test]
async fn arbitrary_websocket_frames_never_take_the_gateway_down() {
    use futures_util::{SinkExt, StreamExt};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let gw = common::Gateway::start(
        r#"extend schema @upstream(name: "api", url: "http://127.0.0.1:9")
           type Query { a: String @rest(upstream: "api", path: "/a") @cache(maxAge: 1) }
           type Subscription { a: String @live }"#,
        livegate::Options::default(),
    )
    .await;
    let mut runner = TestRunner::deterministic();
    let frames = proptest::collection::vec(
        prop_oneof![
            "\\PC{0,60}",
            Just(r#"{"type":"connection_init"}"#.to_string()),
            "\\{\"type\":\"(subscribe|complete|ping|pong|connection_init)\",\"id\":\"[a-z]{0,3}\",\"payload\":\\{\"query\":\"\\PC{0,30}\"\\}\\}",
        ],
        1..12,
    );
    let rounds = (cases() / 5).max(60);
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for _ in 0..rounds {
            let batch = frames.new_tree(&mut runner).expect("strategy").current();
            let mut req = format!("ws://{}/graphql", gw.addr)
                .into_client_request()
                .expect("request");
            req.headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().expect("header"));
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await else {
                panic!("gateway refused a connection")
            };
            for f in batch {
                if ws.send(Message::text(f)).await.is_err() {
                    break;
                }
            }
            let _ = ws.close(None).await;
            // Drain until the server has closed its side.
            while let Some(Ok(_)) = ws.next().await {}
        }
    }
    // Still serving.
    let r = gw.query("{ __typename }").await;
    assert_eq!(r["data"]["__typename"], "Query");
}

// ---- the request path -------------------------------------------------------------

const FUZZ_SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "http://127.0.0.1:9")
type User { id: ID! name: String! friend: User @rest(upstream: "api", path: "/users/{parent.id}") }
type Query {
  user(id: ID!): User @rest(upstream: "api", path: "/users/{args.id}") @cache(maxAge: 60, tags: ["u:{args.id}"])
  users(ids: [ID!], first: Int, q: String): [User!] @rest(upstream: "api", path: "/users", query: {q: "{args.q}"})
}
type Mutation { rename(id: ID!, name: String!): User @rest(upstream: "api", method: POST, path: "/users/{args.id}", body: "{args}") @invalidates(tags: ["u:{args.id}"]) }
type Subscription { user(id: ID!): User @live }
"#;

/// One gateway (its router, without a socket) for every request case, on one runtime.
fn router() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static ROUTER: std::sync::OnceLock<(tokio::runtime::Runtime, axum::Router)> =
        std::sync::OnceLock::new();
    ROUTER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let app = rt.block_on(async {
            let plan =
                livegate::plan::load("fuzz.graphql", FUZZ_SCHEMA, Vec::<(String, String)>::new())
                    .unwrap_or_else(|e| panic!("{e:?}"));
            let mut options = livegate::Options::default();
            options.webhook.secret = Some("s".into());
            options.upstream_timeout = std::time::Duration::from_millis(200);
            livegate::app(livegate::state(plan, &options).expect("state"))
        });
        (rt, app)
    })
}

/// GraphQL-shaped text: tokens of this schema and of the language, in any order.
fn document() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{"),
        Just("}"),
        Just("("),
        Just(")"),
        Just("["),
        Just("]"),
        Just(":"),
        Just(","),
        Just("$x"),
        Just("$y"),
        Just("..."),
        Just("fragment F on User"),
        Just("fragment Q on Query"),
        Just("...F"),
        Just("...Q"),
        Just("on"),
        Just("query"),
        Just("mutation"),
        Just("subscription"),
        Just("query Q($x: Boolean!, $y: ID = \"1\")"),
        Just("@skip(if: true)"),
        Just("@include(if: $x)"),
        Just("@live"),
        Just("@unknown"),
        Just("user(id: \"1\")"),
        Just("user(id: $y)"),
        Just("users(ids: [\"1\", 2], first: -1, q: \"a/../b\")"),
        Just("rename(id: \"1\", name: \"n\")"),
        Just("id"),
        Just("name"),
        Just("friend"),
        Just("a:"),
        Just("b:"),
        Just("\"1\""),
        Just("1"),
        Just("1.5e300"),
        Just("true"),
        Just("null"),
        Just("__typename"),
        Just("__schema { types { name } }"),
        Just("__type(name: \"User\") { fields { name } }"),
        Just("#c\n"),
        Just("\r"),
        Just("\"\"\"block\r\n\"\"\""),
        Just("\u{0}"),
        Just("é"),
    ];
    prop_oneof![
        3 => proptest::collection::vec(token, 0..48).prop_map(|t| t.join(" ")),
        1 => "\\PC{0,120}",
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z$]{0,3}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Shape {
    Post {
        body: Vec<u8>,
        content_type: &'static str,
    },
    Get {
        query: String,
    },
    Hook {
        body: Vec<u8>,
        signature: String,
    },
}

fn request() -> impl Strategy<Value = (Shape, &'static str)> {
    let post_json = (
        document(),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
    )
        .prop_map(|(q, vars, ext, op)| {
            let mut body = serde_json::json!({ "query": q });
            if let Some(v) = vars {
                body["variables"] = v;
            }
            if let Some(e) = ext {
                body["extensions"] = e;
            }
            if let Some(o) = op {
                body["operationName"] = o;
            }
            serde_json::to_vec(&body).unwrap_or_default()
        });
    let post = prop_oneof![
        4 => post_json,
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ];
    let content_type = prop_oneof![
        Just("application/json"),
        Just("application/graphql-response+json; charset=utf-8"),
        Just("text/plain"),
        Just(""),
    ];
    let get = (document(), proptest::option::of(json_value()), "\\PC{0,20}").prop_map(
        |(q, vars, junk)| {
            let mut pairs = url::form_urlencoded::Serializer::new(String::new());
            pairs.append_pair("query", &q);
            if let Some(v) = vars {
                pairs.append_pair("variables", &v.to_string());
            }
            pairs.append_pair("extensions", &junk);
            pairs.finish()
        },
    );
    let hook = (
        prop_oneof![
            json_value().prop_map(|v| v.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..100)
        ],
        "\\PC{0,40}",
    )
        .prop_map(|(body, signature)| Shape::Hook { body, signature });
    let accept = prop_oneof![
        Just("application/json"),
        Just("application/graphql-response+json"),
        Just("*/*"),
        Just("text/event-stream"),
        Just("text/html"),
        Just("image/png"),
        Just(""),
    ];
    (
        prop_oneof![
            3 => (post, content_type).prop_map(|(body, content_type)| Shape::Post { body, content_type }),
            2 => get.prop_map(|query| Shape::Get { query }),
            1 => hook,
        ],
        accept,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any request gets an answer with an expected status, and a JSON body unless it is
    /// an event stream or GraphiQL.
    #[test]
    fn any_request_gets_a_well_formed_answer((shape, accept) in request()) {
        use tower::ServiceExt;
        let (rt, app) = router();
        let mut builder = http::Request::builder();
        if !accept.is_empty() {
            builder = builder.header("accept", accept);
        }
        let (req, hook) = match &shape {
            Shape::Post { body, content_type } => {
                if !content_type.is_empty() {
                    builder = builder.header("content-type", *content_type);
                }
                (builder.method("POST").uri("/graphql").body(axum::body::Body::from(body.clone())), false)
            }
            Shape::Get { query } => (builder.uri(format!("/graphql?{query}")).body(axum::body::Body::empty()), false),
            Shape::Hook { body, signature } => {
                let builder = match http::HeaderValue::from_str(signature) {
                    Ok(v) => builder.header("x-livegate-signature", v),
                    Err(_) => builder,
                };
                (builder.method("POST").uri("/hooks/invalidate").body(axum::body::Body::from(body.clone())), true)
            }
        };
        let req = req.expect("request");
        let answered = rt.block_on(async {
            let res = app.clone().oneshot(req).await.expect("infallible");
            let status = res.status().as_u16();
            let kind = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let mut body = res.into_body().into_data_stream();
            use futures_util::StreamExt;
            // An event stream may go on: its first event is enough.
            let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.next()).await;
            let mut bytes = match first {
                Ok(Some(Ok(b))) => b.to_vec(),
                Ok(_) => Vec::new(),
                Err(_) => panic!("no answer within 5 s"),
            };
            if !kind.starts_with("text/event-stream") && !kind.starts_with("multipart/") {
                while let Some(Ok(more)) = body.next().await {
                    bytes.extend_from_slice(&more);
                }
            }
            (status, kind, bytes)
        });
        let (status, kind, bytes) = answered;
        if hook {
            prop_assert!([200, 400, 401, 413].contains(&status), "webhook status {status}");
        } else {
            prop_assert!([200, 400, 405, 406, 413, 415].contains(&status), "status {status}");
        }
        if kind.starts_with("text/event-stream") {
            prop_assert_eq!(status, 200);
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(text.starts_with("event: ") || text.starts_with(':') || text.is_empty(), "{text}");
        } else if kind.starts_with("multipart/mixed") {
            prop_assert_eq!(status, 200);
            prop_assert!(bytes.starts_with(b"\r\n--graphql"), "{}", String::from_utf8_lossy(&bytes));
        } else if !kind.starts_with("text/html") {
            let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
            prop_assert!(parsed.is_ok(), "{status} {kind}: not JSON: {}", String::from_utf8_lossy(&bytes));
            let parsed = parsed.unwrap_or_default();
            if !hook {
                // A batch (a JSON array of operations) is answered with an array of results.
                let results = match &parsed {
                    serde_json::Value::Array(items) => items.clone(),
                    one => vec![one.clone()],
                };
                for r in results {
                    prop_assert!(r.get("data").is_some() || r["errors"].is_array(), "{r}");
                }
            }
        }
    }
}

/// One layer of nesting: what opens it and what closes it. Every recursive construct of
/// the grammar (list and object values, selection sets, inline fragments, arguments,
/// list types) and of JSON (arrays, objects).
fn layer() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop_oneof![
        Just(("[", "]")),
        Just(("{a: ", "}")),
        Just(("user(id: \"1\") { ", " }")),
        Just(("... on Query { ", " }")),
        Just(("f(x: ", ")")),
        Just(("[", "!]")),
    ]
}

/// Where the nesting goes: the document (as a query argument, a variable's default, a
/// directive argument, a selection) or the JSON of `variables` or `extensions`.
#[derive(Debug, Clone, Copy)]
enum Place {
    Argument,
    Default,
    Directive,
    Selection,
    Variables,
    Extensions,
}

fn deep_request() -> impl Strategy<Value = (Place, Vec<(&'static str, &'static str)>, bool)> {
    let place = prop_oneof![
        Just(Place::Argument),
        Just(Place::Default),
        Just(Place::Directive),
        Just(Place::Selection),
        Just(Place::Variables),
        Just(Place::Extensions),
    ];
    // Runs of one layer or a mixture, up to 5,000 deep; over GET or POST.
    (
        place,
        proptest::collection::vec(layer(), 1..5_000),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases().min(2_000), ..ProptestConfig::default() })]

    /// Nesting of any depth, of any construct, anywhere in a request, is answered (a
    /// request error past the bounds), never a stack overflow: the gateway runs on a
    /// multi-threaded runtime's workers, as in production, and an overflow would abort
    /// this test binary.
    #[test]
    fn deep_nesting_anywhere_is_answered((place, layers, get) in deep_request()) {
        use tower::ServiceExt;
        let open: String = layers.iter().map(|(o, _)| *o).collect();
        let close: String = layers.iter().rev().map(|(_, c)| *c).collect();
        let nested = format!("{open}1{close}");
        let json_nested = format!("{}1{}", "[".repeat(layers.len()), "]".repeat(layers.len()));
        let (query, variables, extensions) = match place {
            Place::Argument => (format!("{{ user(id: {nested}) {{ id }} }}"), None, None),
            Place::Default => (format!("query($v: ID = {nested}) {{ user(id: $v) {{ id }} }}"), None, None),
            Place::Directive => (format!("{{ user(id: \"1\") @include(if: {nested}) {{ id }} }}"), None, None),
            Place::Selection => (format!("{{ {open}id{close} }}"), None, None),
            Place::Variables => ("query($v: ID) { user(id: $v) { id } }".to_string(), Some(format!("{{\"v\": {json_nested}}}")), None),
            Place::Extensions => ("{ __typename }".to_string(), None, Some(format!("{{\"e\": {json_nested}}}"))),
        };
        let (rt, app) = router();
        // A URL longer than the HTTP library takes goes as a POST.
        let get = get && query.len() + variables.as_ref().map_or(0, String::len) + extensions.as_ref().map_or(0, String::len) < 20_000;
        let req = if get {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("query", &query);
            if let Some(v) = &variables { q.append_pair("variables", v); }
            if let Some(e) = &extensions { q.append_pair("extensions", e); }
            http::Request::builder().uri(format!("/graphql?{}", q.finish())).body(axum::body::Body::empty())
        } else {
            let mut body = format!("{{\"query\": {}", serde_json::Value::String(query.clone()));
            if let Some(v) = &variables { body.push_str(&format!(", \"variables\": {v}")); }
            if let Some(e) = &extensions { body.push_str(&format!(", \"extensions\": {e}")); }
            body.push('}');
            http::Request::builder().method("POST").uri("/graphql")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
        }.expect("request");
        let (status, bytes) = rt.block_on(async {
            let res = app.clone().oneshot(req).await.expect("infallible");
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap_or_default();
            (status, bytes)
        });
        prop_assert!([200, 400, 413].contains(&status), "status {status}");
        let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
        prop_assert!(parsed.is_ok(), "not JSON: {}", String::from_utf8_lossy(&bytes));
    }
}

proptest! {
    // Each case is a document of up to 15,000 fragments: fewer cases.
    #![proptest_config(ProptestConfig { cases: (cases() / 30).max(5), ..ProptestConfig::default() })]

    /// A chain of fragment spreads of any length is answered, never walked off the stack.
    #[test]
    fn any_chain_of_fragment_spreads_is_answered(n in 1usize..15_000) {
        use tower::ServiceExt;
        let mut doc = String::from("{ ...F0 }\n");
        for i in 0..n {
            doc.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1));
        }
        doc.push_str(&format!("fragment F{n} on Query {{ __typename }}\n"));
        let body = serde_json::json!({ "query": doc }).to_string();
        let (rt, app) = router();
        let req = http::Request::builder().method("POST").uri("/graphql")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body)).expect("request");
        let status = rt.block_on(async { app.clone().oneshot(req).await.expect("infallible").status().as_u16() });
        prop_assert!([200, 400, 413].contains(&status), "status {status}");
    }
}
