//! JSON read with the blame on the value at fault: every outside JSON body
//! (the `/v1` API's, a Segment call) is read here, so that a refusal names
//! the field the same way everywhere.

use serde::Deserialize;

/// Why bytes are not a `T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonFault {
    /// Not JSON at all (a syntax error, an early end, trailing text): the
    /// body's fault, not a field's, even when the error lies inside a key
    /// the type ignores (whose path may be empty).
    Syntax(String),
    /// JSON, but not a `T`: `field` is the path to the value to blame
    /// (`batch[3].timestamp`; a missing field's own path), `message` says
    /// what is wrong, prefixed with the path.
    Shape {
        field: Option<String>,
        message: String,
    },
}

/// `bytes` as a `T`, or what is wrong and where.
pub fn read<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, JsonFault> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !inner.is_data() {
            return JsonFault::Syntax(inner.to_string());
        }
        // serde names a missing field in its message, at the path of the
        // object that should have it (an unknown field's path is its own).
        let field = missing_field(&inner.to_string())
            .map(|f| {
                if path == "." {
                    f.to_string()
                } else {
                    format!("{path}.{f}")
                }
            })
            .or((path != "." && !path.is_empty()).then_some(path));
        let message = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => inner.to_string(),
        };
        JsonFault::Shape { field, message }
    })?;
    de.end().map_err(|e| JsonFault::Syntax(e.to_string()))?;
    Ok(value)
}

/// `x` of serde's ``missing field `x` ``.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(name, _)| name)
}
