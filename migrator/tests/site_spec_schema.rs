//! The packaged site spec example and the JSON schema (issue 22, point 6) stay true to the Rust
//! types of `migrator::site_spec`.
//!
//! The field lists are not written here: they are asked of the deserializer itself. At every
//! object of the example, a probe field is added and the spec parsed again; serde's
//! `deny_unknown_fields` error lists every field the type at that place has (`expected one of
//! ...`), whether the example sets it or not. A tagged object (`provider`, `kind`) is probed
//! with an unknown tag value, whose error lists the variants. A field or variant added to the
//! types without the schema (or without the example) fails here.

use migrator::site_spec::SpecFile;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const PROBE: &str = "__probe__";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read_json(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn example() -> Value {
    read_json("packaging/etc/sites.example.json")
}

fn schema() -> Value {
    read_json("docs/site-spec.schema.json")
}

/// The backquoted names after `expected` in a serde error message.
fn expected_names(msg: &str) -> BTreeSet<String> {
    let (_, list) = msg
        .split_once("expected")
        .unwrap_or_else(|| panic!("no `expected` list in {msg:?}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Parses `doc` with the object at `at` changed by `edit`; returns the error text.
fn parse_error(doc: &Value, at: &[Value], edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut doc = doc.clone();
    let mut node = &mut doc;
    for seg in at {
        node = match seg {
            Value::String(k) => &mut node[k.as_str()],
            Value::Number(i) => &mut node[i.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    edit(node.as_object_mut().unwrap());
    match SpecFile::parse(&doc.to_string(), Path::new("probe.json")) {
        Ok(_) => panic!("{}: the probe was accepted", dotted(at)),
        Err(e) => e.to_string(),
    }
}

/// `sites[0].dns`, as the spec's errors spell a place.
fn dotted(at: &[Value]) -> String {
    let mut s = String::new();
    for seg in at {
        match seg {
            Value::String(k) if s.is_empty() => s.push_str(k),
            Value::String(k) => s.push_str(&format!(".{k}")),
            Value::Number(i) => s.push_str(&format!("[{i}]")),
            _ => unreachable!(),
        }
    }
    s
}

struct Walk<'a> {
    root_schema: &'a Value,
    doc: &'a Value,
    visited: BTreeSet<String>,
    /// Per schema object: the first place, the type's fields, the fields the example sets.
    shown: BTreeMap<usize, (String, BTreeSet<String>, BTreeSet<String>)>,
    problems: Vec<String>,
}

impl Walk<'_> {
    /// Follows `$ref` (local `#/$defs/NAME`), remembering which definitions were used.
    fn deref<'s>(&mut self, mut node: &'s Value) -> &'s Value
    where
        Self: 's,
    {
        while let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").expect("local $ref");
            self.visited.insert(name.to_string());
            node = self
                .root_schema
                .get("$defs")
                .and_then(|d| d.get(name))
                .unwrap_or_else(|| panic!("{r}: no such definition"));
        }
        node
    }

    /// The branch of a `oneOf` whose `const` properties (its tag) the object matches.
    fn branch<'s>(&mut self, node: &'s Value, obj: &Map<String, Value>) -> &'s Value
    where
        Self: 's,
    {
        let Some(branches) = node.get("oneOf").and_then(Value::as_array) else {
            return node;
        };
        for b in branches {
            let b = self.deref(b);
            let props = b["properties"].as_object().unwrap();
            let tag_ok = props.iter().all(|(k, p)| match p.get("const") {
                Some(c) => obj.get(k) == Some(c),
                None => true,
            });
            if tag_ok {
                return b;
            }
        }
        panic!("no oneOf branch matches {obj:?}")
    }

    fn walk(&mut self, value: &Value, schema: &Value, at: &mut Vec<Value>) {
        let schema = self.deref(schema);
        match value {
            Value::Array(items) => {
                let item_schema = schema
                    .get("items")
                    .unwrap_or_else(|| panic!("{}: the schema has no `items`", dotted(at)));
                for (i, v) in items.iter().enumerate() {
                    at.push(Value::from(i));
                    self.walk(v, item_schema, at);
                    at.pop();
                }
            }
            Value::Object(obj) => {
                let node = self.branch(schema, obj);
                self.object(obj, node, at);
            }
            _ => {}
        }
    }

    fn object(&mut self, obj: &Map<String, Value>, node: &Value, at: &mut Vec<Value>) {
        let place = if at.is_empty() {
            "the file".to_string()
        } else {
            dotted(at)
        };
        let props = node
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{place}: the schema has no `properties`"));
        let tags: BTreeSet<String> = props
            .iter()
            .filter(|(_, p)| p.get("const").is_some())
            .map(|(k, _)| k.clone())
            .collect();
        // The fields the type has, asked of its deserializer.
        let err = parse_error(self.doc, at, |m| {
            m.insert(PROBE.into(), Value::Null);
        });
        assert!(
            err.contains(&format!("unknown field `{PROBE}`")) && err.contains("probe.json"),
            "{place}: {err}"
        );
        if !at.is_empty() {
            assert!(
                err.contains(&place),
                "the error does not name {place}: {err}"
            );
        }
        let mut fields = expected_names(&err);
        fields.extend(tags.iter().cloned());
        let in_schema: BTreeSet<String> = props.keys().cloned().collect();
        for f in fields.difference(&in_schema) {
            self.problems.push(format!(
                "{place}: field `{f}` of the type is not in the schema"
            ));
        }
        for f in in_schema.difference(&fields) {
            self.problems.push(format!(
                "{place}: the schema names `{f}`, the type has no such field"
            ));
        }
        // Shown somewhere: a minimal site may leave optional fields out if another sets them.
        let seen = self
            .shown
            .entry(node as *const Value as usize)
            .or_insert_with(|| (place.clone(), fields.clone(), BTreeSet::new()));
        seen.2.extend(obj.keys().cloned());
        // The variants the tag has, asked the same way.
        for tag in &tags {
            let err = parse_error(self.doc, at, |m| {
                m.insert(tag.clone(), PROBE.into());
            });
            let variants = expected_names(&err.replace(&format!("`{PROBE}`"), ""));
            let in_schema = self.tag_values(node, tag, at);
            if variants != in_schema {
                self.problems.push(format!(
                    "{place}: `{tag}` variants of the type {variants:?}, of the schema {in_schema:?}"
                ));
            }
        }
        for (k, v) in obj {
            let Some(sub) = props.get(k) else {
                continue; // reported above: a field of the type the schema lacks
            };
            at.push(Value::from(k.as_str()));
            self.walk(v, sub, at);
            at.pop();
        }
    }

    /// Every `const` of `tag` across the `oneOf` that holds `node` (found from the parent).
    fn tag_values(&mut self, node: &Value, tag: &str, at: &[Value]) -> BTreeSet<String> {
        let defs = self.root_schema["$defs"].as_object().unwrap();
        let holder = defs
            .values()
            .filter_map(|d| d.get("oneOf").and_then(Value::as_array))
            .find(|bs| bs.iter().any(|b| self.clone_deref(b) == node))
            .unwrap_or_else(|| panic!("{}: tagged, but in no oneOf", dotted(at)));
        holder
            .iter()
            .map(|b| {
                self.clone_deref(b)["properties"][tag]["const"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    fn clone_deref<'s>(&self, b: &'s Value) -> &'s Value
    where
        Self: 's,
    {
        match b.get("$ref").and_then(Value::as_str) {
            Some(r) => &self.root_schema["$defs"][r.strip_prefix("#/$defs/").unwrap()],
            None => b,
        }
    }
}

#[test]
fn the_packaged_example_loads() {
    let path = repo("packaging/etc/sites.example.json");
    let spec = SpecFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let providers: BTreeSet<_> = spec
        .sites
        .iter()
        .filter_map(|s| s.dns.as_ref().map(|d| d.provider_name()))
        .collect();
    assert_eq!(providers, BTreeSet::from(["powerdns", "rfc2136"]));
    assert!(spec.sites.iter().any(|s| s.artifacts.php.is_some()));
}

#[test]
fn schema_example_and_types_name_the_same_fields() {
    let schema = schema();
    let doc = example();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let mut w = Walk {
        root_schema: &schema,
        doc: &doc,
        visited: BTreeSet::new(),
        shown: BTreeMap::new(),
        problems: vec![],
    };
    w.walk(&doc, &schema, &mut vec![]);
    for (place, fields, set) in w.shown.values() {
        for f in fields.difference(set) {
            w.problems
                .push(format!("{place}: the example never shows `{f}`"));
        }
    }
    // Every object definition of the schema describes some place of the example.
    for (name, d) in schema["$defs"].as_object().unwrap() {
        if d.get("properties").is_some() && !w.visited.contains(name) {
            w.problems
                .push(format!("$defs/{name}: describes nothing of the example"));
        }
    }
    assert!(w.problems.is_empty(), "{}", w.problems.join("\n"));
}

#[test]
fn a_bad_spec_is_refused_naming_the_field() {
    let doc = example();
    let cases: [(&str, Value, &str); 5] = [
        (
            "/sites/0/budget/max_sync_passes",
            "five".into(),
            "sites[0].budget.max_sync_passes",
        ),
        (
            "/sites/1/proxy/admin",
            "localhost".into(),
            "sites[1].proxy.admin",
        ),
        (
            "/sites/0/artifacts/php/pool/max_children",
            (-1).into(),
            "sites[0].artifacts.php.pool.max_children",
        ),
        ("/sites/0/dns/servers/1", 53.into(), "sites[0].dns"),
        (
            "/sites/0/artifacts/web_rules/0/status",
            "301".into(),
            "sites[0].artifacts.web_rules[0]`: status:",
        ),
    ];
    for (pointer, bad, field) in cases {
        let mut d = doc.clone();
        *d.pointer_mut(pointer).unwrap() = bad;
        let e = SpecFile::parse(&d.to_string(), Path::new("/etc/hostmove/sites.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(field) && e.contains("/etc/hostmove/sites.json"),
            "{pointer}: {e}"
        );
    }
    // An unknown (misspelt) field names where it is and what it is.
    let mut d = doc.clone();
    d.pointer_mut("/sites/1/homes/0")
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert("compat_lnk".into(), "/x".into());
    let e = SpecFile::parse(&d.to_string(), Path::new("s.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sites[1].homes[0]") && e.contains("compat_lnk"),
        "{e}"
    );
}

/// `migrator site schema --json` prints the schema file as it is; without `--json` it refuses.
#[test]
fn site_schema_prints_the_schema() {
    let bin = env!("CARGO_BIN_EXE_migrator");
    let out = std::process::Command::new(bin)
        .args(["site", "schema", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, schema());
    let out = std::process::Command::new(bin)
        .args(["site", "schema"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json"));
}
