//! Config reload on the real binary: `jetedge reload` and SIGHUP apply a
//! changed file while clients keep posting; an invalid file changes
//! nothing and names every problem; subscriptions come and go while events
//! flow, each event delivered once.

use crate::support;

use std::collections::HashSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::http::Client;
use support::nats::{jetstream, read_stream, NatsServer};
use support::node::Binary;
use support::webhook::{Mode, Receiver};
use support::{node_config, TempDir, SECRET, SECRET_ENV};

/// A second Standard Webhooks secret, for the rotation.
const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SECRET_B_ENV: &str = "JETEDGE_TEST_RELOAD_SECRET_B";

fn jetedge(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The config with the shop source's secrets replaced by `secrets`.
fn with_shop_secrets(base: &str, secrets: &str) -> String {
    base.replacen(
        &format!(
            "name = \"shop\"\nverify = \"standard-webhooks\"\nsecrets = [\"env:{SECRET_ENV}\"]"
        ),
        &format!("name = \"shop\"\nverify = \"standard-webhooks\"\nsecrets = [{secrets}]"),
        1,
    )
}

/// Signed Standard Webhooks headers for `body` with `secret`.
fn signed(secret: &str, id: &str, body: &[u8]) -> Vec<(String, String)> {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let ts = support::now();
    vec![
        ("content-type".into(), "application/json".into()),
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), wh.sign(id, ts, body).unwrap()),
    ]
}

/// Rewrites the node's config file (keeping its ports) and asks it to reload.
fn rewrite(node: &Binary, f: impl Fn(&str) -> String) {
    let now = std::fs::read_to_string(node.config_path()).unwrap();
    std::fs::write(node.config_path(), f(&now)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_source_and_rotates_a_secret_while_a_client_posts() {
    std::env::set_var(SECRET_B_ENV, SECRET_B);
    let nats = NatsServer::start();
    let dir = TempDir::new("reload-secrets");
    let base = node_config(&dir.path().join("data"), &[nats.url()]);
    let mut node = Binary::configured(dir.path(), &base);
    node.start();
    let client = Client::new(([127, 0, 0, 1], node.port).into());

    // One client posts without pause, signing with whichever secret the
    // test says is current; every answer but 202 is a failure.
    let use_b = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let poster = {
        let (client, use_b, stop) = (client.clone(), use_b.clone(), stop.clone());
        let (failures, accepted) = (failures.clone(), accepted.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("rot-{n}");
                let body = support::order_body("shop", n);
                let secret = if use_b.load(Ordering::Relaxed) {
                    SECRET_B
                } else {
                    SECRET
                };
                let r = client
                    .post("/v1/webhooks/shop", &signed(secret, &id, &body), body)
                    .await;
                match r.status {
                    202 => accepted.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures.lock().unwrap().push(format!("{id}: {r:?}"));
                        0
                    }
                };
                n += 1;
            }
        })
    };
    let partner = || async {
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        client
            .post(
                "/v1/webhooks/partner",
                &headers,
                b"{\"type\":\"p.x\"}".to_vec(),
            )
            .await
            .status
    };
    assert_eq!(partner().await, 404, "no such source yet");

    // Reload 1: a new source, and the shop takes both secrets (overlap).
    tokio::time::sleep(Duration::from_millis(300)).await;
    rewrite(&node, |t| {
        let both = format!("\"env:{SECRET_ENV}\", \"env:{SECRET_B_ENV}\"");
        format!(
            "{}\n[[source]]\nname = \"partner\"\nverify = \"none\"\n",
            with_shop_secrets(t, &both)
        )
    });
    let out = tokio::task::block_in_place(|| jetedge(&["reload"], node.config_path()));
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("source shop: changed") && said.contains("source partner: added"),
        "{said}"
    );
    assert_eq!(partner().await, 202);
    use_b.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Reload 2, by SIGHUP: the overlap ends, the old secret is refused.
    rewrite(&node, |t| {
        let both = format!("\"env:{SECRET_ENV}\", \"env:{SECRET_B_ENV}\"");
        t.replacen(&both, &format!("\"env:{SECRET_B_ENV}\""), 1)
    });
    let hup = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let body = support::order_body("shop", 0);
    // Until the reload lands the old secret still passes: such a probe is
    // stored (once: it keeps its id) and counted with the rest.
    let probes_stored = AtomicUsize::new(0);
    let old_refused = support::eventually(Duration::from_secs(10), async || {
        let r = client
            .post(
                "/v1/webhooks/shop",
                &signed(SECRET, "old-secret", &body),
                body.clone(),
            )
            .await;
        if r.status == 202 {
            probes_stored.fetch_add(1, Ordering::Relaxed);
        }
        r.status == 401
    });
    assert!(
        old_refused.await,
        "the old secret is still taken: {}",
        node.log_tail(10)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    poster.await.unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed across the reloads: {failures:?}"
    );
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(
        accepted > 20,
        "the client kept posting ({accepted} accepted)"
    );
    // Every accepted event (and the partner's) is upstream exactly once.
    let js = jetstream(&[nats.url()]).await;
    // The shop's events, the partner's one, and a probe stored before the reload.
    let expected = accepted + 1 + probes_stored.load(Ordering::Relaxed);
    let msgs = read_stream(&js, "EDGE", expected, Duration::from_secs(30)).await;
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((msgs.len(), ids.len()), (expected, expected));
    let metrics = support::http::blocking_get(node.admin_port, "/metrics")
        .unwrap()
        .1;
    assert!(
        metrics.contains("jetedge_config_reloads_total 2"),
        "{metrics}"
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_changes_nothing_and_a_restart_only_key_is_reported() {
    let nats = NatsServer::start();
    let dir = TempDir::new("reload-invalid");
    let base = node_config(&dir.path().join("data"), &[nats.url()]);
    let mut node = Binary::configured(dir.path(), &base);
    node.start();
    let client = Client::new(([127, 0, 0, 1], node.port).into());
    let good = std::fs::read_to_string(node.config_path()).unwrap();

    rewrite(&node, |t| {
        format!("{t}\n[[source]]\nname = \"bad name!\"\nverify = \"none\"\n[[route]]\nmatch = {{ prefx = {{ type = \"x\" }} }}\naction = \"drop\"\n")
    });
    let out = tokio::task::block_in_place(|| jetedge(&["reload"], node.config_path()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    for path in ["source[10].name", "route[0].match.prefx"] {
        assert!(said.contains(path), "{path} missing from:\n{said}");
    }
    // Still the old config: the shop source verifies, the bad one is absent.
    let r = support::http::post_order(&client, "shop", 1).await;
    assert_eq!(r.status, 202, "{r:?}");
    let metrics = support::http::blocking_get(node.admin_port, "/metrics")
        .unwrap()
        .1;
    assert!(
        metrics.contains("jetedge_config_reloads_failed_total 1"),
        "{metrics}"
    );

    // A new listen address needs a restart: said so, and the old one serves.
    let moved = good.replacen(&format!("127.0.0.1:{}", node.port), "127.0.0.1:1", 1);
    std::fs::write(node.config_path(), moved).unwrap();
    let out = tokio::task::block_in_place(|| jetedge(&["reload"], node.config_path()));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("needs a restart to take effect: ingress.listen"),
        "{}",
        text(&out)
    );
    assert_eq!(
        support::http::post_order(&client, "shop", 2).await.status,
        202
    );
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_subscriptions_while_events_flow() {
    let nats = NatsServer::start();
    let dir = TempDir::new("reload-subs");
    let (a, b) = (
        Receiver::start(SECRET, Mode::Ok).await,
        Receiver::start(SECRET, Mode::Ok).await,
    );
    let sub = |name: &str, url: &str| {
        format!(
            "\n[[subscription]]\nname = \"{name}\"\nsubjects = [\"events.shop.>\"]\ndeliver = \"all\"\nack_wait = \"5s\"\nto_webhook = {{ url = \"{url}\", secret = \"env:{SECRET_ENV}\", timeout = \"5s\" }}\n"
        )
    };
    let base = node_config(&dir.path().join("data"), &[nats.url()]);
    let mut node = Binary::configured(dir.path(), &format!("{base}{}", sub("a", &a.url)));
    node.start();
    let client = Client::new(([127, 0, 0, 1], node.port).into());
    let post = |from: usize, n: usize| {
        let client = client.clone();
        async move {
            for i in from..from + n {
                assert_eq!(
                    support::http::post_order(&client, "shop", i).await.status,
                    202
                );
            }
        }
    };
    post(0, 50).await;
    assert!(
        support::eventually(Duration::from_secs(20), async || a.count() >= 50).await,
        "a got {}",
        a.count()
    );

    // While events flow: "a" goes, "b" comes.
    let flowing = tokio::spawn(post(50, 100));
    rewrite(&node, |t| {
        let without_a = t.replacen(&sub("a", &a.url), "", 1);
        format!("{without_a}{}", sub("b", &b.url))
    });
    let out = tokio::task::block_in_place(|| jetedge(&["reload"], node.config_path()));
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("subscription a: removed") && said.contains("subscription b: added"),
        "{said}"
    );
    flowing.await.unwrap();
    let a_after_reload = a.count();
    post(150, 50).await;

    // "b" starts from the stream's start: it gets all 200 events, each
    // once; "a" takes no more once the reload is answered.
    let got = support::eventually(Duration::from_secs(30), async || b.count() >= 200);
    assert!(
        got.await,
        "b got {} events: {}",
        b.count(),
        node.log_tail(10)
    );
    let taken = b.taken();
    let distinct: HashSet<&String> = taken.iter().collect();
    assert_eq!(
        (taken.len(), distinct.len()),
        (200, 200),
        "b got an event twice"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.count(),
        a_after_reload,
        "a removed subscription still delivers"
    );
    let status = node.admin_json("/admin/status");
    let names: Vec<&str> = status["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    node.stop();
}
