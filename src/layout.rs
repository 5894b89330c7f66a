//! Where the drop folders are, compared as the directories they are, not as they are spelled:
//! `alpha`, `../inbox/alpha` and a link to it are one folder. Every inbox and drop folder is
//! resolved (links, `..`) before the daemon touches any of them, and a layout where two are one
//! folder, or one lies inside another, is refused naming both: the daemon would otherwise claim
//! one tenant's batches for another, or its own work and kept copies.
//! **Invariant:** no two places alias; only a route's inbox may lie in `[paths] inbox`, and then
//! directly in it.

use crate::config::{PathsConfig, Route};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// One folder of the layout: what the config calls it, how it is spelled, what it is, and the
/// (device, inode) of it and of each folder above it, as far as they exist: a bind mount (or two
/// mounts of one share) is one folder under two paths.
#[derive(Debug, Clone)]
pub struct Place {
    pub role: String,
    pub spelled: PathBuf,
    pub real: PathBuf,
    id: Option<(u64, u64)>,
    above: Vec<(u64, u64)>,
}

impl Place {
    fn new(role: String, spelled: &Path) -> Result<Place, LayoutError> {
        let unresolvable = |source| LayoutError::Unresolvable { role: role.clone(), path: spelled.to_path_buf(), source };
        let real = resolve(spelled).map_err(unresolvable)?;
        let id_of = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let above = real.ancestors().skip(1).filter_map(id_of).collect();
        Ok(Place { id: id_of(&real), above, role, spelled: spelled.to_path_buf(), real })
    }

    /// The same folder, however spelled or mounted.
    fn is(&self, other: &Place) -> bool {
        self.real == other.real || self.id.is_some() && self.id == other.id
    }

    /// Inside `other` (not `other` itself).
    fn within(&self, other: &Place) -> bool {
        !self.is(other) && (self.real.starts_with(&other.real) || other.id.is_some_and(|id| self.above.contains(&id)))
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role, self.spelled.display())?;
        if self.real != self.spelled {
            write!(f, " (really {})", self.real.display())?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{a} and {b} are one folder; give each its own folder (a batch dropped into one would be claimed for the other)")]
    Same { a: String, b: String },
    #[error(
        "{inner} lies inside {outer}; put them side by side (the daemon would claim one folder's batches, or its own work, from the other)"
    )]
    Inside { inner: String, outer: String },
    #[error("{inner} lies inside {outer} but not directly in it; put a route's inbox directly in [paths] inbox (e.g. {outer_path}/NAME) or outside it")]
    Deep { inner: String, outer: String, outer_path: String },
    #[error("cannot resolve {role} {}: {source}", path.display())]
    Unresolvable { role: String, path: PathBuf, source: std::io::Error },
}

/// The drop folders of a config, resolved.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `[paths] inbox`.
    pub top: Place,
    /// Each route's inbox, in the order of the routes.
    pub routes: Vec<Place>,
    pub drops: Vec<Place>,
}

impl Layout {
    /// Resolves every folder `paths` and `routes` name (and `database`, SQLite's file, which must
    /// not lie in any of them) and checks that none aliases another.
    pub fn check(paths: &PathsConfig, routes: &[Route], database: Option<&Path>) -> Result<Layout, LayoutError> {
        let place = Place::new;
        let top = place("[paths] inbox".into(), &paths.inbox)?;
        let mut inboxes = Vec::new();
        for route in routes {
            let role = match &route.name {
                Some(name) => format!("routes.{name}.inbox"),
                None => "[paths] inbox".into(),
            };
            inboxes.push(place(role, route.inbox.as_deref().unwrap_or(&paths.inbox))?);
        }
        let mut drops = Vec::new();
        for (name, dir) in [("work", &paths.work), ("done", &paths.done), ("rejected", &paths.rejected), ("failed", &paths.failed)] {
            drops.push(place(format!("[paths] {name}"), dir)?);
        }
        // Routes' inboxes and the drop folders: pairwise apart.
        let apart: Vec<&Place> = inboxes.iter().chain(&drops).collect();
        for (i, a) in apart.iter().enumerate() {
            for b in &apart[i + 1..] {
                compare(a, b)?;
            }
        }
        // The top inbox holds the routes' inboxes (directly), never a drop folder.
        for drop in &drops {
            compare(&top, drop)?;
        }
        let named = routes.iter().any(|r| r.name.is_some());
        for inbox in inboxes.iter().filter(|_| named) {
            if inbox.is(&top) && inboxes.len() == 1 {
                continue;
            }
            if inbox.is(&top) {
                return Err(LayoutError::Inside { inner: others_of(&inboxes, inbox).to_string(), outer: inbox.to_string() });
            }
            if top.within(inbox) {
                return Err(LayoutError::Inside { inner: top.to_string(), outer: inbox.to_string() });
            }
            if inbox.within(&top) && inbox.real.parent() != Some(top.real.as_path()) {
                let outer_path = top.spelled.display().to_string();
                return Err(LayoutError::Deep { inner: inbox.to_string(), outer: top.to_string(), outer_path });
            }
        }
        if let Some(database) = database {
            let db = place("[state] database".into(), database)?;
            for folder in std::iter::once(&top).chain(&inboxes).chain(&drops) {
                if db.within(folder) {
                    return Err(LayoutError::Inside { inner: db.to_string(), outer: folder.to_string() });
                }
            }
        }
        Ok(Layout { top, routes: inboxes, drops })
    }

    /// The names directly in `[paths] inbox` that are routes' inboxes (as spelled, and as they
    /// really are): never a batch of the top inbox.
    pub fn route_names_in_top(&self) -> Vec<String> {
        let mut names = Vec::new();
        for route in &self.routes {
            for (path, top) in [(&route.real, &self.top.real), (&lexical(&route.spelled), &lexical(&self.top.spelled))] {
                if path.parent() == Some(top.as_path()) {
                    names.extend(path.file_name().map(|n| n.to_string_lossy().into_owned()));
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

/// The first of work/, done/, failed/ and rejected/ that holds anything: drop folders with a
/// history, beside which an empty database is a lost one.
pub fn history(paths: &PathsConfig) -> Option<PathBuf> {
    let holds_anything = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    [&paths.work, &paths.done, &paths.failed, &paths.rejected].into_iter().find(|d| holds_anything(d)).cloned()
}

/// With several routes, the top inbox being one route's inbox puts every other route's inbox
/// inside it: name one of them.
fn others_of<'a>(inboxes: &'a [Place], this: &'a Place) -> &'a Place {
    inboxes.iter().find(|p| p.role != this.role).unwrap_or(this)
}

fn compare(a: &Place, b: &Place) -> Result<(), LayoutError> {
    if a.is(b) {
        return Err(LayoutError::Same { a: a.to_string(), b: b.to_string() });
    }
    if a.within(b) {
        return Err(LayoutError::Inside { inner: a.to_string(), outer: b.to_string() });
    }
    if b.within(a) {
        return Err(LayoutError::Inside { inner: b.to_string(), outer: a.to_string() });
    }
    Ok(())
}

/// The real path of `path`: links and `..` resolved as the kernel would, component by component,
/// as far as the path exists; the rest (not created yet) is taken as written.
pub fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    let mut real = PathBuf::from("/");
    let mut exists = true;
    for component in absolute.components() {
        match component {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                real.pop();
                // Back out of a part that does not exist yet: what follows is resolved again,
                // as the kernel will once that part is created.
                exists = exists || std::fs::symlink_metadata(&real).is_ok();
            }
            Component::Normal(name) => {
                real.push(name);
                if exists {
                    match std::fs::symlink_metadata(&real) {
                        Ok(_) => real = real.canonicalize()?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => exists = false,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(real)
}

/// `path` made absolute with `.` and `..` taken away as written (links not followed).
fn lexical(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Loaded};

    fn layout(root: &Path, routes: &str) -> Result<Layout, LayoutError> {
        let r = root.display();
        let text = format!(
            "[sftp]\nhost = \"h\"\nuser = \"u\"\n[paths]\ninbox = \"{r}/inbox\"\nwork = \"{r}/work\"\ndone = \"{r}/done\"\nrejected = \"{r}/rejected\"\nfailed = \"{r}/failed\"\n{routes}"
        );
        let loaded = Loaded { path: "c.toml".into(), config: Config::parse(Path::new("c.toml"), &text).unwrap() };
        Layout::check(loaded.paths().unwrap(), &loaded.routes().unwrap(), Some(&root.join("state.db")))
    }

    fn route(name: &str, inbox: &str) -> String {
        format!("[routes.{name}]\ninbox = \"{inbox}\"\nhost = \"h-{name}\"\nuser = \"u\"\n")
    }

    #[test]
    fn inboxes_spelled_differently_or_linked_are_one_folder_and_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("inbox/alpha")).unwrap();
        std::os::unix::fs::symlink(root.join("inbox/alpha"), root.join("inbox/beta")).unwrap();
        let cases = [
            (format!("{}{}", route("a", "alpha"), route("b", "beta")), "are one folder"),
            (format!("{}{}", route("a", "alpha"), route("b", "../inbox/alpha")), "are one folder"),
            (format!("{}{}", route("a", "alpha"), route("b", &format!("{}/x/../inbox/alpha", root.display()))), "are one folder"),
            (format!("{}{}", route("a", "alpha"), route("b", "alpha/sub")), "lies inside"),
            (format!("{}{}", route("a", "."), route("b", "beta2")), "lies inside"),
            (format!("{}{}", route("a", "alpha"), route("b", "../work")), "are one folder"),
            (format!("{}{}", route("a", "alpha"), route("b", "../done/x")), "lies inside"),
            (format!("{}{}", route("a", "alpha"), route("b", "..")), "lies inside"),
            (format!("{}{}", route("a", "alpha"), route("b", "deep/er")), "not directly in it"),
            (format!("{}{}", route("a", "nx/../beta"), route("b", "alpha")), "are one folder"),
        ];
        for (routes, says) in cases {
            let err = layout(root, &routes).unwrap_err().to_string();
            assert!(err.contains(says), "{routes}: {err}");
            assert!(err.matches("routes.").count() + err.matches("[paths]").count() >= 2, "names both: {err}");
        }
        layout(root, &format!("{}{}", route("a", "alpha"), route("b", "gamma"))).expect("side by side in the inbox");
        let only = layout(root, &route("a", ".")).expect("one route on the top inbox");
        assert!(only.route_names_in_top().is_empty());
        let linked = layout(root, &format!("{}{}", route("a", "gamma"), route("b", "beta"))).unwrap();
        assert_eq!(linked.route_names_in_top(), ["alpha", "beta", "gamma"], "a link's name and its target's are both skipped");
    }

    #[test]
    fn without_routes_the_inbox_may_be_no_drop_folder_nor_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let paths = |inbox: &str, work: &str| PathsConfig {
            inbox: root.join(inbox),
            work: root.join(work),
            done: root.join("done"),
            rejected: root.join("rejected"),
            failed: root.join("failed"),
        };
        let sftp: crate::config::SftpConfig = toml::from_str("host = \"h\"\nuser = \"u\"").unwrap();
        let route = |p: &PathsConfig| Route::new(None, Some(p.inbox.clone()), sftp.clone());
        for (inbox, work, says) in [("work", "work", "one folder"), ("in", "in/.work", "lies inside"), ("done", "work", "one folder")] {
            let p = paths(inbox, work);
            let err = Layout::check(&p, &[route(&p)], None).unwrap_err().to_string();
            assert!(err.contains(says), "{inbox} {work}: {err}");
        }
        let p = paths("in", "work");
        let err = Layout::check(&p, &[route(&p)], Some(&root.join("in/state.db"))).unwrap_err().to_string();
        assert!(err.contains("[state] database") && err.contains("lies inside"), "{err}");
        Layout::check(&p, &[route(&p)], Some(&root.join("state.db"))).unwrap();
    }
}
