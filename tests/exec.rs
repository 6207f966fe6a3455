//! The planned executor (issue 11), as the GraphQL spec has it: only what is selected is
//! completed, a wrong leaf is null with an error at its own path, nulls propagate to the
//! nearest nullable position, keys stay in selection order, fields merge, `@skip` and
//! `@include` follow variables, variables are coerced by type, mutations run one after
//! another with their subtrees, and a document is prepared once.

mod common;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{sample, Gateway, Upstream};
use serde_json::{json, Value};

fn api() -> Router {
    Router::new()
        .route(
            "/items",
            get(|| async {
                Json(json!([
                    {"name": "a", "n": 1, "tag": "x"},
                    {"name": "b", "n": "notanint", "tag": "y"},
                    {"name": "c", "n": 3, "tag": null}
                ]))
            }),
        )
        .route(
            "/detail/{name}",
            get(|Path(name): Path<String>| async move {
                Json(json!({"name": name, "size": name.len()}))
            }),
        )
        .route("/echo", post(|Json(body): Json<Value>| async move { Json(body) }))
        .route(
            "/m/{n}",
            post(|Path(n): Path<String>| async move { Json(json!({"name": n, "n": 1, "tag": null})) }),
        )
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "api", url: "{up}")
scalar JSON
enum Color { RED GREEN }
input Filter { color: Color = RED, limit: Int, names: [String!] }
type Detail { name: String! size: Int! }
type Item {
  name: String!
  n: Int
  strictN: Int! @map(from: "n")
  tag: String
  detail: Detail @rest(upstream: "api", path: "/detail/{parent.name}") @cache(maxAge: 60)
}
type Query {
  items: [Item!]! @rest(upstream: "api", path: "/items") @cache(maxAge: 60)
  maybeItems: [Item!] @rest(upstream: "api", path: "/items") @cache(maxAge: 60)
  echo(i: Int, f: Float, s: String, b: Boolean, id: ID, c: Color, filter: Filter, list: [Int], d: Int = 7): JSON
    @rest(upstream: "api", method: POST, path: "/echo", body: "{args}")
}
type Mutation {
  first: Item @rest(upstream: "api", method: POST, path: "/m/first")
  second: Item @rest(upstream: "api", method: POST, path: "/m/second")
}
"#;

async fn setup() -> (Upstream, Gateway) {
    common::serve(api(), SCHEMA).await
}

#[tokio::test]
async fn only_selected_leaves_are_completed_and_a_wrong_leaf_fails_alone() {
    let (_up, gw) = setup().await;
    let r = gw.query("{ items { name } }").await;
    assert_eq!(
        r,
        json!({"data": {"items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
        "n is not selected, so its wrong kind is no error"
    );
    let r = gw.query("{ items { name n } }").await;
    assert_eq!(
        r["data"],
        json!({"items": [{"name": "a", "n": 1}, {"name": "b", "n": null}, {"name": "c", "n": 3}]}),
        "{r}"
    );
    let errors = r["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{r}");
    assert_eq!(errors[0]["path"], json!(["items", 1, "n"]));
    assert_eq!(errors[0]["locations"], json!([{"line": 1, "column": 16}]));
    assert_eq!(errors[0]["extensions"]["code"], "UPSTREAM_BAD_RESPONSE");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"`[1].n` is the string "notanint", but the schema says Int"#),
        "{message}"
    );
}

#[tokio::test]
async fn nulls_propagate_to_the_nearest_nullable_position() {
    let (_up, gw) = setup().await;
    // Item 1's strictN is null in a non-null position: item 1 is null, and being
    // non-null in its list, the nullable list is null; the other root field stands.
    let r = gw
        .query("{ maybeItems { name strictN } other: items { name } }")
        .await;
    assert_eq!(r["data"]["maybeItems"], Value::Null, "{r}");
    assert_eq!(r["data"]["other"][2]["name"], "c", "{r}");
    assert_eq!(r["errors"][0]["path"], json!(["maybeItems", 1, "strictN"]));
    // Up to `data` itself when every position on the way is non-null.
    let r = gw.query("{ items { strictN } }").await;
    assert_eq!(r["data"], Value::Null, "{r}");
    assert_eq!(r["errors"][0]["path"], json!(["items", 1, "strictN"]));
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(1), "{r}");
}

#[tokio::test]
async fn keys_come_in_selection_order_and_fields_merge() {
    let (_up, gw) = setup().await;
    let body = gw
        .query_raw(r#"{"query":"{ items { n x: name ... on Item { name x: name tag } n } }"}"#)
        .await;
    assert!(
        body.starts_with(
            r#"{"data":{"items":[{"n":1,"x":"a","name":"a","tag":"x"},{"n":null,"x":"b","name":"b","tag":"y"},{"n":3,"x":"c","name":"c","tag":null}]}"#
        ),
        "{body}"
    );
    let r = gw
        .query(
            "{ __typename items { __typename ...F } } fragment F on Item { name detail { size } }",
        )
        .await;
    assert_eq!(r["data"]["__typename"], "Query");
    assert_eq!(
        r["data"]["items"][1],
        json!({"__typename": "Item", "name": "b", "detail": {"size": 1}})
    );
}

#[tokio::test]
async fn skip_and_include_follow_variables() {
    let (_up, gw) = setup().await;
    let q = "query($s: Boolean!) { items { name @skip(if: $s) tag @include(if: $s) ... @include(if: $s) { n } } }";
    let r = gw.query_with(q, json!({"s": true}), &[]).await;
    assert_eq!(r["data"]["items"][0], json!({"tag": "x", "n": 1}), "{r}");
    let r = gw.query_with(q, json!({"s": false}), &[]).await;
    assert_eq!(r["data"]["items"][0], json!({"name": "a"}), "{r}");
}

#[tokio::test]
async fn variables_are_coerced_by_their_types() {
    let (_up, gw) = setup().await;
    let q = "query($i: Int, $f: Float, $s: String, $b: Boolean, $id: ID, $c: Color, $filter: Filter, $list: [Int]) {
        echo(i: $i, f: $f, s: $s, b: $b, id: $id, c: $c, filter: $filter, list: $list) }";
    let r = gw
        .query_with(
            q,
            json!({"i": 3, "f": 2, "s": "x", "b": true, "id": 42, "c": "GREEN",
                   "filter": {"limit": 5, "names": "solo"}, "list": 9}),
            &[],
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    assert_eq!(
        r["data"]["echo"],
        json!({"i": 3, "f": 2.0, "s": "x", "b": true, "id": "42", "c": "GREEN",
               "filter": {"color": "RED", "limit": 5, "names": ["solo"]}, "list": [9], "d": 7}),
        "an ID number is a string, a single value is a list of one, defaults fill in"
    );
    for (vars, says) in [
        (json!({"i": "three"}), "variable `$i` got an invalid value for type `Int`: the string \"three\" is not a valid Int"),
        (json!({"i": 3_000_000_000i64}), "variable `$i`"),
        (json!({"c": "BLUE"}), "variable `$c`"),
        (json!({"filter": {"colour": "RED"}}), "`colour` is not a field of `Filter`"),
        (json!({"filter": {"names": [null]}}), "field `names`: at [0]: null is not allowed for `String!`"),
    ] {
        let r = gw.query_with(q, vars.clone(), &[]).await;
        assert!(r.get("data").is_none(), "a request error has no data: {r}");
        let message = r["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{vars}: {r}");
    }
    let r = gw
        .query_with("query($i: Int!) { echo(i: $i) }", json!({}), &[])
        .await;
    assert_eq!(
        r["errors"][0]["message"], "variable `$i` of required type `Int!` was not provided",
        "{r}"
    );
}

#[tokio::test]
async fn mutation_fields_run_one_after_another_with_their_subtrees() {
    let (up, gw) = setup().await;
    let r = gw
        .query("mutation { second { name detail { size } } first { name detail { size } } }")
        .await;
    assert_eq!(
        r["data"],
        json!({"second": {"name": "second", "detail": {"size": 6}}, "first": {"name": "first", "detail": {"size": 5}}}),
        "{r}"
    );
    assert_eq!(
        up.requests(),
        [
            "POST /m/second",
            "GET /detail/second",
            "POST /m/first",
            "GET /detail/first"
        ]
    );
}

#[tokio::test]
async fn a_document_is_prepared_once() {
    let (_up, gw) = setup().await;
    let q = "query($s: String) { echo(s: $s) }";
    for i in 0..3 {
        let r = gw.query_with(q, json!({"s": format!("v{i}")}), &[]).await;
        assert_eq!(r["data"]["echo"]["s"], format!("v{i}"), "{r}");
    }
    let page = gw.metrics().await;
    assert_eq!(
        sample(&page, r#"livegate_prepared_documents_total{result="miss"}"#),
        1.0,
        "{page}"
    );
    assert_eq!(
        sample(&page, r#"livegate_prepared_documents_total{result="hit"}"#),
        2.0
    );
}
