//! The image index: Fv of every image of a folder (and, for soft attention, its gate g), the
//! file list and the checkpoint it was computed with, in one safetensors file whose metadata
//! holds the JSON description. Updating an index encodes only new or changed files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::checkpoint::tensors::{self, TensorMap};
use crate::data::image_file::confined_path;
use crate::encode::{self, Workers};
use crate::fsutil::owned::Outputs;
use crate::model::Model;

/// Image file extensions the index picks up (case-insensitive).
const EXTENSIONS: [&str; 5] = ["tif", "tiff", "jpg", "jpeg", "png"];
const METADATA_KEY: &str = "amfmn_index";

/// One indexed file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexedFile {
    /// Path relative to the index root.
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: u64,
}

/// What an index file describes besides its codes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexInfo {
    pub root: PathBuf,
    pub files: Vec<IndexedFile>,
    /// The checkpoint's weights file and its SHA-256.
    pub checkpoint: PathBuf,
    pub checkpoint_sha256: String,
    pub image_size: u32,
    pub att_type: String,
    pub embed_dim: i64,
    pub vocab_path: PathBuf,
    /// SHA-256 of the vocabulary (absent in older indexes).
    #[serde(default)]
    pub vocab_sha256: Option<String>,
    pub keywords_trained: bool,
    pub amfmn_version: String,
}

impl IndexInfo {
    /// Whether codes of `other` are codes of this index: same checkpoint, folder and image size.
    pub fn same_source(&self, other: &IndexInfo) -> bool {
        self.checkpoint_sha256 == other.checkpoint_sha256
            && self.root == other.root
            && self.image_size == other.image_size
    }
}

/// An index in memory: the description and the codes (`fv` `[N, d]`, `gate` `[N, d]` for soft
/// attention).
pub struct Index {
    pub info: IndexInfo,
    pub fv: Tensor,
    pub gate: Option<Tensor>,
}

/// What [`scan`] found under a folder.
#[derive(Debug, Default)]
pub struct Scan {
    /// Image files (sorted, relative paths), with their size and modification time.
    pub files: Vec<IndexedFile>,
    /// Symbolic links under the folder that lead outside it (relative paths): never indexed.
    pub links_outside: Vec<String>,
}

/// Image files under `root`. A symbolic link to a file is followed only when it stays inside
/// `root`; links to folders are not followed (no loops). Only regular files are images: a FIFO
/// or a device named like one is skipped, and so is a name that is not UTF-8 (an index records
/// names as text; two such names must never merge into one), each with a warning.
pub fn scan(root: &Path, recursive: bool) -> Result<Scan> {
    fn walk(root: &Path, dir: &Path, recursive: bool, out: &mut Scan) -> Result<()> {
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
            let Some(rel) = path.strip_prefix(root).unwrap_or(&path).to_str().map(str::to_owned) else {
                crate::report::warn(format!("skipped {}: its name is not UTF-8; rename it", path.display()));
                continue;
            };
            let mut meta =
                std::fs::symlink_metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if meta.file_type().is_symlink() {
                if confined_path(root, &rel).is_err() {
                    out.links_outside.push(rel);
                    continue;
                }
                match std::fs::metadata(&path) {
                    Ok(target) if target.is_file() => meta = target,
                    _ => continue,
                }
            }
            if meta.is_dir() {
                if recursive {
                    walk(root, &path, recursive, out)?;
                }
                continue;
            }
            let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if !EXTENSIONS.contains(&ext.as_str()) {
                continue;
            }
            if !meta.is_file() {
                crate::report::warn(format!("skipped {rel}: not a regular file (a FIFO, socket or device)"));
                continue;
            }
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            out.files.push(IndexedFile { path: rel, size: meta.len(), modified_ns });
        }
        Ok(())
    }
    let mut found = Scan::default();
    walk(root, root, recursive, &mut found)?;
    found.files.sort_by(|a, b| a.path.cmp(&b.path));
    found.links_outside.sort();
    Ok(found)
}

impl Index {
    /// Writes the index as one of `outputs` (atomically): the codes as tensors, the description
    /// as header metadata.
    pub fn save(&self, outputs: &mut Outputs, path: &Path) -> Result<()> {
        let mut tensors = TensorMap::from([("fv".to_string(), self.fv.to_kind(Kind::Float))]);
        if let Some(g) = &self.gate {
            tensors.insert("gate".to_string(), g.to_kind(Kind::Float));
        }
        let bytes = tensors::serialize_described(&tensors, METADATA_KEY, &self.info)?;
        outputs.write(path, &bytes)
    }

    /// Reads an index written by [`Index::save`].
    pub fn load(path: &Path) -> Result<Index> {
        let (mut tensors, info): (TensorMap, IndexInfo) = tensors::read_described(path, METADATA_KEY, "index")?;
        let fv = tensors.remove("fv").with_context(|| format!("{}: no fv codes", path.display()))?;
        let gate = tensors.remove("gate");
        let consistent =
            fv.dim() == 2 && fv.size()[1] == info.embed_dim && gate.as_ref().is_none_or(|g| g.size() == fv.size());
        let float = fv.kind() == Kind::Float && gate.as_ref().is_none_or(|g| g.kind() == Kind::Float);
        if !consistent || !float {
            bail!(
                "{}: codes of shape {:?} and gates {:?} do not fit together and its embed_dim {}",
                path.display(),
                fv.size(),
                gate.map(|g| g.size()),
                info.embed_dim
            );
        }
        if fv.size()[0] as usize != info.files.len() {
            bail!("{}: {} codes for {} files", path.display(), fv.size()[0], info.files.len());
        }
        Ok(Index { info, fv, gate })
    }
}

/// What [`update`] did.
pub struct UpdateSummary {
    /// Codes taken over from the previous index.
    pub reused: usize,
    /// Files that could not be read, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Seconds spent encoding (decoding, the model, the codes back on the host): the command's
    /// time without its start-up (loading the model, scanning the folder) and saving.
    pub encode_seconds: f64,
}

/// For each of `files`, the previous index's row whose codes can be kept: same checkpoint,
/// folder and image size, and the file unchanged (size and modification time).
fn reusable_rows(previous: Option<&Index>, info: &IndexInfo, files: &[IndexedFile]) -> Vec<Option<usize>> {
    let Some(previous) = previous.filter(|p| p.info.same_source(info)) else {
        return vec![None; files.len()];
    };
    let rows: HashMap<&str, usize> =
        previous.info.files.iter().enumerate().map(|(i, f)| (f.path.as_str(), i)).collect();
    files
        .iter()
        .map(|file| {
            let &row = rows.get(file.path.as_str())?;
            let old = &previous.info.files[row];
            (old.size == file.size && old.modified_ns == file.modified_ns).then_some(row)
        })
        .collect()
}

/// How many batches' codes [`update`] keeps on the device before copying them to the host
/// together: the host waits for the device once per group, not once per batch.
const BATCHES_ON_DEVICE: usize = 32;

/// Codes of encoded batches still on the model's device, with the file of each row.
#[derive(Default)]
struct QueuedCodes {
    files: Vec<usize>,
    codes: encode::QueuedCodes,
}

impl QueuedCodes {
    /// Adds a batch: the file of each row, and its Fv and gates `[B, d]`.
    fn push(&mut self, files: Vec<usize>, codes: (Tensor, Option<Tensor>)) {
        self.files.extend(files);
        self.codes.push(codes);
    }

    fn batches(&self) -> usize {
        self.codes.batches()
    }

    /// Copies the queued codes to the host (waiting for the device to run their batches) into
    /// `codes`, each row under its file.
    fn move_to(&mut self, codes: &mut HashMap<usize, (Tensor, Option<Tensor>)>) {
        if self.batches() == 0 {
            return;
        }
        let (fv, gate) = self.codes.take_to_host();
        for (k, file) in self.files.drain(..).enumerate() {
            codes.insert(file, (fv.get(k as i64), gate.as_ref().map(|g| g.get(k as i64))));
        }
    }
}

/// Builds the index of `files` under `info.root` with `model`, encoding only the files whose
/// codes `previous` cannot give (unreadable files are left out and listed). `info` describes
/// the new index; its file list is filled here. A previous index of another checkpoint, folder
/// or image size gives nothing.
pub fn update(
    model: &Model,
    mut info: IndexInfo,
    files: &[IndexedFile],
    previous: Option<&Index>,
    batch_size: usize,
    workers: usize,
) -> Result<(Index, UpdateSummary)> {
    let reuse = reusable_rows(previous, &info, files);
    let to_encode: Vec<usize> = (0..files.len()).filter(|&i| reuse[i].is_none()).collect();
    let progress = crate::report::progress(to_encode.len() as u64, "encoding images");
    let mut new_codes: HashMap<usize, (Tensor, Option<Tensor>)> = HashMap::new();
    let mut skipped = Vec::new();
    let plan: Vec<Vec<PathBuf>> = to_encode
        .chunks(batch_size.max(1))
        .map(|batch| batch.iter().map(|&i| info.root.join(&files[i].path)).collect())
        .collect();
    let side = info.image_size;
    let prepare = |path: &PathBuf, out: &mut [f32]| encode::image_file_input(path, side, out);
    let start = std::time::Instant::now();
    let mut queued = QueuedCodes::default();
    encode::each_batch(&plan, side, Workers { workers, prefetch: 1 }, prepare, |batch| {
        progress.inc((batch.rows.len() + batch.failures.len()) as u64);
        let items = batch.rows.iter().map(|&(item, ())| to_encode[item]);
        queued.push(items.collect(), encode::image_codes_on_device(model, &batch.images));
        if queued.batches() == BATCHES_ON_DEVICE {
            queued.move_to(&mut new_codes);
        }
        for (item, reason) in batch.failures {
            skipped.push((files[to_encode[item]].path.clone(), reason));
        }
        Ok(())
    })?;
    queued.move_to(&mut new_codes);
    let encode_seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let (mut fv_rows, mut gate_rows, mut reused) = (Vec::new(), Vec::new(), 0);
    for (i, file) in files.iter().enumerate() {
        let (fv, gate) = match (reuse[i], previous) {
            (Some(row), Some(p)) => {
                reused += 1;
                (p.fv.get(row as i64), p.gate.as_ref().map(|g| g.get(row as i64)))
            }
            _ => match new_codes.remove(&i) {
                Some(codes) => codes,
                None => continue,
            },
        };
        fv_rows.push(fv);
        gate_rows.extend(gate);
        info.files.push(file.clone());
    }
    if info.files.is_empty() {
        bail!("none of the {} images in {} could be read (first: {})", files.len(), info.root.display(), skipped[0].1);
    }
    let soft = model.net.cross_attention_s.is_soft();
    let index = Index { info, fv: Tensor::stack(&fv_rows, 0), gate: soft.then(|| Tensor::stack(&gate_rows, 0)) };
    Ok((index, UpdateSummary { reused, skipped, encode_seconds }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes queued batch by batch reach their files when moved to the host, a batch whose
    /// files all failed included, and a second move of nothing changes nothing.
    #[test]
    fn queued_codes_reach_their_files() {
        let rows = |values: &[f32]| Tensor::from_slice(values).view([values.len() as i64, 1]);
        let (mut queued, mut codes) = (QueuedCodes::default(), HashMap::new());
        queued.push(vec![7, 3], (rows(&[7.0, 3.0]), Some(rows(&[70.0, 30.0]))));
        queued.push(vec![], (rows(&[]), Some(rows(&[]))));
        queued.push(vec![5], (rows(&[5.0]), Some(rows(&[50.0]))));
        assert_eq!(queued.batches(), 3);
        queued.move_to(&mut codes);
        assert_eq!((queued.batches(), codes.len()), (0, 3));
        queued.push(vec![9], (rows(&[9.0]), Some(rows(&[90.0]))));
        queued.move_to(&mut codes);
        queued.move_to(&mut codes);
        let mut files: Vec<usize> = codes.keys().copied().collect();
        files.sort_unstable();
        assert_eq!(files, [3, 5, 7, 9]);
        for (&file, (fv, gate)) in &codes {
            let gate = gate.as_ref().expect("soft attention keeps gates");
            assert_eq!((fv.double_value(&[0]), gate.double_value(&[0])), (file as f64, 10.0 * file as f64));
        }
    }
}
