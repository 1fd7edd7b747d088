//! Ingress over TLS with rustls: a client that checks the certificate, a
//! plain-HTTP request refused and counted, mTLS accepted and refused, and a
//! certificate renewed while a client keeps posting.

use crate::support;

use jetedge::Node;
use std::path::Path;
use std::time::Duration;
use support::tls::{client_config, post, request, Ca, Issued};
use support::{node_config, now, order_body, parse_config, sign, TempDir};

/// A node on a TLS listener with `cert` and `key`, and `client_ca` if given.
async fn tls_node(
    dir: &Path,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> jetedge::NodeHandle {
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let ca = client_ca.map_or(String::new(), |p| {
        format!(", client_ca = {:?}", p.display().to_string())
    });
    let tls = format!(
        "max_body = \"64KiB\"\ntls = {{ cert = {:?}, key = {:?}{ca} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let text = node_config(&dir.join("data"), &[offline])
        .replace("max_body = \"64KiB\"", &tls)
        // Under mTLS, only kiosk-1 may post to shop; the other sources take any client.
        .replacen(
            "name = \"shop\"\n",
            &format!(
                "name = \"shop\"\n{}",
                match client_ca {
                    Some(_) => "client_identities = [\"kiosk-1\"]\n",
                    None => "",
                }
            ),
            1,
        );
    // For the CLI.
    std::fs::write(dir.join("node.toml"), &text).unwrap();
    Node::start(parse_config(&text)).await.unwrap()
}

fn signed(n: usize) -> (Vec<(String, String)>, Vec<u8>) {
    let body = order_body("tls", n);
    (sign(&format!("tls-{n}"), &body, now()), body)
}

async fn post_order(
    config: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    node: &jetedge::NodeHandle,
    n: usize,
) -> Result<support::tls::Answer, String> {
    let (headers, body) = signed(n);
    post(
        config.clone(),
        node.ingress_addr,
        "/v1/webhooks/shop",
        &headers,
        body,
    )
    .await
}

fn rejected(node: &jetedge::NodeHandle, code: &str) -> u64 {
    node.metrics.rejected(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_speaks_tls_and_refuses_plain_http_cleanly() {
    let dir = TempDir::new("tls-ingress");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let node = tls_node(dir.path(), &cert, &key, None).await;

    let client = client_config(&ca, None);
    let a = post_order(&client, &node, 1).await.expect("an HTTPS post");
    assert_eq!(a.status, 202, "{}", a.body);
    // A client that does not trust the node's CA does not get through.
    let stranger = client_config(&Ca::new("another CA"), None);
    assert!(post_order(&stranger, &node, 2).await.is_err());

    // Plain HTTP to the TLS port: no answer the client could take for
    // one, counted, and the listener goes on.
    let plain = support::http::Client::new(node.ingress_addr);
    let (headers, body) = signed(3);
    assert!(plain
        .try_post("/v1/webhooks/shop", &headers, body)
        .await
        .is_err());
    assert!(
        support::eventually(Duration::from_secs(5), async || rejected(
            &node,
            "tls_handshake_failed"
        ) >= 2)
        .await,
        "handshake failures are counted"
    );
    let a = post_order(&client, &node, 4).await.expect("still serving");
    assert_eq!(a.status, 202);
    // `jetedge send` speaks https to it, trusting the CA it is given.
    let ca_file = ca.write(dir.path(), "ca.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["send", "--source", "shop", "-c"])
        .arg(dir.path().join("node.toml"))
        .args(["--url", &format!("https://{}", node.ingress_addr), "--ca"])
        .arg(&ca_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(node.backlog().0, 3);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_takes_clients_of_its_ca_only() {
    let dir = TempDir::new("tls-mtls");
    let ca = Ca::new("site CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let node = tls_node(dir.path(), &cert, &key, Some(&ca_file)).await;

    let kiosk = ca.client("kiosk-1");
    let a = post_order(&client_config(&ca, Some(&kiosk)), &node, 1)
        .await
        .expect("a client of the CA");
    assert_eq!(a.status, 202, "{}", a.body);

    // No certificate, or one from another CA: refused at the handshake
    // (TLS 1.3 reports it on the first read, so the request fails).
    let other = Ca::new("other CA");
    let foreign = other.client("kiosk-1");
    for (name, config) in [
        ("no certificate", client_config(&ca, None)),
        (
            "another CA's certificate",
            client_config(&ca, Some(&foreign)),
        ),
    ] {
        let r = post_order(&config, &node, 2).await;
        assert!(r.is_err(), "{name}: {r:?}");
    }
    assert!(
        support::eventually(Duration::from_secs(5), async || rejected(
            &node,
            "tls_handshake_failed"
        ) >= 2)
        .await
    );
    // Another client of the CA: refused by the source that names its
    // clients, taken by one that does not.
    let till = client_config(&ca, Some(&ca.client("till-7")));
    let a = post_order(&till, &node, 3).await.expect("an answer");
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.body.contains("client_not_allowed") && a.body.contains("till-7"),
        "{}",
        a.body
    );
    let (headers, body) = signed(4);
    let a = post(till, node.ingress_addr, "/v1/webhooks/s0", &headers, body)
        .await
        .expect("an answer");
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(rejected(&node, "client_not_allowed"), 1);
    assert_eq!(node.backlog().0, 2);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_or_a_failed_request() {
    let dir = TempDir::new("tls-rotate");
    let ca = Ca::new("renewing CA");
    let first = ca.server();
    let (cert, key) = first.write(dir.path(), "server");
    let node = tls_node(dir.path(), &cert, &key, None).await;
    let client = client_config(&ca, None);
    let der = |i: &Issued| {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
        CertificateDer::from_pem_slice(i.cert_pem.as_bytes())
            .unwrap()
            .to_vec()
    };

    let mut n = 0;
    let mut post_one = async || {
        n += 1;
        let a = post_order(&client, &node, n)
            .await
            .expect("no request fails");
        assert_eq!(a.status, 202, "{}", a.body);
        a.server_cert
    };
    assert_eq!(post_one().await, der(&first));
    // Renewal writes the new pair in place, as certbot's deploy hook or a
    // mounted cert-manager secret would.
    let renewed = ca.server();
    renewed.write(dir.path(), "server");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = post_one().await;
        if seen == der(&renewed) {
            break;
        }
        assert_eq!(seen, der(&first));
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posted = n;
    assert_eq!(node.backlog().0, posted as u64);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_takes_the_same_tls_table() {
    let dir = TempDir::new("tls-admin");
    let ca = Ca::new("admin CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        cert.display().to_string(),
        key.display().to_string()
    );
    let text = node_config(&dir.path().join("data"), &[offline]).replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{tls}"),
    );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let admin = node.admin_addr.unwrap();
    let auth = [(
        "authorization".to_string(),
        format!("Bearer {}", node.admin_token),
    )];
    let a = request(
        client_config(&ca, None),
        admin,
        "GET",
        "/admin/status",
        &auth,
        Vec::new(),
    )
    .await
    .expect("HTTPS to the admin listener");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"node\":\"test-node\""), "{}", a.body);
    // The CLI speaks https to it, trusting the CA it is given.
    let conf = dir.path().join("node.toml");
    std::fs::write(&conf, &text).unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["status", "-c"])
        .arg(&conf)
        .args(["--admin", &format!("https://{admin}"), "--ca"])
        .arg(&ca_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Plain HTTP is refused there too, and counted.
    assert!(support::http::blocking_get(admin.port(), "/metrics").is_none_or(|(s, _)| s != 200));
    assert!(
        support::eventually(Duration::from_secs(5), async || rejected(
            &node,
            "tls_handshake_failed"
        ) >= 1)
        .await
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhook_targets_with_their_own_ca_and_with_mtls() {
    use support::webhook::{Mode, Receiver};
    let dir = TempDir::new("tls-egress");
    let ca = Ca::new("microapps CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let receiver_tls = |name: &str, client_ca: Option<&Path>| {
        let (cert, key) = ca.server().write(dir.path(), name);
        jetedge::tls::server_config(&jetedge::config::TlsConfig {
            cert,
            key,
            client_ca: client_ca.map(Path::to_path_buf),
        })
        .unwrap()
    };
    let plain = Receiver::start_tls(support::SECRET, Mode::Ok, receiver_tls("plain", None)).await;
    let mutual = Receiver::start_tls(
        support::SECRET,
        Mode::Ok,
        receiver_tls("mutual", Some(&ca_file)),
    )
    .await;
    let (client_cert, client_key) = ca.client("jetedge-node").write(dir.path(), "client");

    let upstream = support::nats::NatsServer::start();
    let hook = |url: &str, tls: &str| {
        format!(
            "to_webhook = {{ url = \"{url}\", secret = \"env:{}\", timeout = \"2s\", ca = {:?}{tls} }}\n",
            support::SECRET_ENV,
            ca_file.display().to_string()
        )
    };
    let sub = |name: &str, target: String| {
        format!(
            "\n[[subscription]]\nname = \"{name}\"\nsubjects = [\"events.shop.>\"]\ndeliver = \"all\"\nack_wait = \"5s\"\nretry = {{ initial = \"50ms\", max = \"100ms\", max_attempts = 2 }}\n{target}"
        )
    };
    let identity = format!(
        ", client_cert = {:?}, client_key = {:?}",
        client_cert.display().to_string(),
        client_key.display().to_string()
    );
    let text = node_config(&dir.path().join("data"), &[upstream.url()])
        + &sub("secure", hook(&plain.url, ""))
        + &sub("mutual", hook(&mutual.url, &identity))
        + &sub("anonymous", hook(&mutual.url, ""));
    let node = Node::start(parse_config(&text)).await.unwrap();
    let c = support::http::Client::new(node.ingress_addr);
    for n in 0..5 {
        assert_eq!(support::http::post_order(&c, "shop", n).await.status, 202);
    }
    let status = |name: &str| {
        node.egress
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    };
    assert!(
        support::eventually(Duration::from_secs(30), async || {
            plain.count() == 5
                && mutual.count() == 5
                && status("secure").delivered == 5
                && status("mutual").delivered == 5
                && status("anonymous").failed_attempts >= 5
        })
        .await,
        "https receiver {} of 5, mTLS receiver {} of 5, anonymous failures {}",
        plain.count(),
        mutual.count(),
        status("anonymous").failed_attempts
    );
    // Without the client certificate the mTLS receiver wants, nothing got through.
    assert_eq!(status("anonymous").delivered, 0);
    assert_eq!((plain.bad_requests(), mutual.bad_requests()), (0, 0));
    node.shutdown().await;
}
