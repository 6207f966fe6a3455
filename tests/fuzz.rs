//! Hostile input never panics: arbitrary text into the schema loader (and mutations of a
//! real schema), arbitrary frames into a gateway's WebSocket handler.

mod common;

use proptest::prelude::*;

const DEMO: &str = include_str!("../schema.graphql");

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

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
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        for _ in 0..60 {
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
