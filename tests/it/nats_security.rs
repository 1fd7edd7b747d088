//! Upstream NATS connections that a real nats-server secures: each auth
//! method the config offers (token, user and password, nkey) and TLS with a
//! private CA and a client certificate, forwarding events end to end; and
//! a wrong credential, which the node reports rather than crash-looping.

use crate::support;

use jetedge::Node;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::http::{blocking_get, post_order, Client};
use support::nats::NatsServer;
use support::tls::Ca;
use support::{node_config, parse_config, TempDir};

const AUTH_ENV: &str = "JETEDGE_TEST_NATS_SECRET";

/// Starts a node whose `[upstream]` has `auth` added, posts 5 events and
/// waits (up to `wait`) until upstream acknowledged them all.
async fn forwards_within(url: &str, auth: &str, wait: Duration) -> Result<(), String> {
    let dir = TempDir::new("nats-auth");
    let text = node_config(&dir.path().join("data"), &[url.to_string()])
        .replace("[upstream]\n", &format!("[upstream]\n{auth}\n"));
    let node = Node::start(parse_config(&text))
        .await
        .map_err(|e| e.to_string())?;
    let c = Client::new(node.ingress_addr);
    for n in 0..5 {
        assert_eq!(post_order(&c, "shop", n).await.status, 202);
    }
    let forwarded = support::eventually(wait, async || node.backlog().0 == 0).await;
    let upstream = node.link_state();
    node.shutdown().await;
    match forwarded {
        true => Ok(()),
        false => Err(format!("nothing forwarded; upstream {upstream}")),
    }
}

async fn forwards(server: &NatsServer, auth: &str) -> Result<(), String> {
    forwards_within(&server.url(), auth, Duration::from_secs(20)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_auth_method_against_a_server_that_requires_it() {
    std::env::set_var(AUTH_ENV, "s3cret-Token");
    let server = NatsServer::start_with("authorization { token: \"s3cret-Token\" }\n");
    forwards(&server, &format!("token = \"env:{AUTH_ENV}\""))
        .await
        .expect("token");
    drop(server);

    std::env::set_var(AUTH_ENV, "pa55-word");
    let server = NatsServer::start_with(
        "authorization { users = [ { user: edge, password: \"pa55-word\" } ] }\n",
    );
    forwards(
        &server,
        &format!("user = \"edge\"\npassword = \"env:{AUTH_ENV}\""),
    )
    .await
    .expect("user and password");
    drop(server);

    let user = nkeys::KeyPair::new_user();
    std::env::set_var(AUTH_ENV, user.seed().unwrap());
    let server = NatsServer::start_with(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    ));
    forwards(&server, &format!("nkey = \"env:{AUTH_ENV}\""))
        .await
        .expect("nkey");
}

/// Mutual TLS material in `dir`: the CA (and its file), the nats-server
/// `tls` block that requires a client certificate of it, and the node's
/// `tls = { ca, cert, key }` line with such a certificate.
struct MutualTls {
    ca: Ca,
    ca_file: PathBuf,
    server_block: String,
    node_line: String,
}

impl MutualTls {
    fn new(dir: &Path) -> Self {
        let ca = Ca::new("hub CA");
        let ca_file = ca.write(dir, "ca.pem");
        let (cert, key) = ca.server().write(dir, "server");
        let (client_cert, client_key) = ca.client("edge-node").write(dir, "client");
        let text = |p: &Path| p.display().to_string();
        Self {
            server_block: format!(
                "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}\n",
                text(&cert),
                text(&key),
                text(&ca_file)
            ),
            node_line: format!(
                "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}",
                text(&ca_file),
                text(&client_cert),
                text(&client_key)
            ),
            ca,
            ca_file,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    let dir = TempDir::new("nats-tls");
    let MutualTls {
        ca_file,
        server_block,
        node_line,
        ..
    } = MutualTls::new(dir.path());
    let server = NatsServer::start_with(&server_block);
    forwards(&server, &node_line).await.expect("mutual TLS");
    // Without the client certificate the server does not let it in.
    let ca_only = format!("tls = {{ ca = {:?} }}", ca_file.display().to_string());
    let refused = forwards_within(&server.url(), &ca_only, Duration::from_secs(3)).await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_is_reported_and_the_node_keeps_buffering() {
    std::env::set_var("JETEDGE_TEST_NATS_WRONG", "not-the-token");
    let server = NatsServer::start_with("authorization { token: \"the-token\" }\n");
    let dir = TempDir::new("nats-wrong");
    let text = node_config(&dir.path().join("data"), &[server.url()]).replace(
        "[upstream]\n",
        "[upstream]\ntoken = \"env:JETEDGE_TEST_NATS_WRONG\"\n",
    );
    let mut node = support::node::Binary::configured(dir.path(), &text);
    tokio::task::block_in_place(|| node.start());
    let c = Client::new(([127, 0, 0, 1], node.port).into());
    assert_eq!(
        post_order(&c, "shop", 1).await.status,
        202,
        "it buffers meanwhile"
    );
    let state = || {
        let (_, body) = blocking_get(node.port, "/readyz").unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["upstream"].clone()
    };
    assert!(
        support::eventually(Duration::from_secs(10), async || state() == "unauthorized").await,
        "readyz says {}:\n{}",
        state(),
        node.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = node.log();
    assert!(node.is_running(), "no crash loop:\n{log}");
    let lines = log.matches("refused the node's credentials").count();
    assert!(
        (1..=2).contains(&lines),
        "one clear line, not one per retry ({lines}):\n{log}"
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_link_takes_a_token_and_mutual_tls_too() {
    let dir = TempDir::new("nats-local-secure");
    let tls = MutualTls::new(dir.path());
    let (kiosk_cert, kiosk_key) = tls.ca.client("kiosk").write(dir.path(), "kiosk");
    let site = NatsServer::start_with(&format!(
        "authorization {{ token: \"site-Token\" }}\n{}",
        tls.server_block
    ));
    std::env::set_var("JETEDGE_TEST_SITE_TOKEN", "site-Token");
    let offline = format!("nats://127.0.0.1:{}", support::free_port());
    let text = node_config(&dir.path().join("data"), &[offline])
        + &format!(
            "\n[local]\nservers = [{:?}]\ntoken = \"env:JETEDGE_TEST_SITE_TOKEN\"\n{}\n",
            site.url(),
            tls.node_line
        );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let kiosk = async_nats::ConnectOptions::new()
        .token("site-Token".into())
        .require_tls(true)
        .add_root_certificates(tls.ca_file.clone())
        .add_client_certificate(kiosk_cert, kiosk_key)
        .connect(site.url())
        .await
        .expect("the kiosk connects to the secured site server");
    let mut answer = None;
    for _ in 0..100 {
        let ask = kiosk.request("ingest.events.kiosk1", "{\"type\":\"kiosk.scan\"}".into());
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_millis(300), ask).await {
            answer = Some(serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap());
            break;
        }
        // "no responders" until the node's local link is up.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the node answered over the secured site link");
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert_eq!(node.backlog().0, 1);
    node.shutdown().await;
}

/// A NATS JWT (v2) with `claims` under `nats`, issued by `issuer` for `subject`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": uuid::Uuid::now_v7().simple().to_string().to_uppercase(),
        "iat": support::now(),
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let body = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", b64(&sig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_against_a_server_in_operator_mode() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let acc_jwt = jwt(
        &operator,
        &account.public_key(),
        "edge",
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "edge-node",
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                           "type": "user", "version": 2}),
    );
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let sys_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let server = NatsServer::start_with(&format!(
        "operator: {op_jwt:?}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{ {acc}: {acc_jwt:?}, {sys}: {sys_jwt:?} }}\n",
        acc = account.public_key(),
        sys = system.public_key()
    ));
    let dir = TempDir::new("nats-creds");
    let creds = dir.path().join("edge.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    forwards(
        &server,
        &format!("creds = {:?}", creds.display().to_string()),
    )
    .await
    .expect("creds file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_may_not_read_the_stream_still_forwards() {
    // May publish events and read the stream's info, nothing more: the
    // check of what landed before a resend is refused, and the node falls
    // back to the duplicate window rather than stop forwarding.
    std::env::set_var(AUTH_ENV, "pa55-word");
    let server = NatsServer::start_with(
        "authorization { users = [ { user: edge, password: \"pa55-word\", permissions: {\n\
         publish: [\"events.>\", \"$JS.API.STREAM.INFO.EDGE\", \"$JS.API.STREAM.CREATE.EDGE\", \"$JS.API.INFO\"]\n\
         subscribe: [\"_INBOX.>\"] } }, { user: reader, password: reader } ] }\n",
    );
    let dir = TempDir::new("nats-publish-only");
    let auth = format!("user = \"edge\"\npassword = \"env:{AUTH_ENV}\"");
    let text = node_config(&dir.path().join("data"), &[server.url()])
        .replace("[upstream]\n", &format!("[upstream]\n{auth}\n"));
    let node = Node::start(parse_config(&text)).await.unwrap();
    // Held, so that the first forwarding after the start has events to
    // check (it asks the stream what landed before sending them).
    node.pause_forwarding(true);
    let c = Client::new(node.ingress_addr);
    for n in 0..5 {
        assert_eq!(post_order(&c, "shop", n).await.status, 202);
    }
    node.pause_forwarding(false);
    let forwarded = support::eventually(Duration::from_secs(30), async || node.backlog().0 == 0);
    assert!(forwarded.await, "upstream {}", node.link_state());
    let reader =
        async_nats::ConnectOptions::with_user_and_password("reader".into(), "reader".into())
            .connect(server.url())
            .await
            .unwrap();
    let js = async_nats::jetstream::new(reader);
    assert_eq!(support::nats::stream_count(&js, "EDGE").await, 5);
    node.shutdown().await;
}
