//! Checks a request value against the JSON Schema the OpenAPI document publishes for it, so
//! the server accepts exactly what the document promises: the bounds, lengths, patterns and
//! enums of a body or query parameter are written once (as `utoipa` attributes on the Rust
//! type) and both documented and enforced from there. The domain keeps its own checks; this
//! is the contract at the edge.
//!
//! Only the keywords `utoipa` emits for our types are understood (`type`, `enum`, `const`,
//! numeric and length bounds, `pattern`, `format` ranges of integers, `items`,
//! `properties`/`required`/`additionalProperties`, `$ref`, `oneOf`/`anyOf`/`allOf`,
//! `if`/`then`/`else`); an unknown keyword is ignored, never a failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

/// A violation: where (`parts_used[0].sku`, or `body` for the whole value) and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    pub field: String,
    pub message: String,
}

/// Named schemas (`#/components/schemas/{name}`) that `$ref`s resolve against.
pub(crate) type Components = BTreeMap<String, Value>;

/// `value` against `schema`; `path` names the value in the first violation found.
pub(crate) fn check(
    schema: &Value,
    components: &Components,
    value: &Value,
    path: &str,
) -> Result<(), Violation> {
    Checker { components }.check(schema, value, path, 0)
}

struct Checker<'a> {
    components: &'a Components,
}

fn fail(path: &str, message: impl Into<String>) -> Result<(), Violation> {
    Err(Violation {
        field: if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        },
        message: message.into(),
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        // JSON Schema: a number with a zero fraction is an integer (2.0 is 2).
        Value::Number(n) if n.as_f64().is_some_and(|x| x.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    let actual = type_name(v);
    actual == t || (t == "number" && actual == "integer")
}

impl Checker<'_> {
    fn check(&self, schema: &Value, v: &Value, path: &str, depth: usize) -> Result<(), Violation> {
        // Our schemas are not recursive; a deep chain is a broken document, not a request error.
        if depth > 32 {
            return Ok(());
        }
        let Some(s) = schema.as_object() else {
            return Ok(());
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap_or_default();
            if let Some(target) = self.components.get(name) {
                self.check(target, v, path, depth + 1)?;
            }
        }
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => has_type(v, t),
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| has_type(v, t)),
                _ => true,
            };
            if !ok {
                let expected = match t {
                    Value::Array(ts) => ts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" or "),
                    t => t.as_str().unwrap_or_default().to_owned(),
                };
                return fail(path, format!("expected {expected}, got {}", type_name(v)));
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            let names: Vec<String> = e.iter().map(|x| x.to_string()).collect();
            return fail(path, format!("must be one of {}", names.join(", ")));
        }
        if let Some(c) = s.get("const")
            && c != v
        {
            return fail(path, format!("must be {c}"));
        }
        match v {
            Value::Number(n) => self.number(s, n, path)?,
            Value::String(text) => self.string(s, text, path)?,
            Value::Array(items) => self.array(s, items, path, depth)?,
            Value::Object(obj) => self.object(s, obj, path, depth)?,
            _ => {}
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, v, path, depth + 1)?;
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alternatives) = s.get(key).and_then(Value::as_array) {
                // The error worth reporting is that of an alternative the value was meant
                // for: one whose enum or const fields (its discriminator, say `role`) it
                // matched. Only if there is none, the first error.
                let mut first_error = None;
                let mut meant_error = None;
                let mut matched = 0;
                for sub in alternatives {
                    match self.check(sub, v, path, depth + 1) {
                        Ok(()) => matched += 1,
                        Err(e) => {
                            if !misses_a_discriminator(sub, v) {
                                meant_error.get_or_insert(e.clone());
                            }
                            first_error.get_or_insert(e);
                        }
                    }
                }
                let first_error = meant_error.or(first_error);
                if matched == 0 {
                    return Err(first_error.unwrap_or(Violation {
                        field: path.to_owned(),
                        message: "matches no alternative".into(),
                    }));
                }
                if key == "oneOf" && matched > 1 {
                    return fail(path, "matches more than one alternative");
                }
            }
        }
        if let Some(condition) = s.get("if") {
            let branch = if self.check(condition, v, path, depth + 1).is_ok() {
                s.get("then")
            } else {
                s.get("else")
            };
            if let Some(branch) = branch {
                self.check(branch, v, path, depth + 1)?;
            }
        }
        Ok(())
    }

    fn number(
        &self,
        s: &Map<String, Value>,
        n: &serde_json::Number,
        path: &str,
    ) -> Result<(), Violation> {
        let x = n.as_f64().unwrap_or(f64::NAN);
        let bound = |k: &str| s.get(k).and_then(Value::as_f64);
        // An integer's format is a range the Rust type can hold.
        let range = match s.get("format").and_then(Value::as_str) {
            Some("int32") => Some((i32::MIN as f64, i32::MAX as f64)),
            Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
            Some("uint32") => Some((0.0, u32::MAX as f64)),
            Some("uint64") => Some((0.0, u64::MAX as f64)),
            _ => None,
        };
        if let Some((lo, hi)) = range
            && (x.fract() != 0.0 || x < lo || x > hi)
        {
            return fail(path, "out of range");
        }
        if let Some(m) = bound("minimum")
            && x < m
        {
            return fail(path, format!("must be ≥ {m}"));
        }
        if let Some(m) = bound("maximum")
            && x > m
        {
            return fail(path, format!("must be ≤ {m}"));
        }
        if let Some(m) = bound("exclusiveMinimum")
            && x <= m
        {
            return fail(path, format!("must be > {m}"));
        }
        if let Some(m) = bound("exclusiveMaximum")
            && x >= m
        {
            return fail(path, format!("must be < {m}"));
        }
        Ok(())
    }

    fn string(&self, s: &Map<String, Value>, text: &str, path: &str) -> Result<(), Violation> {
        // JSON Schema counts code points.
        let len = text.chars().count() as u64;
        if let Some(m) = s.get("minLength").and_then(Value::as_u64)
            && len < m
        {
            return fail(path, format!("needs at least {m} characters"));
        }
        if let Some(m) = s.get("maxLength").and_then(Value::as_u64)
            && len > m
        {
            return fail(path, format!("must be at most {m} characters"));
        }
        let format_ok = match s.get("format").and_then(Value::as_str) {
            Some("date") => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            _ => true,
        };
        if !format_ok {
            return fail(path, "is not a valid date or time");
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str)
            && let Some(re) = regex(p)
            && !re.is_match(text)
        {
            return fail(path, format!("must match {p}"));
        }
        Ok(())
    }

    fn array(
        &self,
        s: &Map<String, Value>,
        items: &[Value],
        path: &str,
        depth: usize,
    ) -> Result<(), Violation> {
        let n = items.len() as u64;
        if let Some(m) = s.get("minItems").and_then(Value::as_u64)
            && n < m
        {
            return fail(path, format!("needs at least {m} items"));
        }
        if let Some(m) = s.get("maxItems").and_then(Value::as_u64)
            && n > m
        {
            return fail(path, format!("must have at most {m} items"));
        }
        if let Some(item) = s.get("items") {
            for (i, v) in items.iter().enumerate() {
                self.check(item, v, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
        Ok(())
    }

    fn object(
        &self,
        s: &Map<String, Value>,
        obj: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), Violation> {
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(key) {
                    return fail(&join(path, key), "is required");
                }
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (key, v) in obj {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => self.check(sub, v, &join(path, key), depth + 1)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return fail(&join(path, key), "is not a known field");
                    }
                    Some(sub @ Value::Object(_)) => {
                        self.check(sub, v, &join(path, key), depth + 1)?
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

/// Whether `value` (an object) differs from `schema` in a property the schema fixes by `enum`
/// or `const`.
fn misses_a_discriminator(schema: &Value, value: &Value) -> bool {
    let (Some(properties), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) else {
        return false;
    };
    properties.iter().any(|(key, sub)| {
        let Some(v) = obj.get(key) else {
            return false;
        };
        let enum_miss = sub
            .get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.contains(v));
        let const_miss = sub.get("const").is_some_and(|c| c != v);
        enum_miss || const_miss
    })
}

/// `value` with every number that is an integer by JSON Schema's rule (`2.0`) written as
/// one, so that serde reads it into an integer field; other numbers are left alone.
pub(crate) fn normalize_integers(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(x) = n.as_f64()
                && x.fract() == 0.0
                && x.abs() < 9.0e15
            {
                *value = Value::from(x as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_integers),
        Value::Object(map) => map.values_mut().for_each(normalize_integers),
        _ => {}
    }
}

/// Compiled patterns, shared: the document has a handful of them.
fn regex(pattern: &str) -> Option<Arc<regex::Regex>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<regex::Regex>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(pattern.to_owned())
        .or_insert_with(|| {
            regex::Regex::new(pattern)
                .inspect_err(|e| tracing::error!(%pattern, error = %e, "bad pattern in a schema"))
                .ok()
                .map(Arc::new)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn err(schema: Value, v: Value) -> Option<String> {
        check(&schema, &Components::new(), &v, "")
            .err()
            .map(|e| e.field)
    }

    #[test]
    fn keywords_are_enforced_and_name_the_field() {
        let s = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 5},
            "b": {"type": ["string", "null"], "pattern": "^[a-z]+$", "maxLength": 3},
            "c": {"type": "array", "maxItems": 2, "items": {"type": "string", "enum": ["x", "y"]}}}});
        assert_eq!(err(s.clone(), json!({"a": 3, "b": null, "c": ["x"]})), None);
        assert_eq!(err(s.clone(), json!({"b": "ab"})).as_deref(), Some("a"));
        assert_eq!(err(s.clone(), json!({"a": 6})).as_deref(), Some("a"));
        assert_eq!(err(s.clone(), json!({"a": 2.5})).as_deref(), Some("a"));
        assert_eq!(
            err(s.clone(), json!({"a": 1, "b": "AB"})).as_deref(),
            Some("b")
        );
        assert_eq!(
            err(s.clone(), json!({"a": 1, "b": "abcd"})).as_deref(),
            Some("b")
        );
        assert_eq!(
            err(s.clone(), json!({"a": 1, "c": ["x", "z"]})).as_deref(),
            Some("c[1]")
        );
        assert_eq!(
            err(s, json!({"a": 1, "c": ["x", "x", "y"]})).as_deref(),
            Some("c")
        );
        assert_eq!(
            err(json!({"type": "object"}), json!([1])).as_deref(),
            Some("body")
        );
    }

    #[test]
    fn refs_alternatives_and_conditions() {
        let mut components = Components::new();
        components.insert("Id".into(), json!({"type": "string", "minLength": 1}));
        let s = json!({"type": "object", "properties": {
            "id": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Id"}]},
            "role": {"type": "string"}},
            "if": {"properties": {"role": {"const": "provider"}}, "required": ["role"]},
            "then": {"required": ["id"]}});
        let run = |v: Value| check(&s, &components, &v, "").err().map(|e| e.field);
        assert_eq!(run(json!({"id": null})), None);
        assert_eq!(run(json!({"id": ""})).as_deref(), Some("id"));
        assert_eq!(run(json!({"role": "admin"})), None);
        assert_eq!(run(json!({"role": "provider"})).as_deref(), Some("id"));
        assert_eq!(run(json!({"role": "provider", "id": "p"})), None);
    }

    #[test]
    fn a_one_of_reports_the_alternative_its_discriminator_picked() {
        let s = json!({"oneOf": [
            {"type": "object", "required": ["role"], "properties": {
                "role": {"type": "string", "enum": ["admin"]}, "t": {"type": "null"}}},
            {"type": "object", "required": ["role", "t"], "properties": {
                "role": {"type": "string", "enum": ["tech"]}, "t": {"type": "string"}}},
        ]});
        assert_eq!(
            err(s.clone(), json!({"role": "tech"})).as_deref(),
            Some("t")
        );
        assert_eq!(
            err(s.clone(), json!({"role": "admin", "t": "x"})).as_deref(),
            Some("t")
        );
        assert_eq!(
            err(s.clone(), json!({"role": "other"})).as_deref(),
            Some("role")
        );
        assert_eq!(err(s, json!({"role": "tech", "t": "x"})), None);
    }
}
