//! The `livegate` binary as users run it: `check`, flags, env overrides.

use std::process::Command;

fn livegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_livegate"))
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("livegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write schema");
    path
}

#[test]
fn check_accepts_the_demo_schema() {
    let out = livegate()
        .args([
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"),
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn check_prints_every_error_and_fails() {
    let path = write(
        "bad.graphql",
        "extend schema @upstream(name: \"chat\", url: \"http://127.0.0.1:1\")\ntype Query {\n  a: String @rest(upstream: \"chatt\", path: \"/a\")\n  b: String\n}\n",
    );
    let out = livegate().arg("check").arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert_eq!(
        stderr,
        format!(
            "{p}:3:29: @rest(upstream: \"chatt\") names no @upstream; known: chat\n{p}:4:3: field `Query.b` has no resolver; add @rest(upstream: …, path: …)\n2 errors in {p}\n"
        )
    );
}

#[test]
fn serving_a_bad_schema_exits_before_listening() {
    let path = write("bad2.graphql", "type Query { a: String }\n");
    let out = livegate()
        .arg("--schema")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:14: field `Query.a` has no resolver"));
}

#[test]
fn a_malformed_cors_origin_exits_before_listening() {
    let out = livegate()
        .args([
            "--schema",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"),
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cors-origin",
            "https://ok.example,app.example.com",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cors-origin \"app.example.com\""), "{err}");
}

#[test]
fn upstream_urls_come_from_the_environment() {
    let path = write(
        "env.graphql",
        "extend schema @upstream(name: \"my-api\", url: \"not a url\")\ntype Query { a: String @rest(upstream: \"my-api\", path: \"/a\") }\n",
    );
    let out = livegate().arg("check").arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "the URL in the file is bad");
    let out = livegate()
        .arg("check")
        .arg(&path)
        .env("LIVEGATE_UPSTREAM_MY_API_URL", "http://127.0.0.1:9")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn flags_are_documented_in_help() {
    let out = livegate().arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--schema",
        "--listen",
        "--cache-size-mb",
        "--max-upstream-body",
        "--upstream-timeout-ms",
        "--max-request-body",
        "--batch-window-ms",
        "--max-depth",
        "--max-complexity",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("LIVEGATE_LISTEN"), "env names are shown");
}

/// The README's flag table and `--help` name the same flags.
#[test]
fn every_flag_is_in_the_readme_and_every_readme_flag_exists() {
    fn flag(word: &str) -> Option<String> {
        let rest = word.strip_prefix("--")?;
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        (!name.is_empty()).then(|| format!("--{name}"))
    }
    // The server's flags, `import openapi`'s and `token`'s, each in its own README table.
    let out = livegate().arg("--help").output().expect("runs");
    let import = livegate()
        .args(["import", "openapi", "--help"])
        .output()
        .expect("runs");
    let token = livegate().args(["token", "--help"]).output().expect("runs");
    let help = String::from_utf8_lossy(&out.stdout).into_owned()
        + &String::from_utf8_lossy(&import.stdout)
        + &String::from_utf8_lossy(&token.stdout);
    let mut in_help: Vec<String> = help
        .lines()
        .filter_map(|l| flag(l.trim_start()))
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut in_readme: Vec<String> = readme
        .lines()
        .filter_map(|l| flag(l.strip_prefix("| `")?))
        .collect();
    in_help.sort();
    in_help.dedup();
    in_readme.sort();
    in_readme.dedup();
    assert!(in_help.len() > 20, "flags found in --help: {in_help:?}");
    assert_eq!(in_help, in_readme, "--help vs the README's flag table");
}

#[test]
fn a_schema_split_over_files_is_one_schema_and_errors_name_their_file() {
    let dir = std::env::temp_dir().join(format!("livegate-cli-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let put = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let base = put(
        "a-base.graphql",
        "extend schema @upstream(name: \"shop\", url: \"http://127.0.0.1:1\")\ntype Query {\n  ping: String @rest(upstream: \"shop\", path: \"/ping\")\n}\n",
    );
    let orders = put(
        "b-orders.graphql",
        "type Order { id: ID! }\nextend type Query {\n  orders: [Order!]! @rest(upstream: \"shop\", path: \"/orders\")\n}\n",
    );
    // `livegate check` of these paths: its exit code and what it printed on stderr.
    let check = |paths: &[&std::path::Path]| {
        let out = livegate().arg("check").args(paths).output().expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Files, and a directory standing for its .graphql files.
    for paths in [vec![base.as_path(), orders.as_path()], vec![dir.as_path()]] {
        let (code, stderr) = check(&paths);
        assert_eq!(code, Some(0), "{stderr}");
    }
    // An error in the second file names it, with its own line.
    let broken = put(
        "c-broken.graphql",
        "type Customer { id: ID! }\nextend type Query {\n  customers: [Customer!]! @rest(upstream: \"shopp\", path: \"/c\")\n}\nextend type Nothing { a: String }\n",
    );
    let (code, stderr) = check(&[&base, &broken]);
    assert_eq!(code, Some(1));
    let b = broken.display();
    assert!(
        stderr.contains(&format!("{b}:3:")) && stderr.contains("names no @upstream"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{b}:5:13: `extend type Nothing` extends nothing: no type `Nothing` is declared"
        )),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn import_openapi_writes_a_schema_check_accepts() {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openapi/petstore-3.0.yaml"
    );
    let args = [
        "import",
        "openapi",
        spec,
        "--name",
        "pets",
        "--max-age",
        "30",
        "--poll-ms",
        "2000",
    ];
    // To stdout, the summary on stderr.
    let out = livegate().args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        schema.contains("@upstream(name: \"pets\", url: \"https://petstore3.swagger.io/api/v3\""),
        "{schema}"
    );
    assert!(schema.contains("@cache(maxAge: 30, "), "{schema}");
    assert!(schema.contains("@live(pollMs: 2000)"), "{schema}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "imported 19 operations, skipped 0\n"
    );
    // To a file, which `check` accepts; the same bytes as on stdout.
    let file = write("pets.graphql", "");
    let out = livegate()
        .args(args)
        .arg("--out")
        .arg(&file)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).expect("written"), schema);
    let check = livegate().arg("check").arg(&file).output().expect("runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A document that is not one: exit 1 and a clear error, nothing on stdout.
    let bad = write("bad.yaml", "title: not an api\n");
    let out = livegate()
        .args(["import", "openapi"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an OpenAPI document"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
