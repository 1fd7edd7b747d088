//! The senders people have, as they really sign, end to end: Twilio's form
//! post (its documentation's own example), Zoom's URL validation and a
//! signed Zoom event, and Standard Webhooks' asymmetric v1a (ed25519)
//! signed by a library this code does not use; each lands upstream with
//! its body as JSON `data`.

use crate::support;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use jetedge::Node;
use serde_json::json;
use std::time::Duration;
use support::http::Client;
use support::nats::{jetstream, read_stream, NatsServer};
use support::{now, parse_config, TempDir};

const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

fn config(dir: &std::path::Path, upstream: &str, public_key: &str) -> String {
    std::env::set_var("JETEDGE_TEST_TWILIO", "12345");
    std::env::set_var("JETEDGE_TEST_ZOOM", "zoom_secret_token");
    std::env::set_var("JETEDGE_TEST_WHPK", public_key);
    format!(
        r#"
[node]
id = "senders"
data_dir = "{}"
[ingress]
listen = "127.0.0.1:0"
[admin]
listen = ""
[upstream]
servers = ["{upstream}"]
[[source]]
name = "twilio"
verify = "twilio"
secrets = ["env:JETEDGE_TEST_TWILIO"]
url = "{TWILIO_URL}"
type = "const:call.digits"
id = "/CallSid"
[[source]]
name = "zoom"
verify = "zoom"
secrets = ["env:JETEDGE_TEST_ZOOM"]
[[source]]
name = "billing"
verify = "standard-webhooks"
secrets = ["env:JETEDGE_TEST_WHPK"]
"#,
        dir.display()
    )
}

fn hmac_hex(key: &[u8], text: &[u8]) -> String {
    hex::encode(jetedge::signature::hmac_sha256(key, &[text]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_zoom_and_ed25519_senders_are_taken_as_they_sign() {
    let nats = NatsServer::start();
    let dir = TempDir::new("senders");
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = SigningKey::from_bytes(&[42; 32]);
    let whpk = format!("whpk_{}", b64.encode(key.verifying_key().to_bytes()));
    let node = Node::start(parse_config(&config(dir.path(), &nats.url(), &whpk)))
        .await
        .unwrap();
    let client = Client::new(node.ingress_addr);

    // Twilio's documented request, form-encoded as Twilio posts it.
    let form = "CallSid=CA1234567890ABCDE&Caller=%2B14158675310&Digits=1234&From=%2B14158675310&To=%2B18005551212";
    let headers = |sig: &str| {
        vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-twilio-signature".to_string(), sig.to_string()),
        ]
    };
    let r = client
        .post(
            "/v1/webhooks/twilio",
            &headers("GvWf1cFY/Q7PnoempGyD5oXAezc="),
            form.into(),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let r = client
        .post(
            "/v1/webhooks/twilio",
            &headers("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            form.into(),
        )
        .await;
    assert_eq!(r.status, 401, "another request's signature: {r:?}");

    // Zoom checks the endpoint before it sends events.
    let ts = now().to_string();
    let zoom = |body: &serde_json::Value| {
        let body = body.to_string();
        let sig = hmac_hex(b"zoom_secret_token", format!("v0:{ts}:{body}").as_bytes());
        let h = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-zm-request-timestamp".to_string(), ts.clone()),
            ("x-zm-signature".to_string(), format!("v0={sig}")),
        ];
        (h, body.into_bytes())
    };
    let (h, body) = zoom(
        &json!({"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}}),
    );
    let r = client.post("/v1/webhooks/zoom", &h, body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        r.body["encryptedToken"],
        hmac_hex(b"zoom_secret_token", b"qgg8vlvZRS6UYooatFL8Aw")
    );
    let (h, body) = zoom(
        &json!({"event": "meeting.started", "event_ts": 1, "payload": {"object": {"id": "85"}}}),
    );
    assert_eq!(client.post("/v1/webhooks/zoom", &h, body).await.status, 202);

    // Standard Webhooks v1a: ed25519 under the sender's whpk_ public key.
    let body = br#"{"type":"invoice.paid","amount":12}"#;
    let msg = [b"msg_77.", ts.as_bytes(), b".", body].concat();
    let sig = format!("v1a,{}", b64.encode(key.sign(&msg).to_bytes()));
    let h = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("webhook-id".to_string(), "msg_77".to_string()),
        ("webhook-timestamp".to_string(), ts.clone()),
        ("webhook-signature".to_string(), sig),
    ];
    assert_eq!(
        client
            .post("/v1/webhooks/billing", &h, body.to_vec())
            .await
            .status,
        202
    );

    let js = jetstream(&[nats.url()]).await;
    let msgs = read_stream(&js, "EDGE", 3, Duration::from_secs(20)).await;
    let subjects: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "events.twilio.call.digits",
            "events.zoom.meeting.started",
            "events.billing.invoice.paid"
        ],
        "the validation request is answered, not stored"
    );
    let call = msgs[0].json();
    assert_eq!(call["data"]["Digits"], "1234");
    assert_eq!(call["data"]["Caller"], "+14158675310");
    assert_eq!(call["idempotencykey"], "CA1234567890ABCDE");
    node.shutdown().await;
}
