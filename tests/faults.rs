//! Upstream faults: each becomes a null field with a coded error; siblings still resolve
//! and the gateway keeps serving.

mod common;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use common::{error_code, Gateway, Upstream};
use serde_json::{json, Value};

fn faulty_app() -> Router {
    Router::new()
        .route(
            "/ok",
            get(|| async { Json(json!({"id": "1", "name": "fine"})) }),
        )
        .route(
            "/slow",
            get(|| async {
                // Never answers: only the gateway's timeout ends this.
                std::future::pending::<()>().await;
                Json(json!({}))
            }),
        )
        .route(
            "/500",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/404",
            get(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "nope"}))) }),
        )
        .route("/not-json", get(|| async { "<html>surprise</html>" }))
        .route(
            "/wrong-type",
            get(|| async { Json(json!({"id": "1", "name": 42})) }),
        )
        .route(
            "/missing-non-null",
            get(|| async { Json(json!({"id": "1"})) }),
        )
        .route(
            "/not-a-list",
            get(|| async { Json(json!({"id": "1", "name": "x"})) }),
        )
        .route(
            "/big",
            get(|| async { Json(json!({"id": "1", "name": "x".repeat(10_000)})) }),
        )
        .route(
            "/endless",
            get(|| async {
                // A chunked body that never ends: only the size limit stops it.
                let chunks = futures_util::stream::repeat_with(|| {
                    Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(
                        b"[1,2,3,4,5,6,7,8,9,10],",
                    ))
                });
                axum::body::Body::from_stream(chunks)
            }),
        )
}

const SCHEMA: &str = r#"
extend schema
  @upstream(name: "api", url: "{up}", timeoutMs: 300)
  @upstream(name: "dead", url: "{dead}")
type Thing { id: ID! name: String! }
type Query {
  ok: Thing @rest(upstream: "api", path: "/ok")
  slow: Thing @rest(upstream: "api", path: "/slow")
  status500: Thing @rest(upstream: "api", path: "/500")
  status404: Thing @rest(upstream: "api", path: "/404") @cache(maxAge: 60)
  notJson: Thing @rest(upstream: "api", path: "/not-json")
  wrongType: Thing @rest(upstream: "api", path: "/wrong-type") @cache(maxAge: 60)
  missingNonNull: Thing @rest(upstream: "api", path: "/missing-non-null")
  notAList: [Thing] @rest(upstream: "api", path: "/not-a-list")
  big: Thing @rest(upstream: "api", path: "/big")
  endless: Thing @rest(upstream: "api", path: "/endless")
  dead: Thing @rest(upstream: "dead", path: "/anything")
}
"#;

async fn setup() -> (Upstream, Gateway) {
    let up = Upstream::start(faulty_app()).await;
    // A port that was just free and is now closed: connections are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let schema = SCHEMA
        .replace("{up}", &up.url())
        .replace("{dead}", &format!("http://{dead}"));
    let options = livegate::Options {
        max_upstream_body: 4096,
        ..Default::default()
    };
    (up, Gateway::start(&schema, options).await)
}

/// Queries `field` beside `ok`, and returns the error of `field` after checking that the
/// sibling resolved and `field` is null with a path.
async fn fault(gw: &Gateway, field: &str) -> Value {
    let r = gw
        .query(&format!("{{ ok {{ name }} {field} {{ id name }} }}"))
        .await;
    assert_eq!(r["data"]["ok"]["name"], "fine", "sibling resolves: {r}");
    assert_eq!(r["data"][field], Value::Null, "{r}");
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{r}");
    // At the field, or (a body that does not fit) at the leaf inside it that failed.
    assert_eq!(errors[0]["path"][0], json!(field), "{r}");
    errors[0].clone()
}

#[tokio::test]
async fn dead_upstream_is_unavailable() {
    let (_up, gw) = setup().await;
    let e = fault(&gw, "dead").await;
    assert_eq!(e["extensions"]["code"], "UPSTREAM_UNAVAILABLE", "{e}");
}

#[tokio::test]
async fn slow_upstream_times_out() {
    let (_up, gw) = setup().await;
    let e = fault(&gw, "slow").await;
    assert_eq!(e["extensions"]["code"], "UPSTREAM_TIMEOUT", "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("300 ms")),
        "{e}"
    );
}

#[tokio::test]
async fn non_2xx_is_an_http_error_with_its_status_and_is_not_cached() {
    let (up, gw) = setup().await;
    let e = fault(&gw, "status500").await;
    assert_eq!(
        e["extensions"],
        json!({"code": "UPSTREAM_HTTP_ERROR", "status": 500})
    );
    let e = fault(&gw, "status404").await;
    assert_eq!(e["extensions"]["status"], 404);
    fault(&gw, "status404").await;
    assert_eq!(up.count_matching("GET /404"), 2, "errors are never cached");
}

#[tokio::test]
async fn bodies_that_lie_are_bad_responses_and_are_not_cached() {
    let (up, gw) = setup().await;
    for field in ["notJson", "wrongType", "missingNonNull"] {
        let e = fault(&gw, field).await;
        assert_eq!(
            e["extensions"]["code"], "UPSTREAM_BAD_RESPONSE",
            "{field}: {e}"
        );
    }
    let e = fault(&gw, "wrongType").await;
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("`name` is the number 42, but the schema says String")),
        "{e}"
    );
    assert_eq!(
        up.count_matching("GET /wrong-type"),
        2,
        "a misfit body is never cached"
    );
    let r = gw.query("{ ok { name } notAList { id } }").await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("UPSTREAM_BAD_RESPONSE"),
        "{r}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (_up, gw) = setup().await;
    let e = fault(&gw, "big").await;
    assert_eq!(e["extensions"]["code"], "UPSTREAM_TOO_LARGE", "{e}");
    // No Content-Length, and no end: stopped at the limit while streaming.
    let e = fault(&gw, "endless").await;
    assert_eq!(e["extensions"]["code"], "UPSTREAM_TOO_LARGE", "{e}");
}

#[tokio::test]
async fn the_gateway_keeps_serving_through_faults() {
    let (_up, gw) = setup().await;
    let all = "{ ok { name } slow { id } status500 { id } notJson { id } wrongType { name } big { id } dead { id } }";
    let r = gw.query(all).await;
    let mut codes: Vec<&str> = r["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["extensions"]["code"].as_str())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "UPSTREAM_BAD_RESPONSE",
            "UPSTREAM_BAD_RESPONSE",
            "UPSTREAM_HTTP_ERROR",
            "UPSTREAM_TIMEOUT",
            "UPSTREAM_TOO_LARGE",
            "UPSTREAM_UNAVAILABLE"
        ]
    );
    let again = gw.query("{ ok { name } }").await;
    assert_eq!(again["data"]["ok"]["name"], "fine");
}

#[tokio::test]
async fn a_failing_non_null_root_field_gets_one_explained_error() {
    let up = Upstream::start(faulty_app()).await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
        type Thing {{ id: ID! name: String! }}
        type Query {{ broken: Thing! @rest(upstream: "api", path: "/500") ok: Thing @rest(upstream: "api", path: "/ok") }}"#,
        up.url()
    );
    let gw = Gateway::start(&schema, Default::default()).await;
    let r = gw.query("{ broken { id } }").await;
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{r}");
    assert_eq!(errors[0]["extensions"]["code"], "UPSTREAM_HTTP_ERROR");
    assert_eq!(errors[0]["path"], json!(["broken"]));
}

/// A list of three things whose owners resolve one by one; owner 2's upstream fails.
fn owners_app() -> Router {
    Router::new()
        .route(
            "/things",
            get(|| async { Json(json!([{"id": "1"}, {"id": "2"}, {"id": "3"}])) }),
        )
        .route(
            "/owner/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    if id == "2" {
                        Err((StatusCode::INTERNAL_SERVER_ERROR, "boom"))
                    } else {
                        Ok(Json(json!({"name": format!("owner {id}")})))
                    }
                },
            ),
        )
        .merge(faulty_app())
}

async fn owners_gateway() -> (Upstream, Gateway) {
    let up = Upstream::start(owners_app()).await;
    let schema = format!(
        r#"extend schema @upstream(name: "api", url: "{}")
        type Owner {{ name: String! }}
        type Thing {{ id: ID! owner: Owner! @rest(upstream: "api", path: "/owner/{{parent.id}}") }}
        type Query {{
          broken: Thing! @rest(upstream: "api", path: "/500")
          ok: Thing @rest(upstream: "api", path: "/ok")
          strict: [Thing!] @rest(upstream: "api", path: "/things")
          loose: [Thing] @rest(upstream: "api", path: "/things")
        }}"#,
        up.url()
    );
    let gw = Gateway::start(&schema, Default::default()).await;
    (up, gw)
}

/// Per the spec's null propagation: a failed non-null root field makes `data` null.
#[tokio::test]
async fn a_failed_non_null_root_field_makes_data_null() {
    let (_up, gw) = owners_gateway().await;
    let r = gw.query("{ ok { id } broken { id } }").await;
    assert_eq!(r["data"], Value::Null, "{r}");
    assert!(r.as_object().is_some_and(|o| o.contains_key("data")), "{r}");
    assert_eq!(r["errors"][0]["path"], json!(["broken"]), "{r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(1), "{r}");
}

/// A failed non-null field nulls its parent; a non-null list item nulls the list; a
/// nullable list item is where the null stops. Aliases and fragments are followed.
#[tokio::test]
async fn a_failed_non_null_field_nulls_up_to_the_nearest_nullable_position() {
    let (_up, gw) = owners_gateway().await;
    let r = gw
        .query(
            "{ ok { id } strict { id owner { name } } \
               mine: loose { ...F } } fragment F on Thing { id who: owner { name } }",
        )
        .await;
    assert_eq!(r["data"]["ok"], json!({"id": "1"}), "{r}");
    assert_eq!(
        r["data"]["strict"],
        Value::Null,
        "[Thing!]: one null item nulls the list: {r}"
    );
    assert_eq!(
        r["data"]["mine"],
        json!([{"id": "1", "who": {"name": "owner 1"}}, null, {"id": "3", "who": {"name": "owner 3"}}]),
        "[Thing]: only the failed item is null: {r}"
    );
    let mut paths: Vec<Value> = r["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["path"].clone())
        .collect();
    paths.sort_by_key(Value::to_string);
    assert_eq!(
        paths,
        [json!(["mine", 1, "who"]), json!(["strict", 1, "owner"])],
        "one error per failed field, with its path: {r}"
    );
}
