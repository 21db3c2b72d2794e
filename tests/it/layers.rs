//! Architecture guard; run it with `cargo test --test it layers`. It reads every `.rs` file of `src/` (the `fleetcast`
//! library and binary) and of `loadtest/src/` (the load client), builds the file-level import graph and checks: that
//! neither tree has an import cycle; that in `src/` every import points down the layer table [`LAYERS`], and no edge
//! imports another edge but as [`EDGE_ALLOW`] lets it; that [`LAYERS`] places every file of `src/`; and that the `//!`
//! module map of `src/lib.rs` names every module it declares.
//!
//! How: comments, strings and char literals are dropped and the rest is cut into tokens. An import is each leaf of a
//! `use` tree (groups, `self`, `as`, globs, `pub use`) and each path in code that starts with `crate::`, `self::`,
//! `super::` or the name of a child module the file declares (`mod x;`). A path resolves to the file of its longest
//! prefix that exists (`a::b` is `a/b.rs` or `a/b/mod.rs`; the root is `lib.rs`, or `main.rs` for a binary), and
//! `self`/`super` count inline `mod x { .. }` blocks. `mod x;` itself is not an import, nor is a file's use of itself.
//!
//! Limits, as this reads text and is not the compiler: macros are not expanded (`$crate::` reads as `crate::`);
//! `#[path]` and `#[cfg]` are ignored, so test-only imports count; an item reached through a glob or a re-export is an
//! edge to the file of the glob or re-export, not to its definition; a path to a module with no file falls back to its
//! parent's file (a stale `crate::gone::X` reads as `src/lib.rs`); nested block comments end at their first `*/`; other
//! crates (`std::`, and `fleetcast::` in `src/main.rs`) are not followed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// Module prefix under `src/` (`a` or `a::b`; `lib` is `src/lib.rs`, `main` is `src/main.rs`) →
/// layer; the longest matching prefix wins. A file may import its own layer or a lower one.
#[rustfmt::skip]
const LAYERS: &[(&str, u8)] = &[
    ("config", 0), ("error", 0), ("telemetry", 0), ("limits", 0), ("listener", 0),
    ("domain", 1), ("auth", 1), ("mint", 1), ("events", 1),
    ("engine", 2), ("store", 2), ("jobs", 2), ("snapshots", 2), ("notices", 2),
    ("fanout", 3), ("access", 3), ("pace", 3), ("app", 3),
    ("flows", 4),
    ("socket", 5), ("sse", 5), ("http", 5), ("web", 5),
    ("node", 6), ("lib", 6), ("main", 6),
];

/// The layers' names, by number.
const LAYER_NAMES: &[&str] = &["base", "domain", "engines and store", "publish", "flows", "edges", "node"];

/// The edges' layer: one top-level module of it may not import another...
const EDGE_LAYER: u8 = 5;

/// ...except (importer prefix, imported prefix) here: SSE is served over HTTP and shares its
/// request identity and error mapping.
const EDGE_ALLOW: &[(&str, &str)] = &[("sse", "http::auth"), ("sse", "http::error")];

/// A token (a word, `::`, or one other character) and its line.
type Tok = (String, usize);

/// A source file: its path from the manifest and its module path in its crate.
struct File {
    rel: String,
    module: Vec<String>,
    text: String,
}

/// `from` refers to `to` through `path` on `line`, whose code is `code`.
struct Import {
    from: String,
    to: String,
    line: usize,
    path: String,
    code: String,
}

/// The tokens of `src`, without comments, strings and char literals.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let end_of = |mut i: usize, keep: fn(char) -> bool| {
        while i < c.len() && keep(c[i]) {
            i += 1;
        }
        i
    };
    // The index after a string whose body starts at `i`.
    let end_of_str = |mut i: usize, raw: bool, hashes: usize| {
        while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#')) {
            i += if !raw && c[i] == '\\' { 2 } else { 1 };
        }
        i + 1 + hashes
    };
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < c.len() {
        let (next, tok) = match (c[i], at(i + 1)) {
            ('/', '/') => (end_of(i, |ch| ch != '\n'), None),
            ('/', '*') => (c[i + 2..].windows(2).position(|w| w == ['*', '/']).map_or(c.len(), |k| i + k + 4), None),
            ('"', _) => (end_of_str(i + 1, false, 0), None),
            ('\'', '\\') => (end_of(i + 3, |ch| ch != '\'') + 1, None),
            ('\'', _) if at(i + 2) == '\'' => (i + 3, None),
            (':', ':') => (i + 2, Some(String::from("::"))),
            (ch, _) if ch.is_alphabetic() || ch == '_' => {
                let end = end_of(i, is_ident);
                let word: String = c[i..end].iter().collect();
                let hashes = end_of(end, |ch| ch == '#') - end;
                if matches!(word.as_str(), "r" | "br" | "cr") && at(end + hashes) == '"' {
                    (end_of_str(end + hashes + 1, true, hashes), None)
                } else if word == "r" && hashes == 1 && is_ident(at(end + 1)) {
                    let raw_end = end_of(end + 1, is_ident); // a raw identifier, `r#type`
                    (raw_end, Some(c[end + 1..raw_end].iter().collect()))
                } else {
                    (end, Some(word))
                }
            }
            (ch, _) if ch.is_ascii_digit() => (end_of(i, is_ident), Some(String::from("0"))),
            (ch, _) => (i + 1, (!ch.is_whitespace()).then(|| ch.to_string())),
        };
        out.extend(tok.map(|t| (t, line)));
        let next = next.min(c.len());
        line += c[i..next].iter().filter(|&&ch| ch == '\n').count();
        i = next;
    }
    out
}

/// The file-backed child modules a file declares: `mod x;`, `pub mod x;`, `pub(crate) mod x;`.
fn declared_mods(toks: &[Tok]) -> Vec<String> {
    toks.windows(3).filter(|w| w[0].0 == "mod" && w[2].0 == ";").map(|w| w[1].0.clone()).collect()
}

/// Whether `tok` is a word (an identifier or keyword).
fn is_word(tok: Option<&Tok>) -> bool {
    tok.is_some_and(|t| t.0.starts_with(|ch: char| ch.is_alphabetic() || ch == '_'))
}

/// Parses the `use` tree at `toks[*i]` below `path`, pushing each leaf (with its line) to `out`.
fn use_tree(toks: &[Tok], i: &mut usize, mut path: Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    let tok = |k: usize| toks.get(k).map_or("", |t| t.0.as_str());
    if tok(*i) == "::" {
        path.push(String::from("::")); // `::x` is another crate
        *i += 1;
    }
    while is_word(toks.get(*i)) {
        let (seg, line) = toks[*i].clone();
        path.push(seg);
        *i += 1;
        match tok(*i) {
            "::" => *i += 1,
            next => {
                *i += if next == "as" { 2 } else { 0 };
                return out.push((path, line));
            }
        }
    }
    if tok(*i) != "{" {
        return out.push((path, toks.get(*i).or(toks.last()).map_or(1, |t| t.1))); // a glob
    }
    *i += 1;
    while !matches!(tok(*i), "}" | ";" | "") {
        let before = *i;
        if tok(*i) != "," {
            use_tree(toks, i, path.clone(), out);
        }
        *i = (*i).max(before + 1); // past a comma, or a glob's `*`
    }
    *i += 1;
}

/// Module path → file, for one crate.
type Modules = BTreeMap<Vec<String>, String>;

/// The file `path` points to, from `file` inside its inline modules `inline`.
fn resolve(path: &[String], file: &File, inline: &[String], children: &[String], modules: &Modules) -> Option<String> {
    let first = path.first()?.as_str();
    let (mut full, rest) = match first {
        "crate" => (Vec::new(), &path[1..]),
        "self" | "super" => {
            let mut module: Vec<String> = file.module.iter().chain(inline).cloned().collect();
            let skip = usize::from(first == "self");
            let supers = path[skip..].iter().take_while(|s| *s == "super").count();
            for _ in 0..supers {
                module.pop()?;
            }
            (module, &path[skip + supers..])
        }
        name if children.iter().any(|c| c == name) => (file.module.clone(), path),
        _ => return None,
    };
    full.extend(rest.iter().cloned());
    (0..=full.len()).rev().find_map(|n| modules.get(&full[..n]).cloned())
}

/// Every import between the files of one crate.
fn scan(files: &[File]) -> Vec<Import> {
    let modules: Modules = files.iter().map(|f| (f.module.clone(), f.rel.clone())).collect();
    let mut out = Vec::new();
    for file in files {
        let toks = tokens(&file.text);
        let tok = |k: usize| toks.get(k).map_or("", |t| t.0.as_str());
        let children = declared_mods(&toks);
        let (mut inline, mut depth, mut i) = (Vec::<(String, usize)>::new(), 0usize, 0);
        let mut found = Vec::new(); // (path, line, inline modules)
        while i < toks.len() {
            // Not a path's start: after `::`, or in `pub(in crate::x)`.
            let inside = i > 0 && (tok(i - 1) == "::" || i > 1 && tok(i - 2) == "(" && tok(i - 1) == "in");
            match tok(i) {
                "{" => depth += 1,
                "}" => {
                    depth = depth.saturating_sub(1);
                    inline.retain(|m| m.1 <= depth);
                }
                "mod" if tok(i + 2) == "{" => inline.push((tok(i + 1).to_string(), depth + 1)),
                "use" if !inside => {
                    let mut leaves = Vec::new();
                    i += 1;
                    use_tree(&toks, &mut i, Vec::new(), &mut leaves);
                    found.extend(leaves.into_iter().map(|(path, line)| (path, line, inline.clone())));
                    continue;
                }
                _ if !inside && is_word(toks.get(i)) && tok(i + 1) == "::" => {
                    let mut path = vec![toks[i].0.clone()];
                    while tok(i + 2 * path.len() - 1) == "::" && is_word(toks.get(i + 2 * path.len())) {
                        path.push(toks[i + 2 * path.len()].0.clone());
                    }
                    found.push((path, toks[i].1, inline.clone()));
                }
                _ => {}
            }
            i += 1;
        }
        for (mut path, line, inline) in found {
            while path.len() > 1 && path.last().is_some_and(|s| s == "self") {
                path.pop();
            }
            let inline: Vec<String> = inline.into_iter().map(|m| m.0).collect();
            let Some(to) = resolve(&path, file, &inline, &children, &modules) else { continue };
            if to != file.rel {
                let code = file.text.lines().nth(line - 1).unwrap_or_default().trim().to_string();
                out.push(Import { from: file.rel.clone(), to, line, path: path.join("::"), code });
            }
        }
    }
    out
}

/// Reads `dir/name` (from the manifest), in the crate whose root is `dir/root`.
fn load(dir: &str, name: &str, root: &str) -> File {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut module: Vec<String> = name.trim_end_matches(".rs").split('/').map(String::from).collect();
    if name == root || module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    File { rel: format!("{dir}/{name}"), module, text }
}

/// The `.rs` files under `dir` (from the manifest) but the top-level ones in `skip`.
fn crate_files(dir: &str, root: &str, skip: &[&str]) -> Vec<File> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let (mut pending, mut names) = (vec![base.clone()], Vec::new());
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display())) {
            let path = entry.unwrap_or_else(|e| panic!("listing {}: {e}", d.display())).path();
            let name = path.strip_prefix(&base).expect("walked from base").to_string_lossy().replace('\\', "/");
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !skip.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    names.sort();
    names.iter().map(|name| load(dir, name, root)).collect()
}

/// The files and imports of `src/`: the library, and `src/main.rs` as a crate of its own.
fn src_graph() -> (Vec<File>, Vec<Import>) {
    let (mut files, bin) = (crate_files("src", "lib.rs", &["main.rs"]), vec![load("src", "main.rs", "main.rs")]);
    let mut imports = scan(&files);
    imports.extend(scan(&bin));
    files.extend(bin);
    (files, imports)
}

/// The shortest cycle through each import on one, each starting at its least file.
fn cycles(graph: &BTreeMap<&str, BTreeSet<&str>>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    for (&from, tos) in graph {
        for &to in tos {
            let (mut parent, mut queue) = (BTreeMap::from([(to, to)]), VecDeque::from([to]));
            while let Some(node) = queue.pop_front().filter(|_| !parent.contains_key(from)) {
                for &next in graph.get(node).into_iter().flatten() {
                    if !parent.contains_key(next) {
                        parent.insert(next, node);
                        queue.push_back(next);
                    }
                }
            }
            if parent.contains_key(from) {
                let mut cycle = vec![from];
                while cycle.last() != Some(&to) {
                    cycle.push(parent[cycle.last().expect("never empty")]);
                }
                cycle[1..].reverse();
                let least = (0..cycle.len()).min_by_key(|&k| cycle[k]).expect("never empty");
                cycle.rotate_left(least);
                found.insert(cycle.into_iter().map(String::from).collect());
            }
        }
    }
    found
}

/// The lines through which `from` imports `to`, as lines of a report.
fn evidence(imports: &[Import], from: &str, to: &str) -> Vec<String> {
    let mut lines: BTreeMap<usize, (BTreeSet<&str>, &str)> = BTreeMap::new();
    for imp in imports.iter().filter(|i| i.from == from && i.to == to) {
        lines.entry(imp.line).or_insert_with(|| (BTreeSet::new(), &imp.code)).0.insert(&imp.path);
    }
    let mut out = vec![format!("    {from} -> {to}:")];
    for (line, (paths, code)) in lines {
        out.push(format!("      {from}:{line}: {}  | {code}", paths.into_iter().collect::<Vec<_>>().join(", ")));
    }
    out
}

/// Fails with each set of files that import one another: its cycles, and the imports making them.
fn assert_acyclic(what: &str, imports: &[Import]) {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for imp in imports {
        graph.entry(imp.from.as_str()).or_default().insert(imp.to.as_str());
    }
    let mut sets: Vec<(BTreeSet<String>, BTreeSet<Vec<String>>)> = Vec::new();
    for cycle in cycles(&graph) {
        let mut set = (cycle.iter().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([cycle]));
        let (joined, apart): (Vec<_>, Vec<_>) = sets.into_iter().partition(|other| !other.0.is_disjoint(&set.0));
        for other in joined {
            set.0.extend(other.0);
            set.1.extend(other.1);
        }
        sets = apart;
        sets.push(set);
    }
    let mut report = Vec::new();
    for (files, cycles) in &sets {
        report.push(format!(
            "\n  files importing one another: {}",
            files.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
        ));
        report.extend(cycles.iter().map(|c| format!("    cycle: {} -> {}", c.join(" -> "), c[0])));
        for (from, tos) in graph.iter().filter(|(from, _)| files.contains(**from)) {
            for to in tos.iter().filter(|to| files.contains(**to)) {
                report.extend(evidence(imports, from, to));
            }
        }
    }
    assert!(sets.is_empty(), "{} set(s) of {what} files import one another:\n{}", sets.len(), report.join("\n"));
}

/// Whether `module` starts with the `::`-separated `prefix`.
fn has_prefix(module: &[String], prefix: &str) -> bool {
    prefix.split("::").count() <= module.len() && prefix.split("::").zip(module).all(|(p, m)| p == m)
}

/// The layer of a file of `src/`: that of the longest prefix in [`LAYERS`] its module matches.
fn layer(file: &File) -> Option<u8> {
    let key = match file.rel.as_str() {
        "src/lib.rs" => vec![String::from("lib")],
        "src/main.rs" => vec![String::from("main")],
        _ => file.module.clone(),
    };
    let matching = LAYERS.iter().filter(|(prefix, _)| has_prefix(&key, prefix));
    matching.max_by_key(|(prefix, _)| prefix.split("::").count()).map(|&(_, layer)| layer)
}

fn layer_name(layer: u8) -> String {
    format!("layer {layer} \"{}\"", LAYER_NAMES.get(usize::from(layer)).unwrap_or(&"?"))
}

#[test]
fn src_has_no_import_cycle() {
    assert_acyclic("src/", &src_graph().1);
}

#[test]
fn loadtest_has_no_import_cycle() {
    assert_acyclic("loadtest/src/", &scan(&crate_files("loadtest/src", "main.rs", &[])));
}

#[test]
fn src_layer_table_places_every_file() {
    let missing: Vec<String> = src_graph().0.into_iter().filter(|f| layer(f).is_none()).map(|f| f.rel).collect();
    assert!(
        missing.is_empty(),
        "files of src/ in no layer; add their modules to LAYERS (tests/it/layers.rs): {missing:?}"
    );
}

#[test]
fn src_imports_point_down_the_layers() {
    let (files, imports) = src_graph();
    let by_rel: BTreeMap<&str, &File> = files.iter().map(|f| (f.rel.as_str(), f)).collect();
    let mut bad: BTreeMap<(&str, &str), String> = BTreeMap::new();
    for imp in &imports {
        let (from, to) = (by_rel[imp.from.as_str()], by_rel[imp.to.as_str()]);
        // A file in no layer fails `src_layer_table_places_every_file`.
        let (Some(low), Some(high)) = (layer(from), layer(to)) else { continue };
        let allowed = || EDGE_ALLOW.iter().any(|(a, b)| has_prefix(&from.module, a) && has_prefix(&to.module, b));
        if high > low {
            bad.insert((&imp.from, &imp.to), format!("{} imports {}", layer_name(low), layer_name(high)));
        } else if low == EDGE_LAYER && high == EDGE_LAYER && from.module.first() != to.module.first() && !allowed() {
            bad.insert((&imp.from, &imp.to), String::from("an edge imports another edge (not in EDGE_ALLOW)"));
        }
    }
    let mut report = Vec::new();
    for ((from, to), why) in &bad {
        report.push(format!("\n  {why}:"));
        report.extend(evidence(&imports, from, to));
    }
    assert!(bad.is_empty(), "{} import(s) against LAYERS (in tests/it/layers.rs):\n{}", bad.len(), report.join("\n"));
}

#[test]
fn lib_module_map_names_every_module() {
    let lib = load("src", "lib.rs", "lib.rs");
    let doc = lib.text.lines().map_while(|l| l.trim_start().strip_prefix("//!")).collect::<Vec<_>>().join("\n");
    let missing: Vec<String> =
        declared_mods(&tokens(&lib.text)).into_iter().filter(|name| !doc.contains(&format!("`{name}`"))).collect();
    assert!(missing.is_empty(), "modules of src/lib.rs missing from its `//!` module map (add [`name`]): {missing:?}");
}
