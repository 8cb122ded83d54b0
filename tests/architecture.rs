//! The architecture rules of docs/ARCHITECTURE.md, checked on the source: every top-level module
//! of src/ imports only what its row of the module table allows (and the table has no cycle),
//! commands never import each other, only the binary's layer prints, no function grows past
//! 80 lines, and every file of the repository that the code or the documentation names exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 80;
/// Where printing is allowed: the command layer, the binary and the terminal reporter.
const PRINTING: [&str; 3] = ["src/commands/", "src/main.rs", "src/report.rs"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The code of a file without comments, string contents and its `#[cfg(test)]` module.
fn code_of(text: &str) -> Vec<String> {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(strip_line).collect()
}

/// A line without its `//` comment and with string literals emptied.
fn strip_line(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => {
                in_string = !in_string;
                out.push(c);
            }
            '/' if !in_string && chars.peek() == Some(&'/') => break,
            _ if in_string => {}
            _ => out.push(c),
        }
    }
    out
}

/// The module table of docs/ARCHITECTURE.md: module → modules it may import.
fn allowed_imports() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let section = doc.split("## Modules").nth(1).expect("a Modules section").split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let module = cells[1].trim_matches('`').to_string();
            let allowed = cells[3].split(',').map(|m| m.trim().trim_matches('`').to_string());
            (module, allowed.filter(|m| !m.is_empty() && m != "—").collect())
        })
        .collect()
}

/// Top-level modules of src/ and the crate modules each one's code names (`crate::x`).
fn actual_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let names = imports.entry(module.clone()).or_default();
        for line in code_of(&std::fs::read_to_string(&file).unwrap()) {
            let mut rest = line.as_str();
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let inside = group.split('}').next().unwrap_or_default();
                    names.extend(inside.split(',').filter_map(|p| p.trim().split("::").next().map(str::to_string)));
                } else {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    names.insert(name);
                }
            }
        }
        names.retain(|n| n != &module && !n.is_empty() && n != "self");
    }
    imports
}

#[test]
fn modules_import_only_what_the_architecture_allows() {
    let allowed = allowed_imports();
    let actual = actual_imports();
    assert_eq!(
        allowed.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "docs/ARCHITECTURE.md must have one row per top-level module of src/"
    );
    for (module, names) in &actual {
        let extra: Vec<&String> = names.difference(&allowed[module]).collect();
        assert!(extra.is_empty(), "src/{module} imports {extra:?}, which docs/ARCHITECTURE.md does not allow");
    }
}

#[test]
fn the_allowed_imports_have_no_cycle() {
    let allowed = allowed_imports();
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < allowed.len() {
        let ready: Vec<String> = allowed
            .iter()
            .filter(|(m, deps)| !done.contains(*m) && deps.iter().all(|d| done.contains(d)))
            .map(|(m, _)| m.clone())
            .collect();
        let left: Vec<&String> = allowed.keys().filter(|m| !done.contains(*m)).collect();
        assert!(!ready.is_empty(), "a cycle (or an unknown module) among {left:?}");
        done.extend(ready);
    }
}

/// Commands never import each other: what two commands share lives in the library, or in
/// `commands/mod.rs` when it is command-line parsing (shared arguments).
#[test]
fn commands_do_not_import_each_other() {
    let dir = root().join("src/commands");
    let commands: Vec<String> = rust_files(&dir)
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "mod")
        .collect();
    for file in rust_files(&dir) {
        let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        for (n, line) in code_of(&std::fs::read_to_string(&file).unwrap()).iter().enumerate() {
            for prefix in ["super::", "crate::commands::"] {
                for (at, _) in line.match_indices(prefix) {
                    let rest = &line[at + prefix.len()..];
                    let names: Vec<&str> = match rest.strip_prefix('{') {
                        Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                        None => vec![rest],
                    };
                    for name in names {
                        let name: String =
                            name.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        assert!(!commands.contains(&name), "{relative}:{}: imports the command `{name}`", n + 1);
                    }
                }
            }
        }
    }
}

#[test]
fn only_the_command_layer_prints() {
    let src = root().join("src");
    for file in rust_files(&src) {
        let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        if PRINTING.iter().any(|p| relative.starts_with(p)) {
            continue;
        }
        for (n, line) in code_of(&std::fs::read_to_string(&file).unwrap()).iter().enumerate() {
            for macro_name in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
                assert!(!line.contains(macro_name), "{relative}:{}: {macro_name} in library code", n + 1);
            }
        }
    }
}

/// (first line, name, length) of every function of a file, outside its tests.
fn functions(lines: &[String]) -> Vec<(usize, String, usize)> {
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ").filter(|&i| i == 0 || !line.as_bytes()[i - 1].is_ascii_alphanumeric()) else {
            continue;
        };
        let name: String = line[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        for (end, body) in lines.iter().enumerate().skip(start) {
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && body.trim_end().ends_with(';')) {
                if opened {
                    found.push((start + 1, name.clone(), end - start + 1));
                }
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_is_longer_than_eighty_lines() {
    let src = root().join("src");
    let mut long = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        let lines: Vec<String> = code_of(&std::fs::read_to_string(&file).unwrap())
            .into_iter()
            .map(|l| l.replace("'{'", "").replace("'}'", ""))
            .collect();
        for (line, name, length) in functions(&lines) {
            if length > MAX_FUNCTION_LINES {
                long.push(format!("{relative}:{line} {name} ({length} lines)"));
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX_FUNCTION_LINES} lines: {long:?}");
}

#[test]
fn the_function_counter_counts() {
    let code: Vec<String> =
        ["fn a() {", "    let x = \"{\";", "}", "", "pub fn b(x: u8)", "    -> u8 {", "    x", "}", "fn c();"]
            .iter()
            .map(|l| strip_line(l))
            .collect();
    assert_eq!(functions(&code), [(1, "a".to_string(), 3), (5, "b".to_string(), 4)]);
}

/// The repository paths a text names: `docs/X.md`-like paths under the repository's folders, and
/// in a Markdown text the targets of relative links (resolved against `base`, the text's folder).
fn named_paths(text: &str, base: &Path, markdown: bool) -> Vec<PathBuf> {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut found = Vec::new();
    for (start, _) in text.match_indices(|c: char| c.is_ascii_alphanumeric()) {
        if start > 0 && text[..start].chars().next_back().is_some_and(path_char) {
            continue;
        }
        let word: String = text[start..].chars().take_while(|&c| path_char(c)).collect();
        let word = word.trim_end_matches('.');
        let top = word.split('/').next().unwrap_or_default();
        let named_file = [".md", ".sh", ".py", ".rs", ".yaml"].iter().any(|e| word.ends_with(e));
        if named_file && word.contains('/') && FOLDERS.contains(&top) && !word.contains('<') {
            found.push(root().join(word));
        }
    }
    for link in text.split("](").skip(1).filter(|_| markdown) {
        let target = link.split([')', '#']).next().unwrap_or_default();
        if !target.is_empty() && !target.contains("://") && !target.contains(' ') {
            found.push(base.join(target));
        }
    }
    found
}

/// The repository's folders whose files the code and the documentation may name.
const FOLDERS: [&str; 10] = ["docs", "exec", "tests", "option", "src", "benches", "seq2vec", "vocab", "data", ".ci"];

#[test]
fn every_file_the_code_and_the_documentation_name_exists() {
    let mut texts: Vec<PathBuf> = rust_files(&root().join("src"));
    texts.extend(rust_files(&root().join("tests")));
    for dir in ["docs", "exec", "seq2vec", "vocab", "data", "checkpoint", "logs"] {
        let entries = std::fs::read_dir(root().join(dir)).unwrap();
        texts.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    texts.push(root().join("README.md"));
    let mut missing = Vec::new();
    for file in &texts {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        if file.ends_with("tests/architecture.rs") {
            continue; // its own examples
        }
        let markdown = file.extension().is_some_and(|e| e == "md");
        for named in named_paths(&text, file.parent().unwrap(), markdown) {
            if !named.exists() {
                missing.push(format!("{} names {}", file.strip_prefix(root()).unwrap().display(), named.display()));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn named_paths_finds_paths_and_links() {
    let base = root().join("docs");
    let text = "see docs/GPU.md, [x](PARITY.md#ties), `exec/nothing.sh` and <https://a.b/c.md>; data/<n>_precomp/x.md";
    let found: Vec<PathBuf> = named_paths(text, &base, true);
    assert_eq!(found, [root().join("docs/GPU.md"), root().join("exec/nothing.sh"), base.join("PARITY.md")]);
    assert_eq!(named_paths(text, &base, false).len(), 2, "links only in Markdown");
}
