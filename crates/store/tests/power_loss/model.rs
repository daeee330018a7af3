//! What a power cut can leave of a directory: rebuilt from the state the
//! child started on and the log of its I/O the shim kept (`shim.c`).
//!
//! The model: a file's writes since its last successful `fsync` or
//! `fdatasync` are pending, and a crash keeps any part of them the
//! [`Loss`] allows; a sync that failed loses its file's pending writes for
//! good. A change of names (create, rename, unlink, mkdir, rmdir) is
//! pending until its directory is synced; a crash keeps those made
//! durable by such a sync, and of the others a prefix, in order (a file
//! system's journal commits them in order): none in [`Loss::Drop`], all
//! in [`Loss::KeepAll`], a random one otherwise.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::crash::Rng;

/// What a crash does to each file's pending writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// All kept, as after a process crash.
    KeepAll,
    /// All lost, the changes of names no directory sync made durable too.
    Drop,
    /// Each write (or truncation) kept or lost whole, one in two.
    Subset,
    /// Each write torn at sectors of this many bytes: each sector it
    /// touched kept or lost, one in two.
    Torn(u64),
    /// A drive without power-safe overwrite: each 4 KiB block a write
    /// touched is left old, new or zeroed whole, the bytes around the
    /// write in that block included.
    Garbled,
    /// [`Loss::Garbled`] for the journal, [`Loss::Drop`] for every other
    /// file: the journal's own defences, apart from sled's.
    GarbledJournal,
    /// Each file's writes kept but its last one, and the changes of names
    /// but the last: a drive that wrote back in order and lost power
    /// before the end. One subset of [`Loss::Subset`]'s, chosen every time
    /// (an undo's zeros lost, the frame it wiped out kept; a file's bytes
    /// kept without what ends them).
    AllButLast,
}

impl Loss {
    /// `keep`, `drop`, `subset`, `torn512`, `torn4096`, `garbled`,
    /// `garbled-journal` or `all-but-last`.
    pub fn parse(name: &str) -> Loss {
        match name {
            "keep" => Loss::KeepAll,
            "drop" => Loss::Drop,
            "subset" => Loss::Subset,
            "torn512" => Loss::Torn(512),
            "torn4096" => Loss::Torn(4096),
            "garbled" => Loss::Garbled,
            "garbled-journal" => Loss::GarbledJournal,
            "all-but-last" => Loss::AllButLast,
            other => panic!("power loss: no loss mode `{other}`"),
        }
    }
}

#[derive(Clone)]
enum Node {
    File(u64),
    Dir,
}

enum Op {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

enum Name {
    Create(PathBuf, u64),
    Mkdir(PathBuf),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
    Rmdir(PathBuf),
}

impl Name {
    /// The directory whose sync makes this change durable.
    fn dir(&self) -> Option<&Path> {
        match self {
            Name::Create(path, _)
            | Name::Mkdir(path)
            | Name::Rename(_, path)
            | Name::Unlink(path)
            | Name::Rmdir(path) => path.parent(),
        }
    }
}

#[derive(Default)]
struct File {
    durable: Vec<u8>,
    pending: Vec<Op>,
}

/// A directory as a power cut could leave it.
pub struct Model {
    root: PathBuf,
    /// Files by an id of their own: inode numbers are reused.
    files: HashMap<u64, File>,
    /// The id of each inode number, as of now.
    inodes: HashMap<u64, u64>,
    next_id: u64,
    names: BTreeMap<PathBuf, Node>,
    /// Changes of names, the directory whose sync makes each durable (by
    /// its name now: a directory renamed since is the same directory), and
    /// whether one did.
    changes: Vec<(Name, PathBuf, bool)>,
    /// Syncs seen, and syncs that failed.
    pub syncs: usize,
    pub failed_syncs: usize,
}

impl Model {
    /// The directory `root` as it is now, all of it durable.
    pub fn snapshot(root: &Path) -> Model {
        let mut model = Model {
            root: root.to_owned(),
            files: HashMap::new(),
            inodes: HashMap::new(),
            next_id: 0,
            names: BTreeMap::new(),
            changes: Vec::new(),
            syncs: 0,
            failed_syncs: 0,
        };
        model.names.insert(root.to_owned(), Node::Dir);
        model.walk(root);
        model
    }

    fn walk(&mut self, dir: &Path) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                self.names.insert(path.clone(), Node::Dir);
                self.walk(&path);
            } else {
                let id = self.new_file(meta.ino());
                self.file(meta.ino()).durable = fs::read(&path).unwrap();
                self.names.insert(path, Node::File(id));
            }
        }
    }

    fn new_file(&mut self, ino: u64) -> u64 {
        self.next_id += 1;
        self.inodes.insert(ino, self.next_id);
        self.files.insert(self.next_id, File::default());
        self.next_id
    }

    fn file(&mut self, ino: u64) -> &mut File {
        let id = match self.inodes.get(&ino) {
            Some(id) => *id,
            None => self.new_file(ino),
        };
        self.files.entry(id).or_default()
    }

    /// Takes in the shim's log; a record cut short by the kill ends it.
    pub fn replay(&mut self, log: &[u8]) {
        let mut rest = log;
        while let Some((record, after)) = parse(rest) {
            rest = after;
            let Record {
                kind,
                ino,
                number,
                path,
                path2,
                data,
            } = record;
            match kind {
                b'W' => self
                    .file(ino)
                    .pending
                    .push(Op::Write(number, data.to_vec())),
                b'T' => self.file(ino).pending.push(Op::Truncate(number)),
                b'S' => {
                    self.syncs += 1;
                    let file = self.file(ino);
                    for op in std::mem::take(&mut file.pending) {
                        apply(&mut file.durable, &op);
                    }
                }
                b'F' => {
                    self.syncs += 1;
                    self.failed_syncs += 1;
                    self.file(ino).pending.clear();
                }
                b'C' => {
                    let id = self.new_file(ino);
                    self.change(Name::Create(path, id));
                }
                b'M' => self.change(Name::Mkdir(path)),
                b'N' => {
                    for (_, dir, _) in &mut self.changes {
                        if let Ok(rest) = dir.strip_prefix(&path) {
                            *dir = path2.join(rest);
                        }
                    }
                    self.change(Name::Rename(path, path2));
                }
                b'U' => self.change(Name::Unlink(path)),
                b'R' => self.change(Name::Rmdir(path)),
                b'D' => {
                    for (_, dir, durable) in &mut self.changes {
                        if *dir == path {
                            *durable = true;
                        }
                    }
                }
                other => panic!("the shim's log holds a record of kind {other}"),
            }
        }
    }

    fn change(&mut self, name: Name) {
        let dir = name.dir().map(Path::to_owned).unwrap_or_default();
        self.changes.push((name, dir, false));
    }

    /// Writes into the (emptied) root what the crash left, and takes that
    /// as the new durable state.
    pub fn crash(&mut self, loss: Loss, rng: &mut Rng) {
        let pending = self
            .changes
            .iter()
            .filter(|(_, _, durable)| !durable)
            .count();
        let mut kept = match loss {
            Loss::KeepAll => pending,
            Loss::Drop => 0,
            Loss::AllButLast => pending.saturating_sub(1),
            _ => (rng.next() % (pending as u64 + 1)) as usize,
        };
        let mut names = self.names.clone();
        for (change, _, durable) in std::mem::take(&mut self.changes) {
            if !durable {
                if kept == 0 {
                    continue;
                }
                kept -= 1;
            }
            rename_in(&mut names, change);
        }
        fs::remove_dir_all(&self.root).unwrap();
        for (path, node) in &names {
            match node {
                Node::Dir => fs::create_dir_all(path).unwrap(),
                Node::File(id) => {
                    let file = self.files.get_mut(id).unwrap();
                    let mut bytes = std::mem::take(&mut file.durable);
                    let loss = match loss {
                        Loss::GarbledJournal if path.ends_with("journal") => Loss::Garbled,
                        Loss::GarbledJournal => Loss::Drop,
                        other => other,
                    };
                    let mut pending = std::mem::take(&mut file.pending);
                    if loss == Loss::AllButLast {
                        pending.pop();
                    }
                    for op in pending {
                        lose(&mut bytes, op, loss, rng);
                    }
                    fs::write(path, &bytes).unwrap();
                }
            }
        }
        *self = Model::snapshot(&self.root);
    }
}

fn rename_in(names: &mut BTreeMap<PathBuf, Node>, change: Name) {
    let exists_parent = |names: &BTreeMap<PathBuf, Node>, path: &Path| {
        path.parent()
            .is_some_and(|parent| matches!(names.get(parent), Some(Node::Dir)))
    };
    match change {
        Name::Create(path, id) => {
            if exists_parent(names, &path) {
                names.insert(path, Node::File(id));
            }
        }
        Name::Mkdir(path) => {
            if exists_parent(names, &path) {
                names.insert(path, Node::Dir);
            }
        }
        Name::Unlink(path) | Name::Rmdir(path) => remove_tree(names, &path),
        Name::Rename(from, to) => {
            if !names.contains_key(&from) || !exists_parent(names, &to) {
                return;
            }
            remove_tree(names, &to);
            let moved: Vec<PathBuf> = names
                .keys()
                .filter(|path| path.starts_with(&from))
                .cloned()
                .collect();
            for path in moved {
                let node = names.remove(&path).unwrap();
                let rest = path.strip_prefix(&from).unwrap();
                names.insert(
                    if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    },
                    node,
                );
            }
        }
    }
}

fn remove_tree(names: &mut BTreeMap<PathBuf, Node>, root: &Path) {
    names.retain(|path, _| !path.starts_with(root));
}

fn apply(bytes: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(at, data) => write_at(bytes, *at, data),
        Op::Truncate(len) => bytes.resize(*len as usize, 0),
    }
}

fn write_at(bytes: &mut Vec<u8>, at: u64, data: &[u8]) {
    let at = at as usize;
    if bytes.len() < at + data.len() {
        bytes.resize(at + data.len(), 0);
    }
    bytes[at..at + data.len()].copy_from_slice(data);
}

/// Applies what `loss` keeps of one pending operation.
fn lose(bytes: &mut Vec<u8>, op: Op, loss: Loss, rng: &mut Rng) {
    match (loss, op) {
        (Loss::KeepAll | Loss::AllButLast, op) => apply(bytes, &op),
        (Loss::Drop, _) => {}
        (Loss::Subset, op) => {
            if rng.next().is_multiple_of(2) {
                apply(bytes, &op);
            }
        }
        (Loss::GarbledJournal, _) => unreachable!("decided per file in `crash`"),
        (Loss::Torn(_) | Loss::Garbled, Op::Truncate(len)) => {
            if rng.next().is_multiple_of(2) {
                bytes.resize(len as usize, 0);
            }
        }
        (Loss::Torn(sector), Op::Write(at, data)) => {
            for (start, piece) in pieces(at, &data, sector) {
                if rng.next().is_multiple_of(2) {
                    write_at(bytes, start, piece);
                }
            }
        }
        (Loss::Garbled, Op::Write(at, data)) => {
            for (start, piece) in pieces(at, &data, 4096) {
                match rng.next() % 3 {
                    0 => write_at(bytes, start, piece),
                    1 => {}
                    _ => {
                        let block = start / 4096 * 4096;
                        write_at(bytes, block, &[0; 4096]);
                    }
                }
            }
        }
    }
}

/// `data`, written at `at`, cut at multiples of `sector`.
fn pieces(at: u64, data: &[u8], sector: u64) -> Vec<(u64, &[u8])> {
    let mut pieces = Vec::new();
    let mut start = at;
    let mut rest = data;
    while !rest.is_empty() {
        let len = ((start / sector + 1) * sector - start).min(rest.len() as u64) as usize;
        let (piece, after) = rest.split_at(len);
        pieces.push((start, piece));
        start += len as u64;
        rest = after;
    }
    pieces
}

struct Record<'a> {
    kind: u8,
    ino: u64,
    number: u64,
    path: PathBuf,
    path2: PathBuf,
    data: &'a [u8],
}

fn parse(bytes: &[u8]) -> Option<(Record<'_>, &[u8])> {
    use std::os::unix::ffi::OsStrExt;
    let (&kind, rest) = bytes.split_first()?;
    let (ino, rest) = rest.split_first_chunk::<8>()?;
    let (number, rest) = rest.split_first_chunk::<8>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (path, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (path2, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let (data, rest) = rest.split_at_checked(u64::from_le_bytes(*len) as usize)?;
    let to_path = |bytes: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
    Some((
        Record {
            kind,
            ino: u64::from_le_bytes(*ino),
            number: u64::from_le_bytes(*number),
            path: to_path(path),
            path2: to_path(path2),
            data,
        },
        rest,
    ))
}
