//! Redis glob patterns (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as `SCAN MATCH` reads them.
//!
//! The memory backends must match exactly what Redis matches, and the host must escape
//! a namespace prefix so that a guest pattern cannot reach outside it; no crate offers
//! Redis's exact dialect on arbitrary strings (the glob crates are path-oriented), so
//! it lives here, tested against Redis's documented cases.

/// Whether `text` matches the Redis glob `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    match_bytes(pattern.as_bytes(), text.as_bytes())
}

fn match_bytes(mut p: &[u8], mut t: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`, so no pattern is exponential.
    let mut star: Option<(&[u8], &[u8])> = None;
    loop {
        if let Some((&pc, rest)) = p.split_first() {
            match pc {
                b'*' => {
                    star = Some((rest, t));
                    p = rest;
                    continue;
                }
                b'?' if !t.is_empty() => {
                    p = rest;
                    t = &t[1..];
                    continue;
                }
                b'[' if !t.is_empty() => {
                    if let Some((true, after)) = match_class(rest, t[0]) {
                        p = after;
                        t = &t[1..];
                        continue;
                    }
                }
                b'\\' if !rest.is_empty() && !t.is_empty() && rest[0] == t[0] => {
                    p = &rest[1..];
                    t = &t[1..];
                    continue;
                }
                c if c != b'\\' && c != b'[' && c != b'?' && !t.is_empty() && c == t[0] => {
                    p = rest;
                    t = &t[1..];
                    continue;
                }
                _ => {}
            }
        } else if t.is_empty() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more byte, if there is one.
        match star {
            Some((after_star, star_t)) if !star_t.is_empty() => {
                let next = &star_t[1..];
                star = Some((after_star, next));
                p = after_star;
                t = next;
            }
            _ => return false,
        }
    }
}

/// Matches `c` against a class whose body starts at `p` (after `[`); returns whether it
/// matched and the pattern after the closing `]`, or `None` when `]` is missing.
fn match_class(mut p: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => return None,
            [b']', rest @ ..] => return Some((matched != negate, rest)),
            [b'\\', x, rest @ ..] => {
                matched |= *x == c;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&c);
                p = rest;
            }
            [x, rest @ ..] => {
                matched |= *x == c;
                p = rest;
            }
        }
    }
}

/// Checks a pattern for the one malformation Redis would read differently: an
/// unclosed `[` (Redis treats it leniently; we refuse it so both backends agree).
pub fn validate(pattern: &str) -> Result<(), String> {
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'[' => {
                let mut j = i + 1;
                if b.get(j) == Some(&b'^') {
                    j += 1;
                }
                loop {
                    match b.get(j) {
                        None => return Err(format!("unclosed `[` at byte {i}")),
                        Some(b'\\') => j += 2,
                        Some(b']') => break,
                        Some(_) => j += 1,
                    }
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    if b.ends_with(b"\\") && !b.ends_with(b"\\\\") {
        return Err("ends with a lone `\\`".to_string());
    }
    Ok(())
}

/// The literal text every match of `pattern` starts with (up to its first glob
/// character, with escapes resolved).
pub fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '*' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => break,
            },
            other => out.push(other),
        }
    }
    out
}

/// Escapes every glob character of `literal`, so that it matches only itself.
pub fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for ch in literal.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_documented_cases() {
        assert!(matches("h?llo", "hello"));
        assert!(matches("h?llo", "hallo"));
        assert!(!matches("h?llo", "hllo"));
        assert!(matches("h*llo", "hllo"));
        assert!(matches("h*llo", "heeeello"));
        assert!(matches("h[ae]llo", "hello"));
        assert!(!matches("h[ae]llo", "hillo"));
        assert!(matches("h[^e]llo", "hallo"));
        assert!(!matches("h[^e]llo", "hello"));
        assert!(matches("h[a-b]llo", "hbllo"));
        assert!(!matches("h[a-b]llo", "hcllo"));
        assert!(matches("h\\*llo", "h*llo"));
        assert!(!matches("h\\*llo", "hello"));
    }

    #[test]
    fn star_backtracks_without_blowing_up() {
        assert!(matches("*a*b*c", "xxaxxbxxc"));
        assert!(!matches("*a*b*c", "xxaxxbxx"));
        let long = "a".repeat(10_000);
        assert!(!matches("*a*a*a*a*a*b", &long));
        assert!(matches("*", ""));
        assert!(!matches("?", ""));
    }

    #[test]
    fn escaped_literal_matches_only_itself() {
        let literal = "a*b?[c]\\d";
        let pattern = format!("{}*", escape(literal));
        assert!(matches(&pattern, "a*b?[c]\\d:tail"));
        assert!(!matches(&pattern, "axb?[c]\\d:tail"));
    }

    #[test]
    fn literal_prefix_stops_at_the_first_glob_character() {
        assert_eq!(
            literal_prefix("techub:store:a:user*"),
            "techub:store:a:user"
        );
        assert_eq!(literal_prefix("a\\*b?c"), "a*b");
        assert_eq!(literal_prefix("*"), "");
    }

    #[test]
    fn unclosed_class_is_refused() {
        assert!(validate("a[bc").is_err());
        assert!(validate("a[bc]").is_ok());
        assert!(validate("a\\[bc").is_ok());
        assert!(validate("abc\\").is_err());
    }
}
