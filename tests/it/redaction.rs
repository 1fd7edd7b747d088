//! Redaction over a corpus of realistic payloads (orders, payments, signups,
//! support tickets) with personal data planted at random depths, and a
//! property test over arbitrary JSON. Pure pipeline: no server needed.

use jetedge::config::Config;
use jetedge::pipeline::{redact::COUNTED, Normalised, Rules, SourceShape};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const ALL_DETECTORS: &str = r#"
[[source]]
name = "shop"
verify = "none"
[[redact]]
detectors = ["email", "payment_card", "phone", "ipv4", "ipv6", "iban", "us_ssn"]
action = "ACTION"
key = "env:JETEDGE_CORPUS_KEY"
"#;

fn rules(action: &str) -> Rules {
    std::env::set_var("JETEDGE_CORPUS_KEY", "corpus-site-key");
    let cfg =
        Config::from_toml(&ALL_DETECTORS.replace("ACTION", action), std::iter::empty()).unwrap();
    Rules::compile(&cfg).unwrap()
}

fn redact(rules: &Rules, type_: &str, data: Value) -> (Normalised, [u64; COUNTED.len()]) {
    let cfg =
        Config::from_toml(&ALL_DETECTORS.replace("ACTION", "mask"), std::iter::empty()).unwrap();
    let shape = SourceShape::new("n1", "events", &cfg.sources[0]).unwrap();
    let mut body = data;
    body["type"] = json!(type_);
    let mut n = shape
        .from_webhook(
            &hyper::HeaderMap::new(),
            body,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let mut counts = [0; COUNTED.len()];
    rules.apply("shop", &mut n, &mut counts);
    (n, counts)
}

// ---- generators of personal data (valid by each kind's own rules) ----

fn digits(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10)))
        .collect()
}

fn luhn_complete(partial: &str) -> String {
    let sum: u32 = partial
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = (b - b'0') as u32;
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    format!("{partial}{}", (10 - sum % 10) % 10)
}

fn card(rng: &mut StdRng) -> String {
    let (prefix, len) = [
        ("4", 16),
        ("51", 16),
        ("2221", 16),
        ("37", 15),
        ("6011", 16),
    ][rng.gen_range(0..5)];
    let raw = luhn_complete(&format!("{prefix}{}", digits(rng, len - prefix.len() - 1)));
    match rng.gen_range(0..3) {
        0 => raw,
        sep => {
            let sep = if sep == 1 { ' ' } else { '-' };
            let chunks: Vec<String> = raw
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            chunks.join(&sep.to_string())
        }
    }
}

fn iban(rng: &mut StdRng) -> String {
    let bban = digits(rng, 18);
    // Check digits: 98 - (BBAN + "DE00" as numbers) mod 97.
    let text = format!("{bban}131400");
    let rem = text
        .bytes()
        .fold(0u32, |r, b| (r * 10 + (b - b'0') as u32) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

fn pii(rng: &mut StdRng) -> String {
    let names = ["ann", "bo.lee", "chen_w", "dmitri+shop", "eve"];
    let domains = ["example.com", "mail.example.org", "corp.example.co.uk"];
    match rng.gen_range(0..7) {
        0 => format!(
            "{}{}@{}",
            names[rng.gen_range(0..5)],
            rng.gen_range(1..999),
            domains[rng.gen_range(0..3)]
        ),
        1 => card(rng),
        2 => match rng.gen_range(0..2) {
            0 => format!("+{}{}", rng.gen_range(1..99), digits(rng, 9)),
            _ => format!(
                "({}) {}-{}",
                rng.gen_range(201..989),
                rng.gen_range(200..999),
                digits(rng, 4)
            ),
        },
        3 => format!(
            "{}.{}.{}.{}",
            rng.gen_range(1..223),
            rng.gen_range(0..255),
            rng.gen_range(0..255),
            rng.gen_range(1..254)
        ),
        4 => format!(
            "2001:db8:{:x}::{:x}:{:x}",
            rng.gen_range(1..0xffff),
            rng.gen_range(1..0xffff),
            rng.gen_range(1..0xffff)
        ),
        5 => iban(rng),
        _ => format!(
            "{}-{:02}-{:04}",
            rng.gen_range(100..665),
            rng.gen_range(1..99),
            rng.gen_range(1..9999)
        ),
    }
}

/// Values that look like personal data to a careless detector but are not.
fn look_alike(rng: &mut StdRng) -> String {
    match rng.gen_range(0..8) {
        0 => format!(
            "ORD-{}-{:06}",
            rng.gen_range(2019..2027),
            rng.gen_range(0..999_999)
        ),
        1 => format!(
            "SKU-{}-{}",
            rng.gen_range(10000..99999),
            ["XL", "M", "S"][rng.gen_range(0..3)]
        ),
        2 => format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            rng.gen_range(1..13),
            rng.gen_range(1..29),
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60)
        ),
        3 => format!("{}", rng.gen_range(1_600_000_000_000u64..1_800_000_000_000)),
        4 => format!(
            "v{}.{}.{}",
            rng.gen_range(0..20),
            rng.gen_range(0..50),
            rng.gen_range(0..200)
        ),
        5 => format!("{}.{:02}", rng.gen_range(1..100_000), rng.gen_range(0..100)),
        6 => format!("INV{}", digits(rng, 10)),
        _ => format!(
            "{}:{:02}:{:02}",
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60)
        ),
    }
}

/// Wraps `v` in 0-4 random levels of objects and arrays.
fn bury(rng: &mut StdRng, v: Value) -> Value {
    (0..rng.gen_range(0..5)).fold(v, |inner, _| match rng.gen_range(0..3) {
        0 => json!([inner]),
        1 => json!({"meta": {"note": inner}}),
        _ => json!({"value": inner, "n": rng.gen_range(0..9)}),
    })
}

/// One realistic payload; returns it with the planted PII and look-alikes.
fn payload(rng: &mut StdRng) -> (&'static str, Value, Vec<String>, Vec<String>) {
    let planted: Vec<String> = (0..rng.gen_range(2..6)).map(|_| pii(rng)).collect();
    let decoys: Vec<String> = (0..rng.gen_range(2..6)).map(|_| look_alike(rng)).collect();
    let p = |i: usize| planted[i % planted.len()].clone();
    let (kind, mut v) = match rng.gen_range(0..4) {
        0 => (
            "order.created",
            json!({"order_id": decoys[0], "customer": {"email": p(0), "phone": p(1)},
                   "items": [{"sku": decoys[1], "qty": 2, "price": 19.99}], "total": 39.98}),
        ),
        1 => (
            "payment.succeeded",
            json!({"payment": {"card": p(0), "amount": "120.00", "billing": {"ip": p(1)}}}),
        ),
        2 => (
            "user.signup",
            json!({"profile": {"contact": format!("reach me at {} or {}", p(0), p(1))}, "client": decoys[1]}),
        ),
        _ => (
            "support.ticket",
            json!({"ticket": {"subject": decoys[0], "body": format!("Hi, my details: {}. Thanks", p(0))}}),
        ),
    };
    let extra: Vec<Value> = planted
        .iter()
        .map(|x| bury(rng, json!(format!("note: {x}"))))
        .collect();
    let lookalikes: Vec<Value> = decoys.iter().map(|d| bury(rng, json!(d))).collect();
    v["extra"] = json!(extra);
    v["refs"] = json!(lookalikes);
    (kind, v, planted, decoys)
}

#[test]
fn no_planted_pii_survives_and_no_look_alike_is_touched() {
    let mut rng = StdRng::seed_from_u64(0x006a_6574_6564_6765);
    for action in ["mask", "remove", "hash"] {
        let r = rules(action);
        for case in 0..250 {
            let (type_, data, planted, decoys) = payload(&mut rng);
            let (n, counts) = redact(&r, type_, data.clone());
            let out = serde_json::to_string(&n.envelope.data).unwrap();
            for p in &planted {
                let bare: String = p.chars().filter(char::is_ascii_alphanumeric).collect();
                assert!(
                    !out.contains(p.as_str()),
                    "{action} case {case}: {p:?} survived in {out}"
                );
                let out_bare: String = out.chars().filter(char::is_ascii_alphanumeric).collect();
                if p.contains('@') {
                    continue; // a masked email keeps its domain by design
                }
                assert!(
                    !out_bare.contains(&bare),
                    "{action} case {case}: the characters of {p:?} survived in {out}"
                );
            }
            for d in &decoys {
                assert!(
                    out.contains(d.as_str()),
                    "{action} case {case}: look-alike {d:?} was changed: {out}"
                );
            }
            assert!(
                counts.iter().sum::<u64>() >= planted.len() as u64,
                "case {case}: {counts:?}"
            );
            assert!(!n.envelope.redacted.is_empty());
            let listed = serde_json::to_string(&n.envelope.redacted).unwrap();
            assert!(
                planted.iter().all(|p| !listed.contains(p.as_str())),
                "redacted lists places, never values"
            );
        }
    }
}

// ---- property: arbitrary JSON ----

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[a-z0-9 .:@+()-]{0,40}".prop_map(Value::String),
        Just(json!("card 4111 1111 1111 1111 mail a@b.co ip 10.0.0.1")),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z~/*]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Same structure: same object keys, same array lengths, same non-string leaves.
fn same_shape(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_shape(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_shape(v, w))
        }
        (Value::String(_), Value::String(_)) => true,
        (x, y) => x == y,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn detectors_never_panic_and_keep_the_shape(data in arb_json(), action in prop_oneof![Just("mask"), Just("hash"), Just("remove")]) {
        let r = rules(action);
        let (n, _) = redact(&r, "t", json!({"payload": data.clone()}));
        let out = n.envelope.data.clone().unwrap();
        let text = serde_json::to_string(&out).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &out);
        let expected = json!({"payload": data, "type": "t"});
        prop_assert!(same_shape(&expected, &out), "shape changed: {} -> {}", expected, out);
    }

    #[test]
    fn path_rules_with_wildcards_never_panic(data in arb_json(), path in "(/[a-z*~01]{0,3}){1,4}") {
        std::env::set_var("JETEDGE_CORPUS_KEY", "corpus-site-key");
        for action in ["mask", "remove", "hash"] {
            let text = format!("[[source]]\nname = \"shop\"\nverify = \"none\"\n[[redact]]\npaths = [\"/data{path}\"]\naction = \"{action}\"\nkey = \"env:JETEDGE_CORPUS_KEY\"\n");
            let Ok(cfg) = Config::from_toml(&text, std::iter::empty()) else { continue };
            let r = Rules::compile(&cfg).unwrap();
            let (n, _) = redact(&r, "t", json!({"payload": data.clone()}));
            let out = serde_json::to_string(&n.envelope.data).unwrap();
            prop_assert!(serde_json::from_str::<Value>(&out).is_ok());
        }
    }
}
