//! A scene's crop codes on disk (`locate --codes`), so that another query on the same scene
//! encodes only its text: the crops' Fv and gates as tensors, and as header metadata what they
//! were computed from (the scene's and the checkpoint's SHA-256, the steps, the resize, the
//! input side) and the crop rectangles.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::crops::{encode_crops, CropEncoding, CropResize};
use super::heat::Rect;
use crate::checkpoint::tensors::{self, TensorMap};
use crate::fsutil::owned::Outputs;
use crate::model::Model;

/// The metadata key of the description.
const METADATA_KEY: &str = "amfmn_crop_codes";

/// What crop codes were computed from; codes are reused only when all of it is equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodesKey {
    pub scene_sha256: String,
    pub checkpoint_sha256: String,
    pub steps: Vec<usize>,
    pub crop_resize: String,
    pub image_size: u32,
}

/// The codes of a scene's crops.
pub struct CropCodes {
    pub key: CodesKey,
    pub crops: Vec<Rect>,
    /// `[N, d]`.
    pub fv: Tensor,
    /// `[N, d]` for soft attention.
    pub gate: Option<Tensor>,
}

#[derive(Serialize, Deserialize)]
struct Description {
    key: CodesKey,
    crops: Vec<[usize; 4]>,
}

impl CropCodes {
    /// Writes the codes as one of `outputs` (atomically).
    pub fn save(&self, outputs: &mut Outputs, path: &Path) -> Result<()> {
        let mut tensors = TensorMap::from([("fv".to_string(), self.fv.to_kind(Kind::Float))]);
        if let Some(gate) = &self.gate {
            tensors.insert("gate".to_string(), gate.to_kind(Kind::Float));
        }
        let crops = self.crops.iter().map(|r| [r.r0, r.r1, r.c0, r.c1]).collect();
        let description = Description { key: self.key.clone(), crops };
        let bytes = tensors::serialize_described(&tensors, METADATA_KEY, &description)?;
        outputs.write(path, &bytes)
    }

    /// Reads codes written by [`CropCodes::save`] for a model of `embed_dim`, checking that their
    /// parts fit together and the model: float codes `[crops, embed_dim]`, gates of their shape.
    pub fn load(path: &Path, embed_dim: i64) -> Result<CropCodes> {
        let (mut tensors, description): (TensorMap, Description) =
            tensors::read_described(path, METADATA_KEY, "crop codes")?;
        let fv = tensors.remove("fv").with_context(|| format!("{}: no fv codes", path.display()))?;
        let gate = tensors.remove("gate");
        let rows = description.crops.len() as i64;
        let float = fv.kind() == Kind::Float && gate.as_ref().is_none_or(|g| g.kind() == Kind::Float);
        let fits = fv.size() == [rows, embed_dim] && gate.as_ref().is_none_or(|g| g.size() == fv.size());
        if !(fits && float) {
            bail!(
                "{}: codes of shape {:?} (gates {:?}) do not fit its {rows} crops and the model's {embed_dim}-d codes; \
                 remove the file (it is made again)",
                path.display(),
                fv.size(),
                gate.map(|g| g.size())
            );
        }
        if let Some(bad) = description.crops.iter().find(|[r0, r1, c0, c1]| r0 >= r1 || c0 >= c1) {
            bail!("{}: the crop {bad:?} is empty", path.display());
        }
        let crops = description.crops.iter().map(|&[r0, r1, c0, c1]| Rect { r0, r1, c0, c1 }).collect();
        Ok(CropCodes { key: description.key, crops, fv, gate })
    }
}

/// Where a scene's crop codes are kept between runs (`locate --codes`).
#[derive(Debug, Clone, Copy)]
pub struct CodesFile<'a> {
    pub path: &'a Path,
    /// Replace a file there that amfmn did not write as crop codes.
    pub force: bool,
}

/// The codes of `scene`'s crops `rects`: from `file` when it holds the codes of the same scene,
/// checkpoint and crops (`key`), else encoded `batch_size` at a time (and then kept in `file`).
/// `true` with codes reused (they took no time: `seconds` zero).
pub fn cached_or_encoded(
    file: Option<CodesFile>,
    model: &Model,
    scene: &image::RgbImage,
    rects: &[Rect],
    key: CodesKey,
    (resize, batch_size): (CropResize, usize),
) -> Result<(CropEncoding, bool)> {
    let mut outputs = match file {
        Some(file) => {
            if file.path.exists() {
                let kept = CropCodes::load(file.path, model.embed_dim())?;
                if kept.key == key && kept.crops == rects {
                    return Ok((CropEncoding { fv: kept.fv, gate: kept.gate, seconds: [0.0; 2] }, true));
                }
            }
            let mut outputs = Outputs::for_file(file.path, "crop codes", file.force)?;
            outputs.check(file.path)?;
            Some((outputs, file.path))
        }
        None => None,
    };
    let progress = crate::report::progress(rects.len() as u64, "encoding crops");
    let encoded = encode_crops(model, scene, rects, (resize, batch_size), |n| {
        progress.inc(n as u64);
        Ok(())
    })?;
    progress.finish_and_clear();
    if let Some((mut outputs, path)) = outputs.take() {
        let gate = encoded.gate.as_ref().map(|g| g.shallow_clone());
        let codes = CropCodes { key, crops: rects.to_vec(), fv: encoded.fv.shallow_clone(), gate };
        codes.save(&mut outputs, path)?;
        outputs.finish()?;
    }
    Ok((encoded, false))
}
