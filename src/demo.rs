//! The bundled demo upstreams behind `cargo run --example demo`: a chat service (messages
//! by channel, `POST` to send, and a WebSocket `/ws` that announces each new message) and
//! a users service (`/users/{id}` and the batch endpoint `/users?id=1&id=2`). Plain REST
//! with in-memory data, so the demo needs nothing else on the machine.

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

/// Serves `app` on `listener` in the background.
pub fn spawn(listener: TcpListener, app: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo upstream stopped");
        }
    })
}
