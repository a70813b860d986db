//! Strict validation of a Kubernetes manifest against a CRD's `openAPIV3Schema`, as the
//! API server applies it plus `kubectl apply --validate=strict`'s refusal of unknown
//! fields: types, `required`, `enum`, `pattern`, lengths and bounds, `anyOf`/`allOf`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`, map-type lists'
//! key uniqueness, and `metadata` as ObjectMeta (a DNS-1123 name, string labels and
//! annotations). Written for tests/kserve_schema.rs; formats (`int32`, ...) are not checked.

#![allow(dead_code)]

use serde_json::{Map, Value};

/// Every violation of `schema` by `value`, each as `path: what is wrong`; empty if valid.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    if let Some(meta) = value.get("metadata") {
        check_object_meta(meta, &mut errors);
    }
    errors
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let flag = |key: &str| schema.get(key).and_then(Value::as_bool).unwrap_or(false);
    if value.is_null() && flag("nullable") {
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => {}
            Value::String(s) => check_pattern(schema, s, path, errors),
            other => errors.push(format!(
                "{path}: expected an integer or a string, got {other}"
            )),
        }
        return;
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let matches = branches.iter().any(|b| {
            let mut e = Vec::new();
            check(b, value, path, &mut e);
            e.is_empty()
        });
        if !matches {
            errors.push(format!("{path}: matches none of the anyOf schemas"));
        }
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(part, value, path, errors);
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {options:?}"));
    }
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return;
    };
    match (ty, value) {
        ("object", Value::Object(map)) => check_object(schema, map, path, errors),
        ("array", Value::Array(items)) => check_array(schema, items, path, errors),
        ("string", Value::String(s)) => {
            check_len(
                schema,
                s.chars().count(),
                "minLength",
                "maxLength",
                path,
                errors,
            );
            check_pattern(schema, s, path, errors);
        }
        ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {
            check_bounds(schema, n, path, errors)
        }
        ("number", Value::Number(n)) => check_bounds(schema, n, path, errors),
        ("boolean", Value::Bool(_)) => {}
        (ty, other) => errors.push(format!("{path}: expected {ty}, got {other}")),
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    for key in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(key) = key.as_str()
            && !map.contains_key(key)
        {
            errors.push(format!("{path}: missing required field `{key}`"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // The root's `metadata` is `{type: object}` in every CRD: ObjectMeta, checked apart.
    let opaque = path == ".metadata" && properties.is_none() && additional.is_none();
    for (key, item) in map {
        let child = format!("{path}.{key}");
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(sub), _) => check(sub, item, &child, errors),
            (None, Some(Value::Bool(true))) => {}
            (None, Some(sub @ Value::Object(_))) => check(sub, item, &child, errors),
            _ if preserve || opaque => {}
            _ => errors.push(format!("{child}: unknown field")),
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<String>) {
    check_len(schema, items.len(), "minItems", "maxItems", path, errors);
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
    // `x-kubernetes-list-type: map`: no two items may share their key fields' values.
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut seen = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let id: Vec<Option<&Value>> = keys.iter().map(|k| item.get(*k)).collect();
            if seen.contains(&id) {
                errors.push(format!("{path}[{i}]: duplicate entry for keys {keys:?}"));
            }
            seen.push(id);
        }
    }
}

fn check_len(
    schema: &Value,
    len: usize,
    min: &str,
    max: &str,
    path: &str,
    errors: &mut Vec<String>,
) {
    if let Some(min) = schema.get(min).and_then(Value::as_u64)
        && (len as u64) < min
    {
        errors.push(format!("{path}: length {len} is below the minimum {min}"));
    }
    if let Some(max) = schema.get(max).and_then(Value::as_u64)
        && (len as u64) > max
    {
        errors.push(format!("{path}: length {len} is above the maximum {max}"));
    }
}

fn check_bounds(schema: &Value, n: &serde_json::Number, path: &str, errors: &mut Vec<String>) {
    let x = n.as_f64().unwrap_or(f64::NAN);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && x < min
    {
        errors.push(format!("{path}: {n} is below the minimum {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && x > max
    {
        errors.push(format!("{path}: {n} is above the maximum {max}"));
    }
}

fn check_pattern(schema: &Value, s: &str, path: &str, errors: &mut Vec<String>) {
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let re = regex::Regex::new(pattern).unwrap_or_else(|e| {
            panic!("{path}: the schema's pattern {pattern:?} does not compile: {e}")
        });
        if !re.is_match(s) {
            errors.push(format!("{path}: {s:?} does not match {pattern:?}"));
        }
    }
}

/// ObjectMeta as the API server checks it for a namespaced custom resource.
fn check_object_meta(meta: &Value, errors: &mut Vec<String>) {
    let dns_label = regex::Regex::new("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex");
    match meta.get("name").and_then(Value::as_str) {
        Some(name) if name.len() <= 63 && dns_label.is_match(name) => {}
        Some(name) => errors.push(format!(".metadata.name: {name:?} is not a DNS-1123 label")),
        None => errors.push(".metadata: missing required field `name`".into()),
    }
    for key in ["labels", "annotations"] {
        for (k, v) in meta
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if !v.is_string() {
                errors.push(format!(".metadata.{key}.{k}: expected a string, got {v}"));
            }
        }
    }
    let known = ["name", "namespace", "labels", "annotations"];
    for key in meta.as_object().into_iter().flat_map(Map::keys) {
        if !known.contains(&key.as_str()) {
            errors.push(format!(".metadata.{key}: not a field a manifest sets"));
        }
    }
}
