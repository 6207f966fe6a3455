//! Bad schemas and the exact errors they get, with line and column.

use super::load;

const HEAD: &str = r#"extend schema
  @upstream(name: "chat", url: "http://127.0.0.1:8080")
  @upstream(name: "users", url: "http://127.0.0.1:8081")
"#;

fn errors(body: &str) -> Vec<String> {
    match load(
        "schema.graphql",
        &format!("{HEAD}{body}"),
        Vec::<(String, String)>::new(),
    ) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_good_schema_plans() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql");
    let plan = load("schema.graphql", &source, Vec::<(String, String)>::new())
        .expect("the demo schema is valid");
    assert_eq!(plan.query, "Query");
    assert_eq!(plan.mutation.as_deref(), Some("Mutation"));
    assert!(plan
        .object_fields("Message")
        .is_some_and(|f| f.iter().any(|f| f.name == "author" && f.rest.is_some())));
}

#[test]
fn bad_schemas_get_exact_errors() {
    let table: &[(&str, &[&str])] = &[
        (
            "type Query { m: [String] @rest(upstream: \"chatt\", path: \"/m\") }",
            &[r#"schema.graphql:4:42: @rest(upstream: "chatt") names no @upstream; known: chat, users"#],
        ),
        (
            "type Query { m(channel: String!): [String] @rest(upstream: \"chat\", path: \"/m/{args.chanel}\") }",
            &[r#"schema.graphql:4:74: template "/m/{args.chanel}": `{args.chanel}` names no argument of `Query.m`; known: channel"#],
        ),
        (
            "type Query { m: [String] }",
            &["schema.graphql:4:14: field `Query.m` has no resolver; add @rest(upstream: …, path: …)"],
        ),
        (
            "type Query { m: [String] @rest(upstream: \"chat\", path: \"/m\", verb: GET) }",
            &["schema.graphql:4:62: @rest has no argument `verb`; known: upstream, method, path, query, body, headers, batchKey, select, errors, join, idempotent"],
        ),
        (
            "type Query { m: [String] @rest(upstream: \"chat\", path: 42) }",
            &["schema.graphql:4:56: @rest(path:) expects a string, got the number 42"],
        ),
        (
            "type Query { m: [String] @rest(upstream: \"chat\", path: \"/m\", method: FETCH) }",
            &["schema.graphql:4:70: @rest(method:) expects one of GET, POST, PUT, PATCH, DELETE, got FETCH"],
        ),
        (
            "type Query { m: [String] @rest(upstream: \"chat\") }",
            &["schema.graphql:4:26: @rest needs argument `path` (a string)"],
        ),
        (
            "type Query { m: [String] @rset(upstream: \"chat\", path: \"/m\") }",
            &["schema.graphql:4:26: unknown directive @rset on a field; known: @rest, @cache, @invalidates, @updates, @live, @stream, @map, @deprecated, @authenticated, @requiresScopes"],
        ),
        (
            "type Query { m: [Strin] @rest(upstream: \"chat\", path: \"/m\") }",
            &["schema.graphql:4:17: unknown type `Strin`"],
        ),
        (
            "type M { id: ID! a: String @rest(upstream: \"users\", path: \"/u/{parent.userId}\") }\ntype Query { m: M @rest(upstream: \"chat\", path: \"/m\") }",
            &[r#"schema.graphql:4:59: template "/u/{parent.userId}": `{parent.userId}` names no field `userId` of `M`; known: id, a"#],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m/{parent.id}\") }",
            &[r#"schema.graphql:4:54: template "/m/{parent.id}": `Query` has no parent: {parent.…} is for fields of object types"#],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") @cache(maxAge: -1) }",
            &["schema.graphql:4:75: @cache(maxAge:) expects a non-negative integer, got the number -1"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m/{args.x\") }",
            &[r#"schema.graphql:4:54: unclosed `{` in template "/m/{args.x""#],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"m\") }",
            &[r#"schema.graphql:4:54: @rest(path: "m") must start with `/`"#],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") @invalidates(tags: [\"x\"]) }",
            &["schema.graphql:4:60: @invalidates is for mutation fields; `Query.m` is not one"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\", body: \"{args}\") }",
            &["schema.graphql:4:24: @rest: a GET request has no body; set method: POST (or PUT, PATCH)"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") @cache(maxAge: 1) @cache(maxAge: 2) }",
            &["schema.graphql:4:78: @cache is given twice on field `m`"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") }\ntype Subscription { s: String }",
            &["schema.graphql:5:21: Subscription field `Subscription.s` needs @live (a live query of `Query.s`) or @stream (upstream socket events)"],
        ),
        (
            "type Query { m(a: Int): String @rest(upstream: \"chat\", path: \"/m\") @cache(maxAge: 1) }\ntype Subscription { m(a: String): String @live }",
            &["schema.graphql:5:42: @live on `Subscription.m` must have the signature of `Query.m`: (a: Int): String"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") }\ntype Subscription { m: String @live(pollMs: 50) }",
            &["schema.graphql:5:31: @live on `Subscription.m` needs @rest and @cache on `Query.m`: its cache entry is what subscribers share"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") @cache(maxAge: 1) }\ntype Subscription { m: String @live(pollMs: 5) }",
            &["schema.graphql:5:45: @live(pollMs:) must be at least 10"],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") @cache(maxAge: 1) @updates(upstream: \"chat\", path: \"/ws\", apply: APPEND) }",
            &["schema.graphql:4:125: @updates(apply: APPEND) on `Query.m`: needs a list field, and String is not one"],
        ),
        (
            "type T { id: ID! }\ntype Query { m: [T] @rest(upstream: \"chat\", path: \"/m\") @updates(upstream: \"chat\", path: \"/ws/{args.x}\", apply: UPSERT) }",
            &[
                "schema.graphql:5:57: @updates on `Query.m` needs @rest and @cache on it: the stream patches its cache entry",
                "schema.graphql:5:90: @updates(path: \"/ws/{args.x}\") must be a constant path starting with `/`: one socket serves every subscriber",
                "schema.graphql:5:113: @updates(apply: UPSERT) on `Query.m`: needs a list field and `key` (the item field to match)",
            ],
        ),
        (
            "type Query { m: String @rest(upstream: \"chat\", path: \"/m\") }\ntype Subscription { e(c: String): [String] @stream(upstream: \"chat\", path: \"/ws\", when: {c: \"{args.d}\"}) }",
            &[
                "schema.graphql:5:35: a @stream field's events are single messages; its type cannot be a list",
                "schema.graphql:5:89: template \"{args.d}\": `{args.d}` names no argument of `Subscription.e`; known: c",
            ],
        ),
        ("type Query { m: String", &["schema.graphql:4:23: syntax error: expected field_definition or const_directive"]),
    ];
    let mut wrong = Vec::new();
    for (body, want) in table {
        let got = errors(body);
        if got != *want {
            wrong.push(format!("{body}\n  got:  {got:?}\n  want: {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_error_is_reported_at_once() {
    let got = errors(
        "type Query {\n  a: String @rest(upstream: \"nope\", path: \"/a\")\n  b: String\n  c(x: Int): String @rest(upstream: \"chat\", path: \"/c/{args.y}\")\n}",
    );
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[0].starts_with("schema.graphql:5:29: @rest(upstream: \"nope\")"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("schema.graphql:6:3: field `Query.b` has no resolver"),
        "{got:#?}"
    );
    assert!(
        got[2].starts_with("schema.graphql:7:51: template \"/c/{args.y}\""),
        "{got:#?}"
    );
}

#[test]
fn upstream_urls_are_checked_and_overridable() {
    let bad = "extend schema @upstream(name: \"api\", url: \"not a url\")\ntype Query { a: String @rest(upstream: \"api\", path: \"/a\") }";
    let got: Vec<String> = load("s.graphql", bad, Vec::<(String, String)>::new())
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            r#"s.graphql:1:43: @upstream(url: "not a url") is not a valid URL: relative URL without a base"#
        ]
    );
    let env = vec![(
        "LIVEGATE_UPSTREAM_API_URL".to_string(),
        "http://10.1.2.3:9/base".to_string(),
    )];
    let plan = load("s.graphql", bad, env).expect("the override replaces the bad URL");
    assert_eq!(plan.upstreams["api"].url.as_str(), "http://10.1.2.3:9/base");
}

#[test]
fn batching_is_checked_for_sense() {
    let got = errors(
        "type U { id: ID! }\ntype M { uid: ID! u: U @rest(upstream: \"users\", path: \"/u/{parent.uid}\", batchKey: \"id\") }\ntype Query { m: M @rest(upstream: \"chat\", path: \"/m\") }",
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("needs exactly one query parameter that is a lone {parent.…} variable"),
        "{got:#?}"
    );
}

/// Each mistake in interfaces, unions and `@discriminate`, with its exact message.
#[test]
fn interface_and_union_mistakes_get_exact_errors() {
    const Q: &str = "\ntype Query { x: U @rest(upstream: \"chat\", path: \"/x\") }";
    const A: &str = "type A { id: ID! }\ntype B { id: ID! }";
    let table: &[(String, &[&str])] = &[
        (
            format!("union U = A | B\n{A}{Q}"),
            &["schema.graphql:4:7: union `U` needs @discriminate(field: …): the member of its upstream objects that names their type, like @discriminate(field: \"type\")"],
        ),
        (
            format!("union U @discriminate(field: \"t\", map: {{a: \"A\", c: \"C\"}}) = A | B\n{A}{Q}"),
            &[
                "schema.graphql:4:9: @discriminate(map:) on `U` gives no value for `B`; every possible type needs one",
                "schema.graphql:4:40: @discriminate(map:) on `U`: `C` is not a member of `U`; members: A, B",
            ],
        ),
        (
            format!("union U @discriminate(field: \"t\") = A | Nope | Int | A\n{A}{Q}"),
            &[
                "schema.graphql:4:41: union `U`: unknown type `Nope`",
                "schema.graphql:4:48: union `U`: `Int` is not an object type; a union's members are object types",
                "schema.graphql:4:54: union `U` lists `A` twice",
            ],
        ),
        (
            format!("union U @discriminate(field: \"a..b\", map: 3) = A | B\n{A}{Q}"),
            &[
                "schema.graphql:4:30: @discriminate(field: \"a..b\") must be a member name or a dotted path like \"meta.kind\"",
                "schema.graphql:4:43: @discriminate(map:) expects an object of type names like {push: \"PushEvent\"}, or a list like [{value: \"push-event\", type: \"PushEvent\"}], got the number 3",
            ],
        ),
        (
            format!("interface U @discriminate(field: \"t\") {{ id: ID! n(first: Int): [String!] }}\ntype A implements U {{ id: String n(first: String, after: Int!): [String] }}\ntype B implements U & U {{ x: Int }}{Q}"),
            &[
                "schema.graphql:5:27: `A.id` is `String`, but `U.id` is `ID!`; an implementation's field has the interface's type or a more specific one",
                "schema.graphql:5:43: argument `first` of `A.n` is `String`, but `U.n` declares `Int`",
                "schema.graphql:5:58: argument `after: Int!` of `A.n` is required, but `U.n` does not declare it; make it optional",
                "schema.graphql:5:65: `A.n` is `[String]`, but `U.n` is `[String!]`; an implementation's field has the interface's type or a more specific one",
                "schema.graphql:6:19: `B` implements `U` but has no field `id: ID!`",
                "schema.graphql:6:19: `B` implements `U` but has no field `n: [String!]`",
                "schema.graphql:6:23: `B` implements `U` twice",
            ],
        ),
        (
            format!("interface U @discriminate(field: \"t\") {{ id: ID! @rest(upstream: \"chat\", path: \"/i\") name: String @map(from: \"n\") }}{Q}"),
            &[
                "schema.graphql:4:11: interface `U` has no object type that implements it, so no value can have it",
                "schema.graphql:4:49: @rest on interface field `U.id` is not read: each implementing type's field says where its value comes from",
                "schema.graphql:4:109: @map on interface field `U.name` is not read: each implementing type's field says where its value comes from",
            ],
        ),
        (
            format!("type A implements String & Nope & Query {{ id: ID! }}\nunion U @discriminate(field: \"a..b\") = A{Q}"),
            &[
                "schema.graphql:4:19: `A` implements `String`, which is not an interface",
                "schema.graphql:4:28: `A` implements `Nope`, an unknown type",
                "schema.graphql:4:35: `A` implements `Query`, which is not an interface",
                "schema.graphql:5:30: @discriminate(field: \"a..b\") must be a member name or a dotted path like \"meta.kind\"",
            ],
        ),
        (
            format!("type T @discriminate(field: \"t\") {{ a: Int }}\nunion U @discriminate(field: \"t\") @cache(maxAge: 1) = T{Q}"),
            &[
                "schema.graphql:4:8: @discriminate is for interface and union types; `T` is neither",
                "schema.graphql:5:35: directive @cache is not allowed on a union; known: @discriminate (@authenticated and @requiresScopes go on its member types)",
            ],
        ),
        (
            format!("union U @discriminate(field: \"t\") = A | B\n{A}\ntype Query {{ x(u: U): String @rest(upstream: \"chat\", path: \"/x\") }}"),
            &["schema.graphql:7:19: `U` is an interface or union type and cannot be an argument's type"],
        ),
        (
            "union U @discriminate(field: \"t\") = A | B\ntype A { id: ID! @map(from: \"a_id\") }\ntype B { id: ID! }\ntype Query { x: [U] @rest(upstream: \"chat\", path: \"/x\") @cache(maxAge: 1) @updates(upstream: \"chat\", path: \"/ws\", apply: UPSERT, key: \"id\") }".to_string(),
            &["schema.graphql:7:135: @updates(key: \"id\"): the types of `U` read `id` from different members (\"a_id\", \"id\")"],
        ),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter(|(body, want)| errors(body) != *want)
        .map(|(body, _)| format!("{body}\n=> {:#?}", errors(body)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
