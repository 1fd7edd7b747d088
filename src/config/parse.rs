//! From a TOML table to a [`Config`], finding every mistake in one run:
//! each section and each `[[…]]` element is read on its own, and a value of
//! the wrong type is reported and then left out (its default stands in) so
//! that the reading goes on and finds the next one. Unknown keys are
//! reported too, with the nearest valid name when one is close ("did you
//! mean `verify`?"), and so are unknown variants.

use super::{
    AdminConfig, BreakerConfig, Config, ContractsConfig, IngressConfig, LocalConfig, NodeConfig,
    Problem, RateLimitConfig, RedactConfig, RetryConfig, RouteConfig, RoutingConfig, SchemaConfig,
    SourceConfig, StreamTarget, SubscriptionConfig, TlsConfig, UpstreamConfig, UpstreamTls,
    WebhookTarget,
};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;

/// The top-level keys, as the file spells them.
const SECTIONS: &[&str] = &[
    "node",
    "ingress",
    "upstream",
    "local",
    "source",
    "routing",
    "route",
    "redact",
    "admin",
    "subscription",
    "contracts",
    "schema",
];

/// Reads the whole table; every problem found is in the list, and the
/// config holds what could be read (defaults where values were wrong,
/// without the `[[…]]` elements that could not be read at all).
pub fn parse(mut table: toml::Table) -> (Config, Vec<Problem>) {
    let mut problems = Vec::new();
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            let hint = nearest(key, SECTIONS);
            problems.push(unknown_key(key.clone(), hint));
        }
    }
    let mut section = |name: &str| table.remove(name);
    let (node, ingress, upstream, local, routing, admin) = (
        section("node"),
        section("ingress"),
        section("upstream"),
        section("local"),
        section("routing"),
        section("admin"),
    );
    let (sources, routes, redactions, subscriptions) = (
        section("source"),
        section("route"),
        section("redact"),
        section("subscription"),
    );
    let (contracts, schemas) = (section("contracts"), section("schema"));
    let p = &mut problems;
    let config = Config {
        node: one(node, "node", p).unwrap_or_default(),
        ingress: one(ingress, "ingress", p).unwrap_or_default(),
        upstream: one(upstream, "upstream", p).unwrap_or_default(),
        local: one(local, "local", p),
        sources: each(sources, "source", p),
        routing: one(routing, "routing", p).unwrap_or_default(),
        routes: each(routes, "route", p),
        redactions: each(redactions, "redact", p),
        admin: one(admin, "admin", p).unwrap_or_default(),
        subscriptions: each(subscriptions, "subscription", p),
        contracts: one(contracts, "contracts", p).unwrap_or_default(),
        schemas: each(schemas, "schema", p),
        path: None,
    };
    (config, problems)
}

/// A `[section]`, if present.
fn one<T: DeserializeOwned>(
    value: Option<toml::Value>,
    at: &str,
    p: &mut Vec<Problem>,
) -> Option<T> {
    read(value?, at, at, p)
}

/// The elements of a `[[section]]` array that could be read.
fn each<T: DeserializeOwned>(value: Option<toml::Value>, at: &str, p: &mut Vec<Problem>) -> Vec<T> {
    let items = match value {
        None => return Vec::new(),
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            p.push(problem(
                at.into(),
                format!("must be an array of tables: write [[{at}]]"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        out.extend(read(item, &format!("{at}[{i}]"), at, p));
    }
    out
}

/// Deserializes one piece, reporting each wrong value and reading again
/// without it, until it reads or a problem cannot be stepped over (a
/// required key missing). `section` names the piece's kind for hints.
fn read<T: DeserializeOwned>(
    mut value: toml::Value,
    at: &str,
    section: &str,
    p: &mut Vec<Problem>,
) -> Option<T> {
    let mut unknown = BTreeSet::new();
    // Keys of the wrong type taken out: a required one then reads as
    // missing, which is the same mistake, not another.
    let mut removed: Vec<Vec<String>> = Vec::new();
    let mut result = None;
    // Each round removes one key, so this ends; the bound is a backstop.
    for _ in 0..256 {
        let mut ignored = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value.clone(), &mut record);
        let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
        unknown.extend(ignored);
        match parsed {
            Ok(t) => {
                result = Some(t);
                break;
            }
            Err(e) => {
                let inner = segments(&e.path().to_string());
                let message = first_line(&e.into_inner().to_string());
                if !is_removed_and_missing(&message, &inner, &removed) {
                    p.push(problem(join(at, &inner), with_hint(&message)));
                }
                if inner.is_empty() || !remove(&mut value, &inner) {
                    break;
                }
                removed.push(inner);
            }
        }
    }
    for path in unknown {
        let inner = segments(&path);
        let (parent, key) = inner.split_at(inner.len().saturating_sub(1));
        let hint = key
            .first()
            .and_then(|k| nearest(k, fields(section, parent)));
        p.push(unknown_key(join(at, &inner), hint));
    }
    result
}

/// A deserializer's message without the location the TOML parser adds
/// on its own lines (the key path says where).
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

/// Whether `message` says a key is missing that was taken out for its type.
fn is_removed_and_missing(message: &str, at: &[String], removed: &[Vec<String>]) -> bool {
    let Some(key) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    else {
        return false;
    };
    removed.iter().any(|r| {
        r.split_last()
            .is_some_and(|(last, parent)| last == key && parent == at)
    })
}

fn problem(path: String, message: String) -> Problem {
    Problem { path, message }
}

fn unknown_key(path: String, hint: Option<&str>) -> Problem {
    let message = match hint {
        Some(h) => format!("unknown key; did you mean `{h}`?"),
        None => "unknown key (check its spelling and section; see conf/example.toml)".into(),
    };
    problem(path, message)
}

/// A path's parts: keys and array indices ("retry.max_attempts",
/// "secrets[1]" and "secrets.1" alike).
fn segments(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|s| !s.is_empty() && *s != "?")
        .flat_map(|s| {
            let mut parts: Vec<String> = s
                .split('[')
                .map(|p| p.trim_end_matches(']').to_string())
                .collect();
            parts.retain(|p| !p.is_empty());
            parts
        })
        .collect()
}

/// `at` and a path inside it, written as the problems write key paths.
fn join(at: &str, inner: &[String]) -> String {
    let mut out = at.to_string();
    for s in inner {
        match s.parse::<usize>() {
            Ok(i) => out.push_str(&format!("[{i}]")),
            Err(_) if out.is_empty() => out.push_str(s),
            Err(_) => {
                out.push('.');
                out.push_str(s);
            }
        }
    }
    out
}

/// Removes the value at `path`; false when there is none to remove.
fn remove(value: &mut toml::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut v = value;
    for s in parents {
        let next = match v {
            toml::Value::Table(t) => t.get_mut(s),
            toml::Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    match v {
        toml::Value::Table(t) => t.remove(last).is_some(),
        toml::Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A serde message, with the nearest expected name when it is about an
/// unknown variant ("unknown variant `x`, expected one of `a`, `b`").
fn with_hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown variant `") else {
        return message.to_string();
    };
    let Some((given, expected)) = rest.split_once("`, expected ") else {
        return message.to_string();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match nearest(given, &names) {
        Some(n) => format!("{message}; did you mean `{n}`?"),
        None => message.to_string(),
    }
}

/// The closest of `names` to `given`, when it is close enough to be a typo.
pub fn nearest<'a>(given: &str, names: &[&'a str]) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).clamp(1, 3);
    names
        .iter()
        .map(|n| (strsim::osa_distance(given, n), *n))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, n)| n)
}

/// The keys a table at `parent` (inside a piece of `section`) takes.
fn fields(section: &str, parent: &[String]) -> &'static [&'static str] {
    let keys: Vec<&str> = parent
        .iter()
        .filter(|s| s.parse::<usize>().is_err())
        .map(String::as_str)
        .collect();
    match (section, keys.as_slice()) {
        ("node", []) => fields_of::<NodeConfig>(),
        ("ingress", []) => fields_of::<IngressConfig>(),
        ("ingress" | "admin", ["tls"]) => fields_of::<TlsConfig>(),
        ("ingress" | "source", ["rate_limit"]) => fields_of::<RateLimitConfig>(),
        ("upstream", []) => fields_of::<UpstreamConfig>(),
        ("local", []) => fields_of::<LocalConfig>(),
        ("upstream" | "local", ["tls"]) => fields_of::<UpstreamTls>(),
        ("admin", []) => fields_of::<AdminConfig>(),
        ("routing", []) => fields_of::<RoutingConfig>(),
        ("source", []) => fields_of::<SourceConfig>(),
        ("route", []) => fields_of::<RouteConfig>(),
        ("redact", []) => fields_of::<RedactConfig>(),
        ("subscription", []) => fields_of::<SubscriptionConfig>(),
        ("subscription", ["retry"]) => fields_of::<RetryConfig>(),
        ("subscription", ["breaker"]) => fields_of::<BreakerConfig>(),
        ("subscription", ["to_webhook"]) => fields_of::<WebhookTarget>(),
        ("subscription", ["to_stream"]) => fields_of::<StreamTarget>(),
        ("contracts", []) => fields_of::<ContractsConfig>(),
        ("schema", []) => fields_of::<SchemaConfig>(),
        _ => &[],
    }
}

/// The keys a config struct takes, as serde names them: its derived
/// `Deserialize` hands them to `deserialize_struct`, which this
/// deserializer only records.
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("only structs name their fields"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut out: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mistake_is_found_in_one_reading() {
        let text = r#"
[node]
fsync = "yes"
max_buffer = "lots"
data_dri = "x"
[[source]]
name = "a"
verify = "standard-webhook"
[[source]]
name = "b"
verfy = "none"
[[route]]
action = "forwards"
[[subscription]]
name = "s"
subjects = ["x"]
[subscription.retry]
max_attempts = "many"
[ingres]
"#;
        let (cfg, problems) = parse(toml::from_str(text).unwrap());
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |path: &str, text: &str| {
            assert!(
                shown
                    .iter()
                    .any(|s| s.starts_with(path) && s.contains(text)),
                "{path} … {text} missing from {shown:#?}"
            )
        };
        has("ingres:", "did you mean `ingress`?");
        has("node.fsync:", "expected a boolean");
        has("node.max_buffer:", "lots");
        has("node.data_dri:", "did you mean `data_dir`?");
        has("source[0].verify:", "did you mean `standard-webhooks`?");
        has("source[1].verfy:", "did you mean `verify`?");
        has("route[0].action:", "did you mean `forward`?");
        has("subscription[0].retry.max_attempts:", "many");
        // What could be read is there, with defaults for what could not.
        assert_eq!(cfg.subscriptions.len(), 1);
        assert_eq!(cfg.subscriptions[0].retry, RetryConfig::default());
        assert!(cfg.node.fsync);
    }

    #[test]
    fn the_printed_config_reads_back_the_same() {
        let example = include_str!("../../conf/example.toml");
        let (cfg, problems) = parse(toml::from_str(example).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let printed = cfg.to_toml();
        let (again, problems) = parse(toml::from_str(&printed).unwrap());
        assert!(problems.is_empty(), "{problems:?}\n{printed}");
        assert_eq!(again, cfg, "{printed}");
        assert!(
            printed.contains("max_in_flight_bytes = \"4MiB\""),
            "defaults are shown"
        );
    }

    #[test]
    fn paths_and_names() {
        assert_eq!(
            segments("source[1].secrets.0"),
            ["source", "1", "secrets", "0"]
        );
        assert_eq!(
            join("route[2]", &segments("match.prefx")),
            "route[2].match.prefx"
        );
        assert_eq!(nearest("tpye", &["type", "source", "id"]), Some("type"));
        assert_eq!(nearest("zzzz", &["type", "source"]), None);
        assert!(fields_of::<NodeConfig>().contains(&"encryption_key"));
    }
}
