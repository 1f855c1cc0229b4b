//! Templates of keys, tags and patterns filled from an event's JSON payload
//! (`"product:{id}"`, `"{vendor.id}"`: a field, or a dotted path into nested objects),
//! as `[[cache.invalidate]]` rules write them.

use serde_json::Value;

/// Text with `{path}` holes, filled from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Vec<String>),
}

impl Template {
    /// Parses `text`; the reason when a hole is malformed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| format!("{text:?}: a '{{' without its '}}'"))?;
            let path = &rest[open + 1..close];
            let valid = !path.is_empty()
                && path.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
            if !valid {
                return Err(format!(
                    "{text:?}: {{{path}}} is not a field name or a dotted path of them"
                ));
            }
            pieces.push(Piece::Field(path.split('.').map(str::to_string).collect()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: a '}}' without its '{{'"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self(pieces))
    }

    /// `self` with each hole replaced by the event's field; why it cannot be.
    pub fn fill(&self, event: &Value) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(path) => {
                    let value = path
                        .iter()
                        .try_fold(event, |at, field| at.get(field))
                        .ok_or_else(|| format!("the event has no field {}", path.join(".")))?;
                    match value {
                        Value::String(s) if !s.is_empty() => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(&b.to_string()),
                        _ => {
                            return Err(format!(
                                "field {} is {value}, not a string or number",
                                path.join(".")
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
