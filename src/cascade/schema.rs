//! Compiled JSON Schemas, cached by their text so a schema repeated across requests is
//! compiled once. Remote `$ref`s are not fetched (the crate is built without its HTTP and file
//! resolvers): a request can never make the router call an arbitrary host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Largest number of distinct schemas kept; past it the cache starts over.
const MAX_SCHEMAS: usize = 1024;

#[derive(Debug, Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl SchemaCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled schema, or why it does not compile.
    pub fn get(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        if let Some(v) = self.lock().get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let v = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
        let mut map = self.lock();
        if map.len() >= MAX_SCHEMAS {
            map.clear();
        }
        map.insert(key, v.clone());
        Ok(v)
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<jsonschema::Validator>>> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first validation error as `pointer: message`, or `None` when the instance is valid.
pub fn first_error(v: &jsonschema::Validator, instance: &Value) -> Option<String> {
    v.iter_errors(instance).next().map(|e| {
        let path = e.instance_path().to_string();
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        format!("{path}: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caches_and_reports_pointers() {
        let c = SchemaCache::new();
        let s = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number"}}}}}});
        let v = c.get(&s).unwrap();
        let _ = c.get(&s).unwrap();
        assert_eq!(c.stats(), (1, 1));
        let bad = json!({"items": [{"price": "cheap"}]});
        let e = first_error(&v, &bad).unwrap();
        assert!(e.starts_with("/items/0/price: "), "{e}");
        assert!(first_error(&v, &json!({"items": [{"price": 3}]})).is_none());
    }

    #[test]
    fn malformed_schemas_are_errors() {
        let c = SchemaCache::new();
        assert!(c.get(&json!({"type": "no-such-type"})).is_err());
        assert!(c
            .get(&json!({"$ref": "https://example.invalid/schema.json"}))
            .is_err());
    }
}
