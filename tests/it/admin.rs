//! The admin listener as an operator's tools see it: the bearer token, the
//! routes and their error answers, forwarder pause/resume and metrics.

use crate::support;

use serde_json::Value;
use support::nats::NatsServer;
use support::{node_config, parse_config, TempDir};

const TOKEN_ENV: &str = "JETEDGE_TEST_ADMIN_TOKEN";

async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_checks_its_token_and_answers_every_route() {
    std::env::set_var(TOKEN_ENV, "s3cret-token");
    let nats = NatsServer::start();
    let dir = TempDir::new("admin");
    let text = node_config(dir.path(), &[nats.url()]).replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"env:{TOKEN_ENV}\""),
    );
    let node = jetedge::Node::start(parse_config(&text)).await.unwrap();
    let addr = node.admin_addr.expect("an admin listener");
    let t = Some("s3cret-token");

    for token in [None, Some("wrong"), Some("s3cret-token-and-more")] {
        let (status, body) = call(addr, "GET", "/admin/status", token).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (401, "unauthorized"),
            "{token:?}"
        );
    }
    let (status, body) = call(addr, "GET", "/admin/status", t).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node"], "test-node");
    assert_eq!(v["dlq"], 0);
    assert_eq!(v["forwarding"], "running");

    let (status, body) = call(addr, "POST", "/admin/forwarder/pause", t).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(addr, "GET", "/admin/status", t).await;
    assert!(body.contains("\"forwarding\":\"paused\""), "{body}");
    call(addr, "POST", "/admin/forwarder/resume", t).await;

    let (status, body) = call(addr, "GET", "/metrics", t).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("jetedge_dlq_entries 0") && body.contains("jetedge_events_accepted_total"),
        "{body}"
    );
    // The status page holds no data: its script reads the API (the
    // browser test, status_page.rs, looks at what it renders).
    let (status, body) = call(addr, "GET", "/", t).await;
    assert!(
        status == 200 && body.contains("fetch(path") && body.contains("/admin/status"),
        "{body}"
    );

    for (method, path, want_status, want_code) in [
        ("GET", "/admin/dlq/abc", 400, "bad_request"),
        ("GET", "/admin/dlq?limit=x", 400, "bad_request"),
        ("GET", "/admin/dlq/42", 404, "not_found"),
        ("DELETE", "/admin/dlq/42", 404, "not_found"),
        ("POST", "/admin/dlq/42/replay", 404, "not_found"),
        ("PUT", "/admin/status", 405, "method_not_allowed"),
        ("POST", "/metrics", 405, "method_not_allowed"),
        ("GET", "/admin/nothing", 404, "not_found"),
    ] {
        let (status, body) = call(addr, method, path, t).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (want_status, want_code),
            "{method} {path}: {body}"
        );
    }
    let (status, body) = call(addr, "GET", "/admin/dlq", t).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["entries"],
        serde_json::json!([])
    );
    let (status, body) = call(addr, "DELETE", "/admin/dlq", t).await;
    assert!(status == 200 && body.contains("\"purged\":0"), "{body}");
    node.shutdown().await;
}

#[tokio::test]
async fn pages_elsewhere_can_neither_write_nor_rebind_their_way_in() {
    let dir = TempDir::new("admin-origin");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let node = jetedge::Node::start(parse_config(&node_config(dir.path(), &[offline])))
        .await
        .unwrap();
    let addr = node.admin_addr.unwrap();
    let host = addr.to_string();
    // A "simple" cross-site POST from a page in the kiosk's browser.
    let (status, body) = support::http::call(
        addr,
        "POST",
        "/admin/forwarder/pause",
        &[("origin", "http://evil.example"), ("host", &host)],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("cross_origin")),
        "{body}"
    );
    // DNS rebinding: a hostile name that resolves to the node.
    let (status, body) =
        support::http::call(addr, "GET", "/admin/dlq", &[("host", "evil.example:9090")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("host_not_allowed")),
        "{body}"
    );
    // The operator's own tools and pages still work.
    let own = format!("http://{host}");
    let bearer = format!("Bearer {}", node.admin_token);
    let (status, body) = support::http::call(
        addr,
        "POST",
        "/admin/forwarder/pause",
        &[
            ("origin", &own),
            ("host", &host),
            ("authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = support::http::call(
        addr,
        "GET",
        "/admin/status",
        &[("host", "localhost:9090"), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_token_configured_the_node_makes_one_only_its_user_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("admin-token-file");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let text = node_config(dir.path(), &[offline]);
    let node = jetedge::Node::start(parse_config(&text)).await.unwrap();
    let addr = node.admin_addr.unwrap();
    let file = dir.path().join("admin.token");
    let on_disk = std::fs::read_to_string(&file).expect("the node wrote its token");
    assert_eq!(on_disk, node.admin_token);
    assert_eq!(on_disk.len(), 64, "32 random bytes, hex");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");

    // Another process on the box cannot act on the node without it...
    for (method, path) in [
        ("GET", "/admin/status"),
        ("GET", "/admin/dlq"),
        ("DELETE", "/admin/dlq"),
        ("POST", "/admin/dlq/replay"),
        ("POST", "/admin/forwarder/pause"),
    ] {
        let (status, body) = call(addr, method, path, None).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
    }
    // ...while what shows no event stays open on loopback.
    assert_eq!(call(addr, "GET", "/metrics", None).await.0, 200);
    assert_eq!(call(addr, "GET", "/", None).await.0, 200);
    let (status, _) = call(addr, "GET", "/admin/status", Some(&node.admin_token)).await;
    assert_eq!(status, 200);

    // The CLI finds the token beside the store, in a shell that has none
    // of the service's secrets (the config's sources name one).
    let conf = dir.path().join("node.toml");
    std::fs::write(&conf, &text).unwrap();
    for command in [&["status"][..], &["dlq", "list"], &["parked", "list"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetedge"))
            .args(command)
            .arg("-c")
            .arg(&conf)
            .args(["--admin", &format!("http://{addr}")])
            .env_remove(support::SECRET_ENV)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command:?}: {out:?}");
    }
    node.shutdown().await;

    // A restart keeps the token.
    let node = jetedge::Node::start(parse_config(&text)).await.unwrap();
    assert_eq!(node.admin_token, on_disk);
    node.shutdown().await;
}
