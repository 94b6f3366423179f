//! The module graph stays a tree of layers: no `use crate::` cycle between top-level modules,
//! library code never reaches up to the command layer, and only the command-line layer knows
//! clap. Read from the sources with a small scanner, so a new cycle fails here with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its code names through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The source with comment lines blanked (doc comments name modules in prose); line numbers
/// stay those of the file.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level names after each `crate::`: `crate::a::b` gives `a`, `crate::{a::b, c}`
/// gives `a` and `c` (first level of the group only).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `some_crate::x`, not a path into this crate
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        names.insert(ident_at(&group[i..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident_at(rest).to_string());
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src/");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_string()
}

/// The graph, and the files that mention clap, per top-level module.
fn scan() -> (Graph, BTreeMap<String, BTreeSet<String>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    let mut clap_users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let top = top_module(&src, &file);
        if top == "main" || top == "lib" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("read a source file"));
        let edges = graph.entry(top.clone()).or_default();
        for name in crate_paths(&code) {
            if name != top {
                edges.insert(name);
            }
        }
        if code.contains("clap::") || code.contains("use clap") {
            let rel = file.strip_prefix(&src).expect("under src/");
            clap_users
                .entry(top)
                .or_default()
                .insert(rel.display().to_string());
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|e| modules.contains(e)); // `crate::Error`-style re-exports are not modules
    }
    (graph, clap_users)
}

/// One cycle of the graph as a path `a -> b -> ... -> a`, if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit<'g>(
        node: &'g str,
        graph: &'g Graph,
        done: &mut BTreeSet<&'g str>,
        stack: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let code = "use crate::a::b;\nuse crate::{c::d, e, f::{g, h}};\nlet x = crate::i::j();\n\
                use other_crate::k;";
    let names: Vec<String> = crate_paths(code).into_iter().collect();
    assert_eq!(names, ["a", "c", "e", "f", "i"]);
    let mut graph = Graph::new();
    graph.insert("x".into(), ["y".to_string()].into());
    graph.insert("y".into(), ["x".to_string()].into());
    assert_eq!(find_cycle(&graph).expect("a cycle"), ["x", "y", "x"]);
}

#[test]
fn no_cycle_between_top_level_modules() {
    let (graph, _) = scan();
    assert!(graph.len() > 10, "the scan found the modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module cycle: {} (break it: move the shared type down a layer, or pass it in)",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn library_code_does_not_reach_up_to_the_commands() {
    let (graph, _) = scan();
    // The app layer: parses flags, resolves settings, calls the library, prints.
    let app = ["cli", "commands", "ops", "settings", "logging"];
    for (module, edges) in &graph {
        if app.contains(&module.as_str()) {
            continue;
        }
        for up in app {
            assert!(
                !edges.contains(up),
                "library module `{module}` uses the app layer `{up}`"
            );
        }
    }
}

#[test]
fn only_the_command_line_layer_knows_clap() {
    let (_, clap_users) = scan();
    let allowed = ["cli", "commands", "ops"];
    for (module, files) in &clap_users {
        assert!(
            allowed.contains(&module.as_str()),
            "`{module}` uses clap ({files:?}): keep clap types in cli.rs"
        );
    }
}

#[test]
fn only_the_child_module_spawns_and_signals_groups() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // What starts a child or signals a group, said any other way than through `crate::child`.
    let forbidden = [
        "process_group(",
        "pre_exec(",
        "killpg(",
        "libc::kill(",
        "PR_SET_PDEATHSIG",
    ];
    for file in files {
        if file.ends_with("child.rs") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("read a source file"));
        for needle in forbidden {
            assert!(
                !code.contains(needle),
                "{} uses `{needle}`: start children and signal their groups through crate::child",
                file.display()
            );
        }
        // A process is spawned from a `Command`; other `.spawn()`s (tasks, threads, fakes) are not.
        // Test-only fakes may start a throwaway process (a pid certainly gone).
        let test_only = file.ends_with("executor/fakes.rs") || file.ends_with("executor/tests.rs");
        let builds_commands =
            !test_only && (code.contains("Command::new") || code.contains("process::Command"));
        for (i, line) in code.lines().enumerate() {
            let spawns = builds_commands
                && line.contains(".spawn()")
                && !line.contains("tokio::spawn")
                && !line.contains("thread");
            assert!(
                !spawns,
                "{}:{}: `{}`: spawn children through crate::child::spawn_std/spawn_tokio",
                file.display(),
                i + 1,
                line.trim()
            );
        }
    }
}

#[test]
fn json_schema_ids_are_named_only_in_their_registry() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        if file.ends_with("json_schemas.rs") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("read a source file"));
        for (i, line) in code.lines().enumerate() {
            let literal = line
                .match_indices("\"upstep.")
                .any(|(at, _)| line[at + 1..].split('"').next().unwrap().contains('/'));
            assert!(
                !literal,
                "{}:{}: a JSON schema id spelled out: use crate::json_schemas",
                file.display(),
                i + 1
            );
        }
    }
}

#[test]
fn system_calls_go_through_nix_and_libc_names_only_signal_numbers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    for file in files {
        if file.ends_with("architecture.rs") {
            continue; // names the forbidden calls
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("read a source file"));
        for (i, line) in code.lines().enumerate() {
            for (at, _) in line.match_indices("libc::") {
                let name = ident_at(&line[at + "libc::".len()..]);
                assert!(
                    name.starts_with("SIG"),
                    "{}:{}: `libc::{name}`: make the call through nix (safe, typed errors); \
                     libc names signal numbers only",
                    file.display(),
                    i + 1
                );
            }
        }
    }
}

/// Struct fields named like a connection string or a secret that may hold a plain string, with
/// why each is safe.
const PLAIN_FIELDS_ALLOWED: [(&str, &str); 5] = [
    // Holds `Uri::redacted()`, the shown form.
    ("store/mod.rs", "redacted_uri"),
    // The throwaway redis-server's `redis://127.0.0.1:<port>`: loopback, no password.
    ("redis_auto.rs", "url"),
    // A public download a lockfile names (release map `Download`).
    ("release_map/model.rs", "url"),
    // Inside `Uri` itself, whose `Debug` is written by hand (redacted).
    ("redact/uri.rs", "password"),
    // `config show`'s "set (N chars)" / "not set".
    ("ui/config_text.rs", "encryption_key"),
];

/// Every struct field holding a connection string or URL is a `Uri` (or `RepoLocation`), whose
/// `Debug`, `Display` and `Serialize` show it redacted, and every bare password or key a
/// `SecretString`: a `String` or `&str` field would leak it through the first `{:?}` of its
/// struct.
#[test]
fn connection_strings_and_secrets_are_not_held_as_plain_strings() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let plain = [
        "String",
        "&str",
        "Option<String>",
        "Option<&str>",
        "Sourced<String>",
        "Option<Sourced<String>>",
    ];
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src/")
            .display()
            .to_string();
        let code = code_of(&std::fs::read_to_string(&file).expect("read a source file"));
        // The indentation of the `struct ... {` line whose fields are being read.
        let mut in_struct: Option<usize> = None;
        for (i, line) in code.lines().enumerate() {
            let indent = line.len() - line.trim_start().len();
            let trimmed = line.trim();
            match in_struct {
                None => {
                    let opens = trimmed.ends_with('{')
                        && (trimmed.starts_with("struct ")
                            || trimmed.starts_with("pub struct ")
                            || trimmed.starts_with("pub(crate) struct ")
                            || trimmed.starts_with("pub(super) struct "));
                    if opens {
                        in_struct = Some(indent);
                    }
                }
                Some(open) if indent == open && trimmed.starts_with('}') => in_struct = None,
                Some(_) => {
                    let Some((name, ty)) = trimmed.split_once(':') else {
                        continue;
                    };
                    let name = name.trim().rsplit(' ').next().unwrap_or_default();
                    let ty: String = ty
                        .trim()
                        .trim_end_matches(',')
                        .replace("'a ", "")
                        .replace(' ', "");
                    let named_like_url = name.ends_with("uri") || name.ends_with("url");
                    let named_like_secret = ["password", "secret", "token", "encryption_key"]
                        .iter()
                        .any(|s| name.ends_with(s));
                    let allowed = PLAIN_FIELDS_ALLOWED
                        .iter()
                        .any(|(f, n)| rel == *f && name == *n);
                    if (named_like_url || named_like_secret)
                        && plain.contains(&ty.as_str())
                        && !allowed
                    {
                        found.push(format!("src/{rel}:{}: `{name}: {ty}`", i + 1));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "connection strings or secrets held as plain strings (hold a crate::redact::Uri, or a \
         secrecy::SecretString; the real value leaves through expose() at the driver or \
         child):\n  {}",
        found.join("\n  ")
    );
}
