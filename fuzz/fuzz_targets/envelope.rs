//! Envelope normalisation from arbitrary bodies and headers, as each kind
//! of source shapes it (a webhook with places in the body and headers, a
//! CloudEvent, a batch of them): never a panic; what is accepted has a safe
//! subject and serialises to a CloudEvent that parses back.
#![no_main]

use jetedge::config::Config;
use jetedge::pipeline::{Normalised, SourceShape};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

const CONFIG: &str = r#"
[node]
id = "fuzz"
[[source]]
name = "events"
verify = "none"
[[source]]
name = "shop"
verify = "none"
headers = ["X-Shop-Domain"]
id = "header:webhook-id"
type = "/type"
time = "/timestamp"
[[source]]
name = "gh"
verify = "none"
id = "header:x-github-delivery"
type = "header:x-github-event"
[[source]]
name = "pay"
verify = "none"
id = "/id"
type = "/data/object/kind"
time = "/created"
"#;

fn shapes() -> &'static [SourceShape] {
    static SHAPES: OnceLock<Vec<SourceShape>> = OnceLock::new();
    SHAPES.get_or_init(|| {
        let cfg = Config::from_toml(CONFIG, std::iter::empty()).expect("valid config");
        cfg.sources
            .iter()
            .map(|s| SourceShape::new("fuzz", "events", s).expect("valid source"))
            .collect()
    })
}

fn check(n: Normalised) {
    assert!(
        n.subject
            .split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace)),
        "unsafe subject {:?}",
        n.subject
    );
    let mut out = Vec::new();
    n.envelope.write_json(&mut out);
    let v: Value = serde_json::from_slice(&out).expect("the envelope is JSON");
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["id"].as_str(), Some(n.envelope.id.as_str()));
    assert!(v["type"].as_str().is_some_and(|t| !t.is_empty()));
}

fuzz_target!(|data: &[u8]| {
    let (headers, body) = common::headers_and_body(data);
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return; // answered 400 malformed_json before any shaping
    };
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let shapes = shapes();
    for shape in &shapes[1..] {
        if let Ok(n) = shape.from_webhook(&headers, json.clone(), now) {
            check(n);
        }
    }
    let events = &shapes[0];
    match &json {
        Value::Array(batch) => {
            for ev in batch {
                if let Ok(n) = events.from_cloudevent(&headers, ev.clone(), now) {
                    check(n);
                }
            }
        }
        _ => {
            if let Ok(n) = events.from_cloudevent(&headers, json, now) {
                check(n);
            }
        }
    }
});
