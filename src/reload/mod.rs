//! Hot reload (SPEC §5): the file and every file it names are watched (editors' atomic rename,
//! in-place writes, delete-and-recreate, Kubernetes ConfigMap `..data` symlink swaps); SIGHUP
//! takes the same path. Watching only signals; loading happens in one place, the
//! [`reloader`], which waits for a file being written to settle, validates fully and swaps the
//! snapshot atomically.

pub(crate) mod reloader;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::watch;

/// Events closer together than this are one change (editors write a file in several steps:
/// a backup rename, a create, writes, a close, all within a few milliseconds). Every reload
/// waits this long, so it is short: a file still open for writing is waited for apart from
/// this, so is a resource file renamed away and not yet replaced, and a trigger that changed
/// nothing is not a reload, so a window too short costs at most a load.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// What one reload attempt did; published after every attempt so tests and operators can wait
/// for it instead of sleeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The configuration generation being served: 1 at start, +1 per applied reload.
    pub generation: u64,
    /// Reloads applied since start.
    pub applied: u64,
    /// Reloads rejected since start (the previous configuration kept serving).
    pub rejected: u64,
    /// Every problem of the last rejected file, when the last attempt was rejected.
    pub last_error: Option<String>,
    /// SHA-256 (hex) of the file and every file it names, as last applied.
    pub hash: String,
}

/// What the file watch last saw, published on a `watch` channel so that no change is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// Bumped on every change of a watched file.
    pub seq: u64,
    /// A watched file is being written in place: modified or created, and not closed since.
    /// Reading it now could read half of it.
    pub writing: bool,
}

/// Watches the folders of a set of files and publishes a [`Change`] when one of the files
/// changes. Folders, not files, are watched: an atomic rename or a symlink swap replaces the
/// file, and a watch on the old inode would never fire again. Other files in those folders
/// (an editor's swap file, a grant store kept next to the resource file) are ignored.
pub struct FileWatch {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    folders: BTreeSet<PathBuf>,
    /// The names of the watched files, read by the event callback.
    names: Arc<RwLock<BTreeSet<OsString>>>,
}

impl FileWatch {
    /// Starts watching the folders of `files`.
    pub fn new(files: &[PathBuf], changes: watch::Sender<Change>) -> notify::Result<Self> {
        let names = Arc::new(RwLock::new(BTreeSet::new()));
        let watched = names.clone();
        // Watched files written in place and not closed yet.
        let mut open = BTreeSet::<PathBuf>::new();
        let debouncer =
            new_debouncer(
                DEBOUNCE,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) if !events.is_empty() => {
                        let names = watched.read().unwrap_or_else(PoisonError::into_inner);
                        let mut relevant = false;
                        for e in &events {
                            let ours: Vec<&PathBuf> =
                                e.paths.iter().filter(|p| concerns(&names, p)).collect();
                            relevant |= e.need_rescan()
                                || (may_change(&e.kind)
                                    && (e.paths.is_empty() || !ours.is_empty()));
                            for path in ours {
                                track_writers(&mut open, &names, path, &e.kind);
                            }
                        }
                        if relevant {
                            let writing = !open.is_empty();
                            changes.send_modify(|c| {
                                c.seq += 1;
                                c.writing = writing;
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "file watch error");
                        }
                        open.clear();
                        changes.send_modify(|c| {
                            c.seq += 1;
                            c.writing = false;
                        });
                    }
                },
            )?;
        let mut watch = FileWatch {
            debouncer,
            folders: BTreeSet::new(),
            names,
        };
        watch.follow(files);
        Ok(watch)
    }

    /// Re-arms the watch for `files` (after a reload the set of named files may differ).
    pub fn follow(&mut self, files: &[PathBuf]) {
        *self.names.write().unwrap_or_else(PoisonError::into_inner) = files
            .iter()
            .filter_map(|f| f.file_name().map(OsStr::to_owned))
            .collect();
        let wanted: BTreeSet<PathBuf> = files.iter().map(|f| folder_of(f)).collect();
        for gone in self.folders.difference(&wanted) {
            let _ = self.debouncer.unwatch(gone);
        }
        for folder in wanted.difference(&self.folders) {
            if let Err(e) = self.debouncer.watch(folder, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %folder.display(), error = %e, "cannot watch; changes there need SIGHUP");
            }
        }
        self.folders = wanted;
    }
}

/// Whether an event at `path` may change a watched file: one of their names, or a name that
/// starts with `..`, as the entries Kubernetes swaps to update a ConfigMap volume do
/// (`..data`, `..2026_11_23_…`).
fn concerns(names: &BTreeSet<OsString>, path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."))
}

/// Keeps `open`, the watched files written in place and not closed since, up to date with an
/// event on `path`. Entries Kubernetes swaps (`..data`) are replaced atomically and never
/// tracked.
fn track_writers(
    open: &mut BTreeSet<PathBuf>,
    names: &BTreeSet<OsString>,
    path: &Path,
    kind: &EventKind,
) {
    if !path.file_name().is_some_and(|n| names.contains(n)) {
        return;
    }
    match kind {
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other)
        | EventKind::Create(CreateKind::File | CreateKind::Any) => {
            open.insert(path.to_owned());
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Remove(_)
        | EventKind::Modify(ModifyKind::Name(_)) => {
            open.remove(path);
        }
        _ => {}
    }
}

/// Whether an event of this kind may change a file. Opening, reading and closing a file
/// unwritten change nothing, and the reload's own reads raise exactly those: counting them
/// would make every reload trigger the next.
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(access) => matches!(access, AccessKind::Close(AccessMode::Write)),
        _ => true,
    }
}

/// The folder a file lives in (`.` for a bare name).
fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// SHA-256 (hex) over the hash of the resource file's bytes as parsed (`text_hash`) and the
/// current bytes of every file in `named`, in order (a missing file hashes as empty). Two equal
/// hashes mean nothing relevant changed.
///
/// The resource file is hashed from the very bytes that were parsed, never re-read: a change
/// landing between parsing and hashing would otherwise be recorded as seen and never applied.
/// Named files (keys, certificates) are read here, after the load; a change to one of them
/// in that window still raises its own file event.
pub fn content_hash(text_hash: &[u8; 32], named: &[PathBuf]) -> String {
    combined_hash(text_hash, &files_hash(named))
}

/// SHA-256 of the current bytes of every file in `named`, in order (a missing file hashes as
/// empty).
fn files_hash(named: &[PathBuf]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for file in named {
        let bytes = std::fs::read(file).unwrap_or_default();
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(&bytes);
    }
    let mut hash = [0; 32];
    hash.copy_from_slice(ctx.finish().as_ref());
    hash
}

/// [`content_hash`] of a resource file's hash and its named files' [`files_hash`].
fn combined_hash(text_hash: &[u8; 32], files_hash: &[u8; 32]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(text_hash);
    ctx.update(files_hash);
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_may_change_a_watched_file_count() {
        let names: BTreeSet<OsString> = ["isogate.toml", "es256.pem"]
            .into_iter()
            .map(OsString::from)
            .collect();
        for (path, counts) in [
            ("/cfg/isogate.toml", true),
            ("/cfg/keys/es256.pem", true),
            ("/cfg/..data", true),
            ("/cfg/..2026_11_23_07_00_00.123", true),
            ("/cfg/.isogate.toml.swp", false),
            ("/cfg/isogate.toml.tmp", false),
            ("/cfg/grants.redb", false),
            ("/cfg", false),
        ] {
            assert_eq!(concerns(&names, Path::new(path)), counts, "{path}");
        }
    }

    #[test]
    fn a_watched_file_modified_or_created_is_open_until_closed_removed_or_renamed() {
        use notify::event::{DataChange, RemoveKind, RenameMode};
        let names: BTreeSet<OsString> = [OsString::from("isogate.toml")].into();
        let file = Path::new("/cfg/isogate.toml");
        let mut open = BTreeSet::new();
        let modify = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        track_writers(&mut open, &names, file, &modify);
        assert!(open.contains(file), "written, not closed");
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        track_writers(&mut open, &names, file, &close);
        assert!(open.is_empty());
        for (start, end) in [
            (EventKind::Create(CreateKind::File), close),
            (modify, EventKind::Remove(RemoveKind::File)),
            (modify, EventKind::Modify(ModifyKind::Name(RenameMode::To))),
        ] {
            track_writers(&mut open, &names, file, &start);
            assert!(!open.is_empty());
            track_writers(&mut open, &names, file, &end);
            assert!(open.is_empty(), "{end:?}");
        }
        // Kubernetes' entries are swapped atomically; other files are not ours.
        for other in ["/cfg/..data", "/cfg/isogate.toml.tmp"] {
            track_writers(&mut open, &names, Path::new(other), &modify);
        }
        assert!(open.is_empty());
    }

    /// Reading the watched files (as every reload does) is not a change; writing one is.
    #[tokio::test]
    async fn reading_a_watched_file_is_not_a_change_writing_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("isogate.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        let (tx, mut changes) = watch::channel(Change::default());
        let _watch = FileWatch::new(std::slice::from_ref(&file), tx).unwrap();
        for _ in 0..5 {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "a = 1\n");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let quiet = tokio::time::timeout(DEBOUNCE * 4, changes.changed()).await;
        assert!(quiet.is_err(), "reads were reported as a change");
        std::fs::write(&file, "a = 2\n").unwrap();
        let changed = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
        assert!(matches!(changed, Ok(Ok(()))), "a write was not reported");
        assert!(!changes.borrow().writing, "closed after writing");
    }
}
