//! ImageNet ResNet-18 weights for `extract_feature.resnet` (`model.resnet_weights`):
//! torchvision's file (`resnet18-f37072fd.pth`, or the legacy-format `resnet18-5c106cde.pth`),
//! read natively ([`super::pytorch`]), or a safetensors file; `auto` fetches torchvision's file
//! into its cache like torchvision does.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use tch::Tensor;

use super::read_safetensors;
use crate::fsutil::write_atomic_with;
use crate::model::Model;
use crate::options::ResnetWeights;
use crate::report;

/// torchvision's URL of the ImageNet ResNet-18 weights (`ResNet18_Weights.IMAGENET1K_V1`).
pub const RESNET18_URL: &str = "https://download.pytorch.org/models/resnet18-f37072fd.pth";

/// The environment variable that replaces [`RESNET18_URL`] (a mirror, or a test server).
pub const URL_VARIABLE: &str = "AMFMN_RESNET18_URL";

/// torchvision's file names of the weights, newest first (the legacy file of torchvision < 0.13).
const KNOWN_FILES: [&str; 2] = ["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"];

/// The most a download may be (the weights are 45 MB).
const MAX_DOWNLOAD: u64 = 1 << 30;

/// torchvision's download folder: `$TORCH_HOME/hub/checkpoints`, else
/// `$XDG_CACHE_HOME/torch/hub/checkpoints`, else `~/.cache/torch/hub/checkpoints`.
pub fn torch_hub_checkpoints() -> Option<PathBuf> {
    let torch_home = std::env::var_os("TORCH_HOME").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(cache.join("torch"))
    })?;
    Some(torch_home.join("hub").join("checkpoints"))
}

/// The weights file `setting` means, fetched first when needed: `auto` takes torchvision's
/// cached file, or downloads it (from [`URL_VARIABLE`] when set) into that cache; `none` means
/// no ImageNet weights. A file that is missing, or a download that fails, is an error.
pub fn resolve(setting: &ResnetWeights) -> Result<Option<PathBuf>> {
    match setting {
        ResnetWeights::None => Ok(None),
        ResnetWeights::File(path) if path.is_file() => Ok(Some(path.clone())),
        ResnetWeights::File(path) => bail!(
            "model.resnet_weights: {} does not exist; point it to torchvision's resnet18-f37072fd.pth, set it to auto \
             to download that file, or to none to train without ImageNet weights",
            path.display()
        ),
        ResnetWeights::Auto => {
            let dir = torch_hub_checkpoints()
                .context("cannot find torchvision's cache folder: set TORCH_HOME (or HOME), or model.resnet_weights")?;
            let url = std::env::var(URL_VARIABLE).unwrap_or_else(|_| RESNET18_URL.to_owned());
            let name = url.rsplit('/').next().unwrap_or_default().to_owned();
            let cached = std::iter::once(name.as_str()).chain(KNOWN_FILES).map(|n| dir.join(n)).find(|p| p.is_file());
            match cached {
                Some(path) => Ok(Some(path)),
                None => fetch(&url, &dir).map(Some),
            }
        }
    }
}

/// The SHA-256 prefix a file name carries (`resnet18-f37072fd.pth` → `f37072fd`), as
/// torchvision's `check_hash` reads it: the hex digits after a `-` and before a `.`.
pub fn hash_prefix(name: &str) -> Option<&str> {
    let stem = &name[..name.find('.')?];
    let (_, digits) = stem.rsplit_once('-')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(digits)
}

/// Downloads `url` into `dir` under its file name, with a progress bar: into a temporary file,
/// checked against the SHA-256 prefix of its name, then renamed into place. On any failure
/// nothing is left in `dir`.
pub fn fetch(url: &str, dir: &Path) -> Result<PathBuf> {
    let name = url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or_default();
    let expected = hash_prefix(name).with_context(|| {
        format!("{URL_VARIABLE}: {url} names no file with a SHA-256 prefix (like resnet18-f37072fd.pth) to verify")
    })?;
    let target = dir.join(name);
    crate::fsutil::remove_stale_temporaries(dir).ok();
    write_atomic_with(&target, |file| {
        let actual = download(url, file)?;
        if !actual.starts_with(expected) {
            bail!("its SHA-256 is {actual}, its name says {expected}…: a corrupted or wrong file");
        }
        Ok(())
    })
    .map_err(|e| {
        anyhow!(
            "cannot download the ImageNet ResNet-18 weights {url}: {e:#}; download the file yourself into {}, or \
             set model.resnet_weights to it (none trains without ImageNet weights)",
            dir.display()
        )
    })?;
    Ok(target)
}

/// Streams the body of `url` into `file` with a progress bar; returns its SHA-256.
fn download(url: &str, file: &mut std::fs::File) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_recv_body(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| anyhow!("{e}"))?;
    let length = response.body().content_length();
    let bar = report::progress(length.unwrap_or(0) >> 10, "downloading (KiB)");
    let mut reader = response.body_mut().with_config().limit(MAX_DOWNLOAD).reader();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buffer).context("the connection broke off")?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        file.write_all(&buffer[..n])?;
        received += n as u64;
        bar.set_position(received >> 10);
    }
    bar.finish_and_clear();
    if length.is_some_and(|l| l != received) {
        bail!("the download stopped after {received} of {} bytes", length.unwrap_or_default());
    }
    Ok(crate::fsutil::hex(&hasher.finalize()))
}

/// Reads a ResNet-18 state dict (torchvision keys: `conv1.weight`, `layer1.0.bn1.running_mean`,
/// ...) from a `torch.save` file of either format, or a safetensors file.
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        return read_safetensors(path);
    }
    Ok(super::pytorch::read(path)?.tensors)
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
