//! Reading a JSON request body field by field as pydantic (v1) does for A1111's request
//! models: `null` is the same as absent, integers accept integral floats and numeric
//! strings, and every bad field is reported (not only the first) in FastAPI's 422 list.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::errors::{A1111Error, FieldError};

/// A request body being read; [`Body::finish`] reports what went wrong.
#[derive(Debug)]
pub struct Body {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
    read: BTreeSet<String>,
}

impl Body {
    /// Parses `bytes` as a JSON object (422 otherwise, as FastAPI).
    pub fn parse(bytes: &[u8]) -> Result<Body, A1111Error> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            A1111Error::Validation(vec![FieldError {
                loc: vec![Value::from("body"), Value::from(e.column())],
                msg: format!("JSON decode error: {e}"),
                kind: "value_error.jsondecode",
            }])
        })?;
        match value {
            Value::Object(map) => Ok(Body {
                map,
                errors: Vec::new(),
                read: BTreeSet::new(),
            }),
            _ => Err(A1111Error::Validation(vec![FieldError {
                loc: vec![Value::from("body")],
                msg: "value is not a valid dict".into(),
                kind: "type_error.dict",
            }])),
        }
    }

    /// The body as it came (A1111 echoes it as `parameters`).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The raw value of `key`; `None` when absent or `null`.
    pub fn value(&mut self, key: &str) -> Option<Value> {
        self.read.insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null()).cloned()
    }

    /// Records a bad field.
    pub fn error(&mut self, key: &str, msg: impl Into<String>, kind: &'static str) {
        self.errors.push(FieldError::body_field(key, msg, kind));
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s),
            // pydantic v1 coerces numbers to str.
            Value::Number(n) => Some(n.to_string()),
            _ => {
                self.error(key, "str type expected", "type_error.str");
                None
            }
        }
    }

    pub fn int(&mut self, key: &str) -> Option<i64> {
        let v = self.value(key)?;
        let n = match &v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if n.is_none() {
            self.error(key, "value is not a valid integer", "type_error.integer");
        }
        n
    }

    pub fn float(&mut self, key: &str) -> Option<f64> {
        let v = self.value(key)?;
        let n = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|f: &f64| f.is_finite());
        if n.is_none() {
            self.error(key, "value is not a valid float", "type_error.float");
        }
        n
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let v = self.value(key)?;
        let b = match &v {
            Value::Bool(b) => Some(*b),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if b.is_none() {
            self.error(
                key,
                "value could not be parsed to a boolean",
                "type_error.bool",
            );
        }
        b
    }

    /// An integer in `range`, else a 422 naming it.
    pub fn int_in(&mut self, key: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let n = self.int(key)?;
        if range.contains(&n) {
            Some(n)
        } else {
            self.error(
                key,
                format!(
                    "ensure this value is between {} and {} (wgsd's limit)",
                    range.start(),
                    range.end()
                ),
                "value_error.number.not_in_range",
            );
            None
        }
    }

    /// Keys present (and not `null`) that nothing read.
    pub fn unread(&self) -> Vec<String> {
        self.map
            .iter()
            .filter(|(k, v)| !v.is_null() && !self.read.contains(*k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// 422 with every recorded error, if any.
    pub fn finish(&mut self) -> Result<(), A1111Error> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(A1111Error::Validation(std::mem::take(&mut self.errors)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coercion_and_errors() {
        let mut b = Body::parse(
            br#"{"a": 5.0, "b": "7", "c": "x", "d": null, "e": true, "f": 1, "g": [], "h": 3}"#,
        )
        .expect("object");
        assert_eq!(b.int("a"), Some(5));
        assert_eq!(b.int("b"), Some(7));
        assert_eq!(b.int("c"), None);
        assert_eq!(b.int("d"), None, "null is absent");
        assert_eq!(b.bool("e"), Some(true));
        assert_eq!(b.bool("f"), Some(true));
        assert_eq!(b.string("g"), None);
        assert_eq!(b.unread(), vec!["h".to_string()]);
        let A1111Error::Validation(errors) = b.finish().expect_err("two bad fields") else {
            panic!("not a validation error");
        };
        let fields: Vec<&Value> = errors.iter().map(|e| &e.loc[1]).collect();
        assert_eq!(fields, [&Value::from("c"), &Value::from("g")]);
        assert!(Body::parse(b"[1]").is_err());
        assert!(Body::parse(b"{").is_err());
    }
}
