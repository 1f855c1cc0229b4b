//! The host's module layering, checked: which top-level module may import which. A
//! test reads the sources (`crate::<module>` paths outside comments and test
//! modules) and fails on an import circle between top-level modules, or on a leaf
//! (`config`, `metrics`, `names`, `http1`) importing anything of the host but
//! another leaf below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules that import nothing of the host, or only these (`config` reads the
/// name languages of `names`).
const LEAVES: &[(&str, &[&str])] = &[
    ("config", &["names"]),
    ("metrics", &[]),
    ("names", &[]),
    ("http1", &[]),
];

/// Top-level module → the top-level modules its sources name.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" || module == "layers" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let named = graph.entry(module.clone()).or_default();
        for line in code_lines(&text) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let target = &rest[..end];
                if !target.is_empty() && target != module {
                    named.insert(target.to_string());
                }
            }
        }
    }
    graph
}

/// The lines of `text` that are code: no comments, and not what only tests compile
/// (an inline `#[cfg(test)] mod tests { .. }`, by convention the file's end, may
/// reach anything; another `#[cfg(test)]` item is one line).
fn code_lines(text: &str) -> Vec<&str> {
    let mut code = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line_trimmed = line.trim_start();
        if line_trimmed.starts_with("#[cfg(test)]") {
            match lines.next() {
                Some(next) if next.contains("mod ") && next.trim_end().ends_with('{') => break,
                _ => continue,
            }
        }
        if !line_trimmed.starts_with("//") {
            code.push(line);
        }
    }
    code
}

/// A circle through `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_top_level_module_imports_in_a_circle() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(graph.len() > 10, "the sources were read: {graph:?}");
    if let Some(found) = circle(&graph) {
        panic!("an import circle: {}", found.join(" -> "));
    }
}

#[test]
fn leaves_import_nothing_above_them() {
    let graph = imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (leaf, allowed) in LEAVES {
        let named = graph.get(*leaf).expect("the leaf exists");
        let above: Vec<&String> = named
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(above.is_empty(), "{leaf} imports {above:?}");
    }
}

#[test]
fn only_test_code_is_skipped() {
    let text = "use crate::a::X;\n#[cfg(test)]\nmod fuzz;\nuse crate::b::Y;\n// crate::c\n#[cfg(test)]\nmod tests {\n    use crate::d::Z;\n}\n";
    assert_eq!(code_lines(text), ["use crate::a::X;", "use crate::b::Y;"]);
}

#[test]
fn a_circle_is_found() {
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        circle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
