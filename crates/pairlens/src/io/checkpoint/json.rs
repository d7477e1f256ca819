//! Typed reads from config JSON with defaults, so every bad value is reported as
//! `file: bad config: section.key: problem` instead of a serde error without context.

use std::path::Path;

use serde_json::{Map, Value};

use crate::{Error, Result};

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what: "JSON config".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::bad_config(path, format!("not valid JSON: {e}")))
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// A JSON object inside a config file, with the dotted prefix used in error messages.
#[derive(Clone, Copy)]
pub(crate) struct Section<'a> {
    pub map: &'a Map<String, Value>,
    pub path: &'a Path,
    pub prefix: &'a str,
}

impl<'a> Section<'a> {
    pub fn new(value: &'a Value, path: &'a Path, prefix: &'a str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Section { map, path, prefix }),
            Value::Null => Ok(Section {
                map: &EMPTY,
                path,
                prefix,
            }),
            other => Err(Error::bad_config(
                path,
                format!(
                    "{}: expected a JSON object, got {}",
                    prefix.trim_end_matches('.'),
                    short(other)
                ),
            )),
        }
    }

    /// Key as `prefix.key` for messages.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub fn err(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::bad_config(self.path, format!("{}: {msg}", self.key(key)))
    }

    /// The value, treating JSON `null` like an absent key (as Python's `None` defaults do).
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn sub(&self, key: &str, prefix: &'a str) -> Result<Section<'a>> {
        match self.get(key) {
            Some(v) => Section::new(v, self.path, prefix),
            None => Ok(Section {
                map: &EMPTY,
                path: self.path,
                prefix,
            }),
        }
    }

    pub fn usize(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| self.err(key, "missing")),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                self.err(
                    key,
                    format!("expected a non-negative integer, got {}", short(v)),
                )
            }),
        }
    }

    /// A positive integer (sizes, counts).
    pub fn positive(&self, key: &str, default: Option<usize>) -> Result<usize> {
        let v = self.usize(key, default)?;
        if v == 0 {
            return Err(self.err(key, "must be positive"));
        }
        Ok(v)
    }

    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(key, format!("expected a number, got {}", short(v)))),
        }
    }

    /// A number that must be finite and > 0 (an epsilon, a scale).
    pub fn positive_f64(&self, key: &str, default: f64) -> Result<f64> {
        let v = self.f64(key, default)?;
        if !(v.is_finite() && v > 0.0) {
            return Err(self.err(key, format!("must be a positive number, got {v}")));
        }
        Ok(v)
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true/false, got {}", short(v)))),
        }
    }

    pub fn str(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(key, format!("expected a string, got {}", short(v)))),
        }
    }

    /// An int, or a list of two ints `[h, w]` (Python `to_2tuple`).
    pub fn pair(&self, key: &str, default: usize) -> Result<(usize, usize)> {
        let Some(v) = self.get(key) else {
            return Ok((default, default));
        };
        if let Some(x) = v.as_u64() {
            return Ok((x as usize, x as usize));
        }
        if let Some([a, b]) = v.as_array().map(|a| a.as_slice()) {
            if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
                return Ok((a as usize, b as usize));
            }
        }
        Err(self.err(
            key,
            format!("expected an integer or [height, width], got {}", short(v)),
        ))
    }

    /// Errors on any key outside `known`: a key we do not know might change the math.
    pub fn only_known(&self, known: &[&str]) -> Result<()> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(self.err(
                    k,
                    "unknown option; pairlens does not know whether it changes the model, refusing to guess",
                ));
            }
        }
        Ok(())
    }
}

/// A JSON value shortened for messages.
pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}
