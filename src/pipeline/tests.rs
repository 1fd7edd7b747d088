use super::*;
use crate::config::SourceConfig;
use crate::signature::headers;
use serde_json::json;

fn source(verify: Scheme) -> SourceConfig {
    SourceConfig::new("shop", verify)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
}

#[test]
fn standard_webhook_becomes_an_envelope_with_its_id_as_key() {
    let shape = SourceShape::new("store-1", "events", &source(Scheme::StandardWebhooks)).unwrap();
    let h = headers(&[
        ("webhook-id", "msg_42"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]);
    let body =
        json!({"type": "order.created", "timestamp": "2024-05-01T10:00:00Z", "data": {"n": 1}});
    let n = shape.from_webhook(&h, body.clone(), now()).unwrap();
    assert_eq!(n.subject, "events.shop.order.created");
    let e = &n.envelope;
    assert_eq!(e.source, "/jetedge/store-1/shop");
    assert_eq!(e.type_, "order.created");
    assert_eq!(e.time, "2024-05-01T10:00:00Z");
    assert_eq!(e.idempotencykey.as_deref(), Some("msg_42"));
    assert_eq!(e.correlationid, "msg_42");
    assert_eq!(
        e.traceparent,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(e.data.as_ref(), Some(&body));
    let wire: Value = serde_json::from_slice(&e.to_json()).unwrap();
    assert_eq!(wire["specversion"], "1.0");
    assert_eq!(wire["datacontenttype"], "application/json");
}

#[test]
fn github_takes_type_and_id_from_headers_and_time_from_reception() {
    let shape = SourceShape::new("n", "events", &source(Scheme::Github)).unwrap();
    let h = headers(&[("x-github-event", "push"), ("x-github-delivery", "d-1")]);
    let n = shape
        .from_webhook(&h, json!({"ref": "main"}), now())
        .unwrap();
    assert_eq!(n.subject, "events.shop.push");
    assert_eq!(n.envelope.idempotencykey.as_deref(), Some("d-1"));
    assert_eq!(n.envelope.time, "2023-11-14T22:13:20Z");
}

#[test]
fn configured_places_and_unsafe_or_missing_types() {
    let mut cfg = source(Scheme::None);
    cfg.type_ = Some("/kind".into());
    cfg.id = Some("/ref".into());
    cfg.time = Some("/at".into());
    let shape = SourceShape::new("n", "events", &cfg).unwrap();
    let h = headers(&[]);
    let n = shape
        .from_webhook(
            &h,
            json!({"kind": "a.b", "ref": 7, "at": 1714557600}),
            now(),
        )
        .unwrap();
    assert_eq!(n.envelope.idempotencykey.as_deref(), Some("7"));
    assert_eq!(n.envelope.time, "2024-05-01T10:00:00Z");
    let err = |body| shape.from_webhook(&h, body, now()).unwrap_err();
    assert_eq!(
        err(json!({"kind": "a.*"})),
        Invalid::UnsafeType(envelope::UnsafeType)
    );
    assert_eq!(err(json!({"kind": "a b"})).code(), "invalid_type");
    assert_eq!(err(json!({"ref": 1})), Invalid::MissingType("/kind".into()));
    assert!(matches!(
        err(json!({"kind": "a", "at": "soon"})),
        Invalid::BadTime(_)
    ));
}

#[test]
fn cloudevent_is_resourced_and_keeps_its_extensions() {
    let shape = SourceShape::new("n", "events", &source(Scheme::None)).unwrap();
    let ev = json!({"specversion": "1.0", "id": "e-1", "source": "/kiosk/7", "type": "scan.done",
                    "time": "2024-05-01T10:00:00Z", "kioskid": "k7", "data": {"x": 1}});
    let n = shape.from_cloudevent(&headers(&[]), ev, now()).unwrap();
    let e = &n.envelope;
    assert_eq!(e.idempotencykey.as_deref(), Some("e-1"));
    assert_ne!(e.id, "e-1");
    assert_eq!(e.source, "/jetedge/n/shop");
    assert_eq!(e.extensions["originsource"], "/kiosk/7");
    assert_eq!(e.extensions["kioskid"], "k7");
    assert_eq!(n.subject, "events.shop.scan.done");
}

#[test]
fn invalid_cloudevents_are_refused() {
    let shape = SourceShape::new("n", "events", &source(Scheme::None)).unwrap();
    let h = headers(&[]);
    for ev in [
        json!([1]),
        json!({"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}),
        json!({"specversion": "1.0", "source": "/s", "type": "t"}),
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": ""}),
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 1, "data_base64": "AA=="}),
    ] {
        assert!(
            matches!(
                shape.from_cloudevent(&h, ev.clone(), now()),
                Err(Invalid::CloudEvent(_))
            ),
            "{ev}"
        );
    }
}

#[test]
fn cloudevents_are_keyed_by_source_and_id_together() {
    let shape = SourceShape::new("n", "events", &source(Scheme::None)).unwrap();
    let ce = |src: &str, id: &str| {
        let ev = json!({"specversion": "1.0", "id": id, "source": src, "type": "kiosk.scan"});
        shape
            .from_cloudevent(&headers(&[]), ev, now())
            .unwrap()
            .keys
    };
    assert_ne!(ce("/kiosk/7", "scan-1"), ce("/kiosk/8", "scan-1"));
    assert_eq!(ce("/kiosk/7", "scan-1"), ce("/kiosk/7", "scan-1"));
    // The pair is length-prefixed: no other split of the same text collides.
    assert_ne!(ce("/a", "b/c"), ce("/ab", "/c"));
    assert_eq!(ce("/kiosk/7", "scan-1").len(), 1);
}

#[test]
fn body_signed_schemes_without_timestamps_also_dedupe_by_body() {
    for (scheme, by_body) in [
        (Scheme::Github, true),
        (Scheme::Shopify, true),
        (Scheme::HmacSha256, true),
        (Scheme::StandardWebhooks, false),
        (Scheme::Stripe, false),
        (Scheme::Slack, false),
        (Scheme::Bearer, false),
        (Scheme::None, false),
    ] {
        let shape = SourceShape::new("n", "events", &source(scheme)).unwrap();
        let a = shape.body_key(b"{\"a\":1}");
        assert_eq!(a.is_some(), by_body, "{scheme:?}");
        if by_body {
            assert_eq!(a, shape.body_key(b"{\"a\":1}"));
            assert_ne!(a, shape.body_key(b"{\"a\":2}"));
        }
    }
}
