//! Reading typed settings out of a free-form `configData` object, collecting every problem with
//! its field path instead of stopping at the first.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::yaml::join_key;

/// A problem with one field of a config, found while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldIssue {
    /// Full field path, for instance `spec.protocol.configData.port`.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
    /// A warning does not make the file invalid.
    pub warning: bool,
    /// The issue is about the key itself (unknown key), not its value.
    pub at_key: bool,
}

/// A cursor over one config object that records what it read and what went wrong.
#[derive(Debug)]
pub struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
    path: String,
    used: BTreeSet<&'static str>,
    /// Keys KubeEdge samples carry that no mapper reads; accepted without a warning.
    tolerated: &'static [&'static str],
    /// Problems found so far.
    pub issues: Vec<FieldIssue>,
}

impl<'a> Fields<'a> {
    /// A cursor over `map` (absent counts as empty) found at `path`.
    pub fn new(map: Option<&'a Map<String, Value>>, path: impl Into<String>) -> Self {
        Fields {
            map,
            path: path.into(),
            used: BTreeSet::new(),
            tolerated: &[],
            issues: Vec::new(),
        }
    }

    /// Keys to accept silently although nothing reads them.
    pub fn tolerate(mut self, keys: &'static [&'static str]) -> Self {
        self.tolerated = keys;
        self
    }

    /// The full path of `key`.
    pub fn path_of(&self, key: &str) -> String {
        join_key(&self.path, key)
    }

    /// Records an error about `key`'s value.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(FieldIssue {
            path: self.path_of(key),
            message: message.into(),
            warning: false,
            at_key: false,
        });
    }

    /// Records a warning about `key`'s value.
    pub fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(FieldIssue {
            path: self.path_of(key),
            message: message.into(),
            warning: true,
            at_key: false,
        });
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.insert(key);
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    /// Whether `key` is present (and not null).
    pub fn has(&mut self, key: &'static str) -> bool {
        self.raw(key).is_some()
    }

    /// A text setting. Numbers and booleans are accepted and shown as text.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.error(key, format!("expected text, found {}", kind(other)));
                None
            }
        }
    }

    /// A boolean setting; `"true"`/`"false"` as text are accepted.
    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        match self.raw(key)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            other => {
                self.error(
                    key,
                    format!("expected true or false, found {}", show(other)),
                );
                None
            }
        }
    }

    /// A number setting; numbers written as text (`port: "5502"`) are accepted.
    pub fn f64(&mut self, key: &'static str) -> Option<f64> {
        let v = self.raw(key)?;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() => Some(n),
            _ => {
                self.error(key, format!("expected a number, found {}", show(v)));
                None
            }
        }
    }

    /// An integer setting within `min..=max`; integers written as text are accepted.
    pub fn int(&mut self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        let v = self.raw(key)?;
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.error(key, format!("{n} is out of range (expected {min}..={max})"));
                None
            }
            None => {
                self.error(key, format!("expected an integer, found {}", show(v)));
                None
            }
        }
    }

    /// A text setting that must be one of `allowed` (compared without case). Returns the index
    /// into `allowed`.
    pub fn one_of(&mut self, key: &'static str, what: &str, allowed: &[&str]) -> Option<usize> {
        let s = self.string(key)?;
        match allowed
            .iter()
            .position(|a| a.eq_ignore_ascii_case(s.trim()))
        {
            Some(i) => Some(i),
            None => {
                self.error(
                    key,
                    format!("unknown {what} {s:?} (expected {})", allowed.join(", ")),
                );
                None
            }
        }
    }

    /// A nested object setting.
    pub fn object(&mut self, key: &'static str) -> Option<&'a Map<String, Value>> {
        match self.raw(key)? {
            Value::Object(m) => Some(m),
            other => {
                self.error(key, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    /// A nested list setting.
    pub fn array(&mut self, key: &'static str) -> Option<&'a Vec<Value>> {
        match self.raw(key)? {
            Value::Array(a) => Some(a),
            other => {
                self.error(key, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }

    /// Ends reading: warns about every key nothing asked for (a typo such as `scal: 0.1` would
    /// otherwise be ignored silently) and returns the issues.
    pub fn finish(mut self) -> Vec<FieldIssue> {
        if let Some(map) = self.map {
            let mut known: Vec<&str> = self.used.iter().copied().collect();
            known.sort_unstable();
            for key in map.keys() {
                if !self.used.contains(key.as_str()) && !self.tolerated.contains(&key.as_str()) {
                    self.issues.push(FieldIssue {
                        path: join_key(&self.path, key),
                        message: format!(
                            "unknown key {key:?} is ignored (known keys: {})",
                            known.join(", ")
                        ),
                        warning: true,
                        at_key: true,
                    });
                }
            }
        }
        self.issues
    }
}

/// What kind of YAML value this is, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.chars().take(64).collect::<String>()),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other).to_string(),
    }
}
