//! The node's channels as an AsyncAPI 3.0 document, built from the config
//! and the schemas in force: what microapp authors read to know what a
//! site's node takes in and sends out.
//!
//! Channels: each source's webhook route (with its security scheme), the
//! site's NATS ingest subject, the upstream subjects of each source (one
//! per schema'd type, one for the rest, one for quarantine), and each
//! subscription's deliveries. Every upstream message is a CloudEvent whose
//! `data` is the type's schema where one is configured. Schemas are JSON
//! Schema 2020-12 (or the draft their `$schema` names), so payloads are
//! Multi Format Schema Objects that say so.

use super::{Contracts, Schema};
use crate::config::{Config, Scheme, SourceConfig, SubscriptionConfig};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The document for `cfg` with the schemas of `contracts`.
pub fn document(cfg: &Config, contracts: &Contracts) -> Value {
    let schemas = contracts.documents();
    let mut doc = Doc::default();
    doc.servers(cfg);
    for s in &cfg.sources {
        doc.source(cfg, s, &schemas);
    }
    if let Some(l) = &cfg.local {
        doc.local_ingest(l.ingest_prefix(), &cfg.sources);
    }
    for s in &cfg.subscriptions {
        doc.subscription(s);
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": format!("jetedge node {}", cfg.node.id),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Events this edge node accepts (signed webhooks, the site's NATS), \
                forwards upstream as CloudEvents, and delivers to the site's microapps. \
                Generated from the node's configuration.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": doc.servers,
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {
            "schemas": {"CloudEvent": cloudevent(None)},
            "securitySchemes": doc.security,
        },
    })
}

#[derive(Default)]
struct Doc {
    servers: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    security: Map<String, Value>,
    /// Server ids by role, for channels' `servers` lists.
    upstream: Vec<String>,
    site: Vec<String>,
}

impl Doc {
    fn servers(&mut self, cfg: &Config) {
        let https = cfg.ingress.tls.is_some();
        self.servers.insert(
            "ingress".into(),
            json!({
                "host": cfg.ingress.listen,
                "protocol": if https { "https" } else { "http" },
                "description": "The node's ingress listener: webhooks and CloudEvents.",
            }),
        );
        let nats = |url: &str| {
            let host = url.split_once("://").map_or(url, |(_, h)| h);
            host.rsplit_once('@').map_or(host, |(_, h)| h).to_string()
        };
        for (i, url) in cfg.upstream.servers.iter().enumerate() {
            let id = format!("upstream-{i}");
            self.servers.insert(
                id.clone(),
                json!({"host": nats(url), "protocol": "nats",
                    "description": format!("Upstream JetStream (stream {}).", cfg.upstream.stream)}),
            );
            self.upstream.push(id);
        }
        for (i, url) in cfg.local.iter().flat_map(|l| &l.servers).enumerate() {
            let id = format!("site-{i}");
            self.servers.insert(
                id.clone(),
                json!({"host": nats(url), "protocol": "nats", "description": "The site's nats-server."}),
            );
            self.site.push(id);
        }
    }

    fn refs(ids: &[String]) -> Value {
        ids.iter()
            .map(|id| json!({"$ref": format!("#/servers/{id}")}))
            .collect()
    }

    fn channel(&mut self, id: &str, channel: Value) -> String {
        let id = component_id(id);
        self.channels.insert(id.clone(), channel);
        id
    }

    fn operation(&mut self, id: &str, action: &str, channel: &str, extra: Value) {
        let mut op =
            json!({"action": action, "channel": {"$ref": format!("#/channels/{channel}")}});
        if let (Value::Object(op), Value::Object(extra)) = (&mut op, extra) {
            op.extend(extra);
        }
        self.operations.insert(component_id(id), op);
    }

    /// A source: its webhook route, and its upstream subjects.
    fn source(
        &mut self,
        cfg: &Config,
        s: &SourceConfig,
        schemas: &[(String, String, Arc<Schema>)],
    ) {
        let name = &s.name;
        let own: Vec<_> = schemas.iter().filter(|(src, ..)| src == name).collect();
        let mut messages = Map::new();
        for (_, type_, schema) in &own {
            messages.insert(
                component_id(type_),
                json!({"name": type_, "contentType": "application/json", "payload": payload(schema.as_ref())}),
            );
        }
        messages.insert(
            "any".into(),
            json!({"name": "webhook", "contentType": "application/json",
                "summary": "Any JSON body the sender signs; its type is read from the configured place.",
                "payload": {"type": "object"}}),
        );
        let webhook = self.channel(
            &format!("webhook.{name}"),
            json!({"address": format!("/v1/webhooks/{name}"), "servers": Self::refs(&["ingress".into()]),
                "description": format!("Webhooks of source {name} ({:?}).", s.verify),
                "messages": messages}),
        );
        let mut extra =
            json!({"bindings": {"http": {"method": "POST", "bindingVersion": "0.3.0"}}});
        if let Some(scheme) = security(s) {
            self.security.insert(component_id(name), scheme);
            extra["security"] =
                json!([{"$ref": format!("#/components/securitySchemes/{}", component_id(name))}]);
        }
        self.operation(
            &format!("receive.{name}.webhook"),
            "receive",
            &webhook,
            extra,
        );
        let prefix = &cfg.upstream.subject_prefix;
        for (_, type_, schema) in &own {
            let (address, parameters) = typed_address(&format!("{prefix}.{name}"), type_);
            let id = self.channel(
                &format!("upstream.{name}.{type_}"),
                json!({"address": address, "parameters": parameters, "servers": Self::refs(&self.upstream),
                    "description": format!("Events of source {name}, type {type_}, checked against {}.", schema.dataschema),
                    "messages": {"event": {"payload": cloudevent_payload(Some(schema.as_ref()))}}}),
            );
            self.operation(&format!("send.{name}.{type_}"), "send", &id, json!({}));
        }
        let all = self.channel(
            &format!("upstream.{name}"),
            json!({"address": format!("{prefix}.{name}.{{type}}"), "servers": Self::refs(&self.upstream),
                "parameters": {"type": {"description": "The event type (dot-separated tokens)."}},
                "description": format!("Every event of source {name} a route forwards."),
                "messages": {"event": {"payload": {"$ref": "#/components/schemas/CloudEvent"}}}}),
        );
        self.operation(&format!("send.{name}"), "send", &all, json!({}));
        if own
            .iter()
            .any(|(_, _, s)| s.on_violation == crate::config::OnViolation::Quarantine)
        {
            let q = self.channel(
                &format!("quarantine.{name}"),
                json!({"address": format!("{prefix}.quarantine.{name}.{{type}}"), "servers": Self::refs(&self.upstream),
                    "parameters": {"type": {"description": "The event type."}},
                    "description": format!("Events of source {name} that broke their schema, with the \
                        violations in the schemaviolations extension."),
                    "messages": {"event": {"payload": {"$ref": "#/components/schemas/CloudEvent"}}}}),
            );
            self.operation(&format!("send.{name}.quarantine"), "send", &q, json!({}));
        }
    }

    fn local_ingest(&mut self, prefix: &str, sources: &[SourceConfig]) {
        let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        let id = self.channel(
            "ingest",
            json!({"address": format!("{prefix}.{{source}}"), "servers": Self::refs(&self.site),
                "parameters": {"source": {"enum": names, "description": "The source the events belong to."}},
                "description": "Events published on the site's NATS (a CloudEvent, an array of them, \
                    or a source's webhook-shaped JSON); with a reply subject, the reply comes once durable.",
                "messages": {"event": {"payload": {"$ref": "#/components/schemas/CloudEvent"}}}}),
        );
        self.operation("receive.ingest", "receive", &id, json!({}));
    }

    fn subscription(&mut self, s: &SubscriptionConfig) {
        let message = json!({"event": {"payload": {"$ref": "#/components/schemas/CloudEvent"}}});
        let about = format!(
            "Upstream subjects {} pushed to the site.",
            s.subjects.join(", ")
        );
        let mut targets: Vec<(String, Value)> = Vec::new();
        if let Some(subject) = &s.to_subject {
            targets.push((
                "subject".into(),
                json!({"address": subject, "servers": Self::refs(&self.site)}),
            ));
        }
        if let Some(t) = &s.to_stream {
            targets.push((
                "stream".into(),
                json!({"address": t.subject, "servers": Self::refs(&self.site)}),
            ));
        }
        if let Some(w) = &s.to_webhook {
            targets.push((
                "webhook".into(),
                json!({"address": crate::config::redact_url(&w.url),
                    "description": "Signed webhooks (Standard Webhooks headers)."}),
            ));
        }
        for (kind, mut channel) in targets {
            channel["messages"] = message.clone();
            if channel.get("description").is_none() {
                channel["description"] = json!(about);
            }
            let id = self.channel(&format!("subscription.{}.{kind}", s.name), channel);
            self.operation(
                &format!("send.subscription.{}.{kind}", s.name),
                "send",
                &id,
                json!({}),
            );
        }
    }
}

/// A channel address for a type pattern: literal, or with the rest of a
/// prefix pattern (`order.*`) as a parameter.
fn typed_address(base: &str, type_: &str) -> (String, Value) {
    match type_.strip_suffix('*') {
        Some(p) => (
            format!("{base}.{p}{{rest}}"),
            json!({"rest": {"description": format!("The rest of an event type starting {p:?}.")}}),
        ),
        None => (format!("{base}.{type_}"), json!({})),
    }
}

/// A schema as a Multi Format Schema Object naming its draft.
fn payload(schema: &Schema) -> Value {
    json!({"schemaFormat": schema_format(&schema.document), "schema": schema.document})
}

fn schema_format(doc: &Value) -> &'static str {
    match doc.get("$schema").and_then(Value::as_str) {
        Some(s) if s.contains("draft-07") => "application/schema+json;version=draft-07",
        Some(s) if s.contains("2019-09") => "application/schema+json;version=2019-09",
        _ => "application/schema+json;version=2020-12",
    }
}

/// The CloudEvent envelope, with `data` of `schema` when given.
fn cloudevent_payload(schema: Option<&Schema>) -> Value {
    json!({"schemaFormat": "application/schema+json;version=2020-12", "schema": cloudevent(schema)})
}

fn cloudevent(schema: Option<&Schema>) -> Value {
    let text = json!({"type": "string"});
    let data = schema.map_or_else(|| json!({}), |s| s.document.clone());
    json!({
        "type": "object",
        "description": "A CloudEvents 1.0 event in structured JSON mode, as jetedge writes it.",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "description": "UUIDv7 minted at acceptance; also the Nats-Msg-Id."},
            "source": {"type": "string", "description": "/jetedge/{node}/{source}"},
            "type": text,
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": text,
            "dataschema": {"type": "string", "description": "The schema the data was checked against."},
            "correlationid": text,
            "traceparent": text,
            "idempotencykey": {"type": "string", "description": "The sender's own event id."},
            "redacted": {"type": "array", "items": text, "description": "What redaction rules hid."},
            "schemaviolations": {"type": "array", "description": "On the quarantine subjects: how the data broke its schema."},
            "data": data,
        },
    })
}

/// How a source's senders authenticate, as an AsyncAPI security scheme.
fn security(s: &SourceConfig) -> Option<Value> {
    let (header, how) = match s.verify {
        Scheme::None => return None,
        Scheme::Bearer => {
            return Some(
                json!({"type": "http", "scheme": "bearer", "description": "A shared token."}),
            )
        }
        other => crate::signature::describe(other, s.header.as_deref())?,
    };
    Some(json!({"type": "httpApiKey", "in": "header", "name": header, "description": how}))
}

/// A component or channel id AsyncAPI accepts (`[A-Za-z0-9._-]`).
fn component_id(s: &str) -> String {
    s.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                true => c,
                false => '_',
            },
        )
        .collect()
}
