//! The README's tour, run as pasted (only the port differs) against the demo: the
//! bundled demo upstreams and the gateway serving the top-level `schema.graphql`.

mod common;

use serde_json::Value;

/// The `curl` commands of the README's "A tour against the demo" section.
fn tour_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## A tour against the demo")
        .nth(1)
        .expect("tour section");
    let block = section
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("sh block");
    commands_of(block)
}

/// The commands of an `sh` block: comments and blank lines left out, `\` continuations
/// joined.
fn commands_of(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// The `sh` blocks that follow `marker` in the README, each as one script.
fn blocks_after(marker: &str, n: usize) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme.split(marker).nth(1).expect("marker in README");
    section
        .split("```sh")
        .skip(1)
        .take(n)
        .filter_map(|b| b.split("```").next())
        .map(str::to_string)
        .collect()
}

/// The demo as `cargo run --example demo` sets it up (upstreams, schema, webhook secret),
/// on ephemeral ports: returns the gateway's and the chat upstream's addresses.
async fn demo() -> (String, String) {
    let (gateway, upstreams) = demo_with_upstreams().await;
    let chat = upstreams
        .iter()
        .find(|(n, _)| *n == "chat")
        .map(|(_, a)| a.clone())
        .unwrap_or_default();
    (gateway, chat)
}

/// [`demo`], with every demo upstream's name and address.
async fn demo_with_upstreams() -> (String, Vec<(&'static str, String)>) {
    let mut env = Vec::new();
    let mut upstreams = Vec::new();
    for (name, app) in livegate::demo::apps() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        upstreams.push((name, addr.clone()));
        env.push((
            livegate::plan::upstream_env_var(name),
            format!("http://{addr}"),
        ));
        livegate::demo::spawn(listener, app);
    }
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema");
    env.push(("GITHUB_WEBHOOK_SECRET".into(), "demo-github-secret".into()));
    let plan = livegate::plan::load("schema.graphql", &source, env).expect("demo schema");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut options = livegate::Options::default();
    options.webhook.secret = Some("demo-secret".into());
    tokio::spawn(livegate::run(
        listener,
        plan,
        options,
        std::future::pending(),
    ));
    (addr.to_string(), upstreams)
}

/// A `curl -N` of the README, as pasted (ports aside), whose SSE `data:` lines (or
/// multipart parts) are read as they come.
struct Sse {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Sse {
    fn start(script: &str) -> Sse {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Sse {
            _child: child,
            lines,
        }
    }

    async fn next_event(&mut self) -> Value {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .expect("read")
                .expect("stream open");
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(data).expect("JSON event");
            }
            // A multipart part's body (a heartbeat `{}` has no payload).
            if line.starts_with("{\"payload\":") {
                let mut part = serde_json::from_str::<Value>(&line).expect("JSON part");
                return part["payload"].take();
            }
        }
    }
}

#[tokio::test]
async fn the_readme_live_data_example_works_against_the_demo() {
    let (addr, chat) = demo().await;
    let fix = |s: &str| {
        s.replace("127.0.0.1:4000", &addr)
            .replace("127.0.0.1:4001", &chat)
    };
    let blocks = blocks_after("Live data:", 4);
    assert_eq!(blocks.len(), 4);
    // Terminal 1: the live query.
    let mut live = Sse::start(&fix(&blocks[0]));
    let first = live.next_event().await;
    assert_eq!(
        first["data"]["messages"][0]["text"], "Welcome to livegate!",
        "{first}"
    );
    // Terminal 2: the event subscription. It has no first event to say it is listening,
    // so terminal 3 posts again until it hears one (a person is slower than this test).
    let mut events = Sse::start(&fix(&blocks[1]));
    let mut event = None;
    for _ in 0..10 {
        sh(&fix(&blocks[2])).await;
        if let Ok(e) =
            tokio::time::timeout(std::time::Duration::from_secs(1), events.next_event()).await
        {
            event = Some(e);
            break;
        }
    }
    let event = event.expect("the event subscriber heard a post");
    let update = live.next_event().await;
    let texts: Vec<&str> = update["data"]["messages"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts.last(), Some(&"posted upstream"), "{update}");
    assert_eq!(
        event["data"]["messageAdded"]["text"], "posted upstream",
        "{event}"
    );
    assert_eq!(
        event["data"]["messageAdded"]["author"]["name"], "Ada Lovelace",
        "{event}"
    );
    // The webhook.
    let stdout = sh(&fix(&blocks[3])).await;
    assert!(
        stdout.ends_with(r#"{"invalidated":1,"tags":["messages:general"]}"#),
        "{stdout}"
    );
}

#[tokio::test]
async fn the_readme_tour_works_against_the_demo() {
    let (addr, _) = demo().await;

    let commands = tour_commands();
    assert_eq!(commands.len(), 5, "{commands:#?}");
    let mut outputs = Vec::new();
    for cmd in &commands {
        let cmd = cmd.replace("127.0.0.1:4000", &addr.to_string());
        let stdout = sh(&cmd).await;
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {stdout}"));
        outputs.push(json);
    }
    for (cmd, out) in commands.iter().zip(&outputs).take(4) {
        assert!(out.get("errors").is_none(), "{cmd}: {out}");
    }
    assert_eq!(
        outputs[0]["data"]["messages"][0]["author"]["name"], "Ada Lovelace",
        "{}",
        outputs[0]
    );
    assert_eq!(outputs[1]["data"]["user"]["name"], "Grace Hopper");
    assert_eq!(outputs[2]["data"]["sendMessage"]["text"], "hello");
    let batched = outputs[3]["data"]["messages"].as_array().expect("messages");
    assert_eq!(
        batched.last().map(|m| m["text"].clone()),
        Some(Value::from("hello")),
        "the mutation invalidated the list"
    );
    assert_eq!(outputs[4]["data"]["user"], Value::Null);
    assert_eq!(
        outputs[4]["errors"][0]["extensions"]["code"],
        "UPSTREAM_HTTP_ERROR"
    );
    assert_eq!(outputs[4]["errors"][0]["path"], serde_json::json!(["user"]));
    assert_eq!(
        outputs[4]["data"]["users"].as_array().map(Vec::len),
        Some(3)
    );
}

/// Runs `script` with `sh` and returns its standard output.
async fn sh(script: &str) -> String {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_readme_rest_shapes_example_works_against_the_demo() {
    let (addr, upstreams) = demo_with_upstreams().await;
    let fix = |s: &str| {
        let mut s = s.replace("127.0.0.1:4000", &addr);
        for (name, port) in [("chat", 4001), ("users", 4002), ("activity", 4003)] {
            if let Some((_, a)) = upstreams.iter().find(|(n, _)| *n == name) {
                s = s.replace(&format!("127.0.0.1:{port}"), a);
            }
        }
        s
    };
    let blocks = blocks_after("REST APIs as they are:", 4);
    assert_eq!(blocks.len(), 4);
    let feed: Value = serde_json::from_str(&sh(&fix(&blocks[0])).await).expect("JSON");
    assert!(feed.get("errors").is_none(), "{feed}");
    assert_eq!(
        feed["data"]["feed"][1],
        serde_json::json!({"__typename": "IssueEvent", "number": 7,
            "title": "Subscriptions over HTTP multipart", "id": "e2",
            "actor": {"name": "Grace Hopper", "user": {"id": "2"}}}),
        "{feed}"
    );
    assert_eq!(feed["data"]["feed"][2]["branch"], "main", "{feed}");
    let mut live = Sse::start(&fix(&blocks[1]));
    let first = live.next_event().await;
    assert_eq!(first["data"]["feed"][0]["id"], "e3", "{first}");
    // The star through the gateway, then the event posted to the service directly.
    let mut commands = blocks[2]
        .split("\ncurl")
        .map(|c| c.trim().trim_start_matches("curl").to_string())
        .filter(|c| !c.is_empty());
    let star = commands.next().expect("the mutation");
    let direct = commands.next().expect("the direct post");
    let starred: Value =
        serde_json::from_str(&sh(&fix(&format!("curl {star}"))).await).expect("JSON");
    assert_eq!(starred["data"]["star"]["id"], "e4", "{starred}");
    let next = live.next_event().await;
    assert_eq!(
        next["data"]["feed"][0],
        serde_json::json!({"__typename": "StarEvent", "id": "e4", "actor": {"login": "ada"}}),
        "{next}"
    );
    sh(&fix(&format!("curl {direct}"))).await;
    let next = live.next_event().await;
    assert_eq!(
        next["data"]["feed"][0],
        serde_json::json!({"__typename": "PushEvent", "id": "e5", "actor": {"login": "grace"}}),
        "{next}"
    );
    // The next poll finds the feed unchanged: a 304, counted.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(fix(&blocks[3]))
            .output()
            .await
            .expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(r#"upstream="activity""#) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 304 counted: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_readme_persisted_queries_and_batch_examples_work_against_the_demo() {
    let (addr, _) = demo().await;
    let fix = |s: &str| s.replace("127.0.0.1:4000", &addr);
    let apq = blocks_after("**Automatic persisted queries**", 1);
    let out = sh(&fix(&apq[0])).await;
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&out)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(answers.len(), 3, "{out}");
    assert_eq!(
        answers[0]["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{out}"
    );
    assert_eq!(answers[0]["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(answers[1]["data"]["__typename"], "Query", "{out}");
    assert_eq!(answers[2]["data"]["__typename"], "Query", "{out}");

    let batch = blocks_after("**Batches**", 1);
    let out: Value = serde_json::from_str(&sh(&fix(&batch[0])).await).expect("JSON");
    assert_eq!(out[0]["data"]["__typename"], "Query", "{out}");
    assert_eq!(out[1]["data"]["user"]["name"], "Ada Lovelace", "{out}");
    assert_eq!(out.as_array().map(Vec::len), Some(2), "{out}");
}

#[tokio::test]
async fn the_readme_shop_example_works_against_the_demo() {
    let (addr, _) = demo_with_upstreams().await;
    let blocks = blocks_after("The demo's shop answers like", 1);
    let commands = commands_of(&blocks[0]);
    assert_eq!(commands.len(), 3, "{commands:#?}");
    let mut out = Vec::new();
    for cmd in &commands {
        let stdout = sh(&cmd.replace("127.0.0.1:4000", &addr)).await;
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {stdout}"));
        out.push(json);
    }
    assert!(out[0].get("errors").is_none(), "{}", out[0]);
    assert_eq!(
        out[0]["data"]["orders"],
        serde_json::json!({"items": [{"id": "3", "status": "IN_TRANSIT"}], "total": 1, "next": null}),
        "{}",
        out[0]
    );
    assert_eq!(out[0]["data"]["all"]["total"], 3, "{}", out[0]);
    assert_eq!(
        out[0]["data"]["all"]["next"], "/v1/orders?page=2",
        "{}",
        out[0]
    );
    assert_eq!(
        out[0]["data"]["all"]["items"],
        serde_json::json!([
            {"status": "PENDING", "shippingAddress": {"street": "1 Main St"}},
            {"status": "SHIPPED", "shippingAddress": {"street": "2 Elm St"}}
        ]),
        "{}",
        out[0]
    );
    assert_eq!(
        out[1]["data"]["createOrder"],
        serde_json::json!({"id": "101", "status": "SHIPPED", "shippingAddress": {"street": "3 Oak St"}}),
        "{}",
        out[1]
    );
    let e = &out[2]["errors"][0];
    assert_eq!(out[2]["data"]["createOrder"], Value::Null, "{}", out[2]);
    assert_eq!(e["message"], "quantity must be positive", "{}", out[2]);
    assert_eq!(e["extensions"]["code"], "validation_failed", "{}", out[2]);
    assert_eq!(e["extensions"]["status"], 422, "{}", out[2]);
    assert_eq!(
        e["extensions"]["details"],
        serde_json::json!([{"field": "quantity", "issue": "must be at least 1"}]),
        "{}",
        out[2]
    );
}

#[tokio::test]
async fn the_readme_per_caller_socket_example_works_against_the_demo() {
    let (addr, _) = demo_with_upstreams().await;
    let gw = common::Gateway::at(addr.parse().expect("addr"));
    let blocks = blocks_after("The shop's socket of order events is each user's own", 1);
    let commands = commands_of(&blocks[0]);
    assert_eq!(commands.len(), 2, "{commands:#?}");
    let fix = |s: &str, user: &str| {
        s.replace("127.0.0.1:4000", &addr)
            .replace("Bearer alice", &format!("Bearer {user}"))
    };
    let mut alice = Sse::start(&fix(&commands[0], "alice"));
    let mut bob = Sse::start(&fix(&commands[0], "bob"));
    // One socket each, open before anyone orders.
    gw.metrics_until(|p| common::sample(p, "livegate_upstream_sockets_open") >= 2.0)
        .await;
    let ordered: Value =
        serde_json::from_str(&sh(&fix(&commands[1], "alice")).await).expect("JSON");
    let id = ordered["data"]["createOrder"]["id"].clone();
    assert!(id.is_string(), "{ordered}");
    let heard = alice.next_event().await;
    assert_eq!(heard["data"]["orderCreated"]["id"], id, "{heard}");
    assert_eq!(heard["data"]["orderCreated"]["quantity"], 4, "{heard}");
    // Bob's socket hears only Bob's order (Alice's came first, had it reached him).
    let ordered: Value = serde_json::from_str(&sh(&fix(&commands[1], "bob")).await).expect("JSON");
    let his = ordered["data"]["createOrder"]["id"].clone();
    let heard = bob.next_event().await;
    assert_eq!(heard["data"]["orderCreated"]["id"], his, "{heard}");
    // A token the shop refuses ends the subscription with why.
    let out = sh(&fix(&commands[0], "mallory")).await;
    assert!(out.contains(r#""code":"UNAUTHENTICATED""#), "{out}");
    assert!(out.contains(r#""status":401"#), "{out}");
}

#[tokio::test]
async fn the_readme_openapi_example_works_against_the_demo() {
    let (_, upstreams) = demo_with_upstreams().await;
    let shop = upstreams
        .iter()
        .find(|(n, _)| *n == "shop")
        .map(|(_, a)| a.clone())
        .expect("the shop");
    let blocks = blocks_after("## Start from an OpenAPI document", 2);
    // The import, as pasted (the binary the tests built, the output in a temp folder).
    let import = blocks[0]
        .lines()
        .find(|l| l.contains("import openapi"))
        .expect("the import line");
    let out = std::env::temp_dir().join(format!("livegate-readme-{}.graphql", std::process::id()));
    let cmd = import
        .replace("target/release/livegate", env!("CARGO_BIN_EXE_livegate"))
        .replace("--out shop.graphql", &format!("--out {}", out.display()));
    let ran = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sh");
    assert!(
        ran.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stderr),
        "imported 2 operations, skipped 0\n"
    );
    let schema = std::fs::read_to_string(&out).expect("the schema");
    let _ = std::fs::remove_file(&out);
    // Served as the README's next line does (on a free port; the shop where this test's
    // demo put it, by the upstream's URL variable).
    let plan = livegate::plan::load(
        "shop.graphql",
        &schema,
        vec![(
            livegate::plan::upstream_env_var("shop"),
            format!("http://{shop}"),
        )],
    )
    .expect("check accepts the generated schema");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(livegate::run(
        listener,
        plan,
        livegate::Options::default(),
        std::future::pending(),
    ));
    let commands = commands_of(&blocks[1]);
    assert_eq!(commands.len(), 3, "{commands:#?}");
    let mut out = Vec::new();
    for cmd in &commands {
        let stdout = sh(&cmd.replace("127.0.0.1:4100", &addr)).await;
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {stdout}"));
        assert!(json.get("errors").is_none(), "{json}");
        out.push(json);
    }
    assert_eq!(
        out[0]["data"]["orders"],
        serde_json::json!({"data": [
            {"id": "1", "status": "PENDING", "shippingAddress": {"streetLine": "1 Main St"}},
            {"id": "2", "status": "SHIPPED", "shippingAddress": {"streetLine": "2 Elm St"}}],
            "xTotalCount": 3, "next": "/v1/orders?page=2"})
    );
    assert_eq!(
        out[1]["data"]["createOrder"],
        serde_json::json!({"id": "101", "status": "SHIPPED"})
    );
    assert_eq!(out[2]["data"]["orders"]["xTotalCount"], 4, "{}", out[2]);
}

#[tokio::test]
async fn the_readme_who_is_calling_example_works_against_the_demo() {
    let (_, upstreams) = demo_with_upstreams().await;
    let users = upstreams
        .iter()
        .find(|(n, _)| *n == "users")
        .map(|(_, a)| a.clone())
        .expect("the users service");
    let block = blocks_after("## Who is calling", 1).remove(0);
    // The gateway of the example on a free port, the binary the tests built, the
    // example's schema wherever the tests run from, pointed at the users service.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = format!(
        "export LIVEGATE_UPSTREAM_USERS_URL=http://{users}\n{}",
        block
            .replace("target/release/livegate", env!("CARGO_BIN_EXE_livegate"))
            .replace("127.0.0.1:4200", &format!("127.0.0.1:{port}"))
            .replace(
                "examples/who.graphql",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/who.graphql")
            )
    );
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), sh(&script))
        .await
        .expect("the example ends");
    // The answers, among the gateway's log lines (also on standard output).
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with('{') || l.trim() == "401")
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    let json = |l: &str| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    let own = json(lines[0]);
    assert_eq!(own["data"]["me"]["name"], "Grace Hopper", "{own}");
    assert_eq!(
        own["data"]["users"].as_array().map(Vec::len),
        Some(3),
        "{own}"
    );
    let anonymous = json(lines[1]);
    assert_eq!(
        anonymous["data"],
        serde_json::json!({"me": null, "users": null}),
        "{anonymous}"
    );
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    assert_eq!(
        anonymous["errors"][1]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    let unscoped = json(lines[2]);
    assert_eq!(
        unscoped["data"]["me"]["name"], "Linus Torvalds",
        "{unscoped}"
    );
    assert_eq!(unscoped["data"]["users"], Value::Null, "{unscoped}");
    assert_eq!(unscoped["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(lines[3], "401", "{out}");
}

#[tokio::test]
async fn the_readme_event_stream_and_webhook_examples_work_against_the_demo() {
    let (addr, _) = demo_with_upstreams().await;
    let gw = common::Gateway::at(addr.parse().expect("addr"));
    let blocks = blocks_after("The shop also announces every order", 2);
    let fix = |s: &str| s.replace("127.0.0.1:4000", &addr);
    // The shop's SSE stream: subscribe, then order.
    let commands = commands_of(&blocks[0]);
    assert_eq!(commands.len(), 2, "{commands:#?}");
    let mut orders = Sse::start(&fix(&commands[0]));
    gw.metrics_until(|p| common::sample(p, "livegate_sources_open{kind=\"sse\"}") >= 1.0)
        .await;
    let ordered: Value = serde_json::from_str(&sh(&fix(&commands[1])).await).expect("JSON");
    let id = ordered["data"]["createOrder"]["id"].clone();
    assert!(id.is_string(), "{ordered}");
    let heard = orders.next_event().await;
    assert_eq!(heard["data"]["orderPlaced"]["id"], id, "{heard}");
    assert_eq!(heard["data"]["orderPlaced"]["quantity"], 2, "{heard}");
    // GitHub's webhook: subscribe, then the signed delivery (a script as pasted).
    let (subscribe, deliver) = blocks[1]
        .split_once("# In another terminal")
        .expect("two parts");
    let subscribe = commands_of(subscribe);
    let mut pushes = Sse::start(&fix(&subscribe[0]));
    gw.metrics_until(|p| common::sample(p, "livegate_subscriptions{kind=\"stream\"}") >= 2.0)
        .await;
    let answer = sh(&fix(deliver)).await;
    assert!(answer.contains(r#""accepted":"github""#), "{answer}");
    let heard = pushes.next_event().await;
    assert_eq!(
        heard["data"]["pushed"],
        serde_json::json!({"id": "c0ffee", "message": "Fix the build"}),
        "{heard}"
    );
}
