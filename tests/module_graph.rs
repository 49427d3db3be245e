//! The crate's dependency direction, checked: no import cycle between the modules of `src/`, at
//! any level (the top-level modules among themselves, and the children of every folder module
//! among themselves).
//!
//! A module depends on another when its code (not its comments, strings or `#[cfg(test)]`
//! modules) names a path into it: `crate::kiro::…`, `use crate::{api::Body, …}`, `super::x`.
//! The graph is read from the source files, so a cycle fails `cargo test` on the commit that
//! adds it, naming the modules and the lines that close it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One module's file: its path from the crate root (`["api", "openai", "convert"]`).
struct SourceFile {
    module: Vec<String>,
    file: PathBuf,
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&root).ok()?.to_path_buf();
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                // the crate root and the binary are not modules of the library
                Some("lib" | "main") if module.len() == 1 => return None,
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            let text = std::fs::read_to_string(&file).ok()?;
            Some(SourceFile {
                module,
                file: rel,
                code: without_tests(&without_comments_and_literals(&text)),
            })
        })
        .collect()
}

/// The text with comments, string and char literals blanked (newlines kept, so line numbers
/// still hold).
fn without_comments_and_literals(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // a raw string r"…" or r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            for &ch in &b[i..j.min(b.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            for &ch in &b[i..(j + 1).min(b.len())] {
                blank(&mut out, ch);
            }
            i = j + 1;
        } else if c == '\'' {
            // a char literal ('x', '\n', '\u{1F600}'), not a lifetime ('a)
            let end = if next == Some('\\') {
                (i + 2..b.len().min(i + 12)).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &b[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code with every `#[cfg(test)]` item blanked: tests may reach anywhere.
fn without_tests(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        // the item runs to its `;` or to the brace that closes its first `{`
        let mut j = i + marker.len();
        let mut depth = 0usize;
        while j < out.len() {
            match out[j] {
                ';' if depth == 0 => break,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let end = (j + 1).min(out.len());
        for ch in &mut out[i..end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = j + 1;
    }
    out.into_iter().collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens the path parser needs, each with its line.
fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let s = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                i += 1;
            }
            out.push((Tok::Ident(b[s..i].iter().collect()), line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((
                match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    _ => Tok::Other,
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

/// Every module path the code names, absolute from the crate root, with its line.
fn referenced_paths(file: &SourceFile) -> Vec<(Vec<String>, usize)> {
    let toks = tokens(&file.code);
    let mut found = Vec::new();
    // the tree after `prefix::` at position i: `a::b`, `a::{b, c::d}`, `*`
    fn tree(
        toks: &[(Tok, usize)],
        mut i: usize,
        prefix: Vec<String>,
        found: &mut Vec<(Vec<String>, usize)>,
    ) -> usize {
        let mut path = prefix;
        loop {
            match toks.get(i) {
                Some((Tok::Ident(s), line)) => {
                    path.push(s.clone());
                    i += 1;
                    if toks.get(i).map(|t| &t.0) == Some(&Tok::PathSep) {
                        i += 1;
                        continue;
                    }
                    found.push((path, *line));
                    return i;
                }
                Some((Tok::Open, _)) => {
                    i += 1;
                    loop {
                        match toks.get(i).map(|t| &t.0) {
                            Some(Tok::Close) => return i + 1,
                            Some(Tok::Comma) => i += 1,
                            None => return i,
                            _ => {
                                let before = i;
                                i = tree(toks, i, path.clone(), found);
                                // skip `as name` and anything the parser does not model
                                while let Some(t) = toks.get(i).map(|t| &t.0) {
                                    if matches!(t, Tok::Comma | Tok::Close) {
                                        break;
                                    }
                                    i += 1;
                                }
                                if i == before {
                                    i += 1;
                                }
                            }
                        }
                    }
                }
                Some((_, line)) => {
                    found.push((path, *line));
                    return i + 1;
                }
                None => return i,
            }
        }
    }
    let mut i = 0;
    while i < toks.len() {
        let start_of_path = i == 0 || toks[i - 1].0 != Tok::PathSep;
        match &toks[i].0 {
            Tok::Ident(s)
                if start_of_path
                    && s == "crate"
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) =>
            {
                i = tree(&toks, i + 2, Vec::new(), &mut found);
            }
            Tok::Ident(s)
                if start_of_path
                    && s == "super"
                    && toks.get(i + 1).map(|t| &t.0) == Some(&Tok::PathSep) =>
            {
                let mut base = file.module.clone();
                let mut j = i;
                while toks.get(j).map(|t| &t.0) == Some(&Tok::Ident("super".into()))
                    && toks.get(j + 1).map(|t| &t.0) == Some(&Tok::PathSep)
                {
                    base.pop();
                    j += 2;
                }
                i = tree(&toks, j, base, &mut found);
            }
            _ => i += 1,
        }
    }
    found
}

/// The module graph among the children of `parent`: child → child → the lines behind the edge.
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn graphs(files: &[SourceFile]) -> BTreeMap<Vec<String>, Graph> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut out: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for f in files {
        for (path, line) in referenced_paths(f) {
            // the longest prefix of the path that is a module
            let Some(target) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            // the edge is between the children of the deepest common parent
            let common = f
                .module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= f.module.len() || common >= target.len() {
                continue; // a module naming itself, its parent or its own child
            }
            out.entry(f.module[..common].to_vec())
                .or_default()
                .entry(f.module[common].clone())
                .or_default()
                .entry(target[common].clone())
                .or_default()
                .push(format!("{}:{line}", f.file.display()));
        }
    }
    out
}

/// The cycles of a graph, each as the list of its modules (one per strongly connected
/// component with more than one module).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flat_map(|m| m.keys())).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in g.get(&n).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reachable[n].contains(*n) {
            continue;
        }
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[*m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(scc.iter().cloned());
        out.push(scc);
    }
    out
}

#[test]
fn no_import_cycle_between_the_modules_of_src() {
    let files = source_files();
    assert!(
        files.len() > 20,
        "read only {} files: is src/ where it was?",
        files.len()
    );
    let mut report = String::new();
    for (parent, g) in graphs(&files) {
        for scc in cycles(&g) {
            let parent = if parent.is_empty() {
                "src".to_string()
            } else {
                format!("src/{}", parent.join("/"))
            };
            report.push_str(&format!(
                "\ncycle among the modules of {parent}: {}\n",
                scc.join(", ")
            ));
            for a in &scc {
                for (b, lines) in g.get(a).into_iter().flatten() {
                    if scc.contains(b) {
                        let shown: Vec<_> = lines.iter().take(4).cloned().collect();
                        report.push_str(&format!(
                            "  {a} -> {b}: {}{}\n",
                            shown.join(", "),
                            if lines.len() > 4 { ", …" } else { "" }
                        ));
                    }
                }
            }
        }
    }
    assert!(report.is_empty(), "import cycles:{report}");
}

/// The checker itself finds what it must: paths in groups, `super`, and not comments, strings
/// or test modules.
#[test]
fn the_checker_reads_paths_the_way_the_compiler_does() {
    let src = r##"
//! see [`crate::commented::X`]
use crate::{a::B, b::{c::D, E as F}, self_thing};
use super::sibling;
fn f() { let s = "crate::in_string::X"; let r = r#"crate::raw::X"#; let c = '{'; crate::expr::call(); }
#[cfg(test)]
mod tests { use crate::only_tests::X; fn g() { if true { } } }
pub(crate) fn h<'a>(x: &'a str) -> crate::after_tests::Y { todo!() }
"##;
    let file = SourceFile {
        module: vec!["top".into(), "me".into()],
        file: PathBuf::from("x.rs"),
        code: without_tests(&without_comments_and_literals(src)),
    };
    let firsts: BTreeSet<String> = referenced_paths(&file)
        .into_iter()
        .map(|(p, _)| p.join("::"))
        .collect();
    let expected: BTreeSet<String> = [
        "a::B",
        "b::c::D",
        "b::E",
        "self_thing",
        "top::sibling",
        "expr::call",
        "after_tests::Y",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(firsts, expected);
}

/// `cargo test --test module_graph -- --ignored --nocapture` prints the top-level graph (the
/// README's table is checked against it by hand).
#[test]
#[ignore]
fn print_the_top_level_graph() {
    let files = source_files();
    if let Some(g) = graphs(&files).get(&Vec::new()) {
        for (from, to) in g {
            let targets: Vec<&str> = to.keys().map(String::as_str).collect();
            println!("{from:>14} -> {}", targets.join(", "));
        }
    }
}
