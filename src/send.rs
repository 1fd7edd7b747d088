//! `jetedge send`: post one test event to a running node, shaped and signed
//! the way the named source's real senders do it.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use jetedge::config::{Config, Scheme};
use jetedge::signature::Verifier;
use serde_json::{json, Value};
use time::OffsetDateTime;

#[derive(clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub file: crate::ConfigArg,
    /// The source to post as (a `[[source]]` name).
    #[arg(short, long)]
    pub source: String,
    /// Event type.
    #[arg(short = 't', long = "type", default_value = "jetedge.test")]
    pub type_: String,
    /// JSON for the event's data.
    #[arg(short, long, default_value = "{}")]
    pub data: String,
    /// Sender's event id (the idempotency key); a fresh one when omitted.
    #[arg(long)]
    pub id: Option<String>,
    /// Node URL; the config's ingress address when omitted.
    #[arg(long)]
    pub url: Option<String>,
    /// PEM CA certificate(s) to trust for an https URL; the platform's
    /// roots when omitted.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
}

#[tokio::main]
pub async fn send(cfg: &Config, args: &SendArgs) -> anyhow::Result<()> {
    let source = cfg
        .sources
        .iter()
        .find(|s| s.name == args.source)
        .with_context(|| format!("no [[source]] named {:?} in the config", args.source))?;
    let secrets = source
        .secrets
        .iter()
        .map(|r| r.resolve())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let verifier = Verifier::new(source, &secrets).map_err(anyhow::Error::msg)?;
    let data: Value = serde_json::from_str(&args.data).context("--data is not valid JSON")?;
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("send-{}", uuid::Uuid::now_v7()));
    let now = OffsetDateTime::now_utc();
    let body = body_for(source.verify, &id, &args.type_, now, data).to_string();
    let base = args.url.clone().unwrap_or_else(|| {
        crate::ctl::listener_url(&cfg.ingress.listen, cfg.ingress.tls.is_some())
    });
    let url = format!("{}/v1/webhooks/{}", base.trim_end_matches('/'), source.name);

    let mut req = hyper::Request::post(&url)
        .header("content-type", "application/json")
        .header("idempotency-key", &id)
        .header("x-github-event", &args.type_)
        .header("x-github-delivery", &id)
        .header("x-shopify-topic", &args.type_)
        .header("x-shopify-webhook-id", &id);
    for (k, v) in verifier.sign(body.as_bytes(), now.unix_timestamp(), &id) {
        req = req.header(k, v);
    }
    let req = req.body(Full::new(Bytes::from(body)))?;
    let (status, text) = crate::ctl::request(req, args.ca.as_deref())
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    println!("{} {}", status.as_u16(), String::from_utf8_lossy(&text));
    if !status.is_success() {
        bail!("the node refused the event ({status})");
    }
    Ok(())
}

/// The body shape each kind of sender uses, so default places find id, type and time.
fn body_for(scheme: Scheme, id: &str, type_: &str, now: OffsetDateTime, data: Value) -> Value {
    let t = now.unix_timestamp();
    match scheme {
        Scheme::Stripe => json!({"id": id, "type": type_, "created": t, "data": {"object": data}}),
        Scheme::Slack => json!({"type": "event_callback", "event_id": id, "event_time": t,
                                "event": {"type": type_, "data": data}}),
        _ => {
            json!({"id": id, "type": type_, "timestamp": jetedge::envelope::format_time(now), "data": data})
        }
    }
}
