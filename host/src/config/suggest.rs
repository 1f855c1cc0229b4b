//! "Did you mean" for a misspelled field: serde names the unknown field and every
//! field it expected; the closest one, if close enough, is suggested.

/// `message` (a TOML deserialization error), with a suggestion appended when it names
/// an unknown field close to one it expected.
pub(super) fn with_suggestion(message: String) -> String {
    match suggestion(&message) {
        Some(field) => format!("{message}\ndid you mean `{field}`?"),
        None => message,
    }
}

fn suggestion(message: &str) -> Option<&str> {
    let unknown = between(message, "unknown field `", "`")?;
    let expected = &message[message.find("expected one of ")?..];
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|field| (strsim::damerau_levenshtein(unknown, field), field))
        // Close: a typo or two, not another word.
        .filter(|(distance, field)| *distance <= 2.max(field.len() / 4) && *distance > 0)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, field)| field)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = from + text[from..].find(end)?;
    Some(&text[from..to])
}

#[cfg(test)]
mod tests {
    use crate::HostConfig;

    #[test]
    fn a_misspelled_field_gets_the_closest_one_suggested() {
        let error = HostConfig::parse("[limits]\ncpu_msx = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("did you mean `cpu_ms`?"), "{error}");
        let error = HostConfig::parse("[host]\nmax_instance = 3\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("did you mean `max_instances`?"), "{error}");
        // Nothing close: no guess.
        let error = HostConfig::parse("[limits]\nbanana = 3\n")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("did you mean"), "{error}");
    }
}
