//! Event contracts end to end against real nats-servers: schema files that
//! reject (422 with the violations) or quarantine (202, the event on the
//! quarantine subject with its violations, still redacted), the registry
//! bucket followed while the node runs, while it is offline and while it
//! is stopped, and `jetedge schemas` as an operator reads it.

use crate::support;

use jetedge::Node;
use serde_json::{json, Value};
use std::time::Duration;
use support::http::Client;
use support::nats::{jetstream, read_stream, NatsServer};
use support::{eventually, node_config, now, parse_config, sign, TempDir};

/// A schema for `order.created` bodies: an object with a string order id
/// and a customer with an email.
fn order_schema(version: u64) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("order v{version}"),
        "type": "object",
        "required": ["type", "order_id", "customer"],
        "properties": {
            "type": {"const": "order.created"},
            "order_id": {"type": "string", "pattern": "^ORD-"},
            "customer": {
                "type": "object",
                "required": ["email"],
                "properties": {"email": {"type": "string", "format": "email"}}
            },
            "total": {"type": "number", "minimum": if version >= 2 { 1 } else { 0 }}
        }
    })
}

async fn post(client: &Client, id: &str, body: &Value) -> support::http::Reply {
    let body = body.to_string().into_bytes();
    client
        .post("/v1/webhooks/shop", &sign(id, &body, now()), body)
        .await
}

fn order(id: &str, email: &str, total: i64) -> Value {
    json!({"type": "order.created", "order_id": id, "customer": {"email": email}, "total": total})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_file_rejects_or_quarantines_and_stamps_what_it_checked() {
    let nats = NatsServer::start();
    let dir = TempDir::new("contracts-files");
    let order_file = dir.path().join("order.json");
    std::fs::write(&order_file, order_schema(1).to_string()).unwrap();
    let refund_file = dir.path().join("refund.json");
    let refund = json!({"$id": "https://schemas.example.com/refund/1", "type": "object",
        "required": ["amount"], "properties": {"amount": {"type": "integer"}}});
    std::fs::write(&refund_file, refund.to_string()).unwrap();
    let text = format!(
        "{}\n[[schema]]\nsource = \"shop\"\ntype = \"order.created\"\nfile = {:?}\n\
         [[schema]]\nsource = \"shop\"\ntypes = [\"refund.*\"]\nfile = {:?}\non_violation = \"quarantine\"\n\
         [[redact]]\nsources = [\"shop\"]\npaths = [\"/data/customer/email\"]\naction = \"remove\"\n",
        node_config(dir.path(), &[nats.url()]),
        order_file.display(),
        refund_file.display(),
    );
    let node = Node::start(parse_config(&text)).await.unwrap();
    let client = Client::new(node.ingress_addr);

    let good = post(&client, "o-1", &order("ORD-1", "ann@example.com", 12)).await;
    assert_eq!(good.status, 202, "{good:?}");
    assert_eq!(good.body["status"], "accepted");

    // Three faults at once: a bad order id, a customer without an email,
    // a total of the wrong type; the answer lists each, never its value.
    let bad =
        json!({"type": "order.created", "order_id": "X-SECRET-9", "customer": {}, "total": "lots"});
    let refused = post(&client, "o-2", &bad).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    let error = &refused.body["error"];
    assert_eq!(error["code"], "schema_violation");
    assert_eq!(error["schema"], format!("file:{}", order_file.display()));
    let found: Vec<(String, String)> = error["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["pointer"].as_str().unwrap().into(),
                v["keyword"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("/order_id", "pattern"),
        ("/customer", "required"),
        ("/total", "type"),
    ] {
        assert!(
            found.iter().any(|(p, k)| p == want.0 && k == want.1),
            "{want:?} not in {found:?}"
        );
    }
    assert!(
        !refused.body.to_string().contains("X-SECRET-9"),
        "the answer quotes the event's value: {}",
        refused.body
    );

    // A refund that breaks its schema is kept, for the quarantine subject.
    let refund_bad = json!({"type": "refund.issued", "amount": "12.50",
        "customer": {"email": "bob@example.com"}});
    let q = post(&client, "r-1", &refund_bad).await;
    assert_eq!(q.status, 202, "{q:?}");
    assert_eq!(q.body["status"], "quarantined");
    let refund_ok = json!({"type": "refund.issued", "amount": 1250});
    assert_eq!(
        post(&client, "r-2", &refund_ok).await.body["status"],
        "accepted"
    );

    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 3, Duration::from_secs(20)).await;
    assert_eq!(msgs.len(), 3, "the rejected event must not be stored");
    let by_subject = |s: &str| msgs.iter().find(|m| m.subject == s).map(|m| m.json());
    let ok = by_subject("events.shop.order.created").expect("the valid order upstream");
    assert_eq!(ok["dataschema"], format!("file:{}", order_file.display()));
    let quarantined =
        by_subject("events.quarantine.shop.refund.issued").expect("quarantined refund");
    assert_eq!(
        quarantined["dataschema"],
        "https://schemas.example.com/refund/1"
    );
    let violations = quarantined["schemaviolations"].as_array().unwrap();
    assert_eq!(violations[0]["pointer"], "/amount");
    assert_eq!(violations[0]["keyword"], "type");
    assert!(
        quarantined["data"]["customer"].get("email").is_none(),
        "a quarantined event is redacted like any other: {quarantined}"
    );
    let fine = by_subject("events.shop.refund.issued").expect("the valid refund");
    assert!(fine.get("schemaviolations").is_none());

    // A reload reads the files again: a relaxed order schema takes what
    // the first one refused.
    let mut relaxed = order_schema(1);
    relaxed["required"] = json!(["type"]);
    relaxed["properties"] = json!({});
    std::fs::write(&order_file, relaxed.to_string()).unwrap();
    node.apply(parse_config(&text)).await.unwrap();
    let again = post(&client, "o-3", &bad).await;
    assert_eq!(again.status, 202, "after the reload: {again:?}");

    assert_eq!(node.metrics.events_quarantined.get(), 1);
    assert_eq!(node.metrics.rejected("schema_violation"), 1);
    let m = node.metrics.render(&Default::default());
    assert!(m.contains("jetedge_events_quarantined_total 1"), "{m}");
    node.shutdown().await;
}

async fn kv(js: &async_nats::jetstream::Context) -> async_nats::jetstream::kv::Store {
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: "SCHEMAS".into(),
        history: 5,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The registry's schemas as `GET /admin/schemas` lists them.
async fn listed(node: &jetedge::NodeHandle) -> Value {
    let auth = format!("Bearer {}", node.admin_token);
    let (status, body) = support::http::call(
        node.admin_addr.unwrap(),
        "GET",
        "/admin/schemas",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn enforced_version(node: &jetedge::NodeHandle) -> Option<u64> {
    let v = listed(node).await;
    v["schemas"].as_array()?.iter().find_map(|s| {
        (s["source"] == "shop" && s["types"][0] == "order.created")
            .then(|| s["origin"]["version"].as_u64())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_bucket_is_followed_live_offline_and_across_restarts() {
    let mut nats = NatsServer::start();
    let js = jetstream(&[nats.url()]).await;
    let bucket = kv(&js).await;
    let v1 = order_schema(1).to_string();
    bucket.put("shop.order.created.1", v1.into()).await.unwrap();
    let dir = TempDir::new("contracts-registry");
    let text = format!(
        "{}\n[contracts]\nregistry = \"kv:SCHEMAS\"\n",
        node_config(dir.path(), &[nats.url()])
    );
    let cfg = parse_config(&text);
    let node = Node::start(cfg.clone()).await.unwrap();
    let client = Client::new(node.ingress_addr);
    assert!(
        eventually(Duration::from_secs(10), async || enforced_version(&node)
            .await
            == Some(1))
        .await,
        "version 1 never enforced: {}",
        listed(&node).await
    );
    let free = order("ORD-1", "ann@example.com", 0);
    let r = post(&client, "a-1", &free).await;
    assert_eq!(r.status, 202, "version 1 takes a total of 0: {r:?}");

    // Version 2 (a total of at least 1) arrives while the node runs.
    bucket
        .put("shop.order.created.2", order_schema(2).to_string().into())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || enforced_version(&node)
            .await
            == Some(2))
        .await
    );
    let r = post(&client, "a-2", &free).await;
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.body["error"]["schema"], "kv:SCHEMAS/shop.order.created.2");
    assert_eq!(r.body["error"]["violations"][0]["pointer"], "/total");

    // Upstream goes away: the copy keeps validating.
    nats.stop();
    assert!(
        eventually(Duration::from_secs(10), async || node.link_state()
            != "connected")
        .await
    );
    let r = post(&client, "a-3", &free).await;
    assert_eq!(r.status, 422, "offline, version 2 still holds: {r:?}");
    let paid = order("ORD-2", "ann@example.com", 5);
    assert_eq!(post(&client, "a-4", &paid).await.status, 202);
    node.shutdown().await;

    // Stopped and restarted with upstream still down: the store's copy serves.
    let node = Node::start(cfg.clone()).await.unwrap();
    let client = Client::new(node.ingress_addr);
    assert_eq!(
        enforced_version(&node).await,
        Some(2),
        "{}",
        listed(&node).await
    );
    let r = post(&client, "a-5", &free).await;
    assert_eq!(r.status, 422, "after a restart offline: {r:?}");
    node.shutdown().await;

    // While the node is stopped, the bucket moves on: version 2 is deleted
    // and version 3 (no minimum at all) is put.
    nats.restart();
    let js = jetstream(&[nats.url()]).await;
    let bucket = js.get_key_value("SCHEMAS").await.unwrap();
    bucket.delete("shop.order.created.2").await.unwrap();
    let mut v3 = order_schema(3);
    v3["properties"]["total"] = json!({"type": "number"});
    bucket
        .put("shop.order.created.3", v3.to_string().into())
        .await
        .unwrap();
    let node = Node::start(cfg).await.unwrap();
    let client = Client::new(node.ingress_addr);
    assert!(
        eventually(Duration::from_secs(10), async || enforced_version(&node)
            .await
            == Some(3))
        .await,
        "{}",
        listed(&node).await
    );
    let r = post(&client, "a-6", &order("ORD-3", "ann@example.com", -4)).await;
    assert_eq!(r.status, 202, "version 3 takes any total: {r:?}");
    let msgs = read_stream(&js, "EDGE", 4, Duration::from_secs(20)).await;
    let last = msgs.last().unwrap().json();
    assert_eq!(last["dataschema"], "kv:SCHEMAS/shop.order.created.3");

    // Deleting a version in force falls back to the one before.
    bucket.delete("shop.order.created.3").await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || enforced_version(&node)
            .await
            == Some(1))
        .await
    );
    let keys: Vec<String> = listed(&node).await["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["origin"]["key"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(keys, ["shop.order.created.1"]);
    node.shutdown().await;
}

/// The official AsyncAPI 3.0.0 schema (`@asyncapi/specs` from npm, fetched
/// by `scripts/install-asyncapi-spec.sh`, which `scripts/test.sh` runs).
fn asyncapi_validator() -> jsonschema::Validator {
    let path = std::env::var("ASYNCAPI_SCHEMA").unwrap_or_else(|_| {
        let out = std::process::Command::new("scripts/install-asyncapi-spec.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("scripts/install-asyncapi-spec.sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    });
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        schema["$id"],
        "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    );
    jsonschema::validator_for(&schema).expect("the AsyncAPI schema compiles")
}

fn assert_valid_asyncapi(v: &jsonschema::Validator, doc: &Value) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid AsyncAPI 3.0:\n{}\n{doc:#}",
        errors.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asyncapi_documents_are_valid_and_name_every_channel() {
    let validator = asyncapi_validator();
    let nats = NatsServer::start();
    let site = NatsServer::start();
    let js = jetstream(&[nats.url()]).await;
    let bucket = kv(&js).await;
    let scan =
        json!({"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}});
    bucket
        .put("kiosk.scan.done.4", scan.to_string().into())
        .await
        .unwrap();
    let dir = TempDir::new("contracts-asyncapi");
    let order_file = dir.path().join("order.json");
    std::fs::write(&order_file, order_schema(1).to_string()).unwrap();
    std::env::set_var("JETEDGE_TEST_HOOK_SECRET", support::SECRET);
    let text = format!(
        "{}\n[local]\nservers = [{:?}]\n\n[contracts]\nregistry = \"kv:SCHEMAS\"\n\n\
         [[source]]\nname = \"kiosk\"\nverify = \"none\"\n\n\
         [[source]]\nname = \"gh\"\nverify = \"github\"\nsecrets = [\"env:JETEDGE_TEST_HOOK_SECRET\"]\n\n\
         [[schema]]\nsource = \"shop\"\ntypes = [\"order.*\"]\nfile = {:?}\non_violation = \"quarantine\"\n\n\
         [[subscription]]\nname = \"orders\"\nsubjects = [\"events.shop.>\"]\nto_subject = \"site.orders\"\n\
         to_webhook = {{ url = \"http://127.0.0.1:9/hook\", secret = \"env:JETEDGE_TEST_HOOK_SECRET\" }}\n",
        node_config(dir.path(), &[nats.url()]),
        site.url(),
        order_file.display(),
    );
    let config = dir.path().join("jetedge.toml");
    std::fs::write(&config, &text).unwrap();

    // From the file, as `jetedge asyncapi` prints it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["asyncapi", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid_asyncapi(&validator, &doc);
    // The schema reaches deep: an operation's action (2.x's "publish") and
    // a server without its protocol are refused.
    let mut broken = doc.clone();
    broken["operations"]["receive.ingest"]["action"] = json!("publish");
    assert!(!validator.is_valid(&broken));
    let mut broken = doc.clone();
    broken["servers"]["ingress"]
        .as_object_mut()
        .unwrap()
        .remove("protocol");
    assert!(!validator.is_valid(&broken));
    let channels = doc["channels"].as_object().unwrap();
    let address = |id: &str| channels[id]["address"].as_str().unwrap().to_string();
    assert_eq!(address("webhook.shop"), "/v1/webhooks/shop");
    assert_eq!(
        address("upstream.shop.order.*".replace('*', "_").as_str()),
        "events.shop.order.{rest}"
    );
    assert_eq!(address("quarantine.shop"), "events.quarantine.shop.{type}");
    assert_eq!(address("ingest"), "ingest.{source}");
    assert_eq!(address("subscription.orders.subject"), "site.orders");
    assert_eq!(
        address("subscription.orders.webhook"),
        "http://127.0.0.1:9/hook"
    );
    let gh = &doc["components"]["securitySchemes"]["gh"];
    assert_eq!(gh["name"], "X-Hub-Signature-256", "{gh}");
    let order_payload = &channels["upstream.shop.order._"]["messages"]["event"]["payload"];
    assert_eq!(
        order_payload["schema"]["properties"]["data"]["title"],
        "order v1"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("registry"));

    // From the running node, with the registry's schemas.
    let node = Node::start(parse_config(&text)).await.unwrap();
    let admin = node.admin_addr.unwrap();
    let found = eventually(Duration::from_secs(10), async || {
        let (_, v) = support::http::call(admin, "GET", "/asyncapi.json", &[]).await;
        v["channels"].get("upstream.kiosk.scan.done").is_some()
    })
    .await;
    assert!(
        found,
        "the registry's schema never showed in /asyncapi.json"
    );
    let (status, doc) = support::http::call(admin, "GET", "/asyncapi.json", &[]).await;
    assert_eq!(status, 200);
    assert_valid_asyncapi(&validator, &doc);
    // `jetedge schemas`, as an operator reads it from the running node.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetedge"))
        .args(["schemas", "-c"])
        .arg(&config)
        .args(["--admin", &format!("http://{admin}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "shop  order.*  quarantine  from file {}",
            order_file.display()
        )),
        "{text}"
    );
    assert!(
        lines[1].starts_with(
            "kiosk  scan.done  reject  from registry SCHEMAS key kiosk.scan.done.4 (version 4"
        ),
        "{text}"
    );
    assert!(
        lines[2].starts_with("registry SCHEMAS: watching the bucket"),
        "{text}"
    );
    let scan_channel = &doc["channels"]["upstream.kiosk.scan.done"];
    assert_eq!(scan_channel["address"], "events.kiosk.scan.done");
    assert_eq!(
        scan_channel["messages"]["event"]["payload"]["schema"]["properties"]["data"]["required"],
        json!(["sku"])
    );
    node.shutdown().await;
}
