//! `serve --import-index`: the images of an index (`amfmn index`) added to the service for one
//! owner. Each file is copied into the data folder as an upload is (synced, content-addressed,
//! checked from its header, recorded in a transaction) and keeps the index's codes when the
//! index was made with the service's checkpoint and the file has not changed since; otherwise
//! it waits to be encoded. The index names files relative to its folder: a name that leaves the
//! folder, a file that cannot be read or is not an image within the limits is skipped, with
//! the reason. Importing twice adds nothing: an owner's identical bytes are one image.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{anyhow, bail, Context, Result};
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};
use tch::Tensor;

use super::folder::{check_image, DataFolder, HEAD};
use super::images::{self, NewImage};
use super::store::Database;
use crate::data::image_file::confined_path;
use crate::search::index::{Index, IndexedFile};

/// Files recorded per transaction.
const BATCH: usize = 64;

/// What to import: the index file, whose images they become, and their visibility.
#[derive(Debug, Clone)]
pub struct Import {
    pub index: PathBuf,
    pub owner: String,
    pub public: bool,
}

/// What the service's model needs of imported codes.
#[derive(Debug, Clone)]
pub struct Target {
    /// SHA-256 of the service's weights.
    pub checkpoint_sha256: String,
    pub embed_dim: i64,
    pub image_size: u32,
    /// Soft attention: codes come with gates.
    pub soft: bool,
    pub max_upload: u64,
    pub max_pixels: u64,
}

/// What an import did.
#[derive(Debug, Default, PartialEq)]
pub struct Imported {
    /// New images searchable at once, with the index's codes.
    pub with_codes: usize,
    /// New images waiting to be encoded (another checkpoint, or changed since indexing).
    pub to_encode: usize,
    /// Images the owner already had.
    pub present: usize,
    /// Files left out: (name in the index, why).
    pub skipped: Vec<(String, String)>,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "imported {} image(s) with their codes and {} to encode; {} already there, {} skipped",
            self.with_codes,
            self.to_encode,
            self.present,
            self.skipped.len()
        )
    }
}

/// A file copied into `tmp/`, hashed and checked, ready to become a blob.
struct Copied {
    temporary: PathBuf,
    image: NewImage,
    /// Unchanged since it was indexed.
    unchanged: bool,
}

/// Imports `import` into the data folder for a model described by `target`.
pub fn import_index(db: &Database, folder: &DataFolder, import: &Import, target: &Target) -> Result<Imported> {
    let index = Index::load(&import.index)?;
    let owner = owner_id(db, &import.owner)?;
    let codes = usable_codes(&index, target);
    let bar = crate::report::progress(index.info.files.len() as u64, "import");
    let mut imported = Imported::default();
    let rows: Vec<(usize, &IndexedFile)> = index.info.files.iter().enumerate().collect();
    for batch in rows.chunks(BATCH) {
        let mut copied = Vec::new();
        for &(row, file) in batch {
            match copy(folder, &index.info.root, file, owner, import.public, target) {
                Ok(c) => copied.push((row, c)),
                Err(e) => imported.skipped.push((file.path.clone(), format!("{e:#}"))),
            }
            bar.inc(1);
        }
        record(db, folder, copied, codes.as_ref(), &target.checkpoint_sha256, &mut imported)?;
    }
    bar.finish_and_clear();
    Ok(imported)
}

/// The id of the user `name`; refused when there is none.
fn owner_id(db: &Database, name: &str) -> Result<i64> {
    let id =
        db.read(|r| Ok(r.query_row("SELECT id FROM users WHERE name = ?1", [name], |row| row.get(0)).optional()?))?;
    id.ok_or_else(|| {
        anyhow!("--owner {name}: no such user; add one first: amfmn serve token add --data DIR --user {name}")
    })
}

/// The index's codes (`fv`, gates) when they are codes of the service's model.
fn usable_codes<'a>(index: &'a Index, target: &Target) -> Option<(&'a Tensor, Option<&'a Tensor>)> {
    let info = &index.info;
    let same = info.checkpoint_sha256 == target.checkpoint_sha256
        && info.embed_dim == target.embed_dim
        && info.image_size == target.image_size
        && index.gate.is_some() == target.soft;
    same.then_some((&index.fv, index.gate.as_ref()))
}

/// Copies one indexed file into `tmp/` (at most `max_upload` bytes), hashing it, and checks it
/// as an upload is checked; the temporary is removed when the file is refused.
fn copy(
    folder: &DataFolder,
    root: &Path,
    file: &IndexedFile,
    owner: i64,
    public: bool,
    target: &Target,
) -> Result<Copied> {
    let path = confined_path(root, &file.path).map_err(|e| anyhow!(e))?;
    let source = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = source.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > target.max_upload {
        bail!("{} bytes: larger than --max-upload {}", meta.len(), target.max_upload);
    }
    let (mut out, temporary) = folder.temporary()?;
    let copied = stream(source.take(target.max_upload + 1), &mut out).and_then(|(sha, bytes, head)| {
        out.sync_all()?;
        if bytes > target.max_upload {
            bail!("grew past --max-upload while being read");
        }
        let (format, width, height) = check_image(&temporary, &head, target.max_pixels).map_err(|e| anyhow!("{e}"))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos());
        let unchanged = bytes == file.size && modified == Some(file.modified_ns as u128);
        let name = images::display_name(Some(file.path.clone()), &sha);
        let image = NewImage { sha256: sha, owner, public, name, format: format.name(), width, height, bytes };
        Ok(Copied { temporary: temporary.clone(), image, unchanged })
    });
    if copied.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    copied
}

/// Copies `source` to `out`: the SHA-256 (hex), the number of bytes and the first [`HEAD`].
fn stream(mut source: impl Read, out: &mut std::fs::File) -> Result<(String, u64, Vec<u8>)> {
    let (mut hasher, mut bytes, mut head) = (Sha256::new(), 0u64, Vec::with_capacity(HEAD));
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = source.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        head.extend(chunk.iter().take(HEAD - head.len()));
        hasher.update(chunk);
        out.write_all(chunk)?;
        bytes += n as u64;
    }
    Ok((crate::fsutil::hex(&hasher.finalize()), bytes, head))
}

/// Moves a batch of copies into `blobs/` and records them in one transaction, with the index's
/// codes where they hold.
fn record(
    db: &Database,
    folder: &DataFolder,
    copied: Vec<(usize, Copied)>,
    codes: Option<&(&Tensor, Option<&Tensor>)>,
    checkpoint_sha256: &str,
    imported: &mut Imported,
) -> Result<()> {
    let mut writer = db.writer();
    for (_, c) in &copied {
        folder.keep_blob(&c.temporary, &c.image.sha256)?;
    }
    let tx = writer.transaction()?;
    for (row, c) in &copied {
        let (id, created) = images::insert(&tx, &c.image)?;
        match (created, codes.filter(|_| c.unchanged)) {
            (false, _) => imported.present += 1,
            (true, Some((fv, gate))) => {
                let values = |t: &Tensor| Vec::<f32>::try_from(t.get(*row as i64));
                let gate = gate.map(values).transpose()?;
                images::mark_ready(&tx, id, &values(fv)?, gate.as_deref(), checkpoint_sha256)?;
                imported.with_codes += 1;
            }
            (true, None) => imported.to_encode += 1,
        }
    }
    tx.commit()?;
    Ok(())
}
