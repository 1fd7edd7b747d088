//! The pipeline's cost per event: routing through 10 rules and redaction
//! with 10 rules over a 1 KiB order that carries personal data, measured in
//! process (no HTTP, no disk) against the same events with no rules.

use jetedge::config::Config;
use jetedge::pipeline::{redact::COUNTED, Normalised, Rules, SourceShape};
use std::time::Instant;

/// Nine routes that do not match a `shop` order (so each event is tested
/// against all of them) and a tenth that forwards it; ten redaction rules,
/// half by path and half by detector.
pub const RULES: &str = r#"
[[route]]
match = { prefix = { type = "debug." } }
action = "drop"
[[route]]
match = { suffix = { type = ".test" } }
action = "drop"
[[route]]
match = { exact = { type = "order.deleted", source = "/jetedge/test-node/crm" } }
action = "drop"
[[route]]
match = { path = "/data/livemode", in = [false] }
action = "drop"
[[route]]
match = { all = [ { prefix = { type = "order." } }, { path = "/data/total", gt = 100000 } ] }
action = "drop"
[[route]]
match = { any = [ { prefix = { type = "audit." } }, { prefix = { type = "log." } } ] }
action = "drop"
[[route]]
match = { not = { prefix = { source = "/jetedge/" } } }
action = "drop"
[[route]]
match = { path = "/data/region", in = ["antarctica", "moon"] }
action = "drop"
[[route]]
match = { path = "/data/sandbox", exists = true }
action = "drop"
[[route]]
match = { prefix = { type = "order." } }
action = "forward"

[[redact]]
paths = ["/data/customer/email"]
action = "hash"
key = "env:JETEDGE_BENCH_REDACT_KEY"
[[redact]]
paths = ["/data/customer/phone"]
action = "mask"
keep_last = 2
[[redact]]
paths = ["/data/items/*/gift_message"]
action = "remove"
[[redact]]
paths = ["/data/shipping/street"]
[[redact]]
sources = ["shop"]
paths = ["/data/customer/birthdate"]
action = "remove"
[[redact]]
detectors = ["payment_card"]
[[redact]]
detectors = ["email", "phone"]
[[redact]]
detectors = ["ipv4", "ipv6"]
[[redact]]
types = ["order.*"]
detectors = ["iban", "us_ssn"]
[[redact]]
patterns = ["EMP-\\d{6}"]
"#;

/// A 1 KiB order webhook carrying personal data; `n` makes each distinct.
pub fn body(n: usize) -> Vec<u8> {
    let mut v = serde_json::json!({
        "type": "order.created", "id": format!("ORD-2026-{n:06}"), "livemode": true, "region": "emea",
        "total": 129.90, "currency": "EUR", "created_at": "2026-11-24T10:15:00Z",
        "customer": {"id": format!("cus_{n}"), "email": format!("buyer{n}@example.com"), "phone": "+4915112345678",
                     "birthdate": "1990-04-01", "name": "Ann Example"},
        "shipping": {"street": "Hauptstrasse 12", "city": "Berlin", "zip": "10115", "country": "DE"},
        "payment": {"method": "card", "card": "4111 1111 1111 1111", "ip": "203.0.113.7",
                    "iban": "DE89370400440532013000"},
        "items": [
            {"sku": "SKU-12345-XL", "qty": 1, "price": 99.90, "gift_message": "Happy birthday!"},
            {"sku": "SKU-67890-M", "qty": 2, "price": 15.00, "gift_message": ""}
        ],
        "note": "",
    });
    let pad = 1024usize.saturating_sub(v.to_string().len());
    let text = "Customer asked to call back on +1 (415) 555-2671 about order; agent EMP-004211. ";
    v["note"] = serde_json::Value::String(text.chars().cycle().take(pad).collect());
    v.to_string().into_bytes()
}

pub struct Cost {
    pub with_rules_us: f64,
    pub without_us: f64,
}

pub fn cost(n: usize) -> Cost {
    std::env::set_var("JETEDGE_BENCH_REDACT_KEY", "bench-site-key");
    let with = per_event(n, RULES);
    let without = per_event(n, "");
    Cost {
        with_rules_us: with,
        without_us: without,
    }
}

/// Microseconds per event for routing + redaction of `n` fresh events.
fn per_event(n: usize, rules: &str) -> f64 {
    let text = format!(
        "[node]\nid = \"test-node\"\n[[source]]\nname = \"shop\"\nverify = \"none\"\n{rules}"
    );
    let cfg = Config::from_toml(&text, std::iter::empty()).expect("bench rules are valid");
    let rules = Rules::compile(&cfg).expect("bench rules compile");
    let shape = SourceShape::new("test-node", "events", &cfg.sources[0]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut events: Vec<Normalised> = (0..n)
        .map(|i| {
            let v = serde_json::from_slice(&body(i)).unwrap();
            shape
                .from_webhook(&hyper::HeaderMap::new(), v, now)
                .unwrap()
        })
        .collect();
    let mut counts = [0u64; COUNTED.len()];
    let started = Instant::now();
    for ev in &mut events {
        std::hint::black_box(rules.apply("shop", ev, &mut counts));
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    if !rules.redactor.is_empty() {
        assert!(
            counts.iter().sum::<u64>() >= 8 * n as u64,
            "the rules did not fire: {counts:?}"
        );
    }
    us
}
