//! Filters and redaction over arbitrary JSON: a filter expression from
//! arbitrary text, and a site's routes and redaction rules (every detector,
//! paths with wildcards, each action) applied to arbitrary event data.
//! Never a panic; a redacted event is still JSON and lists what it changed.
#![no_main]

use jetedge::config::Config;
use jetedge::pipeline::{filter::Filter, redact, Rules, SourceShape};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[node]
id = "fuzz"
[[source]]
name = "shop"
verify = "none"
[routing]
default_action = "forward"
[[route]]
match = { any = [ { suffix = { type = ".test" } }, { path = "/data/livemode", in = [false] } ] }
action = "drop"
[[route]]
match = { all = [ { prefix = { type = "order." } }, { path = "/data/total", gte = 1000, lt = 1e9 } ] }
action = "forward"
subject = "events.big.{type}"
[[route]]
match = { path = "/data/items/0/qty", gt = 10 }
action = "forward"
[[redact]]
paths = ["/data/customer/email", "/data/items/*/card", "/data/*/ssn"]
action = "mask"
[[redact]]
paths = ["/data/customer/phone"]
action = "hash"
key = "env:JETEDGE_FUZZ_REDACT_KEY"
[[redact]]
detectors = ["email", "payment_card", "phone", "ipv4", "ipv6", "iban", "us_ssn"]
patterns = ["EMP-\\d{6}"]
action = "remove"
[[redact]]
paths = ["/data/notes/*"]
detectors = ["email"]
action = "mask"
"#;

fn setup() -> &'static (Rules, SourceShape) {
    static SETUP: OnceLock<(Rules, SourceShape)> = OnceLock::new();
    SETUP.get_or_init(|| {
        std::env::set_var("JETEDGE_FUZZ_REDACT_KEY", "fuzz-key");
        let cfg = Config::from_toml(CONFIG, std::iter::empty()).expect("valid config");
        let shape = SourceShape::new("fuzz", "events", &cfg.sources[0]).expect("valid source");
        (Rules::compile(&cfg).expect("valid rules"), shape)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick & 1 == 1 {
        // A route's `match` as an operator could write it.
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(table) = toml::from_str::<toml::Table>(&format!("match = {text}")) {
            let _ = Filter::compile(&table["match"], "route[0].match", &mut Vec::new());
        }
        return;
    }
    let mut body = match serde_json::from_slice::<Value>(rest) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => serde_json::json!({ "value": other }),
        Err(_) => serde_json::json!({ "text": String::from_utf8_lossy(rest) }),
    };
    let types = ["order.created", "order.test", "support.ticket"];
    body["type"] = types[(pick as usize >> 1) % types.len()].into();
    let (rules, shape) = setup();
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let mut n = shape
        .from_webhook(&hyper::HeaderMap::new(), body, now)
        .expect("an object with a safe type is an event");
    let mut counts = [0u64; redact::COUNTED.len()];
    rules.apply("shop", &mut n, &mut counts);
    let mut out = Vec::new();
    n.envelope.write_json(&mut out);
    let v: Value = serde_json::from_slice(&out).expect("the redacted envelope is JSON");
    let listed = v["redacted"].as_array().map_or(0, Vec::len);
    let counted: u64 = counts.iter().sum();
    assert!(
        counted == 0 || listed > 0,
        "{counted} values redacted but none listed"
    );
});
