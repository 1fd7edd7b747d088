//! `[[schema]]` and `[contracts]`: the JSON Schemas events must meet, from
//! files and from the mesh's registry bucket (see `crate::contract`).

use super::Problem;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;

/// What happens to an event whose `data` breaks its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// Answered 422 `schema_violation`; nothing is stored.
    #[default]
    Reject,
    /// Answered 202 `quarantined`; stored and forwarded to
    /// `{prefix}.quarantine.{source}.{type}` with the violations.
    Quarantine,
}

impl OnViolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Quarantine => "quarantine",
        }
    }
}

/// `[[schema]]`: a schema file for the events of one source and some types.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    pub source: String,
    /// One event type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Several: exact types, or prefixes ending in `*` (`"order.*"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// A JSON Schema (2020-12 unless its `$schema` names another draft)
    /// for the event's `data`; relative to the working directory, as every
    /// path in the config.
    pub file: PathBuf,
    #[serde(default)]
    pub on_violation: OnViolation,
}

impl SchemaConfig {
    /// The type patterns it covers, `type` and `types` together.
    pub fn type_patterns(&self) -> impl Iterator<Item = &str> {
        self.type_.iter().chain(&self.types).map(String::as_str)
    }
}

/// `[contracts]`: schemas that come from upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ContractsConfig {
    /// `"kv:BUCKET"`: an upstream JetStream key-value bucket whose keys
    /// are `{source}.{type}.{version}` and whose values are JSON Schemas.
    /// The newest version of each source and type is enforced; the node
    /// keeps a copy in its store, so validation goes on offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The policy of the registry's schemas (a `[[schema]]` sets its own).
    pub on_violation: OnViolation,
}

impl ContractsConfig {
    /// The registry's bucket name, when `registry` is a valid `kv:` reference.
    pub fn bucket(&self) -> Option<&str> {
        let b = self.registry.as_deref()?.strip_prefix("kv:")?;
        is_bucket_name(b).then_some(b)
    }
}

/// JetStream's rule for bucket names.
pub fn is_bucket_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks `[[schema]]` and `[contracts]`: known sources, types given,
/// files that compile (read here, as `jetedge check` should), a registry
/// reference of the right shape. `sources` are the configured names.
pub fn validate(cfg: &super::Config, sources: &HashSet<&str>, p: &mut Vec<Problem>) {
    let mut add = |path: String, message: String| p.push(Problem { path, message });
    for (i, s) in cfg.schemas.iter().enumerate() {
        let at = format!("schema[{i}]");
        if !sources.contains(s.source.as_str()) {
            add(
                format!("{at}.source"),
                format!("no [[source]] is named {:?}", s.source),
            );
        }
        if s.type_patterns().next().is_none() {
            add(
                format!("{at}.type"),
                "say which event types it covers: type = \"order.created\" or types = [\"order.*\"]"
                    .into(),
            );
        }
        for t in s.type_patterns() {
            let literal = t.strip_suffix('*').unwrap_or(t);
            if !literal.is_empty()
                && !crate::envelope::is_subject_safe(literal.trim_end_matches('.'))
            {
                add(
                    format!("{at}.types"),
                    format!("{t:?} is not an event type or a prefix ending in '*'"),
                );
            }
        }
    }
    let quarantines = cfg.contracts.on_violation == OnViolation::Quarantine
        || cfg
            .schemas
            .iter()
            .any(|s| s.on_violation == OnViolation::Quarantine);
    if quarantines && sources.contains("quarantine") {
        let i = cfg.sources.iter().position(|s| s.name == "quarantine");
        p.push(Problem {
            path: format!("source[{}].name", i.unwrap_or(0)),
            message: "\"quarantine\" names the quarantine subjects ({prefix}.quarantine.…): \
                      choose another source name"
                .into(),
        });
    }
    if let Err(problems) = crate::contract::Contracts::compile(cfg, Default::default()) {
        p.extend(problems);
    }
    if cfg.contracts.registry.is_some() && cfg.contracts.bucket().is_none() {
        p.push(Problem {
            path: "contracts.registry".into(),
            message: "must be \"kv:BUCKET\", a JetStream key-value bucket name (letters, digits, '-', '_')".into(),
        });
    }
}
