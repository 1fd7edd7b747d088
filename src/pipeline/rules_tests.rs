//! Routing and redaction as a site configures them: rules written in TOML,
//! compiled by `Rules::compile`, applied to events shaped by `SourceShape`.

use super::*;
use crate::config::Config;
use serde_json::json;

const BASE: &str = r#"
[node]
id = "n1"
[[source]]
name = "shop"
verify = "none"
[[source]]
name = "crm"
verify = "none"
"#;

fn config(rules: &str) -> Result<Config, Vec<Problem>> {
    // Secret references read the process environment.
    std::env::set_var("JETEDGE_TEST_REDACT_KEY", "site-key-1");
    Config::from_toml(&format!("{BASE}\n{rules}"), std::iter::empty())
}

fn rules(text: &str) -> Rules {
    Rules::compile(&config(text).unwrap()).unwrap()
}

/// An event of `source` and `type` whose payload (`/data`) is `data`
/// plus its `type` member, as a webhook makes it.
fn event(source: &str, type_: &str, data: serde_json::Value) -> Normalised {
    let cfg = config("").unwrap();
    let src = cfg.sources.iter().find(|s| s.name == source).unwrap();
    let shape = SourceShape::new("n1", "events", src).unwrap();
    let mut body = data;
    body["type"] = json!(type_);
    shape
        .from_webhook(&hyper::HeaderMap::new(), body, OffsetDateTime::now_utc())
        .unwrap()
}

fn decide(r: &Rules, source: &str, type_: &str, data: serde_json::Value) -> Decision {
    let mut n = event(source, type_, data);
    r.apply(source, &mut n, &mut [0; redact::COUNTED.len()])
}

fn forwarded(d: &Decision) -> bool {
    matches!(d, Decision::Forward(_))
}

#[test]
fn each_attribute_dialect_matches_as_the_subscriptions_api_says() {
    let r = rules(
        r#"
[routing]
default_action = "drop"
[[route]]
match = { exact = { type = "order.created", source = "/jetedge/n1/shop" } }
action = "forward"
[[route]]
match = { prefix = { type = "invoice." } }
action = "forward"
[[route]]
match = { suffix = { type = ".deleted" } }
action = "forward"
"#,
    );
    assert!(forwarded(&decide(&r, "shop", "order.created", json!({}))));
    assert!(
        !forwarded(&decide(&r, "crm", "order.created", json!({}))),
        "exact needs every attribute"
    );
    assert!(!forwarded(&decide(
        &r,
        "shop",
        "order.created.v2",
        json!({})
    )));
    assert!(forwarded(&decide(&r, "crm", "invoice.paid", json!({}))));
    assert!(forwarded(&decide(&r, "crm", "contact.deleted", json!({}))));
    assert_eq!(
        decide(&r, "crm", "contact.updated", json!({})),
        Decision::Drop(None),
        "the default action"
    );
}

#[test]
fn all_any_not_nest() {
    let r = rules(
        r#"
[[route]]
match = { all = [ { prefix = { type = "order." } }, { not = { any = [ { suffix = { type = ".test" } }, { path = "/data/sandbox", exists = true } ] } } ] }
action = "forward"
[[route]]
action = "drop"
"#,
    );
    assert!(forwarded(&decide(&r, "shop", "order.created", json!({}))));
    assert!(!forwarded(&decide(&r, "shop", "order.test", json!({}))));
    assert!(!forwarded(&decide(
        &r,
        "shop",
        "order.created",
        json!({"sandbox": true})
    )));
    assert!(
        forwarded(&decide(
            &r,
            "shop",
            "order.created",
            json!({"sandbox": null})
        )),
        "null counts as absent"
    );
    assert!(
        !forwarded(&decide(&r, "shop", "invoice.paid", json!({}))),
        "a rule without match catches the rest"
    );
}

#[test]
fn path_operators_read_the_payload() {
    let r = rules(
        r#"
[routing]
default_action = "drop"
[[route]]
match = { all = [ { path = "/data/region", in = ["apac", "emea"] }, { path = "/data/amount", gte = 100, lt = 1000 } ] }
action = "forward"
[[route]]
match = { path = "/data/plan/tier", in = [3] }
action = "forward"
[[route]]
match = { path = "/data/items/0/qty", gt = 10 }
action = "forward"
[[route]]
match = { path = "/data/score", lte = -1.5 }
action = "forward"
"#,
    );
    let go = |data| forwarded(&decide(&r, "shop", "t", data));
    assert!(go(json!({"region": "apac", "amount": 100})));
    assert!(
        go(json!({"region": "emea", "amount": "999.99"})),
        "numbers in strings count"
    );
    assert!(!go(json!({"region": "amer", "amount": 500})));
    assert!(
        !go(json!({"region": "apac", "amount": 1000})),
        "lt is strict"
    );
    assert!(
        !go(json!({"region": "apac"})),
        "a missing number fails a comparison"
    );
    assert!(go(json!({"plan": {"tier": 3}})), "in matches numbers too");
    assert!(go(json!({"items": [{"qty": 11}]})), "pointers index arrays");
    assert!(!go(json!({"items": [{"qty": 10}]})));
    assert!(go(json!({"score": -2})));
}

#[test]
fn first_match_wins_and_subject_templates_render() {
    let r = rules(
        r#"
[[route]]
match = { prefix = { type = "audit." } }
action = "forward"
subject = "{prefix}.audit.{source}.{type}"
[[route]]
match = { prefix = { type = "audit." } }
action = "drop"
"#,
    );
    let mut n = event("crm", "audit.login", json!({}));
    let d = r.apply("crm", &mut n, &mut [0; redact::COUNTED.len()]);
    assert_eq!(
        d,
        Decision::Forward(Some("events.audit.crm.audit.login".into()))
    );
    assert_eq!(n.subject, "events.audit.crm.audit.login");
    assert_eq!(
        decide(&r, "crm", "order.x", json!({})),
        Decision::Forward(None)
    );
}

#[test]
fn bad_rules_are_reported_with_their_key_paths() {
    let problems = config(
        r#"
[[route]]
match = { prefx = { type = "a" } }
action = "forward"
[[route]]
match = { all = [ { path = "data/region", in = ["x"] } ] }
action = "forward"
[[route]]
match = { path = "/data/x", between = 3 }
action = "drop"
[[route]]
action = "forward"
subject = "a.{nope}"
[[redact]]
paths = ["/data/a~2b"]
[[redact]]
patterns = ["(unclosed"]
[[redact]]
detectors = ["email"]
action = "hash"
[[redact]]
detectors = ["passport"]
sources = ["nosuch"]
"#,
    )
    .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "route[0].match.prefx",
        "route[1].match.all[0].path",
        "route[2].match.between",
        "route[3].subject",
        "redact[0].paths[0]",
        "redact[1].patterns[0]",
        "redact[2].key",
        "redact[3].detectors[0]",
        "redact[3].sources[0]",
    ] {
        assert!(
            paths.contains(&want),
            "{want} not reported in {problems:#?}"
        );
    }
    let unknown = problems
        .iter()
        .find(|p| p.path == "route[0].match.prefx")
        .unwrap();
    assert!(
        unknown.message.contains("unknown filter dialect"),
        "{unknown:?}"
    );
}

#[test]
fn redaction_by_path_with_wildcards_each_action() {
    let r = rules(
        r#"
[[redact]]
paths = ["/data/customer/email"]
action = "mask"
[[redact]]
paths = ["/data/items/*/card"]
action = "remove"
[[redact]]
paths = ["/data/customer/phone"]
action = "hash"
key = "env:JETEDGE_TEST_REDACT_KEY"
"#,
    );
    let data = json!({
        "customer": {"email": "ann@example.com", "phone": "+4915112345678", "name": "Ann"},
        "items": [{"sku": "A1", "card": "4111111111111111"}, {"sku": "B2", "card": "5500000000000004"}]
    });
    let mut n = event("shop", "order.created", data);
    let mut counts = [0; redact::COUNTED.len()];
    r.apply("shop", &mut n, &mut counts);
    let d = n.envelope.data.as_ref().unwrap();
    assert_eq!(d["customer"]["email"], "***************");
    assert_eq!(d["customer"]["name"], "Ann");
    assert_eq!(d["items"][0], json!({"sku": "A1"}));
    assert_eq!(d["items"][1], json!({"sku": "B2"}));
    let token = d["customer"]["phone"].as_str().unwrap();
    assert_eq!(
        token,
        redact::token(b"site-key-1", "+4915112345678"),
        "hash is HMAC-SHA256 with the site key"
    );
    assert!(token.starts_with("tok_") && token.len() == 36);
    assert_eq!(counts[0], 4, "four values redacted by path");
    let listed = &n.envelope.redacted;
    for p in [
        "path:/data/customer/email",
        "path:/data/items/0/card",
        "path:/data/items/1/card",
        "path:/data/customer/phone",
    ] {
        assert!(listed.iter().any(|x| x == p), "{p} missing from {listed:?}");
    }
}

#[test]
fn detectors_scan_strings_and_mask_keeps_what_is_configured() {
    let r = rules(
        r#"
[[redact]]
sources = ["shop"]
types = ["support.*"]
detectors = ["email", "payment_card", "phone", "ipv4", "ipv6", "iban", "us_ssn"]
patterns = ["EMP-\\d{6}"]
"#,
    );
    let text = "Ann (ann@example.com, +14155552671) paid with 4111-1111-1111-1111 from 10.1.2.3 / 2001:db8::1, \
                IBAN DE89370400440532013000, SSN 123-45-6789, badge EMP-004211. Order ORD-2024-000123, v1.2.3.";
    let mut n = event("shop", "support.ticket", json!({"ticket": {"body": text}}));
    let mut counts = [0; redact::COUNTED.len()];
    r.apply("shop", &mut n, &mut counts);
    let out = n.envelope.data.as_ref().unwrap()["ticket"]["body"]
        .as_str()
        .unwrap()
        .to_string();
    for gone in [
        "ann@example.com",
        "4155552671",
        "4111-1111-1111-1111",
        "10.1.2.3",
        "2001:db8::1",
        "DE89370400440532013000",
        "123-45-6789",
        "EMP-004211",
    ] {
        assert!(!out.contains(gone), "{gone} survived: {out}");
    }
    assert!(
        out.contains("***@example.com"),
        "email keeps its domain: {out}"
    );
    assert!(
        out.contains("****-****-****-1111"),
        "card keeps its last 4: {out}"
    );
    assert!(
        out.contains("ORD-2024-000123") && out.contains("v1.2.3"),
        "look-alikes stay: {out}"
    );
    assert_eq!(counts.iter().sum::<u64>(), 8);
    assert!(n
        .envelope
        .redacted
        .contains(&"email:/data/ticket/body".to_string()));

    // Out of scope: another type, another source.
    for (source, type_) in [("shop", "order.created"), ("crm", "support.ticket")] {
        let mut n = event(source, type_, json!({"body": text}));
        r.apply(source, &mut n, &mut [0; redact::COUNTED.len()]);
        assert_eq!(n.envelope.data.as_ref().unwrap()["body"], text);
        assert!(n.envelope.redacted.is_empty());
    }
}

#[test]
fn detectors_under_paths_only_scan_there() {
    let r = rules(
        r#"
[[redact]]
paths = ["/data/notes/*"]
detectors = ["email"]
action = "remove"
"#,
    );
    let mut n = event(
        "shop",
        "t",
        json!({"notes": ["mail bob@example.org now"], "contact": "eve@example.org"}),
    );
    r.apply("shop", &mut n, &mut [0; redact::COUNTED.len()]);
    let d = n.envelope.data.as_ref().unwrap();
    assert_eq!(d["notes"][0], "mail  now");
    assert_eq!(d["contact"], "eve@example.org");
}

#[test]
fn a_dropped_event_is_not_redacted() {
    let r = rules(
        r#"
[[route]]
match = { prefix = { type = "debug." } }
action = "drop"
[[redact]]
detectors = ["email"]
"#,
    );
    let mut n = event("shop", "debug.trace", json!({"who": "ann@example.com"}));
    let mut counts = [0; redact::COUNTED.len()];
    assert_eq!(
        r.apply("shop", &mut n, &mut counts),
        Decision::Drop(Some(0))
    );
    assert_eq!(counts.iter().sum::<u64>(), 0);
}

#[test]
fn debug_output_never_shows_a_key() {
    let r = rules(
        r#"
[[redact]]
paths = ["/data/customer/phone"]
action = "hash"
key = "env:JETEDGE_TEST_REDACT_KEY"
"#,
    );
    let shown = format!("{r:?}");
    assert!(shown.contains("Hash(***)"), "{shown}");
    assert!(!shown.contains("site-key-1"), "{shown}");
    let source = crate::config::SourceConfig::new("s", crate::config::Scheme::Bearer);
    let v = crate::signature::Verifier::new(&source, &[crate::config::Secret::new("t0ken-value")])
        .unwrap();
    let shown = format!("{v:?}");
    assert!(
        !shown.contains("t0ken-value") && shown.contains("***"),
        "{shown}"
    );
    let cfg = config("").unwrap();
    assert!(!format!("{cfg:?}").contains("site-key-1"));
}
