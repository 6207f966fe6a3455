//! Upstreams over TLS behind a private certificate authority: with `upstream_ca`
//! (`--upstream-ca-file`) the gateway trusts it for `https` REST calls and the `wss`
//! socket of `@stream`; without it the same upstream is refused as unverifiable.

mod common;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::{Json, Router};
use common::Gateway;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// A private CA and a certificate for 127.0.0.1 that it signed.
struct Pki {
    ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    Pki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

/// Serves `app` over TLS on a loopback port; its `https://127.0.0.1:PORT` base URL.
async fn serve_tls(app: Router, pki: &Pki) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    use tower::Service;
                    app.clone().call(req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    format!("https://{addr}")
}

fn upstream_app() -> Router {
    Router::new()
        .route("/thing", get(|| async { Json(json!({"id": "tls"})) }))
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    // An event every 20 ms until the gateway goes away.
                    loop {
                        let msg = json!({"id": "event"}).to_string();
                        if socket.send(Message::Text(msg.into())).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            }),
        )
}

const SCHEMA: &str = r#"
extend schema @upstream(name: "secure", url: "{up}")
type Thing { id: ID! }
type Query { thing: Thing @rest(upstream: "secure", path: "/thing") }
type Subscription { events: Thing @stream(upstream: "secure", path: "/ws") }
"#;

#[tokio::test]
async fn a_private_ca_is_trusted_for_https_and_wss_upstreams() {
    let pki = pki();
    let up = serve_tls(upstream_app(), &pki).await;
    let dir = std::env::temp_dir().join(format!("livegate-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).expect("write ca");
    let roots =
        livegate::upstream::tls::ExtraRoots::from_pem_file(ca_file.to_str().expect("utf-8 path"))
            .expect("the CA file loads");
    let options = livegate::Options {
        upstream_ca: roots,
        ..Default::default()
    };
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up), options).await;

    // https
    assert_eq!(
        gw.query("{ thing { id } }").await,
        json!({"data": {"thing": {"id": "tls"}}})
    );

    // wss: the first event of an @stream subscription, over SSE.
    let mut sse = reqwest::Client::new()
        .post(gw.url())
        .header("accept", "text/event-stream")
        .json(&json!({"query": "subscription { events { id } }"}))
        .send()
        .await
        .expect("sse");
    let mut got = String::new();
    while !got.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("open");
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        got.starts_with("event: next\ndata: {\"data\":{\"events\":{\"id\":\"event\"}}}"),
        "{got}"
    );
}

#[tokio::test]
async fn without_the_ca_the_upstream_is_not_trusted() {
    let pki = pki();
    let up = serve_tls(upstream_app(), &pki).await;
    let gw = Gateway::start(&SCHEMA.replace("{up}", &up), Default::default()).await;
    let r = gw.query("{ thing { id } }").await;
    assert_eq!(r["data"]["thing"], serde_json::Value::Null, "{r}");
    assert_eq!(
        common::error_code(&r).as_deref(),
        Some("UPSTREAM_UNAVAILABLE"),
        "{r}"
    );
}

#[test]
fn a_file_without_certificates_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("livegate-ca-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("not-a-ca.pem");
    std::fs::write(&file, "hello").expect("write");
    let err = livegate::upstream::tls::ExtraRoots::from_pem_file(file.to_str().expect("path"))
        .expect_err("refused");
    assert!(err.contains("no PEM CERTIFICATE block"), "{err}");
    let missing = livegate::upstream::tls::ExtraRoots::from_pem_file("/nonexistent/ca.pem")
        .expect_err("refused");
    assert!(
        missing.starts_with("--upstream-ca-file /nonexistent/ca.pem:"),
        "{missing}"
    );
}
