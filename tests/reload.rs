//! Schema hot reload (issue 13) with `--watch`: a good schema is swapped in without
//! dropping anything — open subscriptions whose field stays go on, one whose field is gone
//! gets an error, cached entries and upstream sockets carry over — and a schema with errors
//! is refused while the one in service goes on.

mod common;

use common::subscribe;

use common::{announcer, next_json, sample, websocket, Gateway, Upstream};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

const V1: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type User { id: ID! name: String! }
type Query {
  user(id: ID!): User @rest(upstream: "api", path: "/users/{args.id}") @cache(maxAge: 600, tags: ["user:{args.id}"])
  tick: Int @rest(upstream: "api", path: "/tick") @cache(maxAge: 600)
}
type Mutation {
  touch(id: ID!): User @rest(upstream: "api", method: POST, path: "/users/{args.id}") @invalidates(tags: ["user:{args.id}"])
}
type Subscription {
  user(id: ID!): User @live
  tick: Int @live(pollMs: 50)
  said: User @stream(upstream: "api", path: "/ws")
}
"#;

async fn upstream() -> (Upstream, Arc<AtomicU64>, broadcast::Sender<String>) {
    use axum::extract::Path;
    use axum::routing::get;
    let (say, _) = broadcast::channel::<String>(16);
    let version = Arc::new(AtomicU64::new(0));
    let (read, bump, tick) = (version.clone(), version.clone(), version.clone());
    let up = Upstream::start(
        axum::Router::new()
            .route(
                "/users/{id}",
                get(move |Path(id): Path<String>| {
                    let v = read.load(Ordering::SeqCst);
                    async move { axum::Json(json!({"id": id, "name": format!("v{v}")})) }
                })
                .post(move |Path(id): Path<String>| {
                    let v = bump.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { axum::Json(json!({"id": id, "name": format!("v{v}")})) }
                }),
            )
            .route(
                "/tick",
                get(move || {
                    let v = tick.load(Ordering::SeqCst);
                    async move { axum::Json(json!(v)) }
                }),
            )
            .route("/ws", announcer(say.clone())),
    )
    .await;
    (up, version, say)
}

#[tokio::test]
async fn a_reload_keeps_what_stays_ends_what_is_gone_and_a_bad_schema_changes_nothing() {
    let (up, _version, say) = upstream().await;
    let v1 = V1.replace("{up}", &up.url());
    let file = std::env::temp_dir().join(format!("livegate-reload-{}.graphql", std::process::id()));
    std::fs::write(&file, &v1).expect("write");
    let options = livegate::Options {
        schema_paths: vec![file.clone()],
        watch: true,
        ..Default::default()
    };
    let gw = Gateway::start(&v1, options).await;
    let hash = |text: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    // 1 when the schema `text` is the one in service.
    let in_service = |page: &str, text: &str| {
        sample(
            page,
            &format!("livegate_schema_info{{hash=\"{}\"}}", hash(text)),
        )
    };
    let page = gw.metrics().await;
    assert_eq!(in_service(&page, &v1), 1.0, "{page}");

    let mut ws = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(
        &mut ws,
        "user",
        r#"subscription { user(id: "1") { name } }"#,
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await["payload"]["data"]["user"]["name"],
        "v0"
    );
    let mut ticks = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut ticks, "tick", "subscription { tick }").await;
    assert_eq!(next_json(&mut ticks).await["payload"]["data"]["tick"], 0);
    let mut events = websocket(gw.addr, "graphql-transport-ws").await;
    subscribe(&mut events, "said", "subscription { said { id name } }").await;
    while say.receiver_count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let sockets_before = say.receiver_count();
    let users_fetched = up.count_matching("GET /users/1");

    // v2: `tick` is gone from Subscription; a new Query field; the rest stays.
    let v2 = v1
        .replace("  tick: Int @live(pollMs: 50)\n", "")
        .replace("type Query {", "type Query {\n  hello: String @rest(upstream: \"api\", path: \"/users/hello\", select: \"name\")");
    std::fs::write(&file, &v2).expect("write");
    let page = gw
        .metrics_until(|p| sample(p, r#"livegate_schema_reloads_total{result="loaded"}"#) == 1.0)
        .await;
    assert_eq!(in_service(&page, &v2), 1.0, "{page}");
    assert_eq!(in_service(&page, &v1), 0.0, "{page}");
    // The subscription whose field is gone: an error, its end.
    let gone = next_json(&mut ticks).await;
    assert_eq!(gone["id"], "tick", "{gone}");
    assert_eq!(gone["type"], "error", "{gone}");
    assert_eq!(
        gone["payload"][0]["extensions"]["code"], "SCHEMA_RELOADED",
        "{gone}"
    );
    // The new field answers; the cached entry carried over (no refetch for it).
    let r = gw.query("{ hello user(id: \"1\") { name } }").await;
    assert_eq!(
        r["data"],
        json!({"hello": "v0", "user": {"name": "v0"}}),
        "{r}"
    );
    assert_eq!(
        up.count_matching("GET /users/1"),
        users_fetched,
        "{:?}",
        up.requests()
    );
    // The live query that stays still hears changes; the event stream, on the same socket.
    gw.query(r#"mutation { touch(id: "1") { name } }"#).await;
    let pushed = next_json(&mut ws).await;
    assert_eq!(pushed["payload"]["data"]["user"]["name"], "v1", "{pushed}");
    let _ = say.send(json!({"id": "7", "name": "after reload"}).to_string());
    let heard = next_json(&mut events).await;
    assert_eq!(
        heard["payload"]["data"]["said"],
        json!({"id": "7", "name": "after reload"}),
        "{heard}"
    );
    assert_eq!(
        say.receiver_count(),
        sockets_before,
        "the upstream socket stayed"
    );

    // v3 does not load: refused, logged, and v2 goes on.
    std::fs::write(&file, format!("{v2}\ntype Broken {{ x: Nope }}\n")).expect("write");
    let page = gw
        .metrics_until(|p| sample(p, r#"livegate_schema_reloads_total{result="refused"}"#) == 1.0)
        .await;
    assert_eq!(in_service(&page, &v2), 1.0, "{page}");
    let r = gw.query("{ hello }").await;
    assert!(r["data"]["hello"].is_string(), "{r}");
    gw.query(r#"mutation { touch(id: "1") { name } }"#).await;
    let pushed: Value = next_json(&mut ws).await;
    assert_eq!(pushed["payload"]["data"]["user"]["name"], "v2", "{pushed}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn a_schema_split_over_a_directory_reloads_when_any_of_its_files_changes() {
    let (up, _version, _say) = upstream().await;
    let dir = std::env::temp_dir().join(format!("livegate-reload-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let base = format!(
        "extend schema @upstream(name: \"api\", url: \"{}\")\ntype User {{ id: ID! name: String! }}\ntype Query {{ user(id: ID!): User @rest(upstream: \"api\", path: \"/users/{{args.id}}\") }}\n",
        up.url()
    );
    let users = "extend type Query { tick: Int @rest(upstream: \"api\", path: \"/tick\") }\n";
    std::fs::write(dir.join("base.graphql"), &base).expect("write");
    std::fs::write(dir.join("users.graphql"), users).expect("write");
    let options = livegate::Options {
        schema_paths: vec![dir.clone()],
        watch: true,
        ..Default::default()
    };
    let gw = Gateway::start(&format!("{base}{users}"), options).await;
    assert_eq!(gw.query("{ tick }").await["data"]["tick"], 0);

    // The second file changes: the merged schema is reloaded.
    let users2 = "extend type Query {\n  tick: Int @rest(upstream: \"api\", path: \"/tick\")\n  hello: String @rest(upstream: \"api\", path: \"/users/hello\", select: \"name\")\n}\n";
    std::fs::write(dir.join("users.graphql"), users2).expect("write");
    reloads_reach(&gw, "loaded", 1.0).await;
    let r = gw.query("{ hello user(id: \"1\") { name } }").await;
    assert_eq!(
        r["data"],
        json!({"hello": "v0", "user": {"name": "v0"}}),
        "{r}"
    );

    // A mistake in that file is refused; what is in service goes on.
    std::fs::write(
        dir.join("users.graphql"),
        "extend type Query { broken: Nope }\n",
    )
    .expect("write");
    reloads_reach(&gw, "refused", 1.0).await;
    assert_eq!(gw.query("{ hello }").await["data"]["hello"], "v0");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `livegate_schema_reloads_total{result}` reaches `n`, and asserts it did.
async fn reloads_reach(gw: &Gateway, result: &str, n: f64) {
    let series = format!("livegate_schema_reloads_total{{result=\"{result}\"}}");
    let page = gw.metrics_until(|p| sample(p, &series) == n).await;
    assert_eq!(sample(&page, &series), n, "{page}");
}
