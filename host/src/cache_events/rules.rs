//! Invalidation rules (`[[cache.invalidate]]`): which events invalidate what, with
//! keys, tags and patterns filled from the event's JSON payload (`"product:{id}"`,
//! `"{vendor.id}"`: a field, or a dotted path into nested objects).

use crate::capability::glob;
use crate::capability::messaging::routing::TopicPattern;
use crate::config::InvalidationRule;
use serde_json::Value;

/// A rule, parsed.
#[derive(Debug, Clone)]
pub struct Rule {
    on: TopicPattern,
    /// The routing-key pattern as written (a binding of the host's queue).
    pub binding: String,
    domain: String,
    keys: Vec<Template>,
    tags: Vec<Template>,
    pattern: Option<Template>,
}

/// What one event asks of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The domain.
    pub domain: String,
    /// Keys to remove.
    pub keys: Vec<String>,
    /// Tags whose entries to remove.
    pub tags: Vec<String>,
    /// A glob of keys to remove.
    pub pattern: Option<String>,
}

/// Text with `{path}` holes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Vec<String>),
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
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

    fn fill(&self, event: &Value) -> Result<String, String> {
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

impl Rule {
    /// Parses `rule`; the reason when it is malformed (named by the caller).
    pub fn parse(rule: &InvalidationRule) -> Result<Self, String> {
        let on = TopicPattern::parse(&rule.on).map_err(|e| format!("on: {e}"))?;
        if rule.keys.is_empty() && rule.tags.is_empty() && rule.pattern.is_none() {
            return Err("names no keys, tags or pattern to invalidate".into());
        }
        let templates = |texts: &[String]| {
            texts
                .iter()
                .map(|t| Template::parse(t))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            on,
            binding: rule.on.clone(),
            domain: rule.domain.clone(),
            keys: templates(&rule.keys)?,
            tags: templates(&rule.tags)?,
            pattern: rule.pattern.as_deref().map(Template::parse).transpose()?,
        })
    }

    /// What `event` (published with `routing_key`) asks of this rule's domain;
    /// `None` when the rule does not apply to the key.
    fn plan(&self, routing_key: &str, event: &Value) -> Result<Option<Planned>, String> {
        if !self.on.matches(routing_key) {
            return Ok(None);
        }
        let fill = |templates: &[Template]| {
            templates
                .iter()
                .map(|t| t.fill(event))
                .collect::<Result<Vec<_>, _>>()
        };
        let pattern = self.pattern.as_ref().map(|t| t.fill(event)).transpose()?;
        if let Some(pattern) = &pattern {
            glob::validate(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?;
        }
        Ok(Some(Planned {
            domain: self.domain.clone(),
            keys: fill(&self.keys)?,
            tags: fill(&self.tags)?,
            pattern,
        }))
    }
}

/// Everything `payload` (an event published with `routing_key`) asks of `rules`, or
/// why it cannot be applied (not JSON, a field missing): such an event is
/// dead-lettered with that reason, and none of its rules applies.
pub fn plan(rules: &[Rule], routing_key: &str, payload: &[u8]) -> Result<Vec<Planned>, String> {
    let event: Value =
        serde_json::from_slice(payload).map_err(|e| format!("the event is not JSON: {e}"))?;
    let mut planned = Vec::new();
    for rule in rules {
        if let Some(p) = rule
            .plan(routing_key, &event)
            .map_err(|e| format!("rule on {:?} for {}: {e}", rule.binding, rule.domain))?
        {
            planned.push(p);
        }
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(on: &str, keys: &[&str], tags: &[&str]) -> Rule {
        Rule::parse(&InvalidationRule {
            on: on.into(),
            domain: "products".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pattern: None,
        })
        .unwrap()
    }

    #[test]
    fn fields_and_dotted_paths_fill_the_templates() {
        let rules = [rule(
            "product.*",
            &["{id}"],
            &["product:{id}", "vendor:{vendor.id}"],
        )];
        let planned = plan(
            &rules,
            "product.updated",
            br#"{"id": 42, "vendor": {"id": "v-7"}}"#,
        )
        .unwrap();
        assert_eq!(
            planned,
            [Planned {
                domain: "products".into(),
                keys: vec!["42".into()],
                tags: vec!["product:42".into(), "vendor:v-7".into()],
                pattern: None,
            }]
        );
        assert!(plan(&rules, "order.created", b"{}").unwrap().is_empty());
    }

    #[test]
    fn a_malformed_event_is_refused_with_its_reason() {
        let rules = [rule("product.*", &["{id}"], &[])];
        let missing = plan(&rules, "product.updated", br#"{"sku": 1}"#).unwrap_err();
        assert!(missing.contains("no field id"), "{missing}");
        let object = plan(&rules, "product.updated", br#"{"id": {}}"#).unwrap_err();
        assert!(object.contains("not a string or number"), "{object}");
        let garbage = plan(&rules, "product.updated", b"not json").unwrap_err();
        assert!(garbage.contains("not JSON"), "{garbage}");
    }

    #[test]
    fn malformed_rules_are_refused() {
        for (keys, expected) in [
            (vec!["{id"], "without its"),
            (vec!["id}"], "without its"),
            (vec!["{}"], "not a field name"),
            (vec!["{a..b}"], "not a field name"),
        ] {
            let error = Rule::parse(&InvalidationRule {
                on: "x.y".into(),
                domain: "users".into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                tags: vec![],
                pattern: None,
            })
            .unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
