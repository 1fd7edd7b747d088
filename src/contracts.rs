//! `jetedge schemas` and `jetedge asyncapi`: what a node enforces and the
//! channels it offers, for the people who write the microapps.

use crate::ctl::{call, AdminArgs};
use hyper::Method;
use jetedge::config::Config;
use jetedge::contract::{asyncapi, Contracts, Listed, Origin};

/// `jetedge schemas`: the schemas a running node enforces (its files and
/// its copy of the registry), where each came from, and the registry's state.
#[tokio::main]
pub async fn schemas(cfg: &Config, args: &AdminArgs) -> anyhow::Result<()> {
    let v = call(cfg, args, Method::GET, "/admin/schemas").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let listed: Vec<Listed> = serde_json::from_value(v["schemas"].clone())?;
    if listed.is_empty() {
        println!("no schemas are enforced");
    }
    for l in &listed {
        let from = match &l.origin {
            Origin::File { path } => format!("file {path}"),
            Origin::Registry {
                bucket,
                key,
                version,
                revision,
            } => format!("registry {bucket} key {key} (version {version}, revision {revision})"),
        };
        println!(
            "{}  {}  {}  from {from}  dataschema {}",
            l.source,
            l.types.join(","),
            l.on_violation.as_str(),
            l.dataschema
        );
    }
    let r = &v["registry"];
    if let Some(bucket) = r["bucket"].as_str() {
        let state = match r["watching"].as_bool() {
            Some(true) => "watching the bucket",
            _ => "not connected (the copy in the store is enforced)",
        };
        let synced = r["synced_at"].as_str().unwrap_or("never since start");
        println!("registry {bucket}: {state}; last in step {synced}");
        if let Some(e) = r["last_error"].as_str() {
            println!("registry {bucket}: last error: {e}");
        }
    }
    Ok(())
}

/// `jetedge asyncapi`: the AsyncAPI 3.0 document of a config, from its
/// files alone (a running node's `GET /asyncapi.json` adds the registry's
/// schemas).
pub fn asyncapi(cfg: &Config) -> anyhow::Result<()> {
    let contracts = Contracts::compile(cfg, Default::default()).map_err(|problems| {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", list.join("\n"))
    })?;
    if cfg.contracts.registry.is_some() {
        eprintln!(
            "note: the registry's schemas are not in this document; a running node's \
             GET /asyncapi.json (admin listener) has them"
        );
    }
    let doc = asyncapi::document(cfg, &contracts);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
