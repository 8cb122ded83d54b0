//! The image index: Fv of every image of a folder (and, for soft attention, its gate g), the
//! file list and the checkpoint it was computed with, in one safetensors file whose metadata
//! holds the JSON description. Updating an index encodes only new or changed files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::data::image_file::load_rgb;
use crate::data::transforms::Transform;
use crate::fsutil::write_atomic;
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
    pub keywords_trained: bool,
    pub amfmn_version: String,
}

/// An index in memory: the description and the codes (`fv` `[N, d]`, `gate` `[N, d]` for soft
/// attention).
pub struct Index {
    pub info: IndexInfo,
    pub fv: Tensor,
    pub gate: Option<Tensor>,
}

/// SHA-256 of a file, as hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Image files under `root` (sorted, relative paths), with their size and modification time.
pub fn scan(root: &Path, recursive: bool) -> Result<Vec<IndexedFile>> {
    fn walk(root: &Path, dir: &Path, recursive: bool, out: &mut Vec<IndexedFile>) -> Result<()> {
        let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
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
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push(IndexedFile { path: rel, size: meta.len(), modified_ns });
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, root, recursive, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

impl Index {
    /// Writes the index atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let to_bytes = |t: &Tensor| -> Result<(Vec<usize>, Vec<u8>)> {
            let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let values: Vec<f32> = Vec::try_from(t.view([-1]))?;
            Ok((shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        };
        let mut tensors = vec![("fv".to_string(), to_bytes(&self.fv)?)];
        if let Some(g) = &self.gate {
            tensors.push(("gate".to_string(), to_bytes(g)?));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(name, (shape, bytes))| {
                Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?))
            })
            .collect::<Result<_>>()?;
        let metadata = HashMap::from([(METADATA_KEY.to_string(), serde_json::to_string(&self.info)?)]);
        let bytes = safetensors::serialize(views, Some(metadata))?;
        write_atomic(path, &bytes)
    }

    /// Reads an index written by [`Index::save`].
    pub fn load(path: &Path) -> Result<Index> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read index {}", path.display()))?;
        let parsed = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not an amfmn index (safetensors)", path.display()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .with_context(|| format!("{}: safetensors without an amfmn index description", path.display()))?;
        let info: IndexInfo =
            serde_json::from_str(json).with_context(|| format!("{}: bad index description", path.display()))?;
        let tensor = |name: &str| -> Result<Option<Tensor>> {
            match parsed.tensor(name) {
                Ok(view) => {
                    let values: Vec<f32> = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .collect();
                    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                    Ok(Some(Tensor::from_slice(&values).view(shape.as_slice())))
                }
                Err(_) => Ok(None),
            }
        };
        let fv = tensor("fv")?.with_context(|| format!("{}: no fv codes", path.display()))?;
        if fv.size()[0] as usize != info.files.len() {
            bail!("{}: {} codes for {} files", path.display(), fv.size()[0], info.files.len());
        }
        Ok(Index { info, fv, gate: tensor("gate")? })
    }
}

/// Result of decoding one batch for indexing.
pub struct Encoded {
    /// Rows of the batch that were encoded, and their codes.
    pub rows: Vec<usize>,
    pub fv: Tensor,
    pub gate: Option<Tensor>,
    /// Rows that could not be read, with the reason.
    pub failures: Vec<(usize, String)>,
}

/// Decodes `paths` on `workers` threads (unreadable files are reported, not fatal) and encodes
/// the readable ones with `model`.
pub fn encode_images(model: &Model, paths: &[PathBuf], image_size: u32, workers: usize) -> Result<Encoded> {
    let transform = Transform::Eval { size: image_size };
    let len = transform.output_len();
    let decoded: Vec<std::result::Result<Vec<f32>, String>> = {
        let chunk = paths.len().div_ceil(workers.max(1)).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|p| {
                                let image = load_rgb(p).map_err(|e| format!("{e:#}"))?;
                                let mut out = vec![0f32; len];
                                transform.apply(&image, &mut crate::rng::stream(0, &[]), &mut out);
                                Ok(out)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("decode thread")).collect()
        })
    };
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut buffer = Vec::new();
    for (i, d) in decoded.into_iter().enumerate() {
        match d {
            Ok(values) => {
                rows.push(i);
                buffer.extend(values);
            }
            Err(e) => failures.push((i, e)),
        }
    }
    let side = image_size as i64;
    let d = model.embed_dim();
    if rows.is_empty() {
        let empty = Tensor::zeros([0, d], (Kind::Float, Device::Cpu));
        let gate = model.net.cross_attention_s.is_soft().then(|| empty.shallow_clone());
        return Ok(Encoded { rows, fv: empty, gate, failures });
    }
    let images = Tensor::from_slice(&buffer).view([rows.len() as i64, 3, side, side]);
    let (fv, gate) = tch::no_grad(|| {
        let fv = model.net.encode_images(&model.prepare_images(&images), false);
        let gate = model.net.cross_attention_s.soft_gate(&fv);
        (fv.to_device(Device::Cpu), gate.map(|g| g.to_device(Device::Cpu)))
    });
    Ok(Encoded { rows, fv, gate, failures })
}
