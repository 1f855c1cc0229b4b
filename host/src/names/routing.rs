//! AMQP topic routing: keys are dot-separated words; in binding patterns `*` matches
//! exactly one word and `#` zero or more.

/// Longest routing key AMQP allows (a short string).
pub const MAX_ROUTING_KEY_BYTES: usize = 255;

/// Checks a routing key a message is published with.
pub fn validate_routing_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("routing key must not be empty".into());
    }
    if key.len() > MAX_ROUTING_KEY_BYTES {
        return Err(format!(
            "routing key is longer than {MAX_ROUTING_KEY_BYTES} bytes"
        ));
    }
    if key.split('.').any(str::is_empty) {
        return Err(format!("routing key {key:?} has an empty word"));
    }
    if key.contains(['*', '#']) || key.chars().any(char::is_control) {
        return Err(format!(
            "routing key {key:?} contains `*`, `#` or a control character"
        ));
    }
    Ok(())
}

/// Checks a binding or grant pattern.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_ROUTING_KEY_BYTES {
        return Err(format!(
            "pattern {pattern:?} must be 1 to {MAX_ROUTING_KEY_BYTES} bytes"
        ));
    }
    for word in pattern.split('.') {
        if word.is_empty() {
            return Err(format!("pattern {pattern:?} has an empty word"));
        }
        if word.len() > 1 && word.contains(['*', '#']) {
            return Err(format!(
                "pattern {pattern:?}: `*` and `#` must be whole words"
            ));
        }
    }
    Ok(())
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    words: Vec<String>,
    text: String,
}

impl TopicPattern {
    /// Parses and validates `pattern`.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        validate_pattern(pattern)?;
        Ok(Self {
            words: pattern.split('.').map(str::to_string).collect(),
            text: pattern.to_string(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        let key: Vec<&str> = key.split('.').collect();
        align(&self.words, &key, |_| true)
    }
}

impl TopicPattern {
    /// Whether every routing key `other` matches is matched by `self` (a grant
    /// covering a binding). Conservative: `*` never covers a `#` of `other`, although
    /// `*.#` would in practice cover `#` (keys have at least one word): such a grant
    /// is refused, never a binding let through that the grant does not cover.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        let words: Vec<&str> = other.words.iter().map(String::as_str).collect();
        align(&self.words, &words, |word| word != "#")
    }
}

/// Whether `pattern` can consume `words` in full: `#` any number of them, `*` one that
/// `one_word` accepts, a literal an equal one. Dynamic programming over (pattern word,
/// word): linear in their product, so no pattern of many `#` can make it exponential.
fn align(pattern: &[String], words: &[&str], one_word: impl Fn(&str) -> bool) -> bool {
    let (p, k) = (pattern.len(), words.len());
    let mut reach = vec![vec![false; k + 1]; p + 1];
    reach[0][0] = true;
    for i in 0..p {
        for j in 0..=k {
            if !reach[i][j] {
                continue;
            }
            match pattern[i].as_str() {
                "#" => {
                    for r in reach[i + 1].iter_mut().skip(j) {
                        *r = true;
                    }
                }
                "*" => {
                    if j < k && one_word(words[j]) {
                        reach[i + 1][j + 1] = true;
                    }
                }
                literal => {
                    if j < k && words[j] == literal {
                        reach[i + 1][j + 1] = true;
                    }
                }
            }
        }
    }
    reach[p][k]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &str) -> bool {
        TopicPattern::parse(pattern).unwrap().matches(key)
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(m("user.*", "user.created"));
        assert!(!m("user.*", "user"));
        assert!(!m("user.*", "user.created.v2"));
        assert!(m("*.created", "order.created"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(m("user.#", "user"));
        assert!(m("user.#", "user.created.v2"));
        assert!(m("#", "anything.at.all"));
        assert!(m("#.paid", "order.42.paid"));
        assert!(m("a.#.b.#.c", "a.b.c"));
        assert!(!m("a.#.b.#.c", "a.c.b"));
        assert!(m("dlx.#", "dlx.email.user-notifications"));
    }

    fn covers(grant: &str, binding: &str) -> bool {
        TopicPattern::parse(grant)
            .unwrap()
            .covers(&TopicPattern::parse(binding).unwrap())
    }

    #[test]
    fn a_grant_covers_only_bindings_it_fully_contains() {
        assert!(covers("#", "payment.#"));
        assert!(covers("order.*", "order.created"));
        assert!(covers("order.#", "order.*.paid"));
        assert!(covers("order.*", "order.*"));
        assert!(covers("#.paid", "order.*.paid"));
        assert!(!covers("order.*", "order.#"));
        assert!(!covers("order.*", "order.created.v2"));
        assert!(!covers("user.#", "payment.#"));
        assert!(!covers("user.#", "#"));
        assert!(!covers("order.created", "order.*"));
    }

    #[test]
    fn literal_words_must_be_equal() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.updated"));
    }

    #[test]
    fn malformed_keys_and_patterns_are_refused() {
        assert!(validate_routing_key("").is_err());
        assert!(validate_routing_key("a..b").is_err());
        assert!(validate_routing_key("a.*").is_err());
        assert!(validate_routing_key(&"a".repeat(256)).is_err());
        assert!(validate_pattern("a.b*").is_err());
        assert!(validate_pattern("a.#.b").is_ok());
    }
}
