//! The cost per event of checking a 1 KiB order (the pipeline's, `body`)
//! against a JSON Schema that describes all of it (required fields, types,
//! patterns, formats, items), measured in process as `Contracts::check`
//! runs at ingest: (m) in the report.

use jetedge::config::Config;
use jetedge::contract::{Contracts, Verdict};
use serde_json::{json, Value};
use std::time::Instant;

fn order_schema() -> Value {
    let text = json!({"type": "string"});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["type", "id", "total", "currency", "customer", "items"],
        "properties": {
            "type": {"const": "order.created"},
            "id": {"type": "string", "pattern": "^ORD-\\d{4}-\\d{6}$"},
            "livemode": {"type": "boolean"},
            "region": {"enum": ["emea", "amer", "apac"]},
            "total": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "minLength": 3, "maxLength": 3},
            "created_at": {"type": "string", "format": "date-time"},
            "customer": {"type": "object", "required": ["id", "email"], "properties": {
                "id": text, "email": {"type": "string", "format": "email"}, "phone": text,
                "birthdate": {"type": "string", "format": "date"}, "name": text}},
            "shipping": {"type": "object", "properties": {"street": text, "city": text,
                "zip": text, "country": {"type": "string", "pattern": "^[A-Z]{2}$"}}},
            "payment": {"type": "object", "properties": {"method": {"enum": ["card", "sepa"]}}},
            "items": {"type": "array", "minItems": 1, "items": {"type": "object",
                "required": ["sku", "qty", "price"], "properties": {
                    "sku": text, "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number"}, "gift_message": text}}},
            "note": {"type": "string", "maxLength": 4096}
        }
    })
}

/// Microseconds per event of checking `n` distinct orders (all valid).
pub fn cost(n: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("jetedge-bench-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("order.json");
    std::fs::write(&file, order_schema().to_string()).unwrap();
    let text = format!(
        "[[source]]\nname = \"shop\"\nverify = \"none\"\n[[schema]]\nsource = \"shop\"\n\
         type = \"order.created\"\nfile = {:?}\n",
        file.display()
    );
    let cfg = Config::from_toml(&text, std::iter::empty()).expect("the bench schema is valid");
    let contracts = Contracts::compile(&cfg, Default::default()).expect("it compiles");
    let orders: Vec<Value> = (0..n)
        .map(|i| serde_json::from_slice(&super::pipeline::body(i)).unwrap())
        .collect();
    let started = Instant::now();
    for o in &orders {
        match contracts.check("shop", "order.created", Some(o)) {
            Verdict::Valid(_) => {}
            other => panic!("the bench order should meet its schema: {other:?}"),
        }
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    std::fs::remove_dir_all(&dir).ok();
    us
}
