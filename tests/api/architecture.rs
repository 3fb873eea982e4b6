//! The import structure of `src/`, kept so: dependencies point one way (`http`/`workers` →
//! `service` → `repo`, `clients`, `queue`, … → `domain`), nothing below `app.rs` imports it,
//! and the modules of one layer never import each other in a circle. Reads the `use crate::`
//! lines and the `crate::…` paths of every file (test modules excluded) — no build needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// The layers, bottom first. A module may import modules of lower layers and its own
/// siblings (acyclically), never a module of its own rank in another folder or above it.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("db", 0),
    ("kv", 0),
    ("memo", 0),
    ("security", 1),
    ("error", 1),
    ("config", 2),
    ("telemetry", 2),
    ("repo", 2),
    ("clients", 3),
    ("queue", 4),
    ("hub", 4),
    ("lanes", 4),
    ("state", 5),
    ("service", 6),
    ("http", 7),
    ("workers", 7),
    ("app", 8),
];

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// `crate::{a::{b, c}, d}` → `["a::b", "a::c", "d"]`: the paths one `use` names.
fn expand(tree: &str) -> Vec<String> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(s[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(s[start..].trim());
        out.into_iter().filter(|p| !p.is_empty()).collect()
    }
    let tree = tree.trim();
    match tree.find('{') {
        None => vec![tree.to_owned()],
        Some(open) => {
            let prefix = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            split_top(inner)
                .into_iter()
                .flat_map(expand)
                .map(|p| {
                    if prefix.is_empty() {
                        p
                    } else if p == "self" {
                        prefix.to_owned()
                    } else {
                        format!("{prefix}::{p}")
                    }
                })
                .collect()
        }
    }
}

/// The module (`service`, or `service::holds` one level down) a path names.
fn module_of(path: &str, depth: usize) -> String {
    path.split("::").take(depth).collect::<Vec<_>>().join("::")
}

/// Whether `a::b` names a module file (`src/a/b.rs` or `src/a/b/mod.rs`).
fn is_module(path: &str) -> bool {
    let rel = path.replace("::", "/");
    Path::new(&format!("src/{rel}.rs")).exists() || Path::new(&format!("src/{rel}/mod.rs")).exists()
}

/// The module (one or two levels, as files exist) a crate path lands in: `service::holds`
/// for `service::holds::end`, `workers` for `workers::job_error` (an item of `mod.rs`).
fn landing(path: &str) -> String {
    let two = module_of(path, 2);
    if two.contains("::") && is_module(&two) {
        two
    } else {
        module_of(path, 1)
    }
}

/// Every crate path a source file uses outside its test module: `use crate::…` trees,
/// `crate::…` paths in code, `super::…` paths, and paths through a module imported by name
/// (`use crate::repo;` then `repo::orders::find(…)`).
fn crate_paths(source: &str, module: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let end = if after.starts_with('{') {
            // A `use crate::{…}` tree: up to its matching brace.
            let mut depth = 0;
            after
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i + 1)
                .unwrap_or(after.len())
        } else {
            after
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(after.len())
        };
        paths.extend(expand(&after[..end]));
        rest = &after[end..];
    }
    // `super::x` from `a::b` (a file) is `a::x`.
    let parent = module.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let after = &rest[at + "super::".len()..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        if !parent.is_empty() {
            paths.push(format!("{parent}::{}", &after[..end]));
        }
        rest = &after[end..];
    }
    // Modules imported by name, then used as `name::…`.
    let aliases: Vec<(String, String)> = paths
        .iter()
        .filter(|p| is_module(p))
        .filter_map(|p| {
            p.rsplit("::")
                .next()
                .map(|last| (last.to_owned(), p.clone()))
        })
        .collect();
    for (alias, full) in aliases {
        let needle = format!("{alias}::");
        let mut rest = code;
        while let Some(at) = rest.find(&needle) {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + needle.len()..];
            let end = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(after.len());
            // A whole word, not the tail of `crate::x::` or `other_x::`.
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(format!("{full}::{}", &after[..end]));
            }
            rest = &after[end..];
        }
    }
    paths
}

/// `(file's module path, e.g. "service::holds", the crate paths it uses)` for all of `src/`.
fn sources() -> Vec<(String, Vec<String>)> {
    fn walk(dir: &Path, out: &mut Vec<(String, Vec<String>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix("src").unwrap().with_extension("");
                let module = rel
                    .to_string_lossy()
                    .replace('/', "::")
                    .trim_end_matches("::mod")
                    .to_owned();
                let source = std::fs::read_to_string(&path).unwrap();
                let paths = crate_paths(&source, &module);
                out.push((module, paths));
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("src"), &mut out);
    out
}

#[test]
fn imports_point_down_the_layers_and_never_back_up() {
    let mut violations = Vec::new();
    for (module, paths) in sources() {
        let top = module_of(&module, 1);
        if top == "main" || top == "lib" {
            continue;
        }
        let Some(own) = rank(&top) else {
            violations.push(format!("{module}: module {top} has no layer in LAYERS"));
            continue;
        };
        for path in paths {
            let target = module_of(&path, 1);
            if target == top {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own => {}
                Some(_) => {
                    violations.push(format!("{module} imports {path} (same or higher layer)"))
                }
                None => violations.push(format!("{module} imports {path} (no layer)")),
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Handlers and jobs reach providers and SQL through services: no `clients` and no `repo`
/// functions in `http/` or `workers/` (a type they need comes from the service that
/// hands it out, or is a `repo` row).
#[test]
fn handlers_and_jobs_reach_providers_only_through_services() {
    let mut violations = Vec::new();
    for (module, paths) in sources() {
        let top = module_of(&module, 1);
        if top != "http" && top != "workers" {
            continue;
        }
        for path in paths {
            let target = module_of(&path, 1);
            // Row types from `repo` are data a service handed back; calling it is not allowed.
            let calls_repo = target == "repo"
                && path
                    .rsplit("::")
                    .next()
                    .is_some_and(|last| last.starts_with(|c: char| c.is_lowercase()));
            if target == "clients" || calls_repo {
                violations.push(format!("{module} uses {path}"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn modules_of_one_layer_import_each_other_without_a_circle() {
    // Edges between the files of one folder (service::payments -> service::holds, …).
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, paths) in sources() {
        let top = module_of(&module, 1);
        for path in paths {
            let target = landing(&path);
            if module_of(&target, 1) == top && target != module {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            return Some(stack[at..].iter().map(|s| s.to_string()).collect());
        }
        if !done.insert(node) {
            return None;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(node, &edges, &mut stack, &mut done) {
            panic!("import circle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_of_use_lines_understands_nested_trees() {
    assert_eq!(
        expand("{service::{holds, self}, state::AppState}"),
        vec!["service::holds", "service", "state::AppState"]
    );
    let paths = crate_paths(
        "use crate::{a::{b::C, d}, e};\nfn f() { crate::x::y(); }\n#[cfg(test)]\nmod t { use crate::z; }",
        "service::holds",
    );
    assert_eq!(paths, vec!["a::b::C", "a::d", "e", "x::y"]);
    // `repo` is a module of this crate: `repo::orders::find` is found through the alias.
    let paths = crate_paths(
        "use crate::{repo, service::holds};\nfn f() { repo::orders::find(); holds::end(); super::payments::settle(); }",
        "service::sweeper",
    );
    assert!(
        paths.contains(&"repo::orders::find".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"service::holds::end".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"service::payments::settle".to_owned()),
        "{paths:?}"
    );
    assert_eq!(landing("workers::job_error"), "workers");
    assert_eq!(landing("service::holds::end"), "service::holds");
}
