//! Event contracts: the JSON Schemas an event's `data` must meet before it
//! is stored, from `[[schema]]` files and from the mesh's registry bucket
//! (`registry.rs`), and the AsyncAPI document that describes the node's
//! channels (`asyncapi.rs`).
//!
//! Checking is pure: it reads the event's `data` as the sender sent it
//! (before redaction) and says which schema applied and what broke it.
//! A file schema is looked up first; the registry's newest version of the
//! source and type serves where no file does. Schemas are compiled once,
//! when the config is loaded or a registry entry arrives; a schema that
//! refers to anything outside itself does not compile (no I/O here).

pub mod asyncapi;
pub mod registry;

use crate::config::{Config, OnViolation, Problem, SchemaConfig};
use crate::envelope::TypeMatch;
use crate::reload::Live;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// At most this many violations are reported for one event.
const MAX_VIOLATIONS: usize = 16;

/// A compiled schema and where it came from.
pub struct Schema {
    validator: jsonschema::Validator,
    /// The schema document, as AsyncAPI payloads show it.
    pub document: Value,
    pub origin: Origin,
    pub on_violation: OnViolation,
    /// What the events it checked carry as CloudEvents `dataschema`: the
    /// registry entry (`kv:BUCKET/key`), else the document's `$id`, else
    /// `file:PATH`.
    pub dataschema: String,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("origin", &self.origin)
            .field("on_violation", &self.on_violation)
            .finish_non_exhaustive()
    }
}

/// Where a schema came from, as `jetedge schemas` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    File {
        path: String,
    },
    Registry {
        bucket: String,
        key: String,
        version: u64,
        revision: u64,
    },
}

impl Schema {
    /// Compiles `document`; the error says why it is no schema.
    pub fn compile(
        document: Value,
        origin: Origin,
        on_violation: OnViolation,
    ) -> Result<Self, String> {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| format!("not a usable JSON Schema: {}", e.masked()))?;
        let dataschema = match &origin {
            Origin::Registry { bucket, key, .. } => format!("kv:{bucket}/{key}"),
            Origin::File { path } => match document.get("$id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => format!("file:{path}"),
            },
        };
        Ok(Self {
            validator,
            document,
            origin,
            on_violation,
            dataschema,
        })
    }

    /// Every way `data` breaks the schema (at most [`MAX_VIOLATIONS`]);
    /// empty when it meets it. Messages never quote the event's values.
    pub fn violations(&self, data: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(data)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                pointer: e.instance_path().to_string(),
                keyword: e.kind().keyword().to_string(),
                message: e.masked().to_string(),
            })
            .collect()
    }
}

/// One way an event's `data` breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// JSON pointer into `data` ("" for `data` itself).
    pub pointer: String,
    /// The schema keyword that failed (`required`, `type`, `minimum`…).
    pub keyword: String,
    pub message: String,
}

/// A `[[schema]]` entry, compiled.
#[derive(Debug)]
struct FileRule {
    source: String,
    types: Vec<TypeMatch>,
    schema: Arc<Schema>,
}

/// What the node enforces: the config's schema files and the registry's
/// current entries (shared across reloads with the task that watches it).
#[derive(Debug, Clone, Default)]
pub struct Contracts {
    files: Arc<Vec<FileRule>>,
    pub registry: Arc<Live<registry::Entries>>,
    /// Whether `[contracts] registry` is set: without it, checking an
    /// event never looks at the (empty) registry.
    uses_registry: bool,
}

/// What checking one event found.
#[derive(Debug)]
pub enum Verdict {
    /// No schema covers the event's source and type.
    Unchecked,
    Valid(Arc<Schema>),
    Invalid(Arc<Schema>, Vec<Violation>),
}

impl Contracts {
    /// Reads and compiles every `[[schema]]` file; each problem with its key path.
    pub fn compile(
        cfg: &Config,
        registry: Arc<Live<registry::Entries>>,
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for (i, s) in cfg.schemas.iter().enumerate() {
            match compile_file(s) {
                Ok(schema) => files.push(FileRule {
                    source: s.source.clone(),
                    types: s.type_patterns().map(TypeMatch::parse).collect(),
                    schema: Arc::new(schema),
                }),
                Err(message) => problems.push(Problem {
                    path: format!("schema[{i}].file"),
                    message,
                }),
            }
        }
        match problems.is_empty() {
            true => Ok(Self {
                files: Arc::new(files),
                registry,
                uses_registry: cfg.contracts.registry.is_some(),
            }),
            false => Err(problems),
        }
    }

    /// The schema for an event of `source` and `type_`, if any.
    pub fn find(&self, source: &str, type_: &str) -> Option<Arc<Schema>> {
        let file = self
            .files
            .iter()
            .find(|r| r.source == source && r.types.iter().any(|t| t.matches(type_)));
        match file {
            Some(r) => Some(r.schema.clone()),
            None if self.uses_registry => self.registry.get().latest(source, type_),
            None => None,
        }
    }

    /// Checks an event's `data` (absent data is checked as `null`).
    pub fn check(&self, source: &str, type_: &str, data: Option<&Value>) -> Verdict {
        let Some(schema) = self.find(source, type_) else {
            return Verdict::Unchecked;
        };
        let violations = schema.violations(data.unwrap_or(&Value::Null));
        match violations.is_empty() {
            true => Verdict::Valid(schema),
            false => Verdict::Invalid(schema, violations),
        }
    }

    /// Everything enforced, as `jetedge schemas` lists it: files first (they
    /// win), then the registry's newest version of each source and type.
    pub fn list(&self) -> Vec<Listed> {
        let files = self.files.iter().map(|r| {
            let types = r.types.iter().map(TypeMatch::pattern).collect();
            Listed::of(&r.source, types, &r.schema)
        });
        let registry = self.registry.get();
        let from_registry = registry
            .newest()
            .map(|(source, type_, s)| Listed::of(source, vec![type_.to_string()], s));
        files.chain(from_registry.collect::<Vec<_>>()).collect()
    }

    /// The schemas by source and type pattern, for AsyncAPI payloads.
    pub fn documents(&self) -> Vec<(String, String, Arc<Schema>)> {
        let mut out = Vec::new();
        for r in self.files.iter() {
            for t in &r.types {
                out.push((r.source.clone(), t.pattern(), r.schema.clone()));
            }
        }
        let registry = self.registry.get();
        for (source, type_, s) in registry.newest() {
            out.push((source.to_string(), type_.to_string(), s.clone()));
        }
        out
    }
}

/// One enforced schema, as the admin API and `jetedge schemas` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Listed {
    pub source: String,
    pub types: Vec<String>,
    pub on_violation: OnViolation,
    pub dataschema: String,
    pub origin: Origin,
}

impl Listed {
    fn of(source: &str, types: Vec<String>, s: &Schema) -> Self {
        Self {
            source: source.to_string(),
            types,
            on_violation: s.on_violation,
            dataschema: s.dataschema.clone(),
            origin: s.origin.clone(),
        }
    }
}

/// The largest schema file read (a schema is a few KiB; this stops a
/// mistaken path such as a device or a log from being read whole).
const MAX_SCHEMA_FILE: u64 = 1 << 20;

fn compile_file(s: &SchemaConfig) -> Result<Schema, String> {
    let path = s.file.display().to_string();
    let meta = std::fs::metadata(&s.file).map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    if meta.len() > MAX_SCHEMA_FILE {
        return Err(format!(
            "{path} is {} bytes, over the 1 MiB a schema file may have",
            meta.len()
        ));
    }
    let text = std::fs::read(&s.file).map_err(|e| format!("cannot read {path}: {e}"))?;
    let document: Value =
        serde_json::from_slice(&text).map_err(|e| format!("{path} is not JSON: {e}"))?;
    Schema::compile(
        document,
        Origin::File { path: path.clone() },
        s.on_violation,
    )
    .map_err(|e| format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(doc: Value) -> Schema {
        let origin = Origin::File {
            path: "x.json".into(),
        };
        Schema::compile(doc, origin, OnViolation::Reject).unwrap()
    }

    #[test]
    fn violations_name_pointer_and_keyword_and_hide_values() {
        let s = schema(json!({"type": "object", "required": ["id"],
            "properties": {"email": {"type": "string", "format": "email"}, "n": {"maximum": 3}}}));
        let v = s.violations(&json!({"email": "not-an-address-SECRET", "n": 9}));
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        assert!(got.contains(&("", "required")), "{got:?}");
        assert!(
            got.contains(&("/email", "format")),
            "formats are asserted: {got:?}"
        );
        assert!(got.contains(&("/n", "maximum")), "{got:?}");
        assert!(v.iter().all(|v| !v.message.contains("SECRET")), "{v:?}");
        assert!(s
            .violations(&json!({"id": 1, "email": "a@example.com"}))
            .is_empty());
        assert_eq!(s.dataschema, "file:x.json");
    }

    #[test]
    fn a_path_that_is_no_small_file_is_refused_before_it_is_read() {
        let cfg = |file: &str| Config {
            schemas: vec![SchemaConfig {
                source: "shop".into(),
                type_: Some("t".into()),
                types: Vec::new(),
                file: file.into(),
                on_violation: OnViolation::Reject,
            }],
            ..Config::default()
        };
        let e = Contracts::compile(&cfg("/dev/zero"), Arc::default()).unwrap_err();
        assert!(e[0].message.contains("not a regular file"), "{e:?}");
        let dir = crate::testdir::TestDir::new("contract-big");
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; (MAX_SCHEMA_FILE + 1) as usize]).unwrap();
        let e = Contracts::compile(&cfg(&big.display().to_string()), Arc::default()).unwrap_err();
        assert!(e[0].message.contains("over the 1 MiB"), "{e:?}");
        assert_eq!(e[0].path, "schema[0].file");
    }

    #[test]
    fn a_schema_that_points_outside_itself_does_not_compile() {
        let origin = Origin::File {
            path: "x.json".into(),
        };
        let doc = json!({"$ref": "https://example.com/other.json"});
        let e = Schema::compile(doc, origin, OnViolation::Reject).unwrap_err();
        assert!(e.contains("not a usable JSON Schema"), "{e}");
    }

    #[test]
    fn files_win_over_the_registry_and_prefixes_match() {
        let dir = crate::testdir::TestDir::new("contract");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("order.json");
        std::fs::write(&file, r#"{"$id": "urn:order:file", "type": "object"}"#).unwrap();
        let text = format!(
            "[[source]]\nname = \"shop\"\nverify = \"none\"\n\
             [[schema]]\nsource = \"shop\"\ntypes = [\"order.*\"]\nfile = {:?}\n",
            file.display()
        );
        let cfg = Config::from_toml(&text, std::iter::empty()).unwrap();
        let c = Contracts::compile(&cfg, Arc::default()).unwrap();
        match c.check("shop", "order.paid", Some(&json!([]))) {
            Verdict::Invalid(s, v) => {
                assert_eq!(s.dataschema, "urn:order:file");
                assert_eq!(v[0].keyword, "type");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.check("shop", "refund.paid", None),
            Verdict::Unchecked
        ));
        assert!(matches!(
            c.check("other", "order.paid", None),
            Verdict::Unchecked
        ));
    }
}
