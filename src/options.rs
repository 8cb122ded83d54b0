//! The YAML option files of the original code (`option/RSITMD_AMFMN.yaml`, ...) as typed structs.
//!
//! Every key of the original schema is required, so a file written for the PyTorch code parses
//! unchanged and a missing key is reported; keys added by amfmn have defaults. Unknown keys are
//! errors (a misspelt key would otherwise be silently ignored). `--set key.path=value` overrides
//! any option after the file is read.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml::{Mapping, Value};

/// The most decoding threads (`dataset.workers`, `index --workers`): decoding is bound by the
/// cores, and each thread holds a batch.
pub const MAX_WORKERS: usize = 256;

/// The options a resumed run may change: where and how fast it runs and how long, never what
/// it trains ([`Options::differences`]).
pub const RUNTIME_KEYS: &[&str] = &[
    "device",
    "threads",
    "channels_last",
    "cuda_graphs",
    "dataset.workers",
    "dataset.prefetch",
    "dataset.batch_size_val",
    "optim.resume",
    "optim.epochs",
    "logs.print_freq",
    "k_fold.current_num",
];

/// The leaves of a JSON tree as `(dotted key, value)` pairs, in order.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, child, out);
            }
        }
        leaf => out.push((prefix.to_owned(), leaf.clone())),
    }
}

/// All options of one run, as read from `--path_opt` plus `--set` overrides.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub model: ModelOptions,
    pub dataset: DatasetOptions,
    pub optim: OptimOptions,
    pub logs: LogsOptions,
    pub k_fold: KFoldOptions,
    /// amfmn: seed of the fold split, augmentation and initialisation.
    #[serde(default)]
    pub seed: u64,
    /// amfmn: where the model runs (`auto`, `cpu`, `cuda`, `cuda:N`; `train` also takes a
    /// comma-separated list, one data-parallel replica per device).
    #[serde(default)]
    pub device: Devices,
    /// amfmn: libtorch intra-op threads (0: libtorch's default, one per core).
    #[serde(default)]
    pub threads: usize,
    /// amfmn: the memory layout of the CNN's images and weights (`auto`, `on`, `off`).
    #[serde(default)]
    pub channels_last: ChannelsLast,
    /// amfmn: train through CUDA graphs of the step (one device, one process).
    #[serde(default)]
    pub cuda_graphs: bool,
}

/// `model:` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    pub multiscale: MultiscaleOptions,
    pub cross_attention: CrossAttentionOptions,
    pub seq2vec: Seq2VecOptions,
    pub embed: EmbedOptions,
    pub name: ModelName,
    /// amfmn: ImageNet ResNet-18 weights: `auto` (torchvision's download cache), `none`, or a
    /// file (`.pth` from torchvision, or `.safetensors`).
    #[serde(default)]
    pub resnet_weights: ResnetWeights,
}

/// Where the ImageNet ResNet-18 weights come from (`model.resnet_weights`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResnetWeights {
    /// `resnet18-f37072fd.pth` or `resnet18-5c106cde.pth` in torchvision's cache, downloaded
    /// there when absent.
    #[default]
    Auto,
    /// Random initialisation, on purpose.
    None,
    File(PathBuf),
}

/// `model.multiscale`: channel counts of the MVSA module.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiscaleOptions {
    pub multiscale_input_channel: i64,
    pub multiscale_output_channel: i64,
}

/// `model.cross_attention`: which visual-guided attention (VGA) variant scores pairs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrossAttentionOptions {
    pub att_type: AttentionType,
}

/// The three VGA variants of the paper.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum AttentionType {
    #[serde(rename = "soft_att")]
    Soft,
    #[serde(rename = "fusion_att")]
    Fusion,
    #[serde(rename = "similarity_att")]
    Similarity,
}

/// `model.seq2vec`: the skip-thoughts text encoder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Seq2VecOptions {
    pub arch: Seq2VecArch,
    /// Folder with `dictionary.txt`, `utable.npy`, `uni_skip.npz`, ...
    pub dir_st: PathBuf,
    #[serde(rename = "type")]
    pub kind: Seq2VecType,
    pub dropout: f64,
    pub fixed_emb: bool,
    /// amfmn: whether training starts from the skip-thoughts weights in `dir_st` (default);
    /// `false` starts the text encoder from random weights.
    #[serde(default = "default_true")]
    pub pretrained: bool,
}

/// `model.seq2vec.arch`: only skip-thoughts exists in the original.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Seq2VecArch {
    #[serde(rename = "skipthoughts")]
    SkipThoughts,
}

/// `model.seq2vec.type`: the skip-thoughts variant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Seq2VecType {
    BayesianUniSkip,
    UniSkip,
    DropUniSkip,
    BiSkip,
}

/// `model.embed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbedOptions {
    pub embed_dim: i64,
}

/// `model.name`: the original accepts only `AMFMN`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ModelName {
    #[serde(rename = "AMFMN")]
    Amfmn,
}

/// `dataset:` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetOptions {
    /// Name used in log file names (`rsitmd`, `rsicd`, ...).
    pub datatype: String,
    /// Present (and empty) in the original files; unused.
    pub data_split: Option<String>,
    /// Folder of the precomp files (`train_caps.txt`, `train_filename.txt`, ...).
    pub data_path: PathBuf,
    /// Folder the file names of `*_filename.txt` are relative to.
    pub image_path: PathBuf,
    pub vocab_path: PathBuf,
    pub batch_size: usize,
    pub batch_size_val: usize,
    /// Decode/augment threads of the loader.
    pub workers: usize,
    /// amfmn: side of the square network input (train crop, eval resize).
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// amfmn: side of the square train-time resize before the random crop.
    #[serde(default = "default_resize")]
    pub resize: u32,
    /// amfmn: random rotation range in degrees `[min, max]`. The original meant 0-90 but, through
    /// an argument slip, rotated by 0; `[0, 0]` reproduces it.
    #[serde(default)]
    pub rotation: [f64; 2],
    /// amfmn: captions per image (the original hard-codes 5).
    #[serde(default = "default_captions_per_image")]
    pub captions_per_image: usize,
    /// amfmn: batches each loader thread may hold ready ahead of the training step.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// amfmn: train and evaluate with each image's keywords (`<split>_keywords.txt`) fused with
    /// the sentence through VGMF; the loss sums the sentence, keyword and fused rankings.
    #[serde(default)]
    pub keywords: bool,
}

/// `optim:` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimOptions {
    pub epochs: usize,
    pub lr: f64,
    pub lr_decay_param: f64,
    pub lr_update_epoch: usize,
    pub grad_clip: f64,
    #[serde(deserialize_with = "bool_or_int")]
    pub max_violation: bool,
    pub margin: f64,
    /// `False` or the path of a checkpoint to resume from.
    pub resume: Resume,
    /// amfmn: `fixed` (the code's `margin`) or `dynamic` (the paper's eq. 29-30).
    #[serde(default)]
    pub margin_type: MarginType,
    /// amfmn: largest dynamic margin γ.
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// amfmn: decay β of the dynamic margin.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// amfmn: mixed precision of training (`off`: fp32).
    #[serde(default)]
    pub amp: Amp,
    /// amfmn: TF32 for CUDA matrix products too (`false`: PyTorch's default, TF32 for cuDNN
    /// convolutions only).
    #[serde(default)]
    pub tf32: bool,
}

/// `optim.amp`: the precision of convolutions and linear layers in training.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Amp {
    #[default]
    Off,
    Bf16,
    /// Needs CUDA; with dynamic loss scaling.
    Fp16,
}

impl Amp {
    /// The autocast precision (`None` for fp32).
    pub fn kind(self) -> Option<tch::Kind> {
        match self {
            Amp::Off => None,
            Amp::Bf16 => Some(tch::Kind::BFloat16),
            Amp::Fp16 => Some(tch::Kind::Half),
        }
    }
}

/// `channels_last`: whether the CNN's images and convolution weights use the channels-last
/// (NHWC) layout; the values are the same either way.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelsLast {
    /// On the CPU (oneDNN's fast path), and on CUDA with `optim.amp` (cuDNN's tensor-core
    /// convolutions in 16 bits run in NHWC).
    #[default]
    Auto,
    On,
    Off,
}

impl ChannelsLast {
    /// Whether a model on `device`, trained at `amp`, uses channels-last.
    pub fn applies(self, device: tch::Device, amp: Amp) -> bool {
        match self {
            ChannelsLast::On => true,
            ChannelsLast::Off => false,
            ChannelsLast::Auto => device == tch::Device::Cpu || amp != Amp::Off,
        }
    }
}

/// `optim.margin_type`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MarginType {
    #[default]
    Fixed,
    Dynamic,
}

/// `optim.resume`: the original writes `False` for "start fresh" and a path otherwise.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Resume {
    #[default]
    No,
    From(PathBuf),
}

/// `logs:` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogsOptions {
    pub eval_step: usize,
    pub print_freq: usize,
    pub ckpt_save_path: PathBuf,
    pub logger_name: PathBuf,
}

/// `k_fold:` section: the fold protocol (docs/ARCHITECTURE.md, Data).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KFoldOptions {
    pub experiment_name: String,
    pub nums: usize,
    pub current_num: usize,
}

/// Where tensors live: `auto` picks CUDA when libtorch sees a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

/// `device:` / `--device`: one device, or several separated by commas (`cuda:0,cuda:1`,
/// `cpu,cpu`) for data-parallel training.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices(Vec<DeviceChoice>);

impl Devices {
    /// The devices in the order given (one at least).
    pub fn list(&self) -> &[DeviceChoice] {
        &self.0
    }
}

impl Default for Devices {
    fn default() -> Devices {
        Devices(vec![DeviceChoice::Auto])
    }
}

impl From<DeviceChoice> for Devices {
    fn from(choice: DeviceChoice) -> Devices {
        Devices(vec![choice])
    }
}

fn default_true() -> bool {
    true
}

fn default_image_size() -> u32 {
    256
}
fn default_resize() -> u32 {
    278
}
fn default_captions_per_image() -> usize {
    5
}
fn default_prefetch() -> usize {
    2
}
fn default_gamma() -> f64 {
    0.6
}
fn default_beta() -> f64 {
    5.0
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`, expected auto, cpu, cuda or cuda:N")),
        }
    }
}

impl std::str::FromStr for Devices {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        s.split(',').map(|one| one.trim().parse()).collect::<std::result::Result<Vec<_>, _>>().map(Devices)
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(DeviceChoice::to_string).collect();
        write!(f, "{}", names.join(","))
    }
}

impl Serialize for Devices {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for Resume {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Resume::No => s.serialize_bool(false),
            Resume::From(path) => path.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Resume {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Path(PathBuf),
        }
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected False or the path of a checkpoint"))? {
            Raw::Flag(false) => Ok(Resume::No),
            Raw::Flag(true) => {
                Err(serde::de::Error::custom("True is not a checkpoint; write False or the path of a checkpoint"))
            }
            Raw::Path(path) if path.as_os_str().is_empty() => Ok(Resume::No),
            Raw::Path(path) => Ok(Resume::From(path)),
        }
    }
}

impl Serialize for ResnetWeights {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ResnetWeights::Auto => s.serialize_str("auto"),
            ResnetWeights::None => s.serialize_str("none"),
            ResnetWeights::File(path) => path.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ResnetWeights {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.as_str() {
            "auto" => ResnetWeights::Auto,
            "none" | "" => ResnetWeights::None,
            _ => ResnetWeights::File(PathBuf::from(text)),
        })
    }
}

/// The original writes flags as `0`/`1` (`max_violation: 0`); accept those and YAML booleans.
fn bool_or_int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Int(i64),
    }
    match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("expected 0, 1, True or False"))? {
        Raw::Flag(b) => Ok(b),
        Raw::Int(0) => Ok(false),
        Raw::Int(1) => Ok(true),
        Raw::Int(n) => Err(serde::de::Error::custom(format!("expected 0 or 1, got {n}"))),
    }
}

impl ModelOptions {
    /// The model name as written in option files and log file names.
    pub fn name_str(&self) -> &'static str {
        match self.name {
            ModelName::Amfmn => "AMFMN",
        }
    }
}

impl Options {
    /// Reads an option file and applies `overrides` (`key.path=value`, value in YAML syntax).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Options> {
        let text = crate::fsutil::read_to_string(path)
            .with_context(|| format!("cannot read option file {}", path.display()))?;
        Self::parse(&text, overrides).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses option-file text and applies `overrides`; errors name the key path.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Options> {
        let mut value: Value = serde_yaml::from_str(text).context("not valid YAML")?;
        if value.is_null() {
            bail!("the file is empty; copy option/RSITMD_AMFMN.yaml and edit it");
        }
        for item in overrides {
            apply_override(&mut value, item)?;
        }
        let options: Options = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                anyhow::anyhow!("{inner}")
            } else {
                anyhow::anyhow!("{path}: {inner}")
            }
        })?;
        options.validate()?;
        Ok(options)
    }

    /// The options that differ between a run (`self`) and the run it resumes (`earlier`), as
    /// `key: earlier → now` lines, leaving out [`RUNTIME_KEYS`].
    pub fn differences(&self, earlier: &Options) -> Vec<String> {
        let (mut now, mut before) = (Vec::new(), Vec::new());
        flatten("", &serde_json::to_value(self).unwrap_or_default(), &mut now);
        flatten("", &serde_json::to_value(earlier).unwrap_or_default(), &mut before);
        let before: std::collections::HashMap<_, _> = before.into_iter().collect();
        now.into_iter()
            .filter(|(key, _)| !RUNTIME_KEYS.contains(&key.as_str()))
            .filter_map(|(key, value)| {
                let old = before.get(&key).cloned().unwrap_or(serde_json::Value::Null);
                (old != value).then(|| format!("{key}: {old} → {value}"))
            })
            .collect()
    }

    /// Checks values that parse but cannot work (and `threads`, against this machine, when the
    /// model runs: [`crate::device::set_threads`]).
    pub fn validate(&self) -> Result<()> {
        let d = &self.dataset;
        let positive = [
            ("dataset.batch_size", d.batch_size),
            ("dataset.batch_size_val", d.batch_size_val),
            ("dataset.captions_per_image", d.captions_per_image),
            ("dataset.prefetch", d.prefetch),
            ("dataset.image_size", d.image_size as usize),
            ("logs.eval_step", self.logs.eval_step),
            ("logs.print_freq", self.logs.print_freq),
            ("optim.lr_update_epoch", self.optim.lr_update_epoch),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("{key}: must be at least 1, got 0");
            }
        }
        // Sizes that become tensor shapes: beyond these a run could only fail to allocate.
        let bounded = [
            ("dataset.image_size", d.image_size as i64, 8192),
            ("dataset.resize", d.resize as i64, 8192),
            ("dataset.batch_size", d.batch_size as i64, 65536),
            ("dataset.batch_size_val", d.batch_size_val as i64, 65536),
            ("dataset.captions_per_image", d.captions_per_image as i64, 1000),
            ("model.embed.embed_dim", self.model.embed.embed_dim, 65536),
            ("model.multiscale.multiscale_input_channel", self.model.multiscale.multiscale_input_channel, 4096),
            ("model.multiscale.multiscale_output_channel", self.model.multiscale.multiscale_output_channel, 4096),
            ("dataset.workers", d.workers as i64, MAX_WORKERS as i64),
            ("dataset.prefetch", d.prefetch as i64, 1024),
        ];
        for (key, value, most) in bounded {
            if value > most {
                bail!("{key}: {value} is more than this model can allocate sensibly (at most {most})");
            }
        }
        if d.resize < d.image_size {
            bail!(
                "dataset.resize: {} is smaller than dataset.image_size {}; the random crop needs resize >= image_size",
                d.resize,
                d.image_size
            );
        }
        if d.rotation[0].is_nan() || d.rotation[1].is_nan() || d.rotation[0] > d.rotation[1] {
            bail!("dataset.rotation: expected [min, max] with min <= max, got {:?}", d.rotation);
        }
        if !(0.0..1.0).contains(&self.model.seq2vec.dropout) {
            bail!("model.seq2vec.dropout: must be in [0, 1), got {}", self.model.seq2vec.dropout);
        }
        if self.optim.lr.is_nan() || self.optim.lr <= 0.0 {
            bail!("optim.lr: must be positive, got {}", self.optim.lr);
        }
        if self.optim.lr_decay_param.is_nan() || self.optim.lr_decay_param <= 0.0 {
            bail!("optim.lr_decay_param: must be positive, got {}", self.optim.lr_decay_param);
        }
        if self.optim.grad_clip.is_nan() || self.optim.grad_clip < 0.0 {
            bail!("optim.grad_clip: must be 0 (off) or positive, got {}", self.optim.grad_clip);
        }
        if self.optim.margin.is_nan() || self.optim.margin < 0.0 {
            bail!("optim.margin: must be 0 or positive, got {}", self.optim.margin);
        }
        if !(self.optim.gamma >= 0.0 && self.optim.beta > 0.0) {
            bail!(
                "optim.gamma/optim.beta: need gamma >= 0 and beta > 0, got {} and {}",
                self.optim.gamma,
                self.optim.beta
            );
        }
        if self.k_fold.nums == 0 {
            bail!("k_fold.nums: must be at least 1, got 0");
        }
        Ok(())
    }

    /// The options as YAML text (recorded next to checkpoints).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("options always serialise")
    }
}

/// Applies one `key.path=value` override to the parsed YAML tree.
fn apply_override(root: &mut Value, item: &str) -> Result<()> {
    let (key, raw) = item.split_once('=').with_context(|| format!("--set {item}: expected key.path=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {item}: empty key; expected key.path=value, e.g. optim.lr=0.0001");
    }
    let value: Value =
        serde_yaml::from_str(raw).with_context(|| format!("--set {item}: the value is not valid YAML"))?;
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (depth, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            bail!("--set {item}: `{}` is not a section", parts[..depth].join("."));
        };
        let k = Value::String((*part).to_owned());
        if depth + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map.entry(k).or_insert(Value::Null);
    }
    unreachable!("a key has at least one part")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original `option/RSITMD_AMFMN.yaml` layout: absolute paths, empty `data_split:`,
    /// `False` flags and `0` for max_violation.
    pub(crate) const ORIGINAL_LAYOUT: &str = "
model:
    multiscale:
        multiscale_input_channel: 3
        multiscale_output_channel: 1
    cross_attention:
        att_type: \"soft_att\"
    seq2vec:
        arch: skipthoughts
        dir_st: /data
        type: BayesianUniSkip
        dropout: 0.25
        fixed_emb: False
    embed:
        embed_dim: 512
    name: AMFMN
dataset:
    datatype: rsitmd
    data_split:
    data_path: 'data/rsitmd_precomp/'
    image_path: '/data/rsitmd_images/'
    vocab_path: 'vocab/rsitmd_splits_vocab.json'
    batch_size: 100
    batch_size_val: 70
    workers: 3
optim:
    epochs: 70
    lr: 0.0002
    lr_decay_param: 0.7
    lr_update_epoch: 20
    grad_clip: 0
    max_violation: 0
    margin: 0.2
    resume: False
logs:
    eval_step: 1
    print_freq: 10
    ckpt_save_path: \"checkpoint/\"
    logger_name: 'logs/'
k_fold:
    experiment_name: 'rsitmd_aba_mv'
    nums: 5
    current_num: 0
";

    fn err(text: &str, sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        format!("{:#}", Options::parse(text, &sets).unwrap_err())
    }

    #[test]
    fn differences_name_what_a_resumed_run_would_change() {
        let earlier = Options::parse(ORIGINAL_LAYOUT, &[]).unwrap();
        let runtime = ["device=cpu", "threads=1", "dataset.workers=1", "optim.epochs=90"].map(String::from);
        assert!(Options::parse(ORIGINAL_LAYOUT, &runtime).unwrap().differences(&earlier).is_empty());
        let changed = ["optim.lr=0.001", "dataset.batch_size=50", "device=cpu"].map(String::from);
        let now = Options::parse(ORIGINAL_LAYOUT, &changed).unwrap();
        assert_eq!(now.differences(&earlier), ["dataset.batch_size: 100 → 50", "optim.lr: 0.0002 → 0.001"]);
    }

    #[test]
    fn original_layout_parses_with_defaults_for_extensions() {
        let o = Options::parse(ORIGINAL_LAYOUT, &[]).unwrap();
        assert_eq!(o.model.cross_attention.att_type, AttentionType::Soft);
        assert_eq!(o.model.seq2vec.kind, Seq2VecType::BayesianUniSkip);
        assert!(!o.model.seq2vec.fixed_emb);
        assert_eq!(o.dataset.data_split, None);
        assert_eq!(o.dataset.image_path, PathBuf::from("/data/rsitmd_images/"));
        assert!(!o.optim.max_violation);
        assert_eq!(o.optim.resume, Resume::No);
        assert_eq!(o.optim.lr, 0.0002);
        assert_eq!(o.k_fold.nums, 5);
        assert_eq!((o.dataset.image_size, o.dataset.resize), (256, 278));
        assert_eq!(o.dataset.rotation, [0.0, 0.0]);
        assert_eq!(o.device, Devices::from(DeviceChoice::Auto));
        assert_eq!(o.optim.margin_type, MarginType::Fixed);
        assert_eq!(o.model.resnet_weights, ResnetWeights::Auto);
    }

    #[test]
    fn yaml_round_trip_is_identity() {
        let o = Options::parse(ORIGINAL_LAYOUT, &["optim.resume=ckpt/best.safetensors".into()]).unwrap();
        let again = Options::parse(&o.to_yaml(), &[]).unwrap();
        assert_eq!(o, again);
    }

    #[test]
    fn overrides_change_nested_values_and_add_extension_keys() {
        let sets = [
            "optim.lr=0.001".to_string(),
            "model.cross_attention.att_type=fusion_att".to_string(),
            "dataset.rotation=[0, 90]".to_string(),
            "device=cuda:1".to_string(),
            "optim.max_violation=1".to_string(),
            "optim.margin_type=dynamic".to_string(),
            "model.resnet_weights=w/r18.pth".to_string(),
        ];
        let o = Options::parse(ORIGINAL_LAYOUT, &sets).unwrap();
        assert_eq!(o.optim.lr, 0.001);
        assert_eq!(o.model.cross_attention.att_type, AttentionType::Fusion);
        assert_eq!(o.dataset.rotation, [0.0, 90.0]);
        assert_eq!(o.device, Devices::from(DeviceChoice::Cuda(1)));
        let listed = Options::parse(ORIGINAL_LAYOUT, &["device=cuda:0, cuda:1".into()]).unwrap();
        assert_eq!(listed.device.list(), [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]);
        assert_eq!(listed.device.to_string(), "cuda:0,cuda:1");
        assert_eq!(Options::parse(&listed.to_yaml(), &[]).unwrap().device, listed.device);
        assert!(o.optim.max_violation);
        assert_eq!(o.optim.margin_type, MarginType::Dynamic);
        assert_eq!(o.model.resnet_weights, ResnetWeights::File("w/r18.pth".into()));
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = ORIGINAL_LAYOUT.replace("fixed_emb: False", "fixed_embb: False");
        let e = err(&text, &[]);
        assert!(e.starts_with("model.seq2vec.fixed_embb: unknown field `fixed_embb`"), "{e}");
    }

    #[test]
    fn unknown_key_from_set_names_its_path() {
        let e = err(ORIGINAL_LAYOUT, &["optim.lrr=0.1"]);
        assert!(e.starts_with("optim.lrr: unknown field `lrr`"), "{e}");
    }

    #[test]
    fn missing_key_names_its_section() {
        let text = ORIGINAL_LAYOUT.replace("    lr: 0.0002\n", "");
        assert_eq!(err(&text, &[]), "optim: missing field `lr`");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let text = ORIGINAL_LAYOUT.replace("batch_size: 100", "batch_size: many");
        let e = err(&text, &[]);
        assert!(e.starts_with("dataset.batch_size: invalid type: string \"many\""), "{e}");
    }

    #[test]
    fn bad_enum_values_list_the_choices() {
        let e = err(ORIGINAL_LAYOUT, &["model.cross_attention.att_type=hard_att"]);
        assert!(e.contains("model.cross_attention.att_type: unknown variant `hard_att`"), "{e}");
        assert!(e.contains("soft_att") && e.contains("similarity_att"), "{e}");
        let e = err(ORIGINAL_LAYOUT, &["model.seq2vec.type=Skip"]);
        assert!(e.contains("model.seq2vec.type: unknown variant `Skip`"), "{e}");
        let e = err(ORIGINAL_LAYOUT, &["device=gpu"]);
        assert!(e.contains("device: unknown device `gpu`"), "{e}");
        let e = err(ORIGINAL_LAYOUT, &["device=cpu,"]);
        assert!(e.contains("device: unknown device ``"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(err(ORIGINAL_LAYOUT, &["optim.lr=-0.1"]), "optim.lr: must be positive, got -0.1");
        assert_eq!(err(ORIGINAL_LAYOUT, &["dataset.batch_size=0"]), "dataset.batch_size: must be at least 1, got 0");
        assert!(err(ORIGINAL_LAYOUT, &["dataset.resize=200"]).starts_with("dataset.resize: 200 is smaller"));
        assert!(err(ORIGINAL_LAYOUT, &["optim.resume=True"]).starts_with("optim.resume: True is not a checkpoint"));
        assert!(err(ORIGINAL_LAYOUT, &["optim.max_violation=2"]).starts_with("optim.max_violation: expected 0 or 1"));
        assert!(
            err(ORIGINAL_LAYOUT, &["optim.margin_type=soft"]).starts_with("optim.margin_type: unknown variant `soft`")
        );
        assert!(err(ORIGINAL_LAYOUT, &["optim.grad_clip=-1"]).starts_with("optim.grad_clip: must be 0"));
        assert!(err(ORIGINAL_LAYOUT, &["k_fold.nums=0"]).starts_with("k_fold.nums: must be at least 1"));
    }

    #[test]
    fn malformed_overrides_are_refused() {
        assert!(err(ORIGINAL_LAYOUT, &["optim.lr"]).contains("expected key.path=value"));
        assert!(err(ORIGINAL_LAYOUT, &["optim..lr=1"]).contains("empty key"));
        assert!(err(ORIGINAL_LAYOUT, &["optim.lr.x=1"]).contains("`optim.lr` is not a section"));
    }

    #[test]
    fn load_prefixes_errors_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, ORIGINAL_LAYOUT.replace("nums: 5", "nums: five")).unwrap();
        let e = format!("{:#}", Options::load(&path, &[]).unwrap_err());
        assert!(e.starts_with(&format!("{}: k_fold.nums: invalid type", path.display())), "{e}");
        let e = format!("{:#}", Options::load(&dir.path().join("none.yaml"), &[]).unwrap_err());
        assert!(e.contains("cannot read option file") && e.contains("none.yaml"), "{e}");
    }
}
