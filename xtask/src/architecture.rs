//! `cargo xtask architecture`: the layout rules of ARCHITECTURE.md, checked.
//!
//! - No module circles: at every level of every crate, the modules that
//!   share a parent refer to each other without a cycle. A reference from
//!   anywhere inside sibling `a` to anywhere inside sibling `b` is an edge
//!   `a -> b`. A child using its parent's items (`super::`), and a parent
//!   using its children's, are not edges: that is how Rust modules nest.
//! - Layers: in tracer-user and tracer-ebpf, every top-level module has a
//!   layer (`LAYERS`, the table of ARCHITECTURE.md), and uses only modules
//!   of the layers below it, or of its own where the layer allows it.
//! - No source file over 700 lines.
//! - No function over 150 lines.
//!
//! Test modules (`#[cfg(test)]`) count for a file's length but not for
//! circles: a test may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use syn::visit::Visit;

pub const MAX_FILE_LINES: usize = 700;
pub const MAX_FN_LINES: usize = 150;

/// Crate roots whose module graph is checked, and the directories whose
/// files are held to the size limits.
const CRATE_ROOTS: &[&str] = &[
    "tracer-common/src/lib.rs",
    "tracer-ebpf/src/main.rs",
    "tracer-user/src/main.rs",
    "xtask/src/main.rs",
    "tests/src/lib.rs",
];
const SOURCE_DIRS: &[&str] = &[
    "tracer-common",
    "tracer-ebpf",
    "tracer-user",
    "xtask",
    "tests",
];

/// The layers of a crate, top first: (modules, whether they may use each
/// other). A module uses only the layers below its own.
type Layers = &'static [(&'static [&'static str], bool)];

const LAYERS: &[(&str, Layers)] = &[
    (
        "tracer-user/src/main.rs",
        &[
            (&["cli", "session", "probing"], true),
            (&["render", "export"], true),
            (&["aggregate"], false),
            (&["dns", "tls", "connect", "slow_io", "http"], false),
            (
                &["collect", "decode", "intake", "attribute", "unwind"],
                true,
            ),
            (&["attach"], false),
            (
                &[
                    "python",
                    "unwind_table",
                    "target",
                    "mapped",
                    "elf",
                    "golang",
                    "container",
                    "btf",
                    "kernel",
                    "syscall_names",
                ],
                true,
            ),
            (&["kind", "peer", "units", "error", "status"], false),
        ],
    ),
    (
        "tracer-ebpf/src/main.rs",
        &[
            (&["syscalls", "floor"], false),
            (
                &["connect", "dns", "go_dns", "tls", "go_tls", "idle", "tasks"],
                false,
            ),
            (
                &[
                    "calls",
                    "stacks",
                    "unwind",
                    "scope",
                    "lookup_record",
                    "http",
                ],
                true,
            ),
            (&["maps"], false),
            (&["mem"], false),
        ],
    ),
];

pub fn run(root: &Path) -> anyhow::Result<()> {
    let problems = check(root)?;
    if problems.is_empty() {
        eprintln!(
            "xtask: architecture: no module circles, every module in its layer, no file over \
             {MAX_FILE_LINES} lines, no function over {MAX_FN_LINES} lines"
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("xtask: architecture: {p}");
    }
    bail!(
        "{} architecture rule(s) broken (see ARCHITECTURE.md, \"Rules\")",
        problems.len()
    )
}

/// Every broken rule, one line each.
pub fn check(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for dir in SOURCE_DIRS {
        for file in rust_files(&root.join(dir))? {
            let text = fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            let shown = file
                .strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                problems.push(format!("{shown}: {lines} lines (at most {MAX_FILE_LINES})"));
            }
            let ast = syn::parse_file(&text).with_context(|| format!("parsing {shown}"))?;
            let mut fns = LongFunctions::default();
            fns.visit_file(&ast);
            for (name, line, len) in fns.found {
                problems.push(format!(
                    "{shown}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    for krate in CRATE_ROOTS {
        problems.extend(circles(root, &root.join(krate))?);
    }
    Ok(problems)
}

fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Default)]
struct LongFunctions {
    found: Vec<(String, usize, usize)>,
}

impl LongFunctions {
    fn note(&mut self, name: &syn::Ident, block: &syn::Block) {
        use syn::spanned::Spanned as _;
        let start = name.span().start().line;
        let end = block.span().end().line;
        let len = end.saturating_sub(start) + 1;
        if len > MAX_FN_LINES {
            self.found.push((name.to_string(), start, len));
        }
    }
}

impl<'ast> Visit<'ast> for LongFunctions {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.note(&f.sig.ident, &f.block);
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.note(&f.sig.ident, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.note(&f.sig.ident, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// A module's path from the crate root: `["render", "breakdown"]`.
type ModPath = Vec<String>;

/// Where a reference was written, to show it.
#[derive(Clone)]
struct Site {
    file: String,
    line: usize,
}

/// The circles among sibling modules of one crate.
fn circles(root: &Path, crate_root: &Path) -> anyhow::Result<Vec<String>> {
    let mut modules: BTreeMap<ModPath, PathBuf> = BTreeMap::new();
    collect_modules(crate_root, Vec::new(), &mut modules)?;
    // (parent, from, to) -> first site.
    let mut edges: BTreeMap<(ModPath, String, String), Site> = BTreeMap::new();
    for (module, file) in &modules {
        let text = fs::read_to_string(file)?;
        let ast = syn::parse_file(&text)?;
        let mut refs = References::default();
        refs.visit_file(&ast);
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (path, line) in refs.paths {
            let Some(target) = resolve(module, &path, &modules) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                continue; // an ancestor or a descendant
            }
            edges
                .entry((
                    module[..common].to_vec(),
                    module[common].clone(),
                    target[common].clone(),
                ))
                .or_insert(Site {
                    file: shown.clone(),
                    line,
                });
        }
    }
    let mut by_parent: BTreeMap<ModPath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (parent, from, to) in edges.keys() {
        by_parent
            .entry(parent.clone())
            .or_default()
            .entry(from.clone())
            .or_default()
            .insert(to.clone());
    }
    let krate = crate_root
        .strip_prefix(root)
        .unwrap_or(crate_root)
        .display()
        .to_string();
    let mut problems = Vec::new();
    if let Some((_, layers)) = LAYERS.iter().find(|(k, _)| *k == krate) {
        problems.extend(layer_problems(&krate, layers, &modules, &edges));
    }
    for (parent, graph) in &by_parent {
        for cycle in strongly_connected(graph) {
            let level = if parent.is_empty() {
                krate.clone()
            } else {
                format!("{krate}: {}", parent.join("::"))
            };
            let mut why = Vec::new();
            for from in &cycle {
                for to in graph.get(from).into_iter().flatten() {
                    if cycle.contains(to) {
                        let site = &edges[&(parent.clone(), from.clone(), to.clone())];
                        why.push(format!("{from} -> {to} ({}:{})", site.file, site.line));
                    }
                }
            }
            problems.push(format!(
                "{level}: modules in a circle: {}; {}",
                cycle.join(", "),
                why.join(", ")
            ));
        }
    }
    Ok(problems)
}

/// Top-level modules without a layer, and uses of a layer above (or of a
/// sibling where the layer forbids it).
fn layer_problems(
    krate: &str,
    layers: Layers,
    modules: &BTreeMap<ModPath, PathBuf>,
    edges: &BTreeMap<(ModPath, String, String), Site>,
) -> Vec<String> {
    let layer_of = |m: &str| layers.iter().position(|(ms, _)| ms.contains(&m));
    let mut problems = Vec::new();
    for m in modules.keys().filter(|m| m.len() == 1) {
        if layer_of(&m[0]).is_none() {
            problems.push(format!(
                "{krate}: module {} has no layer (xtask/src/architecture.rs LAYERS, \
                 ARCHITECTURE.md)",
                m[0]
            ));
        }
    }
    for ((parent, from, to), site) in edges {
        if !parent.is_empty() {
            continue;
        }
        let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else {
            continue;
        };
        if a > b || (a == b && !layers[a].1) {
            problems.push(format!(
                "{krate}: {from} uses {to}, a module of {} ({}:{})",
                if a == b {
                    "its own layer, whose modules stay apart"
                } else {
                    "a layer above"
                },
                site.file,
                site.line
            ));
        }
    }
    problems
}

fn collect_modules(
    file: &Path,
    path: ModPath,
    out: &mut BTreeMap<ModPath, PathBuf>,
) -> anyhow::Result<()> {
    let text = fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let ast = syn::parse_file(&text).with_context(|| file.display().to_string())?;
    out.insert(path.clone(), file.to_path_buf());
    // A root or mod.rs holds its children beside it; `a.rs` holds them in `a/`.
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = if path.is_empty() || stem == "mod" {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    for item in &ast.items {
        let syn::Item::Mod(m) = item else { continue };
        if m.content.is_some() || is_test_only(&m.attrs) {
            continue;
        }
        let name = m.ident.to_string();
        let flat = dir.join(format!("{name}.rs"));
        let nested = dir.join(&name).join("mod.rs");
        let child_file = if flat.exists() { flat } else { nested };
        let mut child = path.clone();
        child.push(name);
        collect_modules(&child_file, child, out)?;
    }
    Ok(())
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Every path a file names (uses and expressions), with its line.
#[derive(Default)]
struct References {
    paths: Vec<(Vec<String>, usize)>,
}

impl References {
    fn flatten_use(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.flatten_use(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.push_use(prefix, &n.ident),
            syn::UseTree::Rename(r) => self.push_use(prefix, &r.ident),
            syn::UseTree::Glob(g) => {
                self.paths
                    .push((prefix.clone(), g.star_token.spans[0].start().line));
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.flatten_use(prefix, t);
                }
            }
        }
    }
    fn push_use(&mut self, prefix: &[String], ident: &syn::Ident) {
        let mut path = prefix.to_vec();
        if ident != "self" {
            path.push(ident.to_string());
        }
        self.paths.push((path, ident.span().start().line));
    }
}

impl<'ast> Visit<'ast> for References {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => &[],
        };
        if is_test_only(attrs) {
            return;
        }
        syn::visit::visit_item(self, item);
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.flatten_use(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(first) = p.segments.first() {
            self.paths.push((segments, first.ident.span().start().line));
        }
        syn::visit::visit_path(self, p);
    }
}

/// The module a path written in `module` lands in, if it is one of this
/// crate's (its deepest module prefix).
fn resolve(
    module: &ModPath,
    path: &[String],
    modules: &BTreeMap<ModPath, PathBuf>,
) -> Option<ModPath> {
    let mut at: ModPath = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => module.clone(),
        _ => return None, // an outside crate, a local name, or a child
    };
    let mut rest = path;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "crate" | "self" => rest = &rest[1..],
            "super" => {
                at.pop();
                rest = &rest[1..];
            }
            _ => break,
        }
    }
    for seg in rest {
        let mut next = at.clone();
        next.push(seg.clone());
        if modules.contains_key(&next) {
            at = next;
        } else {
            break;
        }
    }
    Some(at)
}

/// Tarjan's strongly connected components of more than one module.
fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(next) = s.graph.get(v) {
            for w in next {
                if !s.index.contains_key(w.as_str()) {
                    visit(s, w);
                    let lw = s.low[w.as_str()];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w.as_str()) {
                    let iw = s.index[w.as_str()];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_circle_and_only_a_circle() {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut edge = |a: &str, b: &str| {
            g.entry(a.into()).or_default().insert(b.into());
        };
        edge("attach", "python");
        edge("python", "target");
        edge("target", "attach");
        edge("render", "aggregate");
        let found = strongly_connected(&g);
        assert_eq!(found, vec![vec!["attach", "python", "target"]]);
    }

    #[test]
    fn a_use_of_a_layer_above_or_of_a_kind_beside_is_refused() {
        const TWO: Layers = &[(&["top"], false), (&["x", "y"], false)];
        let modules: BTreeMap<ModPath, PathBuf> = ["top", "x", "y", "stray"]
            .iter()
            .map(|m| (vec![m.to_string()], PathBuf::new()))
            .collect();
        let site = Site {
            file: "f.rs".into(),
            line: 1,
        };
        let edges: BTreeMap<(ModPath, String, String), Site> =
            [("top", "x"), ("x", "top"), ("x", "y")]
                .iter()
                .map(|(a, b)| ((vec![], a.to_string(), b.to_string()), site.clone()))
                .collect();
        let found = layer_problems("k", TWO, &modules, &edges);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("stray has no layer"), "{found:?}");
        assert!(found[1].contains("x uses top, a module of a layer above"));
        assert!(found[2].contains("x uses y, a module of its own layer"));
    }

    #[test]
    fn resolves_crate_and_super_paths_to_the_deepest_module() {
        let modules: BTreeMap<ModPath, PathBuf> = [
            vec![],
            vec!["render".to_string()],
            vec!["render".to_string(), "breakdown".to_string()],
            vec!["dns".to_string()],
        ]
        .into_iter()
        .map(|m| (m, PathBuf::new()))
        .collect();
        let here = vec!["render".to_string(), "breakdown".to_string()];
        let p = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
        assert_eq!(
            resolve(&here, &p("crate::dns::Lookup"), &modules),
            Some(vec!["dns".to_string()])
        );
        assert_eq!(
            resolve(&here, &p("super::fmt_ns"), &modules),
            Some(vec!["render".to_string()])
        );
        assert_eq!(
            resolve(&here, &p("super::super::dns"), &modules),
            Some(vec!["dns".to_string()])
        );
        assert_eq!(resolve(&here, &p("std::fmt"), &modules), None);
    }
}
