//! Config fuzzing: arbitrary `host.toml` documents, and the example mutated one field
//! at a time to values of every type, are accepted or refused with an error that names
//! a field; `parse` never panics.

use super::HostConfig;
use proptest::prelude::*;

/// The example configuration the mutations start from.
const EXAMPLE: &str = include_str!("../../../host.toml");

/// Every dotted field path of a full configuration (the defaults, printed) and of the
/// example (which has sections the defaults leave out, such as `[stand_ins]`).
fn field_paths() -> Vec<String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = match prefix {
                "" => key.clone(),
                _ => format!("{prefix}.{key}"),
            };
            if let toml::Value::Table(inner) = value {
                walk(&path, inner, out);
            }
            out.push(path);
        }
    }
    let printed = toml::to_string(&HostConfig::default()).expect("the defaults print");
    let table: toml::Table = printed.parse().expect("and read back");
    let mut paths = Vec::new();
    walk("", &table, &mut paths);
    let example: toml::Table = EXAMPLE.parse().expect("the example is TOML");
    walk("", &example, &mut paths);
    paths.sort();
    paths.dedup();
    paths
}

/// The example's own path: its secrets' files are relative to it.
fn example_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host.toml")
}

fn any_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        prop_oneof![Just(0i64), Just(-1), Just(1), Just(u32::MAX as i64 + 1)]
            .prop_map(toml::Value::Integer),
        any::<f64>()
            .prop_filter("TOML has no NaN literal worth testing", |f| f.is_finite())
            .prop_map(toml::Value::Float),
        ".{0,40}".prop_map(toml::Value::String),
        any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// Sets `path` (dotted) in `table` to `value`, making tables on the way.
fn set(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("a path has a key");
    let mut at = table;
    for part in parts {
        let entry = at
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        at = entry.as_table_mut().expect("made a table above");
    }
    at.insert(last.to_string(), value);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "(\\PC|\\n){0,200}") {
        let _ = HostConfig::parse(&text);
    }

    #[test]
    fn a_mutated_example_is_accepted_or_refused_naming_a_field(
        index in any::<prop::sample::Index>(),
        value in any_value(),
    ) {
        let paths = field_paths();
        let path = index.get(&paths).clone();
        let mut table: toml::Table = EXAMPLE.parse().expect("the example is TOML");
        set(&mut table, &path, value);
        let text = toml::to_string(&table).expect("a table prints");
        if let Err(error) = HostConfig::from_file_text(&example_path(), &text) {
            let message = error.to_string();
            // The fields it names: `a.b` in backticks, a known path or an entry under
            // one (a plugin's name, a queue type, a domain).
            let named = paths.iter().any(|p| {
                message.contains(&format!("`{p}`")) || message.contains(&format!("`{p}."))
            });
            prop_assert!(named, "{path} = ...: the error names no field: {message}");
        }
    }
}
