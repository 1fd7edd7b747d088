//! Environment overrides: `JETEDGE_<SECTION>__<KEY>=value` sets `[section] key`.
//! The value is read as a TOML value when it parses as one (`true`, `1024`,
//! `["nats://a:4222","nats://b:4222"]`) and as a plain string otherwise, so
//! `JETEDGE_NODE__ID=store-7` needs no quotes.

use super::Problem;

const PREFIX: &str = "JETEDGE_";

pub(super) fn apply_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue; // JETEDGE_CONFIG and secrets like JETEDGE_ADMIN_TOKEN are not overrides
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, parse_value(&raw));
            }
            _ => problems.push(Problem {
                path: section,
                message: format!("{name} overrides a key of a section that is not a table"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_set_typed_values_and_skip_other_vars() {
        let mut t: toml::Table = toml::from_str("[node]\nid = \"a\"\n").unwrap();
        let env = [
            ("JETEDGE_NODE__ID", "store-7"),
            ("JETEDGE_UPSTREAM__MAX_IN_FLIGHT", "64"),
            ("JETEDGE_UPSTREAM__SERVERS", "[\"nats://127.0.0.1:1\"]"),
            ("JETEDGE_CONFIG", "x.toml"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        apply_overrides(&mut t, env).unwrap();
        assert_eq!(t["node"]["id"].as_str(), Some("store-7"));
        assert_eq!(t["upstream"]["max_in_flight"].as_integer(), Some(64));
        assert_eq!(
            t["upstream"]["servers"][0].as_str(),
            Some("nats://127.0.0.1:1")
        );
        assert!(!t.contains_key("config"));
    }
}
