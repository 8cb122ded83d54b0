//! Safetensors files: the one reader and writer of named tensors that checkpoints, optimizer
//! states and image indexes use. Files are written atomically; a JSON description may ride
//! along in the header's metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::fsutil::{sha256_hex, write_atomic};

/// Named tensors, ordered by name.
pub type TensorMap = BTreeMap<String, Tensor>;

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        other => bail!("tensors of kind {other:?} cannot be saved"),
    })
}

fn kind_of(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        other => bail!("unsupported element type {other:?}"),
    })
}

/// The raw little-endian bytes and shape of a tensor, copied to the CPU.
fn to_bytes(tensor: &Tensor) -> (Vec<usize>, Vec<u8>) {
    let tensor = tensor.to_device(Device::Cpu).contiguous();
    let numel = tensor.numel();
    let mut bytes = vec![0u8; numel * tensor.kind().elt_size_in_bytes()];
    tensor.copy_data_u8(&mut bytes, numel);
    (tensor.size().iter().map(|&d| d as usize).collect(), bytes)
}

/// The bytes of a safetensors file of `tensors` that carries `description` as JSON under the
/// metadata `key` (an image index, a scene's crop codes).
pub fn serialize_described<T: serde::Serialize>(tensors: &TensorMap, key: &str, description: &T) -> Result<Vec<u8>> {
    serialize(tensors, Some(HashMap::from([(key.to_string(), serde_json::to_string(description)?)])))
}

/// Reads a file written by [`serialize_described`]: its tensors and its description; errors
/// name the file and `what` it should be.
pub fn read_described<T: serde::de::DeserializeOwned>(path: &Path, key: &str, what: &str) -> Result<(TensorMap, T)> {
    let (tensors, metadata) =
        read_with_metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let json = metadata
        .get(key)
        .with_context(|| format!("{}: safetensors without an amfmn {what} description", path.display()))?;
    let description =
        serde_json::from_str(json).with_context(|| format!("{}: bad {what} description", path.display()))?;
    Ok((tensors, description))
}

/// The bytes of a safetensors file of `tensors` (any device, any layout), with `metadata` in
/// the header.
pub fn serialize(tensors: &TensorMap, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let raw: Vec<(&String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (shape, bytes) = to_bytes(t);
            Ok((name, dtype_of(t.kind())?, shape, bytes))
        })
        .collect::<Result<_>>()?;
    let views = raw
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .with_context(|| format!("{name}: inconsistent tensor"))?;
            Ok((name.as_str(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, metadata)?)
}

/// Writes `tensors` (any device, any layout) to a safetensors file atomically; returns the
/// SHA-256 of what it wrote.
pub fn write_safetensors(path: &Path, tensors: &TensorMap) -> Result<String> {
    let bytes = serialize(tensors, None).with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)?;
    Ok(sha256_hex(&bytes))
}

/// Reads every tensor of a safetensors file, with the header's metadata.
pub fn read_with_metadata(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = crate::fsutil::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_with_metadata(&bytes, path)
}

/// The tensors and header metadata of the safetensors `bytes` read from `path`.
pub fn parse_with_metadata(bytes: &[u8], path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let parsed =
        SafeTensors::deserialize(bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let tensors = parsed
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let kind = kind_of(view.dtype()).with_context(|| format!("{}: tensor {name}", path.display()))?;
            Ok((name, Tensor::f_from_data_size(view.data(), &shape, kind)?))
        })
        .collect::<Result<TensorMap>>()?;
    Ok((tensors, header.metadata().clone().unwrap_or_default()))
}

/// Reads a safetensors file into a name → tensor map.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    Ok(read_with_metadata(path)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_and_metadata_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let tensors = TensorMap::from([
            ("a".to_string(), Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0]).view([2, 2])),
            ("b".to_string(), Tensor::from_slice(&[7i64])),
            ("c".to_string(), Tensor::from_slice(&[1.0f64, 2.0, 3.0]).view([3, 1]).tr()),
        ]);
        let metadata = HashMap::from([("k".to_string(), "{\"v\": 1}".to_string())]);
        let bytes = serialize(&tensors, Some(metadata.clone())).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let (back, meta) = read_with_metadata(&path).unwrap();
        assert_eq!(meta, metadata);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        for (name, t) in &tensors {
            assert_eq!(back[name].kind(), t.kind(), "{name}");
            assert_eq!(back[name].size(), t.size(), "{name}");
            assert!(back[name].equal(&t.contiguous()), "{name}");
        }
        let err = format!("{:#}", read_safetensors(&dir.path().join("missing")).unwrap_err());
        assert!(err.contains("cannot read"), "{err}");
    }
}
