//! Routing rules: which events leave the site, and under which subject.
//!
//! The match language is the filter dialects of the CloudEvents
//! Subscriptions API (`exact`, `prefix`, `suffix` over context attributes,
//! combined with `all`, `any`, `not`), extended with JSON-pointer tests into
//! the event (`path` with `in`, `exists`, `gt`, `gte`, `lt`, `lte`) for the
//! payload-level rules webhook gateways are asked for. Rules are compiled
//! once at start: attribute names become an enum, pointers are split into
//! tokens, `in` lists become sets, so matching an event allocates nothing.
//!
//! Pure: no I/O.

use crate::config::{Problem, RouteAction, RouteConfig};
use crate::envelope::{self, Envelope};
use serde_json::Value;
use std::collections::HashSet;

/// A compiled filter expression.
#[derive(Debug, Clone)]
pub enum Filter {
    Exact(Vec<(Attr, String)>),
    Prefix(Vec<(Attr, String)>),
    Suffix(Vec<(Attr, String)>),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Path(Pointer, PathTest),
}

/// A CloudEvents context attribute, or an extension by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Id,
    Source,
    Type,
    Subject,
    Time,
    DataContentType,
    SpecVersion,
    Extension(String),
}

/// What a `path` filter checks at its pointer.
#[derive(Debug, Clone, Default)]
pub struct PathTest {
    exists: Option<bool>,
    one_of: Option<HashSet<String>>,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

/// An RFC 6901 JSON pointer, split into unescaped tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer(pub Vec<String>);

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self(Vec::new()));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("JSON pointer {text:?} must start with '/'"));
        };
        rest.split('/')
            .map(|t| {
                if t.replace("~0", "").replace("~1", "").contains('~') {
                    Err(format!(
                        "JSON pointer {text:?} has a '~' not followed by 0 or 1"
                    ))
                } else {
                    Ok(t.replace("~1", "/").replace("~0", "~"))
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The value at this pointer in `root`.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        walk(&self.0, root)
    }
}

/// Follows pointer tokens down from `root`.
fn walk<'a>(tokens: &[String], root: &'a Value) -> Option<&'a Value> {
    tokens.iter().try_fold(root, |v, token| match v {
        Value::Object(m) => m.get(token),
        Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The attributes and body of one event, as filters see them.
pub struct EventView<'a> {
    pub envelope: &'a Envelope,
    pub subject: &'a str,
}

impl EventView<'_> {
    fn attr(&self, a: &Attr) -> Option<&str> {
        let e = self.envelope;
        match a {
            Attr::Id => Some(&e.id),
            Attr::Source => Some(&e.source),
            Attr::Type => Some(&e.type_),
            Attr::Subject => Some(self.subject),
            Attr::Time => Some(&e.time),
            Attr::DataContentType => Some(&e.datacontenttype),
            Attr::SpecVersion => Some(e.specversion),
            Attr::Extension(name) => match name.as_str() {
                "correlationid" => Some(&e.correlationid),
                "traceparent" => Some(&e.traceparent),
                "idempotencykey" => e.idempotencykey.as_deref(),
                _ => e.extensions.get(name).and_then(Value::as_str),
            },
        }
    }

    /// A pointer is read against the envelope as it is published: `/data/...`
    /// reaches into the payload, `/type` is the type attribute.
    fn pointer(&self, p: &Pointer) -> Option<&Value> {
        match p.0.split_first() {
            Some((first, rest)) if first == "data" => walk(rest, self.envelope.data.as_ref()?),
            _ => None,
        }
    }
}

impl Filter {
    pub fn matches(&self, ev: &EventView<'_>) -> bool {
        match self {
            Self::Exact(pairs) => pairs.iter().all(|(a, v)| ev.attr(a) == Some(v.as_str())),
            Self::Prefix(pairs) => pairs
                .iter()
                .all(|(a, v)| ev.attr(a).is_some_and(|x| x.starts_with(v.as_str()))),
            Self::Suffix(pairs) => pairs
                .iter()
                .all(|(a, v)| ev.attr(a).is_some_and(|x| x.ends_with(v.as_str()))),
            Self::All(fs) => fs.iter().all(|f| f.matches(ev)),
            Self::Any(fs) => fs.iter().any(|f| f.matches(ev)),
            Self::Not(f) => !f.matches(ev),
            Self::Path(p, test) => test.check(path_value(ev, p)),
        }
    }

    /// Compiles a filter from its TOML form; `at` is its key path for problems.
    pub fn compile(v: &toml::Value, at: &str, problems: &mut Vec<Problem>) -> Option<Filter> {
        let Some(table) = v.as_table() else {
            problem(
                problems,
                at,
                "a filter is a table with one dialect, such as { prefix = { type = \"order.\" } }",
            );
            return None;
        };
        if table.contains_key("path") {
            return compile_path(table, at, problems);
        }
        if table.len() != 1 {
            problem(
                problems,
                at,
                format!(
                    "a filter has exactly one dialect ({DIALECTS}), found {}",
                    table.len()
                ),
            );
            return None;
        }
        let (dialect, arg) = table.iter().next().expect("one entry");
        let at = format!("{at}.{dialect}");
        match dialect.as_str() {
            "exact" => compile_attrs(arg, &at, problems).map(Filter::Exact),
            "prefix" => compile_attrs(arg, &at, problems).map(Filter::Prefix),
            "suffix" => compile_attrs(arg, &at, problems).map(Filter::Suffix),
            "all" | "any" => {
                let Some(items) = arg.as_array().filter(|a| !a.is_empty()) else {
                    problem(problems, &at, "expects a non-empty array of filters");
                    return None;
                };
                let fs: Vec<Option<Filter>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Filter::compile(f, &format!("{at}[{i}]"), problems))
                    .collect();
                let fs: Option<Vec<Filter>> = fs.into_iter().collect();
                fs.map(|fs| {
                    if dialect == "all" {
                        Filter::All(fs)
                    } else {
                        Filter::Any(fs)
                    }
                })
            }
            "not" => Filter::compile(arg, &at, problems).map(|f| Filter::Not(Box::new(f))),
            other => {
                problem(
                    problems,
                    &at,
                    format!("unknown filter dialect {other:?}; expected one of {DIALECTS}"),
                );
                None
            }
        }
    }
}

const DIALECTS: &str = "exact, prefix, suffix, all, any, not, path";

/// The value a `path` filter tests. `/data/...` reads the payload; a
/// single-token pointer names an attribute (as text).
fn path_value<'a>(ev: &'a EventView<'_>, p: &Pointer) -> Option<PathValue<'a>> {
    if let Some(v) = ev.pointer(p) {
        return Some(PathValue::Json(v));
    }
    match p.0.as_slice() {
        [name] => ev.attr(&Attr::from_name(name)).map(PathValue::Text),
        _ => None,
    }
}

enum PathValue<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl PathTest {
    fn check(&self, v: Option<PathValue<'_>>) -> bool {
        if let Some(want) = self.exists {
            let present = match &v {
                Some(PathValue::Text(_)) => true,
                Some(PathValue::Json(j)) => !j.is_null(),
                None => false,
            };
            if present != want {
                return false;
            }
        }
        if let Some(set) = &self.one_of {
            let text = match &v {
                Some(PathValue::Text(s)) => Some(*s),
                Some(PathValue::Json(Value::String(s))) => Some(s.as_str()),
                _ => None,
            };
            let hit = match (text, &v) {
                (Some(s), _) => set.contains(s),
                (None, Some(PathValue::Json(j @ (Value::Number(_) | Value::Bool(_))))) => {
                    set.contains(&j.to_string())
                }
                _ => false,
            };
            if !hit {
                return false;
            }
        }
        if self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some() {
            let Some(n) = number(&v) else { return false };
            let ok = self.gt.is_none_or(|b| n > b)
                && self.gte.is_none_or(|b| n >= b)
                && self.lt.is_none_or(|b| n < b)
                && self.lte.is_none_or(|b| n <= b);
            if !ok {
                return false;
            }
        }
        true
    }
}

/// A number, or a string holding one (payloads often carry "12.50").
fn number(v: &Option<PathValue<'_>>) -> Option<f64> {
    match v {
        Some(PathValue::Json(Value::Number(n))) => n.as_f64(),
        Some(PathValue::Json(Value::String(s))) => s.trim().parse().ok(),
        Some(PathValue::Text(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Attributes every event carries, and extensions the node sets itself.
const KNOWN_ATTRS: &[&str] = &[
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "specversion",
    "correlationid",
    "traceparent",
    "idempotencykey",
    "originsource",
];

/// Attributes a filter names that look like a misspelt known one (`tpye`):
/// such a filter compiles, but no event carries the attribute, so it never
/// matches. Each with its key path and the name it probably meant.
pub fn misspelt_attributes(v: &toml::Value, at: &str) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    let Some(table) = v.as_table() else {
        return out;
    };
    for (dialect, arg) in table {
        let at = format!("{at}.{dialect}");
        match (dialect.as_str(), arg) {
            ("exact" | "prefix" | "suffix", toml::Value::Table(attrs)) => {
                for name in attrs.keys().filter(|n| !KNOWN_ATTRS.contains(&n.as_str())) {
                    if let Some(meant) = crate::config::nearest(name, KNOWN_ATTRS) {
                        out.push((format!("{at}.{name}"), name.clone(), meant));
                    }
                }
            }
            ("all" | "any", toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    out.extend(misspelt_attributes(item, &format!("{at}[{i}]")));
                }
            }
            ("not", inner) => out.extend(misspelt_attributes(inner, &at)),
            _ => {}
        }
    }
    out
}

impl Attr {
    fn from_name(name: &str) -> Attr {
        match name {
            "id" => Attr::Id,
            "source" => Attr::Source,
            "type" => Attr::Type,
            "subject" => Attr::Subject,
            "time" => Attr::Time,
            "datacontenttype" => Attr::DataContentType,
            "specversion" => Attr::SpecVersion,
            other => Attr::Extension(other.to_string()),
        }
    }
}

fn compile_attrs(
    arg: &toml::Value,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<(Attr, String)>> {
    let Some(table) = arg.as_table().filter(|t| !t.is_empty()) else {
        problem(
            problems,
            at,
            "expects a table of attribute = \"value\", such as { type = \"order.\" }",
        );
        return None;
    };
    let mut out = Vec::new();
    for (name, value) in table {
        let ok_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        match value.as_str() {
            Some(s) if ok_name => out.push((Attr::from_name(name), s.to_string())),
            _ if !ok_name => problem(
                problems,
                &format!("{at}.{name}"),
                "attribute names are lowercase letters and digits (CloudEvents)",
            ),
            _ => problem(problems, &format!("{at}.{name}"), "expects a string"),
        }
    }
    (out.len() == table.len()).then_some(out)
}

fn compile_path(table: &toml::Table, at: &str, problems: &mut Vec<Problem>) -> Option<Filter> {
    let before = problems.len();
    let pointer = match table
        .get("path")
        .and_then(toml::Value::as_str)
        .map(Pointer::parse)
    {
        Some(Ok(p)) if p.0.first().is_some_and(|t| t == "data") || p.0.len() == 1 => Some(p),
        Some(Ok(_)) => {
            problem(
                problems,
                &format!("{at}.path"),
                "must point into the payload (/data/...) or name an attribute (/type)",
            );
            None
        }
        Some(Err(e)) => {
            problem(problems, &format!("{at}.path"), e);
            None
        }
        None => {
            problem(
                problems,
                &format!("{at}.path"),
                "expects a JSON pointer string such as \"/data/region\"",
            );
            None
        }
    };
    let mut test = PathTest::default();
    for (key, v) in table {
        let here = format!("{at}.{key}");
        match key.as_str() {
            "path" => {}
            "exists" => match v.as_bool() {
                Some(b) => test.exists = Some(b),
                None => problem(problems, &here, "expects true or false"),
            },
            "in" => match v.as_array() {
                Some(items) => {
                    let set: Option<HashSet<String>> = items.iter().map(scalar_text).collect();
                    match set {
                        Some(set) => test.one_of = Some(set),
                        None => problem(
                            problems,
                            &here,
                            "expects an array of strings, numbers or booleans",
                        ),
                    }
                }
                None => problem(
                    problems,
                    &here,
                    "expects an array, such as [\"apac\", \"emea\"]",
                ),
            },
            "gt" | "gte" | "lt" | "lte" => {
                let n = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
                let Some(n) = n else {
                    problem(problems, &here, "expects a number");
                    continue;
                };
                match key.as_str() {
                    "gt" => test.gt = Some(n),
                    "gte" => test.gte = Some(n),
                    "lt" => test.lt = Some(n),
                    _ => test.lte = Some(n),
                }
            }
            other => problem(
                problems,
                &here,
                format!("unknown path operator {other:?}; expected in, exists, gt, gte, lt, lte"),
            ),
        }
    }
    if table.len() == 1 {
        problem(
            problems,
            at,
            "a path filter needs an operator: in, exists, gt, gte, lt or lte",
        );
    }
    (problems.len() == before).then(|| Filter::Path(pointer.expect("checked"), test))
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(serde_json::Number::from_f64(*f)?.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn problem(problems: &mut Vec<Problem>, at: &str, message: impl Into<String>) {
    problems.push(Problem {
        path: at.to_string(),
        message: message.into(),
    });
}

/// What routing decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward, to this subject when a rule overrides it.
    Forward(Option<String>),
    /// Drop; the index of the rule that dropped it (`None`: the default action).
    Drop(Option<usize>),
}

/// The ordered routing table: first match wins.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<Rule>,
    default: RouteAction,
}

#[derive(Debug, Clone)]
struct Rule {
    filter: Option<Filter>,
    action: RouteAction,
    subject: Option<SubjectTemplate>,
}

impl Router {
    /// Compiles `[[route]]` rules; every problem is reported with its key path.
    pub fn compile(routes: &[RouteConfig], default: RouteAction) -> Result<Router, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let at = format!("route[{i}]");
            let filter = r
                .match_
                .as_ref()
                .and_then(|m| Filter::compile(m, &format!("{at}.match"), &mut problems));
            let subject = r
                .subject
                .as_deref()
                .and_then(|t| match SubjectTemplate::parse(t) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        problem(&mut problems, &format!("{at}.subject"), e);
                        None
                    }
                });
            if r.subject.is_some() && r.action == RouteAction::Drop {
                problem(
                    &mut problems,
                    &format!("{at}.subject"),
                    "a subject only applies to action = \"forward\"",
                );
            }
            rules.push(Rule {
                filter,
                action: r.action,
                subject,
            });
        }
        if problems.is_empty() {
            Ok(Router { rules, default })
        } else {
            Err(problems)
        }
    }

    pub fn decide(&self, ev: &EventView<'_>, prefix: &str, source: &str) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.filter.as_ref().is_none_or(|f| f.matches(ev)) {
                return match rule.action {
                    RouteAction::Drop => Decision::Drop(Some(i)),
                    RouteAction::Forward => Decision::Forward(
                        rule.subject
                            .as_ref()
                            .map(|t| t.render(prefix, source, &ev.envelope.type_)),
                    ),
                };
            }
        }
        match self.default {
            RouteAction::Drop => Decision::Drop(None),
            RouteAction::Forward => Decision::Forward(None),
        }
    }
}

/// The routes that set their own subject, by key path, each with a sample
/// subject it makes (source and type as one token each): what `check` and
/// the forwarder test against the upstream stream's subjects.
pub fn route_subjects(routes: &[RouteConfig], prefix: &str) -> Vec<(String, String)> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.action == RouteAction::Forward)
        .filter_map(|(i, r)| {
            let t = SubjectTemplate::parse(r.subject.as_deref()?).ok()?;
            Some((
                format!("route[{i}].subject"),
                t.render(prefix, "source", "type"),
            ))
        })
        .collect()
}

/// A subject such as `"{prefix}.{source}.{type}"` or `"audit.{type}"`.
#[derive(Debug, Clone)]
struct SubjectTemplate(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Prefix,
    Source,
    Type,
}

impl SubjectTemplate {
    fn parse(t: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or(format!("unclosed '{{' in {t:?}"))?
                + open;
            parts.push(match &rest[open + 1..close] {
                "prefix" => Part::Prefix,
                "source" => Part::Source,
                "type" => Part::Type,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; use {{prefix}}, {{source}} or {{type}}"
                    ))
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let sample = SubjectTemplate(parts.clone()).render("events", "source", "type");
        if !envelope::is_subject_safe(&sample) {
            return Err(format!(
                "{t:?} does not make a valid NATS subject (no spaces, wildcards or empty tokens)"
            ));
        }
        Ok(SubjectTemplate(parts))
    }

    fn render(&self, prefix: &str, source: &str, type_: &str) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(s) => s.as_str(),
                Part::Prefix => prefix,
                Part::Source => source,
                Part::Type => type_,
            })
            .collect()
    }
}
