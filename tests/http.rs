//! GraphQL over HTTP: methods, media types and status codes, after the spec.

mod common;

use axum::routing::get;
use axum::{Json, Router};
use common::{Gateway, Upstream};
use serde_json::{json, Value};

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
type Thing { id: ID! name: String! }
type Query { thing(id: ID!): Thing @rest(upstream: "api", path: "/things/{args.id}") @cache(maxAge: 60) }
type Mutation { touch(id: ID!): Thing @rest(upstream: "api", method: POST, path: "/things/{args.id}") }
"#;

async fn setup() -> (Upstream, Gateway) {
    let app = Router::new().route(
        "/things/{id}",
        get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                Json(json!({"id": id, "name": "thing"}))
            },
        )
        .post(
            |axum::extract::Path(id): axum::extract::Path<String>| async move {
                Json(json!({"id": id, "name": "touched"}))
            },
        ),
    );
    let up = Upstream::start(app).await;
    let options = livegate::Options {
        max_request_body: 2048,
        ..Default::default()
    };
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up.url()), options).await;
    (up, gw)
}

async fn parts(res: reqwest::Response) -> (u16, String, Value) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = res.text().await.expect("body");
    (
        status,
        ct,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn get_runs_queries_with_variables_and_operation_name() {
    let (_up, gw) = setup().await;
    let res = gw
        .client
        .get(gw.url())
        .query(&[
            (
                "query",
                "query A($id: ID!) { thing(id: $id) { name } } query B { __typename }",
            ),
            ("variables", r#"{"id": "7"}"#),
            ("operationName", "A"),
        ])
        .send()
        .await
        .expect("get");
    let (status, ct, body) = parts(res).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/graphql-response+json"), "{ct}");
    assert_eq!(body, json!({"data": {"thing": {"name": "thing"}}}));
}

#[tokio::test]
async fn get_refuses_mutations_with_405_and_runs_nothing() {
    let (up, gw) = setup().await;
    let res = gw
        .client
        .get(gw.url())
        .query(&[("query", r#"mutation { touch(id: "1") { name } }"#)])
        .send()
        .await
        .expect("get");
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let (status, _, body) = parts(res).await;
    assert_eq!(status, 405);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST")),
        "{body}"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn media_types_decide_status_codes_of_request_errors() {
    let (_up, gw) = setup().await;
    let bad_query = json!({"query": "{ thing(id: \"1\") { name }"});
    // application/graphql-response+json (also the default): request errors are 400.
    for accept in [None, Some("application/graphql-response+json"), Some("*/*")] {
        let mut req = gw.client.post(gw.url()).json(&bad_query);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let (status, ct, body) = parts(req.send().await.expect("post")).await;
        assert_eq!(status, 400, "accept {accept:?}");
        assert!(ct.starts_with("application/graphql-response+json"), "{ct}");
        assert!(
            body.get("data").is_none(),
            "a request error has no data: {body}"
        );
        assert!(body["errors"][0]["locations"].is_array(), "{body}");
    }
    // application/json: 200 with errors.
    let res = gw
        .client
        .post(gw.url())
        .header("accept", "application/json")
        .json(&bad_query)
        .send()
        .await
        .expect("post");
    let (status, ct, body) = parts(res).await;
    assert_eq!((status, ct.starts_with("application/json")), (200, true));
    assert!(body["errors"].is_array());
    // A validation error (unknown field) is a request error too.
    let res = gw
        .client
        .post(gw.url())
        .json(&json!({"query": "{ nope }"}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 400);
    // A field error is not: 200 with data.
    let res = gw
        .client
        .post(gw.url())
        .json(&json!({"query": "{ thing(id: \"..\") { name } }"}))
        .send()
        .await
        .expect("post");
    let (status, _, body) = parts(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"thing": null}));
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx() {
    let (_up, gw) = setup().await;
    let post = |body: &'static str, ct: Option<&'static str>| {
        let mut req = gw.client.post(gw.url()).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let cases: [(&str, Option<&str>, u16, &str); 8] = [
        ("{not json", Some("application/json"), 400, "not JSON"),
        ("[1, 2]", Some("application/json"), 400, "JSON objects"),
        ("3", Some("application/json"), 400, "JSON object"),
        (
            r#"{"variables": {}}"#,
            Some("application/json"),
            400,
            "no `query`",
        ),
        (
            r#"{"query": 42}"#,
            Some("application/json"),
            400,
            "`query` must be a string",
        ),
        (
            r#"{"query": "{ __typename }", "variables": [1]}"#,
            Some("application/json"),
            400,
            "`variables` must be an object",
        ),
        (
            r#"{"query": "{ __typename }"}"#,
            Some("text/plain"),
            415,
            "Content-Type",
        ),
        (r#"{"query": "{ __typename }"}"#, None, 415, "Content-Type"),
    ];
    for (body, ct, want, says) in cases {
        let (status, _, json) = parts(post(body, ct).await.expect("post")).await;
        assert_eq!(status, want, "{body} / {ct:?}: {json}");
        let message = json["errors"][0]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{body}: {message}");
    }
    // Not acceptable.
    let res = gw
        .client
        .post(gw.url())
        .header("accept", "text/plain")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 406);
    // Too large.
    let big = json!({"query": format!("{{ __typename }} #{}", "x".repeat(4096))});
    let res = gw
        .client
        .post(gw.url())
        .json(&big)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 413);
    // Other methods (PUT and DELETE are graphql-sse's reservations).
    let res = gw.client.patch(gw.url()).send().await.expect("patch");
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST, PUT, DELETE")
    );
    // The gateway still serves.
    let ok = gw.query(r#"{ thing(id: "1") { name } }"#).await;
    assert_eq!(ok["data"]["thing"]["name"], "thing");
}

#[tokio::test]
async fn mutations_run_over_post() {
    let (up, gw) = setup().await;
    let r = gw.query(r#"mutation { touch(id: "9") { id name } }"#).await;
    assert_eq!(
        r,
        json!({"data": {"touch": {"id": "9", "name": "touched"}}})
    );
    assert_eq!(up.requests(), ["POST /things/9"]);
}

#[tokio::test]
async fn an_operation_whose_fields_are_all_skipped_has_empty_data() {
    let (up, gw) = setup().await;
    let r = gw
        .query(r#"query { thing(id: "1") @skip(if: true) { name } }"#)
        .await;
    assert_eq!(r, json!({"data": {}}));
    assert!(up.requests().is_empty(), "a skipped field is not fetched");
}

#[tokio::test]
async fn browsers_get_graphiql() {
    let (_up, gw) = setup().await;
    let res = gw
        .client
        .get(gw.url())
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/html")));
    let page = res.text().await.expect("page");
    assert!(page.contains("GraphiQL.createFetcher"), "{page}");
    // Its scripts are served by the gateway itself, not a CDN.
    assert!(!page.contains("unpkg.com"));
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphql-ws.min.js",
    ] {
        assert!(page.contains(&format!("/graphiql/{asset}")), "{asset}");
        let res = gw
            .client
            .get(format!("http://{}/graphiql/{asset}", gw.addr))
            .send()
            .await
            .expect("asset");
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.bytes().await.expect("bytes").len() > 1000, "{asset}");
    }
}
