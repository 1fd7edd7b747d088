//! Redaction: personal data is masked, removed or replaced by a keyed token
//! in memory, before the event is written to disk or sent upstream.
//!
//! A rule applies to the events of its sources and types. Its `paths`
//! (JSON pointers into the envelope, `*` for every member or element) name
//! values to redact whole; its `detectors` scan string values (everywhere
//! under `/data`, or only under the paths) and redact what they find. The
//! envelope's `redacted` extension lists each place, as `path:/data/...`
//! or `{detector}:/data/...`, never the value.
//!
//! Pure: no I/O. Rules are compiled once at start.

use super::detect::{Detector, Shape};
use super::filter::Pointer;
use crate::config::{Problem, RedactAction, RedactConfig};
use crate::envelope::{Envelope, TypeMatch};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashSet;

/// Counts of redacted values by detector (`path` for whole-value rules).
pub const COUNTED: [&str; 9] = [
    "path",
    "email",
    "payment_card",
    "phone",
    "ipv4",
    "ipv6",
    "iban",
    "us_ssn",
    "regex",
];

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    sources: Option<HashSet<String>>,
    types: Vec<TypeMatch>,
    paths: Vec<Vec<Seg>>,
    detectors: Vec<Detector>,
    action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Any,
}

#[derive(Clone)]
enum Action {
    Mask {
        keep_last: Option<usize>,
        keep_domain: bool,
    },
    Remove,
    Hash(Vec<u8>),
}

/// Shows the action, never the hashing key.
impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mask {
                keep_last,
                keep_domain,
            } => f
                .debug_struct("Mask")
                .field("keep_last", keep_last)
                .field("keep_domain", keep_domain)
                .finish(),
            Self::Remove => f.write_str("Remove"),
            Self::Hash(_) => f.write_str("Hash(***)"),
        }
    }
}

impl Redactor {
    /// Compiles `[[redact]]` rules; `keys` are the resolved `key` secrets
    /// (`None` where a rule has none).
    pub fn compile(
        cfgs: &[RedactConfig],
        keys: &[Option<Vec<u8>>],
    ) -> Result<Redactor, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            if let Some(rule) = compile_rule(
                c,
                keys.get(i).cloned().flatten(),
                &format!("redact[{i}]"),
                &mut problems,
            ) {
                rules.push(rule);
            }
        }
        if problems.is_empty() {
            Ok(Redactor { rules })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Redacts `env` in place; adds one to `counts[k]` per value redacted
    /// by `COUNTED[k]`.
    ///
    /// Path rules run first, in order; then one walk over the payload runs
    /// every whole-payload detector rule on each string, in one pass per
    /// string (see [`redact_string`]).
    pub fn apply(&self, source: &str, env: &mut Envelope, counts: &mut [u64; COUNTED.len()]) {
        let Some(data) = env.data.as_mut() else {
            return;
        };
        let mut hits = Vec::new();
        let mut at = String::from("/data");
        let mut scanners: Vec<&Rule> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.applies(source, &env.type_)) {
            if rule.paths.is_empty() {
                scanners.push(rule);
            }
            for path in &rule.paths {
                rule.at_path(data, path, &mut at, &mut hits);
            }
        }
        if !scanners.is_empty() {
            scan(&scanners, data, &mut at, &mut hits);
        }
        for (what, at) in hits {
            counts[COUNTED.iter().position(|c| *c == what).unwrap_or(0)] += 1;
            let mut entry = String::with_capacity(what.len() + 1 + at.len());
            entry.push_str(what);
            entry.push(':');
            entry.push_str(&at);
            if !env.redacted.contains(&entry) {
                env.redacted.push(entry);
            }
        }
    }
}

/// Replaces in `s` what the detectors of `rules` find, in one pass: every
/// detector looks at the value as sent (its shape computed once), where
/// two spans overlap the earlier rule's (then detector's) claim wins, and
/// the string is rebuilt once. Each rule's detectors that fired are one
/// hit each, in rule order.
fn redact_string(
    rules: &[&Rule],
    s: &mut String,
    at: &str,
    hits: &mut Vec<(&'static str, String)>,
) {
    let shape = Shape::of(s);
    let mut spans: Vec<(usize, usize, usize, &Detector)> = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        for d in &rule.detectors {
            for (a, b) in d.find(s, &shape) {
                if spans.iter().all(|&(x, y, _, _)| b <= x || a >= y) {
                    spans.push((a, b, r, d));
                }
            }
        }
    }
    if spans.is_empty() {
        return;
    }
    spans.sort_by_key(|&(a, ..)| a);
    let mut out = String::with_capacity(s.len());
    let mut fired: Vec<(usize, &'static str)> = Vec::new();
    let mut last = 0;
    for &(a, b, r, d) in &spans {
        out.push_str(&s[last..a]);
        out.push_str(&rules[r].replace(&s[a..b], d));
        last = b;
        if !fired.contains(&(r, d.name())) {
            fired.push((r, d.name()));
        }
    }
    out.push_str(&s[last..]);
    *s = out;
    // Stable: within a rule, detectors stay in the order they first fired.
    fired.sort_by_key(|&(r, _)| r);
    hits.extend(fired.into_iter().map(|(_, n)| (n, at.to_string())));
}

/// Runs the detectors of `rules` over every string under `v`.
fn scan(rules: &[&Rule], v: &mut Value, at: &mut String, hits: &mut Vec<(&'static str, String)>) {
    let len = at.len();
    match v {
        Value::String(s) => redact_string(rules, s, at, hits),
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                push_token(at, k);
                scan(rules, child, at, hits);
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter_mut().enumerate() {
                push_index(at, i);
                scan(rules, child, at, hits);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

impl Rule {
    fn applies(&self, source: &str, type_: &str) -> bool {
        self.sources.as_ref().is_none_or(|s| s.contains(source))
            && (self.types.is_empty() || self.types.iter().any(|t| t.matches(type_)))
    }

    /// Walks `segs` down from `v`; at the end, redacts whole (no detectors)
    /// or scans (with detectors).
    fn at_path(
        &self,
        v: &mut Value,
        segs: &[Seg],
        at: &mut String,
        hits: &mut Vec<(&'static str, String)>,
    ) {
        let Some((seg, rest)) = segs.split_first() else {
            if !self.detectors.is_empty() {
                scan(&[self], v, at, hits);
            }
            return;
        };
        let len = at.len();
        if rest.is_empty() && self.detectors.is_empty() {
            return self.redact_children(v, seg, at, hits);
        }
        match v {
            Value::Object(m) => match seg {
                Seg::Key(k) => {
                    if let Some(child) = m.get_mut(k) {
                        push_token(at, k);
                        self.at_path(child, rest, at, hits);
                        at.truncate(len);
                    }
                }
                Seg::Any => {
                    for (k, child) in m.iter_mut() {
                        push_token(at, k);
                        self.at_path(child, rest, at, hits);
                        at.truncate(len);
                    }
                }
            },
            Value::Array(a) => {
                for (i, child) in a
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| seg_matches_index(seg, *i))
                {
                    push_index(at, i);
                    self.at_path(child, rest, at, hits);
                    at.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// Redacts whole the children of `parent` that `seg` names.
    fn redact_children(
        &self,
        parent: &mut Value,
        seg: &Seg,
        at: &mut String,
        hits: &mut Vec<(&'static str, String)>,
    ) {
        let len = at.len();
        match parent {
            Value::Object(m) => {
                // A named key is looked up, not searched for.
                let keys: Vec<String> = match seg {
                    Seg::Key(k) => m.contains_key(k).then(|| k.clone()).into_iter().collect(),
                    Seg::Any => m.keys().cloned().collect(),
                };
                for k in keys {
                    push_token(at, &k);
                    hits.push(("path", at.clone()));
                    at.truncate(len);
                    match &self.action {
                        Action::Remove => {
                            m.remove(&k);
                        }
                        _ => {
                            let v = m.get_mut(&k).expect("key listed above");
                            *v = self.whole(v);
                        }
                    }
                }
            }
            Value::Array(a) => {
                for (i, v) in a
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| seg_matches_index(seg, *i))
                {
                    push_index(at, i);
                    hits.push(("path", at.clone()));
                    at.truncate(len);
                    // Removing from an array would shift the other elements' places.
                    *v = match self.action {
                        Action::Remove => Value::Null,
                        _ => self.whole(v),
                    };
                }
            }
            _ => {}
        }
    }

    /// The replacement of a value redacted whole.
    fn whole(&self, v: &Value) -> Value {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Value::String(match &self.action {
            Action::Hash(key) => token(key, &text),
            Action::Mask { keep_last, .. } => mask_tail(&text, keep_last.unwrap_or(0)),
            Action::Remove => String::new(),
        })
    }

    fn replace(&self, found: &str, d: &Detector) -> String {
        match &self.action {
            Action::Remove => String::new(),
            Action::Hash(key) => token(key, found),
            Action::Mask {
                keep_last,
                keep_domain,
            } => match d {
                Detector::Email if *keep_domain => {
                    let domain = found.rsplit_once('@').map_or("", |(_, d)| d);
                    format!("***@{domain}")
                }
                Detector::PaymentCard => mask_digits(found, keep_last.unwrap_or(4)),
                _ => mask_tail(found, keep_last.unwrap_or(0)),
            },
        }
    }
}

fn seg_matches_index(seg: &Seg, i: usize) -> bool {
    match seg {
        Seg::Any => true,
        Seg::Key(k) => k.parse() == Ok(i),
    }
}

/// Appends one RFC 6901 token to a pointer.
fn push_token(at: &mut String, token: &str) {
    at.push('/');
    if token.contains(['~', '/']) {
        at.push_str(&token.replace('~', "~0").replace('/', "~1"));
    } else {
        at.push_str(token);
    }
}

/// Appends an array index to a pointer without allocating.
fn push_index(at: &mut String, i: usize) {
    use std::fmt::Write;
    let _ = write!(at, "/{i}");
}

/// Every character but the last `keep` becomes `*`.
fn mask_tail(s: &str, keep: usize) -> String {
    if s.is_ascii() {
        let masked = s.len().saturating_sub(keep);
        let mut out = "*".repeat(masked);
        out.push_str(&s[masked..]);
        return out;
    }
    let n = s.chars().count();
    s.chars()
        .enumerate()
        .map(|(i, c)| if i + keep < n { '*' } else { c })
        .collect()
}

/// Every digit but the last `keep` becomes `*`; separators stay.
fn mask_digits(s: &str, keep: usize) -> String {
    let total = s.bytes().filter(u8::is_ascii_digit).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + keep <= total {
                    return '*';
                }
            }
            c
        })
        .collect()
}

/// `tok_` and the base32 of HMAC-SHA256(key, value), truncated to 160 bits:
/// the same value always gives the same token, so joins still work.
pub fn token(key: &[u8], value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("tok_{}", base32(&digest[..20]))
}

/// RFC 4648 base32, lowercase, no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn compile_rule(
    c: &RedactConfig,
    key: Option<Vec<u8>>,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let mut found = Vec::new();
    let mut add = |path: String, message: String| found.push(Problem { path, message });
    let mut paths = Vec::new();
    for (i, p) in c.paths.iter().enumerate() {
        match Pointer::parse(p) {
            Ok(ptr) if ptr.0.first().is_some_and(|t| t == "data") => {
                let segs: Vec<Seg> = ptr.0[1..]
                    .iter()
                    .map(|t| {
                        if t == "*" {
                            Seg::Any
                        } else {
                            Seg::Key(t.clone())
                        }
                    })
                    .collect();
                if segs.is_empty() && c.detectors.is_empty() && c.patterns.is_empty() {
                    add(
                        format!("{at}.paths[{i}]"),
                        "name a value under /data, not /data itself".into(),
                    );
                }
                paths.push(segs);
            }
            Ok(_) => add(
                format!("{at}.paths[{i}]"),
                format!("{p:?} must point under /data"),
            ),
            Err(e) => add(format!("{at}.paths[{i}]"), e),
        }
    }
    let mut detectors = Vec::new();
    for (i, name) in c.detectors.iter().enumerate() {
        match Detector::by_name(name) {
            Some(d) => detectors.push(d),
            None if name == "regex" => add(
                format!("{at}.detectors[{i}]"),
                "write custom patterns in `patterns = [\"...\"]`".into(),
            ),
            None => {
                let names: Vec<&str> = Detector::names().collect();
                let hint = crate::config::nearest(name, &names)
                    .map_or_else(String::new, |n| format!("; did you mean `{n}`?"));
                add(
                    format!("{at}.detectors[{i}]"),
                    format!(
                        "unknown detector {name:?}; expected one of {}{hint}",
                        names.join(", ")
                    ),
                )
            }
        }
    }
    for (i, p) in c.patterns.iter().enumerate() {
        match regex::Regex::new(p) {
            Ok(re) if re.is_match("") => add(
                format!("{at}.patterns[{i}]"),
                "the pattern matches the empty string".into(),
            ),
            Ok(re) => detectors.push(Detector::Pattern(re)),
            Err(e) => add(
                format!("{at}.patterns[{i}]"),
                format!("not a valid regex: {e}"),
            ),
        }
    }
    if paths.is_empty()
        && detectors.is_empty()
        && c.paths.is_empty()
        && c.detectors.is_empty()
        && c.patterns.is_empty()
    {
        add(
            at.to_string(),
            "a rule needs paths, detectors or patterns".into(),
        );
    }
    let action = match c.action {
        RedactAction::Mask => Action::Mask {
            keep_last: c.keep_last,
            keep_domain: c.keep_domain,
        },
        RedactAction::Remove => Action::Remove,
        RedactAction::Hash => match key {
            Some(k) if !k.is_empty() => Action::Hash(k),
            _ => {
                add(
                    format!("{at}.key"),
                    "action = \"hash\" needs a key, such as key = \"env:REDACT_KEY\"".into(),
                );
                Action::Remove
            }
        },
    };
    let types = c.types.iter().map(|t| TypeMatch::parse(t)).collect();
    let sources = (!c.sources.is_empty()).then(|| c.sources.iter().cloned().collect());
    let ok = found.is_empty();
    problems.extend(found);
    ok.then_some(Rule {
        sources,
        types,
        paths,
        detectors,
        action,
    })
}
