//! ImageNet ResNet-18 weights for `extract_feature.resnet` (`model.resnet_weights`): a
//! torchvision checkpoint (`resnet18-f37072fd.pth`, the zip format libtorch reads) or a
//! safetensors file. The legacy `resnet18-5c106cde.pth` (pre-1.6 format) is converted once with
//! `exec/pth_to_safetensors.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::read_safetensors;
use crate::model::Model;
use crate::options::ResnetWeights;

/// torchvision's file names, newest first, with their safetensors conversions.
const KNOWN_FILES: [&str; 4] = [
    "resnet18-f37072fd.pth",
    "resnet18-f37072fd.safetensors",
    "resnet18-5c106cde.safetensors",
    "resnet18-5c106cde.pth",
];

/// torchvision's download folder: `$TORCH_HOME/hub/checkpoints`, else
/// `$XDG_CACHE_HOME/torch/hub/checkpoints`, else `~/.cache/torch/hub/checkpoints`.
fn torch_hub_checkpoints() -> Option<PathBuf> {
    let torch_home = std::env::var_os("TORCH_HOME").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(cache.join("torch"))
    })?;
    Some(torch_home.join("hub").join("checkpoints"))
}

/// The file `setting` points to, if there is one: `auto` looks in torchvision's cache.
pub fn resolve(setting: &ResnetWeights) -> Option<PathBuf> {
    match setting {
        ResnetWeights::None => None,
        ResnetWeights::File(path) => Some(path.clone()),
        ResnetWeights::Auto => {
            let dir = torch_hub_checkpoints()?;
            KNOWN_FILES.iter().map(|name| dir.join(name)).find(|p| p.is_file())
        }
    }
}

/// Reads a ResNet-18 state dict (torchvision keys: `conv1.weight`, `layer1.0.bn1.running_mean`, ...).
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return read_safetensors(path);
    }
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if &magic != b"PK" {
        bail!(
            "{} is in PyTorch's legacy (pre-1.6) format, which libtorch cannot read; convert it once with \
             `$AMFMN_PYTHON exec/pth_to_safetensors.py {} {}` and set model.resnet_weights to the new file",
            path.display(),
            path.display(),
            path.with_extension("safetensors").display()
        );
    }
    let tensors =
        Tensor::loadz_multi(path).with_context(|| format!("cannot read the PyTorch checkpoint {}", path.display()))?;
    Ok(tensors.into_iter().collect())
}

/// Copies ResNet-18 weights into the model; returns how many tensors were set. Every
/// parameter and running statistic must be present (`num_batches_tracked` may be missing).
pub fn load_resnet(model: &Model, path: &Path) -> Result<usize> {
    let weights = read_state_dict(path)?;
    let prefix = "extract_feature.resnet.";
    let variables = model.vs.variables();
    let mut count = 0;
    tch::no_grad(|| -> Result<()> {
        for (key, var) in variables.iter().filter(|(k, _)| k.starts_with(prefix)) {
            let name = &key[prefix.len()..];
            let Some(src) = weights.get(name) else {
                if name.ends_with("num_batches_tracked") {
                    continue;
                }
                bail!("{}: no `{name}`; is it a torchvision ResNet-18 state dict?", path.display());
            };
            if src.size() != var.size() {
                bail!("{}: `{name}` has shape {:?}, ResNet-18 needs {:?}", path.display(), src.size(), var.size());
            }
            var.shallow_clone().copy_(&src.to_kind(var.kind()).to_device(var.device()));
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}
