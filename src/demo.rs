//! The bundled demo upstreams behind `cargo run --example demo`: a chat service (messages
//! by channel, `POST` to send, and a WebSocket `/ws` that announces each new message), a
//! users service (`/users/{id}` and the batch endpoint `/users?id=1&id=2`), and an
//! activity service shaped like the public event APIs (GitHub's, say): a wrapped list,
//! `snake_case` members, nested objects, a `type` per event, an `ETag` that answers `304`,
//! and a WebSocket `/ws` that announces each new event; and a shop service shaped like
//! the APIs teams front with a gateway: `{"data": [...]}` pages with `X-Total-Count` and a
//! `Link: rel="next"`, lowercase status strings, `snake_case` input, and a `422` whose body
//! says what was wrong. Plain REST with in-memory data, so the demo needs nothing else on
//! the machine.

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[derive(Clone)]
struct Chat {
    channels: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    next_id: Arc<Mutex<u64>>,
    events: broadcast::Sender<Value>,
}

const USERS: [(&str, &str); 3] = [
    ("1", "Ada Lovelace"),
    ("2", "Grace Hopper"),
    ("3", "Linus Torvalds"),
];

fn user_name(id: &str) -> &'static str {
    USERS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, n)| *n)
        .unwrap_or("someone")
}

impl Chat {
    fn new() -> Self {
        let mut channels = BTreeMap::new();
        let seed = [
            ("general", "1", "Welcome to livegate!"),
            (
                "general",
                "2",
                "Every client gets live data from one upstream fetch.",
            ),
            ("general", "3", "Talk is cheap. Show me the code."),
            (
                "random",
                "2",
                "It's easier to ask forgiveness than it is to get permission.",
            ),
        ];
        let mut id = 0;
        for (channel, user, text) in seed {
            id += 1;
            channels
                .entry(channel.to_string())
                .or_insert_with(Vec::new)
                .push(json!({
                    "id": id.to_string(), "channel": channel, "userId": user,
                    "userName": user_name(user), "text": text,
                }));
        }
        let (events, _) = broadcast::channel(256);
        Chat {
            channels: Arc::new(Mutex::new(channels)),
            next_id: Arc::new(Mutex::new(id)),
            events,
        }
    }
}

async fn list_messages(State(chat): State<Chat>, Path(channel): Path<String>) -> Json<Value> {
    let channels = chat.channels.lock().unwrap_or_else(|p| p.into_inner());
    Json(Value::Array(
        channels.get(&channel).cloned().unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewMessage {
    text: String,
    #[serde(default)]
    user_id: Option<String>,
}

async fn post_message(
    State(chat): State<Chat>,
    Path(channel): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let new: NewMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    };
    let id = {
        let mut next = chat.next_id.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        *next
    };
    let user = new.user_id.unwrap_or_else(|| "1".into());
    let message = json!({
        "id": id.to_string(), "channel": channel, "userId": user,
        "userName": user_name(&user), "text": new.text,
    });
    chat.channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(channel)
        .or_default()
        .push(message.clone());
    let _ = chat.events.send(message.clone());
    (StatusCode::CREATED, Json(message)).into_response()
}

async fn ws(State(chat): State<Chat>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| announce(socket, chat.events.subscribe()))
}

/// Sends every new message to the socket as one JSON text frame.
async fn announce(mut socket: WebSocket, mut events: broadcast::Receiver<Value>) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(m) => {
                    if socket.send(WsMessage::Text(m.to_string().into())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The chat service's routes.
pub fn chat_app() -> Router {
    Router::new()
        .route("/messages/{channel}", get(list_messages).post(post_message))
        .route("/ws", get(ws))
        .with_state(Chat::new())
}

fn user_json(id: &str) -> Option<Value> {
    USERS
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(i, n)| json!({"id": i, "name": n}))
}

async fn get_user(Path(id): Path<String>) -> Response {
    match user_json(&id) {
        Some(u) => Json(u).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such user"})),
        )
            .into_response(),
    }
}

/// `GET /users?id=1&id=2`: the batch endpoint; `GET /users` lists everyone.
async fn list_users(Query(params): Query<Vec<(String, String)>>) -> Json<Value> {
    let ids: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.as_str())
        .collect();
    let users = if ids.is_empty() {
        USERS.iter().filter_map(|(i, _)| user_json(i)).collect()
    } else {
        ids.iter().filter_map(|i| user_json(i)).collect()
    };
    Json(Value::Array(users))
}

/// The users service's routes.
pub fn users_app() -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
}

#[derive(Clone)]
struct Activity {
    /// Newest first.
    events: Arc<Mutex<Vec<Value>>>,
    announce: broadcast::Sender<Value>,
}

fn actor(login: &str) -> Value {
    let (id, name) = USERS
        .iter()
        .find(|(_, n)| {
            n.split(' ')
                .next()
                .is_some_and(|f| f.eq_ignore_ascii_case(login))
        })
        .map(|(i, n)| (*i, *n))
        .unwrap_or(("0", "someone"));
    json!({"login": login, "display_name": name, "user_id": id})
}

fn event(id: usize, kind: &str, login: &str, repo: &str, payload: Value) -> Value {
    json!({
        "id": format!("e{id}"), "type": kind,
        "created_at": format!("2026-11-25T09:{:02}:00Z", id % 60),
        "actor": actor(login), "repo": {"full_name": repo}, "payload": payload,
    })
}

impl Activity {
    fn new() -> Self {
        let seed = vec![
            event(3, "star", "linus", "livegate/livegate", json!({})),
            event(
                2,
                "issue",
                "grace",
                "livegate/livegate",
                json!({"action": "opened", "issue": {"number": 7, "title": "Subscriptions over HTTP multipart"}}),
            ),
            event(
                1,
                "push",
                "ada",
                "livegate/livegate",
                json!({"ref": "main", "size": 2, "commits": [{"message": "Interfaces and unions"}]}),
            ),
        ];
        let (announce, _) = broadcast::channel(256);
        Activity {
            events: Arc::new(Mutex::new(seed)),
            announce,
        }
    }

    /// The feed's validator: it changes with every new event.
    fn etag(events: &[Value]) -> String {
        format!("\"feed-{}\"", events.len())
    }
}

/// `GET /events`: `{"data": [...], "meta": {...}}`, newest first, with an `ETag`; a
/// request whose `If-None-Match` still matches gets `304 Not Modified` and no body.
async fn list_events(State(act): State<Activity>, headers: axum::http::HeaderMap) -> Response {
    let events = act.events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let etag = Activity::etag(&events);
    let fresh = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let cache = [
        (axum::http::header::ETAG, etag),
        (axum::http::header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    let count = events.len();
    (
        cache,
        Json(json!({"data": events, "meta": {"count": count, "next_cursor": null}})),
    )
        .into_response()
}

async fn get_event(State(act): State<Activity>, Path(id): Path<String>) -> Response {
    let events = act.events.lock().unwrap_or_else(|p| p.into_inner());
    match events.iter().find(|e| e["id"] == id.as_str()) {
        Some(e) => Json(json!({"data": e})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": "no such event"}})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct NewEvent {
    #[serde(rename = "type")]
    kind: String,
    repo: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    payload: Option<Value>,
}

/// `POST /events` `{"type": "star", "repo": "…", "actor": "ada"}`: records an event,
/// announces it on `/ws`, answers `{"data": event}`.
async fn post_event(State(act): State<Activity>, body: axum::body::Bytes) -> Response {
    let new: NewEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"code": "bad_request", "message": e.to_string()}})),
            )
                .into_response()
        }
    };
    if !["push", "issue", "star"].contains(&new.kind.as_str()) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": {"code": "bad_type", "message": "type is push, issue or star"}})),
        )
            .into_response();
    }
    let created = {
        let mut events = act.events.lock().unwrap_or_else(|p| p.into_inner());
        let e = event(
            events.len() + 1,
            &new.kind,
            new.actor.as_deref().unwrap_or("ada"),
            &new.repo,
            new.payload.unwrap_or_else(|| json!({})),
        );
        events.insert(0, e.clone());
        e
    };
    let _ = act.announce.send(created.clone());
    (StatusCode::CREATED, Json(json!({"data": created}))).into_response()
}

async fn activity_ws(State(act): State<Activity>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| announce(socket, act.announce.subscribe()))
}

/// The activity service's routes.
pub fn activity_app() -> Router {
    Router::new()
        .route("/events", get(list_events).post(post_event))
        .route("/events/{id}", get(get_event))
        .route("/ws", get(activity_ws))
        .with_state(Activity::new())
}

/// The shop's orders; new ones are kept up to [`MAX_ORDERS`] (the oldest created go).
/// Each order created with a known token is announced on that user's socket.
#[derive(Clone)]
struct Shop {
    created: Arc<Mutex<Vec<Value>>>,
    /// `{"owner", "event", "data"}` for every order created by a known user.
    events: broadcast::Sender<Value>,
}

impl Default for Shop {
    fn default() -> Self {
        Shop {
            created: Arc::default(),
            events: broadcast::channel(64).0,
        }
    }
}

/// The shop's users: `Authorization: Bearer alice` or `Bearer bob`.
fn shop_user(headers: &axum::http::HeaderMap) -> Option<&'static str> {
    match headers.get("authorization")?.to_str().ok()? {
        "Bearer alice" => Some("alice"),
        "Bearer bob" => Some("bob"),
        _ => None,
    }
}

/// `GET /v1/orders/ws`: a user's own socket (`401` without a known token), announcing
/// `{"event": "order.created", "data": order}` for each order that user creates.
async fn orders_ws(
    State(shop): State<Shop>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(user) = shop_user(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut events = shop.events.subscribe();
    upgrade.on_upgrade(move |mut socket| async move {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) if e["owner"] == user => {
                        let m = json!({"event": e["event"], "data": e["data"]});
                        if socket.send(WsMessage::Text(m.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    })
}

const MAX_ORDERS: usize = 100;
const PAGE: usize = 2;

impl Shop {
    fn orders(&self) -> Vec<Value> {
        let mut all = vec![
            json!({"id": 1, "status": "pending", "quantity": 2, "shipping_address": {"street_line": "1 Main St"}}),
            json!({"id": 2, "status": "shipped", "quantity": 1, "shipping_address": {"street_line": "2 Elm St"}}),
            json!({"id": 3, "status": "in_transit", "quantity": 5, "shipping_address": null}),
        ];
        all.extend(
            self.created
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        all
    }
}

/// `GET /v1/orders?status=&page=`: a page of two, in `{"data": [...]}`, with the total
/// in `X-Total-Count` and the next page in `Link`.
async fn list_orders(
    State(shop): State<Shop>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let orders: Vec<Value> = shop
        .orders()
        .into_iter()
        .filter(|o| q.get("status").is_none_or(|s| o["status"] == s.as_str()))
        .collect();
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let items: Vec<Value> = orders
        .iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .cloned()
        .collect();
    let mut res = Json(json!({ "data": items })).into_response();
    let h = res.headers_mut();
    if let Ok(total) = orders.len().to_string().parse() {
        h.insert("x-total-count", total);
    }
    if page * PAGE < orders.len() {
        if let Ok(link) = format!("</v1/orders?page={}>; rel=\"next\"", page + 1).parse() {
            h.insert("link", link);
        }
    }
    res
}

/// `POST /v1/orders` with `{"quantity", "status"?, "shipping_address"?}`: `201` and the
/// order, or `422` with `{"error": {"code", "message", "details"}}`.
async fn create_order(
    State(shop): State<Shop>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let quantity = body["quantity"].as_i64().unwrap_or(0);
    if quantity <= 0 {
        let error = json!({"error": {
            "code": "validation_failed",
            "message": "quantity must be positive",
            "details": [{"field": "quantity", "issue": "must be at least 1"}]
        }});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error)).into_response();
    }
    let mut created = shop.created.lock().unwrap_or_else(|p| p.into_inner());
    if created.len() >= MAX_ORDERS {
        created.remove(0);
    }
    let id = created.last().and_then(|o| o["id"].as_u64()).unwrap_or(100) + 1;
    let order = json!({
        "id": id,
        "status": body.get("status").cloned().unwrap_or(json!("pending")),
        "quantity": quantity,
        "shipping_address": body.get("shipping_address").cloned().unwrap_or(Value::Null),
    });
    created.push(order.clone());
    let owner = shop_user(&headers).map_or(Value::Null, |u| json!(u));
    let _ = shop
        .events
        .send(json!({"owner": owner, "event": "order.created", "data": order}));
    (StatusCode::CREATED, Json(order)).into_response()
}

/// `GET /v1/orders/stream`: every order created, by anyone, as Server-Sent Events
/// (`event: order.created`, `id:` the order's id, `data:` the order).
async fn orders_stream(State(shop): State<Shop>) -> Response {
    let events = shop.events.subscribe();
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        loop {
            match events.recv().await {
                Ok(e) => {
                    let frame = format!(
                        "event: {}\nid: {}\ndata: {}\n\n",
                        e["event"].as_str().unwrap_or("message"),
                        e["data"]["id"],
                        e["data"]
                    );
                    return Some((Ok::<_, std::convert::Infallible>(frame), events));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut res = Response::new(axum::body::Body::from_stream(stream));
    res.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    res
}

pub fn shop_app() -> Router {
    Router::new()
        .route("/v1/orders", get(list_orders).post(create_order))
        .route("/v1/orders/ws", get(orders_ws))
        .route("/v1/orders/stream", get(orders_stream))
        .with_state(Shop::default())
}

/// Every demo upstream by the name `schema.graphql` gives it.
pub fn apps() -> Vec<(&'static str, Router)> {
    vec![
        ("chat", chat_app()),
        ("users", users_app()),
        ("activity", activity_app()),
        ("shop", shop_app()),
    ]
}

/// Serves `app` on `listener` in the background.
pub fn spawn(listener: TcpListener, app: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo upstream stopped");
        }
    })
}
