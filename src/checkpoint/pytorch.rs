//! `torch.save` files read natively, without Python or libtorch's unpickler: the zip format of
//! PyTorch ≥ 1.6 (`data.pkl` plus one member per storage) and the legacy format (magic number,
//! protocol, system info, the pickle, the storage keys, then the storages one after another).
//! Only what rebuilds tensors and plain containers is accepted (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `_rebuild_tensor`, `_rebuild_parameter`, storage types);
//! any other global is refused by name. Sizes are checked against the file before anything is
//! allocated: storages hold at most what the file can (torch.save stores them uncompressed),
//! every tensor lies inside its storage and holds no more elements than it (no stride-0 view can
//! expand a few bytes into gigabytes), views of one storage share it, and what the pickle
//! builds is bounded by its size ([`crate::pickle`]).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::TensorMap;
use crate::pickle::{self, Pickle, Plain, Resolver};

type Value = pickle::Value<TorchObject>;

/// The largest `data.pkl` accepted (a state dict's pickle is a few hundred kB).
const MAX_PICKLE: u64 = 256 << 20;

/// What a file's storages and pickle may hold beyond twice its own size: torch.save stores them
/// uncompressed, so only a recompressed file (or a zip bomb) holds more.
const BEYOND_FILE: u64 = 64 << 20;

/// The most values the original's `options` entry may hold (a YAML file of a few dozen keys):
/// shared dicts can describe exponentially many.
const MAX_OPTION_VALUES: usize = 100_000;

/// The magic number that starts a legacy file (`torch.serialization.MAGIC_NUMBER`), as the
/// little-endian bytes of its pickled integer.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// What a `torch.save` file holds: the tensors of its state dict and, for the original code's
/// checkpoints (`{'model': state_dict, 'epoch', 'best_rsum', 'Eiters', 'options'}`), the rest.
#[derive(Debug)]
pub struct TorchCheckpoint {
    /// The state dict, with DataParallel's `module.` prefixes removed.
    pub tensors: TensorMap,
    pub epoch: Option<i64>,
    pub best_rsum: Option<f64>,
    pub eiters: Option<i64>,
    /// The options the original code trained with (its YAML as a dict), as JSON.
    pub options: Option<serde_json::Value>,
}

/// What PyTorch's globals build.
#[derive(Debug, Clone, PartialEq)]
pub enum TorchObject {
    /// A storage named by a persistent id: its key, element kind and number of elements.
    Storage { key: String, kind: Kind, numel: usize },
    /// A tensor view of a storage.
    Tensor(TensorView),
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView {
    storage: String,
    kind: Kind,
    storage_numel: usize,
    offset: usize,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The element kind of a PyTorch storage type (`torch.FloatStorage`, ...).
fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn int_tuple(value: &Value, what: &str) -> Result<Vec<i64>> {
    match value {
        Value::Tuple(items) => items
            .iter()
            .map(|v| match v {
                Value::Int(n) if *n >= 0 => Ok(*n),
                _ => bail!("a tensor's {what} is not a tuple of non-negative integers"),
            })
            .collect(),
        _ => bail!("a tensor's {what} is not a tuple"),
    }
}

/// A tensor view of `storage`, refused unless every element it can reach lies inside it.
fn tensor_view(storage: &Value, offset: &Value, size: &Value, stride: &Value) -> Result<Value> {
    let Value::Object(TorchObject::Storage { key, kind, numel }) = storage else {
        bail!("a tensor is rebuilt from something other than a storage")
    };
    let offset = offset.as_usize().context("a tensor's storage offset is not a non-negative integer")?;
    let (size, stride) = (int_tuple(size, "size")?, int_tuple(stride, "stride")?);
    if size.len() != stride.len() {
        bail!("a tensor has {} sizes but {} strides", size.len(), stride.len());
    }
    let elements = size.iter().try_fold(1i64, |n, &d| n.checked_mul(d)).context("a tensor's size overflows")?;
    if elements > *numel as i64 {
        bail!("a tensor of size {size:?} holds more elements than its storage of {numel} (an expanded view)");
    }
    if elements > 0 {
        let reach = size
            .iter()
            .zip(&stride)
            .try_fold(offset as i64, |end, (&d, &s)| (d - 1).checked_mul(s).and_then(|step| end.checked_add(step)));
        if reach.is_none_or(|last| last >= *numel as i64) {
            bail!("a tensor of size {size:?} at offset {offset} reaches past its storage of {numel} elements");
        }
    }
    let view = TensorView { storage: key.clone(), kind: *kind, storage_numel: *numel, offset, size, stride };
    Ok(Value::Object(TorchObject::Tensor(view)))
}

/// Builds tensors and dicts, nothing else; remembers the storages the persistent ids name
/// (key → element kind and count).
#[derive(Default)]
struct Torch {
    storages: HashMap<String, (Kind, usize)>,
}

impl Resolver for Torch {
    type Object = TorchObject;

    fn call(&mut self, pickle: &mut Pickle<TorchObject>, module: &str, name: &str, args: Vec<Value>) -> Result<Value> {
        match (module, name, args.as_slice()) {
            ("collections", "OrderedDict", []) => Ok(pickle.new_dict()),
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor", [storage, offset, size, stride, ..]) => {
                tensor_view(storage, offset, size, stride)
            }
            ("torch._utils", "_rebuild_parameter", [tensor @ Value::Object(TorchObject::Tensor(_)), ..]) => {
                Ok(tensor.clone())
            }
            _ => bail!(
                "unsupported pickle: it calls {module}.{name}; only tensors, dicts and plain values are read \
                 (save the model's state_dict)"
            ),
        }
    }

    fn build(&mut self, object: Value, _state: Value) -> Result<Value> {
        match object {
            // An OrderedDict's attributes (a state dict's `_metadata`), a tensor's hooks state.
            Value::Dict(_) | Value::Object(TorchObject::Tensor(_)) => Ok(object),
            _ => bail!("unsupported pickle: BUILD on another object"),
        }
    }

    fn persistent(&mut self, id: Value) -> Result<Value> {
        let Value::Tuple(parts) = id else { bail!("a persistent id that is not a tuple") };
        let [tag, Value::Global(module, type_name), key, _location, numel, rest @ ..] = parts.as_slice() else {
            bail!("a persistent id that is not a storage")
        };
        if tag.as_str() != Some("storage") || module != "torch" {
            bail!("a persistent id that is not a storage");
        }
        if rest.first().is_some_and(|view| *view != Value::None) {
            bail!("storage views (files of PyTorch < 0.4) are not supported");
        }
        let kind = storage_kind(type_name).with_context(|| format!("unsupported storage type torch.{type_name}"))?;
        let key = key.as_str().context("a storage key that is not text")?.to_owned();
        let numel = numel.as_usize().context("a storage size that is not a non-negative integer")?;
        if self.storages.insert(key.clone(), (kind, numel)).is_some_and(|known| known != (kind, numel)) {
            bail!("the storage {key} is named twice with different types or sizes");
        }
        Ok(Value::Object(TorchObject::Storage { key, kind, numel }))
    }
}

/// Reads a `torch.save` file (zip or legacy format).
pub fn read(path: &Path) -> Result<TorchCheckpoint> {
    let bytes = crate::fsutil::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{}: not a readable PyTorch state dict", path.display()))
}

/// Parses the bytes of a `torch.save` file.
pub fn parse(bytes: &[u8]) -> Result<TorchCheckpoint> {
    let (pickle, storages) =
        if bytes.starts_with(ZIP_MAGIC) { read_zip(std::io::Cursor::new(bytes))? } else { read_legacy(bytes)? };
    let storages = storages
        .into_iter()
        .map(|(key, (kind, bytes))| {
            let numel = (bytes.len() / kind.elt_size_in_bytes()) as i64;
            (key, Tensor::from_data_size(&bytes, &[numel], kind))
        })
        .collect();
    checkpoint(&pickle, &storages)
}

/// The first bytes of a zip archive.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Whether `start` (a file's first 32 bytes or more) is the start of a `torch.save` file: a zip
/// archive, or a pickle whose first value is the legacy format's magic number.
pub fn is_pytorch(start: &[u8]) -> bool {
    let head = &start[..start.len().min(32)];
    start.starts_with(ZIP_MAGIC) || (start.first() == Some(&0x80) && head.windows(10).any(|w| w == LEGACY_MAGIC))
}

/// Whether the file at `path` is a `torch.save` file ([`is_pytorch`]).
pub fn is_pytorch_file(path: &Path) -> bool {
    let mut start = Vec::new();
    crate::fsutil::open(path).is_ok_and(|f| f.take(32).read_to_end(&mut start).is_ok()) && is_pytorch(&start)
}

/// A file's pickle and its storages (element kind and bytes), by key.
type Contents = (Pickle<TorchObject>, HashMap<String, (Kind, Vec<u8>)>);

/// A storage as a flat tensor of its elements, by key (shared by every view of it).
type Storages = HashMap<String, Tensor>;

/// Bytes of a storage of `numel` elements of `kind`.
fn storage_bytes(kind: Kind, numel: usize) -> Result<u64> {
    (numel as u64).checked_mul(kind.elt_size_in_bytes() as u64).context("a storage size overflows")
}

/// The zip format: `<name>/data.pkl` and the storages `<name>/data/<key>`.
fn read_zip(file: std::io::Cursor<&[u8]>) -> Result<Contents> {
    let length = file.get_ref().len();
    let room = (length as u64).saturating_mul(2) + BEYOND_FILE;
    let mut archive = zip::ZipArchive::new(file).context("not a zip archive")?;
    let pickle_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .context("no data.pkl in the archive")?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    if let Ok(mut order) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        order.by_ref().take(16).read_to_string(&mut text)?;
        if text != "little" {
            bail!("a big-endian file (byteorder {text:?})");
        }
    }
    let mut torch = Torch::default();
    let pickle = pickle::load(&mut archive.by_name(&pickle_name)?.take(MAX_PICKLE.min(room)), &mut torch)?;
    let needed = torch
        .storages
        .values()
        .try_fold(0u64, |sum, &(kind, numel)| storage_bytes(kind, numel).ok().and_then(|bytes| sum.checked_add(bytes)));
    if needed.is_none_or(|bytes| bytes > room) {
        bail!(
            "its tensors claim more bytes than a torch.save file of {} bytes can hold (storages are stored \
             uncompressed)",
            length
        );
    }
    let mut storages = HashMap::new();
    for (key, (kind, numel)) in torch.storages {
        let name = format!("{prefix}data/{key}");
        let member = archive.by_name(&name).with_context(|| format!("the storage {name} is missing"))?;
        let bytes = storage_bytes(kind, numel)?;
        if member.size() < bytes {
            bail!("the storage {name} holds {} bytes, its tensors need {bytes}", member.size());
        }
        storages.insert(key, (kind, read_exactly(member, bytes).with_context(|| format!("the storage {name}"))?));
    }
    Ok((pickle, storages))
}

/// `n` bytes of `reader`, allocated only as they arrive.
fn read_exactly(reader: impl Read, n: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(n).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < n {
        bail!("{n} bytes expected, the data ends after {}", bytes.len());
    }
    Ok(bytes)
}

/// The legacy format: magic number, protocol 1001, system info, the pickle, the storage keys,
/// then each storage as its element count (8 bytes) and its data.
fn read_legacy(bytes: &[u8]) -> Result<Contents> {
    let length = bytes.len() as u64;
    let mut reader = bytes;
    let magic = pickle::load(&mut reader, &mut Plain).context("no magic number")?;
    if magic.root != pickle::Value::BigInt(LEGACY_MAGIC.to_vec()) {
        bail!("neither a zip archive nor a legacy PyTorch file (no magic number)");
    }
    let protocol = pickle::load(&mut reader, &mut Plain)?;
    if protocol.root != pickle::Value::Int(1001) {
        bail!("legacy protocol {:?}, expected 1001", protocol.root);
    }
    let info = pickle::load(&mut reader, &mut Plain)?;
    let little = info.dict(&info.root).and_then(|d| d.iter().find(|(k, _)| k.as_str() == Some("little_endian")));
    if little.is_some_and(|(_, v)| *v != pickle::Value::Bool(true)) {
        bail!("a big-endian file");
    }
    let mut torch = Torch::default();
    let pickle = pickle::load(&mut reader, &mut torch)?;
    let keys = pickle::load(&mut reader, &mut Plain)?;
    let keys = keys.list(&keys.root).context("no list of storage keys")?;
    let mut storages = HashMap::new();
    for key in keys {
        let key = key.as_str().context("a storage key that is not text")?.to_owned();
        let mut count = [0u8; 8];
        reader.read_exact(&mut count).with_context(|| format!("the storage {key} is missing"))?;
        let numel = u64::from_le_bytes(count);
        let &(kind, wanted) = torch.storages.get(&key).with_context(|| format!("the storage {key} is not named"))?;
        let bytes = numel.checked_mul(kind.elt_size_in_bytes() as u64).filter(|&b| b <= length);
        let bytes = bytes.with_context(|| format!("the storage {key} claims {numel} elements, more than the file"))?;
        if (wanted as u64) > numel {
            bail!("the storage {key} holds {numel} elements, its tensors need {wanted}");
        }
        let data = read_exactly(&mut reader, bytes).with_context(|| format!("the storage {key}"))?;
        storages.insert(key.clone(), (kind, data));
    }
    Ok((pickle, storages))
}

/// The tensor of `view`: a view of its storage's tensor (views of one storage share it, as in
/// PyTorch; none holds more elements than its storage).
fn materialize(view: &TensorView, storages: &Storages) -> Result<Tensor> {
    let storage = storages.get(&view.storage).with_context(|| format!("the storage {} is missing", view.storage))?;
    if storage.kind() != view.kind || storage.numel() < view.storage_numel {
        bail!("the storage {} does not hold the {:?} elements its tensors need", view.storage, view.kind);
    }
    Ok(storage.f_as_strided(&view.size, &view.stride, Some(view.offset as i64))?)
}

/// The state dict of a file (the root dict, or its `model`/`state_dict` entry) and the original
/// code's training position beside it.
fn checkpoint(pickle: &Pickle<TorchObject>, storages: &Storages) -> Result<TorchCheckpoint> {
    let root = pickle.dict(&pickle.root).context("it holds no dict")?;
    let entry = |name: &str| root.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v);
    let state = entry("model").or_else(|| entry("state_dict")).unwrap_or(&pickle.root);
    let entries = pickle.dict(state).context("its `model` entry is not a state dict")?;
    let mut tensors = TensorMap::new();
    for (key, value) in entries {
        let key = key.as_str().context("a state dict key that is not text")?;
        let Value::Object(TorchObject::Tensor(view)) = value else {
            bail!("`{key}` is not a tensor");
        };
        let name = key.strip_prefix("module.").unwrap_or(key).to_owned();
        tensors.insert(name, materialize(view, storages).with_context(|| format!("`{key}`"))?);
    }
    let int = |name: &str| match entry(name) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let best_rsum = match entry("best_rsum") {
        Some(Value::Float(x)) => Some(*x),
        Some(Value::Int(n)) => Some(*n as f64),
        _ => None,
    };
    let mut budget = MAX_OPTION_VALUES;
    let options = entry("options").map(|o| to_json(pickle, o, 0, &mut budget)).transpose()?;
    Ok(TorchCheckpoint { tensors, epoch: int("epoch"), best_rsum, eiters: int("Eiters"), options })
}

/// A plain value as JSON (dicts, lists, tuples, text, numbers, booleans, None), of at most
/// `budget` values in all (taken from it).
fn to_json(pickle: &Pickle<TorchObject>, value: &Value, depth: usize, budget: &mut usize) -> Result<serde_json::Value> {
    if depth > 64 {
        bail!("the options nest deeper than 64 levels");
    }
    *budget = budget.checked_sub(1).with_context(|| {
        format!("the options hold more than {MAX_OPTION_VALUES} values (dicts or lists shared many times over)")
    })?;
    Ok(match value {
        Value::None => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Float(x) => serde_json::Value::from(*x),
        Value::Str(_) | Value::Bytes(_) => serde_json::Value::from(value.as_str().unwrap_or_default()),
        Value::Tuple(items) => items.iter().map(|v| to_json(pickle, v, depth + 1, budget)).collect::<Result<_>>()?,
        Value::List(_) => {
            let items = pickle.list(value).unwrap_or_default();
            items.iter().map(|v| to_json(pickle, v, depth + 1, budget)).collect::<Result<_>>()?
        }
        Value::Dict(_) => {
            let mut object = serde_json::Map::new();
            for (k, v) in pickle.dict(value).unwrap_or_default() {
                let key = k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"));
                object.insert(key, to_json(pickle, v, depth + 1, budget)?);
            }
            serde_json::Value::Object(object)
        }
        _ => bail!("the options hold something other than plain values"),
    })
}
