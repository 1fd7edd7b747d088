//! `jetedge status` and `jetedge dlq …`: clients of a running node's admin
//! API (`[admin]` in the same config file, or `--admin URL`), so they work
//! while the node holds its store open.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use jetedge::config::Config;
use serde_json::Value;

#[derive(clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub file: crate::ConfigArg,
    /// The node's admin URL; `http://{admin.listen}` of the config when omitted.
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM CA certificate(s) to trust for an https admin URL; the
    /// platform's roots when omitted.
    #[arg(long, global = true)]
    pub ca: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub common: AdminArgs,
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(clap::Subcommand)]
pub enum DlqAction {
    /// List dead letters, oldest first.
    List {
        #[arg(long)]
        subscription: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter with its event.
    Show { id: u64 },
    /// Deliver dead letters to the targets they still owe, once.
    Replay {
        #[command(flatten)]
        which: Which,
    },
    /// Delete dead letters.
    Purge {
        #[command(flatten)]
        which: Which,
    },
}

/// One letter by id, or all of them (of one subscription).
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// A dead letter's id (from `dlq list`).
    id: Option<u64>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Every letter of this subscription.
    #[arg(long)]
    subscription: Option<String>,
}

impl Which {
    /// The API path for this selection, with `suffix` ("/replay" or "").
    fn path(&self, suffix: &str) -> String {
        match (self.id, &self.subscription) {
            (Some(id), _) => format!("/admin/dlq/{id}{suffix}"),
            (None, Some(s)) => format!("/admin/dlq{suffix}?subscription={s}"),
            (None, None) => format!("/admin/dlq{suffix}"),
        }
    }
}

#[derive(clap::Args)]
pub struct ParkedArgs {
    #[command(flatten)]
    pub common: AdminArgs,
    #[command(subcommand)]
    pub action: ParkedAction,
}

#[derive(clap::Subcommand)]
pub enum ParkedAction {
    /// List parked events (upstream refused them for good), oldest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one parked event with its envelope.
    Show { id: u64 },
    /// Put parked events back at the end of the outbox (after fixing the
    /// cause: the stream's subjects or limits).
    Replay {
        #[command(flatten)]
        which: AllOrOne,
    },
    /// Delete parked events.
    Purge {
        #[command(flatten)]
        which: AllOrOne,
    },
}

/// One entry by id, or all of them.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct AllOrOne {
    /// An entry's id (from `list`).
    id: Option<u64>,
    /// Every entry.
    #[arg(long)]
    all: bool,
}

impl AllOrOne {
    fn path(&self, base: &str, suffix: &str) -> String {
        match self.id {
            Some(id) => format!("{base}/{id}{suffix}"),
            None => format!("{base}{suffix}"),
        }
    }
}

#[tokio::main]
pub async fn parked(cfg: &Config, args: &ParkedArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let v = match &args.action {
        ParkedAction::List { limit } => {
            let v = call(
                cfg,
                common,
                Method::GET,
                &format!("/admin/parked?limit={limit}"),
            )
            .await?;
            if !common.json {
                print_parked(&v);
                return Ok(());
            }
            v
        }
        ParkedAction::Show { id } => {
            call(cfg, common, Method::GET, &format!("/admin/parked/{id}")).await?
        }
        ParkedAction::Replay { which } => {
            call(
                cfg,
                common,
                Method::POST,
                &which.path("/admin/parked", "/replay"),
            )
            .await?
        }
        ParkedAction::Purge { which } => {
            call(
                cfg,
                common,
                Method::DELETE,
                &which.path("/admin/parked", ""),
            )
            .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn print_parked(v: &Value) {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        println!("no parked events");
        return;
    }
    println!(
        "{:>20}  {:<10} {:<36} {:<32} error",
        "id", "reason", "event id", "subject"
    );
    for e in entries {
        println!(
            "{:>20}  {:<10} {:<36} {:<32} {}",
            e["id"],
            e["reason"].as_str().unwrap_or(""),
            e["event_id"].as_str().unwrap_or(""),
            e["subject"].as_str().unwrap_or(""),
            e["error"].as_str().unwrap_or("")
        );
    }
    if let Some(next) = v["next_after"].as_u64() {
        println!("(more after {next})");
    }
}

/// One line on encryption at rest, saying whether previous keys are still needed.
fn print_encryption(e: &Value) {
    let Some(key) = e["key"].as_str() else {
        println!("encryption at rest off");
        return;
    };
    let previous: Vec<&str> = e["previous_keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let needed = match (previous.is_empty(), e["older_records_in_outbox"].as_bool()) {
        (true, _) => String::new(),
        (false, Some(true)) => format!(
            "  previous keys {} still needed by the outbox",
            previous.join(",")
        ),
        (false, _) => format!("  previous keys {} no longer needed", previous.join(",")),
    };
    println!("encryption at rest key {key}{needed}");
}

#[tokio::main]
pub async fn status(cfg: &Config, args: &AdminArgs) -> anyhow::Result<()> {
    let v = call(cfg, args, Method::GET, "/admin/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "node {}  store {}  upstream {}  local {}  forwarding {}",
        v["node"].as_str().unwrap_or("?"),
        v["store"].as_str().unwrap_or("?"),
        v["upstream"].as_str().unwrap_or("?"),
        v["local"].as_str().unwrap_or("none"),
        v["forwarding"].as_str().unwrap_or("?")
    );
    println!(
        "backlog {} events ({} bytes)  accepted {}  forwarded {}  dead letters {}  parked {}",
        v["backlog"]["events"],
        v["backlog"]["bytes"],
        v["events"]["accepted"],
        v["events"]["forwarded"],
        v["dlq"],
        v["parked"]
    );
    if let Some(reason) = v["upstream_refusal"].as_str() {
        println!("upstream refuses every event: {reason}");
    }
    print_encryption(&v["encryption"]);
    for s in v["subscriptions"].as_array().into_iter().flatten() {
        let targets: Vec<String> = s["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                format!(
                    "{}={}",
                    t["target"].as_str().unwrap_or("?"),
                    t["breaker"]["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        println!(
            "subscription {}  delivered {}  failed attempts {}  dead-lettered {}  targets {}",
            s["name"].as_str().unwrap_or("?"),
            s["delivered"],
            s["failed_attempts"],
            s["dead_lettered"],
            targets.join(" ")
        );
    }
    Ok(())
}

#[tokio::main]
pub async fn dlq(cfg: &Config, args: &DlqArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let v = match &args.action {
        DlqAction::List {
            subscription,
            limit,
        } => {
            let mut path = format!("/admin/dlq?limit={limit}");
            if let Some(s) = subscription {
                path.push_str(&format!("&subscription={s}"));
            }
            let v = call(cfg, common, Method::GET, &path).await?;
            if !common.json {
                print_list(&v);
                return Ok(());
            }
            v
        }
        DlqAction::Show { id } => {
            call(cfg, common, Method::GET, &format!("/admin/dlq/{id}")).await?
        }
        DlqAction::Replay { which } => {
            let v = call(cfg, common, Method::POST, &which.path("/replay")).await?;
            if !common.json {
                print_replay(&v);
                return Ok(());
            }
            v
        }
        DlqAction::Purge { which } => call(cfg, common, Method::DELETE, &which.path("")).await?,
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn print_list(v: &Value) {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:>20}  {:<16} {:<8} {:<36} last error",
        "id", "subscription", "attempts", "event id"
    );
    for e in entries {
        println!(
            "{:>20}  {:<16} {:<8} {:<36} {}",
            e["id"],
            e["subscription"].as_str().unwrap_or(""),
            e["attempts"],
            e["event_id"].as_str().unwrap_or(""),
            e["last_error"].as_str().unwrap_or("")
        );
    }
    if let Some(next) = v["next_after"].as_u64() {
        println!("(more after {next})");
    }
}

fn print_replay(v: &Value) {
    let results = match v.get("results") {
        Some(r) => r.as_array().cloned().unwrap_or_default(),
        None => vec![v.clone()],
    };
    for r in &results {
        match r["status"].as_str() {
            Some("delivered") => println!("{}: delivered", r["id"]),
            _ => println!(
                "{}: failed again: {}",
                r["id"],
                r["error"].as_str().unwrap_or("")
            ),
        }
    }
    let failed = results
        .iter()
        .filter(|r| r["status"] != "delivered")
        .count();
    println!("{} delivered, {failed} failed", results.len() - failed);
}

/// One admin API call; an error answer becomes an error with its message.
pub(crate) async fn call(
    cfg: &Config,
    args: &AdminArgs,
    method: Method,
    path: &str,
) -> anyhow::Result<Value> {
    let (status, v, body) = call_raw(cfg, args, method, path).await?;
    if !status.is_success() {
        let msg = v["error"]["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_string,
        );
        bail!("{status}: {msg}");
    }
    Ok(v)
}

/// One admin API call: its status, its JSON (`null` if none) and its body.
async fn call_raw(
    cfg: &Config,
    args: &AdminArgs,
    method: Method,
    path: &str,
) -> anyhow::Result<(StatusCode, Value, Bytes)> {
    let base = admin_base(cfg, args)?;
    let req = admin_request(cfg, args, method, path)?;
    let (status, body) = request(req, args.ca.as_deref())
        .await
        .with_context(|| format!("cannot reach the node's admin API at {base} (is it running?)"))?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, v, body))
}

/// `jetedge reload`: the node reads its config file again. `Ok(false)`
/// when the file is invalid (every problem printed; the node kept its
/// running config).
#[tokio::main]
pub async fn reload(cfg: &Config, args: &AdminArgs) -> anyhow::Result<bool> {
    let (status, v, body) = call_raw(cfg, args, Method::POST, "/admin/reload").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    let list = |v: &Value| -> Vec<String> {
        let items = v.as_array().into_iter().flatten();
        items
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    match status {
        StatusCode::OK if !args.json => {
            let changed = list(&v["changed"]);
            match changed.is_empty() {
                true => println!("reloaded: nothing changed"),
                false => println!("reloaded: {}", changed.join("; ")),
            }
            for key in list(&v["restart_required"]) {
                println!("needs a restart to take effect: {key} (the running value is kept)");
            }
            Ok(true)
        }
        StatusCode::OK => Ok(true),
        StatusCode::UNPROCESSABLE_ENTITY => {
            eprintln!(
                "{}",
                v["error"]["message"].as_str().unwrap_or("reload refused")
            );
            for p in v["error"]["problems"].as_array().into_iter().flatten() {
                eprintln!(
                    "  - {}: {}",
                    p["path"].as_str().unwrap_or(""),
                    p["message"].as_str().unwrap_or("")
                );
            }
            Ok(false)
        }
        _ => bail!("{status}: {}", String::from_utf8_lossy(&body)),
    }
}

/// The admin API's base URL: `--admin`, or the config's listener.
fn admin_base(cfg: &Config, args: &AdminArgs) -> anyhow::Result<String> {
    Ok(match &args.admin {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if cfg.admin.listen.is_empty() => {
            bail!("the config has no [admin] listen; pass --admin URL")
        }
        None => listener_url(&cfg.admin.listen, cfg.admin.tls.is_some()),
    })
}

/// A request to the admin API with the node's token.
fn admin_request(
    cfg: &Config,
    args: &AdminArgs,
    method: Method,
    path: &str,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let url = format!("{}{path}", admin_base(cfg, args)?);
    let token = jetedge::admin::token(cfg, false).map_err(anyhow::Error::msg)?;
    Ok(Request::builder()
        .method(method)
        .uri(&url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?)
}

/// The URL of a listener of the config, https when it has `tls`.
pub fn listener_url(listen: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{listen}")
}

/// Sends one request and reads the whole answer.
pub async fn request(
    req: Request<Full<Bytes>>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = send_request(req, ca).await?;
    let status = resp.status();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// Sends one request; the answer's body is left to read.
async fn send_request(
    req: Request<Full<Bytes>>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
    let client = match req.uri().scheme_str() == Some("https") {
        true => jetedge::tls::http_client(jetedge::tls::client_config(ca, None).context("--ca")?),
        false => jetedge::tls::plain_client(),
    };
    Ok(client.request(req).await?)
}

#[derive(clap::Args)]
pub struct TapArgs {
    #[command(flatten)]
    pub common: AdminArgs,
    /// Only events of this source (`[[source]] name`).
    #[arg(long)]
    pub source: Option<String>,
    /// Only events of this CloudEvents type.
    #[arg(long = "type")]
    pub type_: Option<String>,
    /// Only events on subjects matching this NATS pattern (`events.shop.>`).
    #[arg(long)]
    pub subject: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// `jetedge tap`: stored events (redacted) as they pass, one JSON line
/// each, until `--limit` or Ctrl-C.
#[tokio::main]
pub async fn tap(cfg: &Config, args: &TapArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut query = Vec::new();
    for (key, value) in [
        ("source", args.source.clone()),
        ("type", args.type_.clone()),
        ("subject", args.subject.clone()),
        ("limit", args.limit.map(|l| l.to_string())),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", percent_encode(&v)));
        }
    }
    let path = format!("/admin/tap?{}", query.join("&"));
    let req = admin_request(cfg, &args.common, Method::GET, &path)?;
    let base = admin_base(cfg, &args.common)?;
    let resp = send_request(req, args.common.ca.as_deref())
        .await
        .with_context(|| format!("cannot reach the node's admin API at {base} (is it running?)"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    let mut body = resp.into_body();
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            out.write_all(data)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// A query value, percent-encoded where a URL needs it.
fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' | b'>' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
