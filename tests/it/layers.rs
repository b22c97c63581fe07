//! The library's files import downhill only: no file reaches, through the
//! paths it names (`crate::…`, `super::…`, a child module's name), back to
//! itself. Module declarations (`mod x;`) are not imports. The binary's
//! files (`src/main.rs`, `src/cli/`) see the library from outside and are
//! left out, as are test modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["api", "produce"]`) of every library file.
fn library_files(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "main" || parts[0] == "cli" {
            continue;
        }
        if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
            parts.pop();
        }
        out.insert(parts, f);
    }
    out
}

/// The name of the inline module a line opens (`mod x {`), if any.
fn inline_module(line: &str) -> Option<&str> {
    let t = line.trim();
    let rest = t.strip_suffix('{')?.trim_end();
    let at = rest.find("mod ")?;
    let (vis, name) = (&rest[..at], rest[at + 4..].trim());
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (plain && (vis.is_empty() || vis.starts_with("pub"))).then_some(name)
}

/// The file's code without comments and inline test modules, as pieces:
/// the file's own code, and the code of each inline module with the path
/// of that module inside the file (`super::` inside it is the file).
fn code_of(text: &str) -> Vec<(Vec<String>, String)> {
    let mut pieces = vec![(Vec::new(), String::new())];
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut test_depth: Option<i32> = None;
    let mut after_cfg_test = false;
    let mut depth = 0i32;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let opens = inline_module(line);
        let before = depth;
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        if let Some(d) = test_depth {
            if depth <= d {
                test_depth = None;
            }
            continue;
        }
        if let Some(name) = opens {
            if after_cfg_test {
                test_depth = Some(before);
                after_cfg_test = false;
                continue;
            }
            inline.push((name.to_string(), before));
            let path: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
            pieces.push((path, String::new()));
            continue;
        }
        after_cfg_test = t.starts_with("#[cfg(test)]") || (after_cfg_test && t.starts_with("#["));
        let path: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
        if let Some(p) = pieces.iter_mut().rev().find(|(p2, _)| *p2 == path) {
            p.1.push_str(line);
            p.1.push('\n');
        }
        while inline.last().is_some_and(|(_, d)| depth <= *d) {
            inline.pop();
        }
    }
    pieces
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .flat_map(|s| expand(&format!("{prefix}{s}")))
        .collect()
}

/// Every path the code names from `crate`, `super` or a child module, as
/// module-path segments.
fn named_paths(code: &str, here: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        // A path: identifiers joined by `::`, possibly ending in a group.
        let start = i;
        let mut end = i;
        let mut depth = 0;
        while end < bytes.len() {
            let b = bytes[end];
            if is_ident(b)
                || b == b':'
                || (depth > 0 && (b == b',' || b.is_ascii_whitespace() || b == b'*'))
            {
                end += 1;
            } else if b == b'{' && end > 0 && bytes[end - 1] == b':' {
                depth += 1;
                end += 1;
            } else if b == b'}' && depth > 0 {
                depth -= 1;
                end += 1;
            } else {
                break;
            }
        }
        let text = &code[start..end];
        i = end.max(start + 1);
        let first = text.split("::").next().unwrap_or("");
        if !text.contains("::") {
            continue;
        }
        for p in expand(text) {
            let segs: Vec<String> = p.split("::").map(|s| s.trim().to_string()).collect();
            let resolved = match first {
                "crate" => segs[1..].to_vec(),
                "super" => {
                    let mut base = here.to_vec();
                    let mut rest = &segs[..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().cloned());
                    base
                }
                f if children.contains(f) => {
                    let mut base = here.to_vec();
                    base.extend(segs.iter().cloned());
                    base
                }
                _ => continue,
            };
            out.push(resolved);
        }
    }
    out
}

#[test]
fn the_library_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = library_files(&src);
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let children: BTreeSet<String> = files
            .keys()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
            .map(|k| k[module.len()].clone())
            .collect();
        let targets = edges.entry(module).or_default();
        let named = code_of(&text).into_iter().flat_map(|(inner, code)| {
            // Inside an inline module, `super::` is the file itself.
            let mut here = module.clone();
            here.extend(inner.iter().cloned());
            let kids = if inner.is_empty() {
                children.clone()
            } else {
                BTreeSet::new()
            };
            named_paths(&code, &here, &kids)
        });
        for p in named {
            // The longest prefix that is a file.
            let target = (1..=p.len())
                .rev()
                .map(|n| &p[..n])
                .find_map(|pre| files.get_key_value(pre).map(|(k, _)| k));
            if let Some(t) = target {
                if t != module {
                    targets.insert(t);
                }
            }
        }
    }
    // Tarjan's strongly connected components.
    struct State<'a> {
        edges: &'a BTreeMap<&'a Vec<String>, BTreeSet<&'a Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        cycles: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for &w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.cycles.push(comp);
            }
        }
    }
    let mut s = State {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    let name = |m: &str| {
        if m.is_empty() {
            "lib".to_string()
        } else {
            m.to_string()
        }
    };
    let cycles: Vec<String> = s
        .cycles
        .iter()
        .map(|c| c.iter().map(|m| name(m)).collect::<Vec<_>>().join(", "))
        .collect();
    assert!(
        cycles.is_empty(),
        "files that import each other, directly or around a circle:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    // super:: from a child to its parent's item, and the parent naming the
    // child: a circle.
    let here = vec!["api".to_string()];
    let kids: BTreeSet<String> = ["produce".to_string()].into();
    let p = named_paths("let r = produce::ROWS;", &here, &kids);
    assert_eq!(
        p,
        vec![vec!["api".to_string(), "produce".into(), "ROWS".into()]]
    );
    let child = vec!["api".to_string(), "produce".to_string()];
    let p = named_paths(
        "use super::{errors, route::{sb, tn}};",
        &child,
        &BTreeSet::new(),
    );
    assert_eq!(
        p,
        vec![
            vec!["api".to_string(), "errors".into()],
            vec!["api".to_string(), "route".into(), "sb".into()],
            vec!["api".to_string(), "route".into(), "tn".into()],
        ]
    );
    assert_eq!(
        named_paths(
            "x = crate::log::batch::HEADER_LEN;",
            &child,
            &BTreeSet::new()
        ),
        vec![vec!["log".to_string(), "batch".into(), "HEADER_LEN".into()]]
    );
}
