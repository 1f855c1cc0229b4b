//! Invalidation rules (`[[cache.invalidate]]`): which events invalidate what, with
//! keys, tags and patterns filled from the event's JSON payload (`"product:{id}"`,
//! `"{vendor.id}"`: a field, or a dotted path into nested objects).

use crate::config::InvalidationRule;
use crate::names::glob;
use crate::names::routing::TopicPattern;
use crate::names::template::Template;
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

impl Rule {
    /// Parses `rule`; the reason when it is malformed (named by the caller).
    pub fn parse(rule: &InvalidationRule) -> Result<Self, String> {
        let parsed = rule.parse()?;
        Ok(Self {
            on: parsed.on,
            binding: rule.on.clone(),
            domain: rule.domain.clone(),
            keys: parsed.keys,
            tags: parsed.tags,
            pattern: parsed.pattern,
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
