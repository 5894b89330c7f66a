//! ARCHITECTURE.md's invariants about the code's shape, checked on the source itself: the
//! top-level modules form no cycle, only `store/` speaks SQL, only `ship/` knows ssh2, and
//! nothing is spawned outside the shutdown tree (`tasks.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every source file under src/, by its top-level module, without its tests.
fn sources() -> BTreeMap<String, Vec<(String, String)>> {
    let mut by_module: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap().to_owned();
            by_module.entry(module).or_default().push((rel, code));
        }
    }
    by_module
}

#[test]
fn the_modules_depend_on_each_other_without_a_cycle() {
    let sources = sources();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &sources {
        for (_, code) in files {
            for used in code.split("crate::").skip(1) {
                let name: String = used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name != *module && sources.contains_key(&name) {
                    uses.entry(module.clone()).or_default().insert(name);
                }
            }
        }
    }
    // Depth-first search for a path back to where it started.
    fn reaches(from: &str, to: &str, uses: &BTreeMap<String, BTreeSet<String>>, seen: &mut BTreeSet<String>) -> bool {
        uses.get(from).into_iter().flatten().any(|next| next == to || (seen.insert(next.clone()) && reaches(next, to, uses, seen)))
    }
    for module in uses.keys().filter(|m| !["main", "lib"].contains(&m.as_str())) {
        assert!(!reaches(module, module, &uses, &mut BTreeSet::new()), "{module} depends on itself through others: {uses:#?}");
    }
}

#[test]
fn only_the_store_speaks_sql_only_ship_knows_ssh2_and_only_tasks_spawns() {
    for (module, files) in sources() {
        for (file, code) in files {
            if module != "store" {
                assert!(!code.contains("sqlx::query"), "{file} runs SQL; only store/ does");
            }
            if module != "ship" {
                assert!(!code.contains("ssh2::"), "{file} uses ssh2; only ship/ does");
            }
            if file != "tasks.rs" {
                assert!(!code.contains("tokio::spawn") && !code.contains("runtime.spawn"), "{file} spawns outside the shutdown tree");
            }
        }
    }
}
