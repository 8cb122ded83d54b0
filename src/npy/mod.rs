//! NumPy `.npy` / `.npz` files: reading the skip-thoughts tables and parameters (numeric
//! arrays, and the object arrays of per-word vectors that the original release pickled), and
//! reading and writing float32 score matrices.
//!
//! Score matrices go through `ndarray-npy`. The skip-thoughts readers stay hand-written because
//! no crate does their job: they stream the requested rows out of multi-GB tables (numeric or
//! pickled by Python 2) without loading the rest, and convert float64 members of `.npz` archives
//! read through the `zip` crate.

mod object_array;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, ArrayView, Dimension, IxDyn, ShapeBuilder};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::fsutil::one_line;
use crate::fsutil::owned::Outputs;

/// The largest `.npy` header accepted.
const MAX_HEADER: usize = 1 << 20;

/// The most bytes the members of one `.npz` archive may hold together (the skip-thoughts
/// archives hold under 200 MB); each member is also bounded by what deflate can expand its
/// compressed bytes to.
const ARCHIVE_LIMIT: u64 = 1 << 30;

/// Bytes converted to f32 at a time while an array is read (its raw bytes are never held whole).
const CHUNK: usize = 1 << 20;

/// A numeric array as f32 values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    /// Number of rows (first dimension; 1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

/// Element types the readers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    Object,
}

/// The parsed `.npy` header.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    dtype: Dtype,
    fortran_order: bool,
    shape: Vec<usize>,
}

fn parse_descr(descr: &str) -> Result<Dtype> {
    match descr {
        "<f4" | "|f4" => Ok(Dtype::F32),
        "<f8" | "|f8" => Ok(Dtype::F64),
        "|O" | "O" => Ok(Dtype::Object),
        other => bail!("unsupported element type {other:?} (expected little-endian float32/float64)"),
    }
}

/// Reads the magic string and header dictionary; leaves `reader` at the start of the data.
fn read_header(reader: &mut impl Read) -> Result<Header> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).context("file too short for an .npy header")?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("not an .npy file (bad magic)");
    }
    let header_len = if magic[6] == 1 {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len)?;
        u16::from_le_bytes(len) as usize
    } else {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len)?;
        u32::from_le_bytes(len) as usize
    };
    if header_len > MAX_HEADER {
        bail!("a header of {header_len} bytes (NumPy's are a few hundred)");
    }
    let text = read_bytes(reader, header_len as u64).context("the header is cut short")?;
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| -> Result<&str> {
        let start = text.find(&format!("'{key}':")).with_context(|| format!("header has no {key}"))? + key.len() + 3;
        Ok(text[start..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).context("bad descr in header")?;
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let shape_text = shape_text.strip_prefix('(').and_then(|s| s.split(')').next()).context("bad shape in header")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().context("bad shape in header"))
        .collect::<Result<Vec<_>>>()?;
    Ok(Header { dtype: parse_descr(descr)?, fortran_order, shape })
}

/// Exactly `n` bytes of `reader`, without allocating for bytes that are not there (a hostile
/// length costs nothing until the data is really read).
fn read_bytes(reader: &mut impl Read, n: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(n).read_to_end(&mut bytes)?;
    if (bytes.len() as u64) < n {
        bail!("{n} bytes expected, the data ends after {}", bytes.len());
    }
    Ok(bytes)
}

/// Bytes of the data an `.npy` header describes (checked: a hostile shape cannot overflow).
fn data_bytes(header: &Header) -> Result<u64> {
    let width: u64 = if header.dtype == Dtype::F64 { 8 } else { 4 };
    header
        .shape
        .iter()
        .try_fold(width, |n, &d| n.checked_mul(d as u64))
        .with_context(|| format!("the header's shape {:?} is too large", header.shape))
}

fn to_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
        Dtype::F64 => {
            bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        Dtype::Object => unreachable!("object arrays are unpickled"),
    }
}

/// Reorders Fortran-order data into C order.
fn fortran_to_c(data: Vec<f32>, shape: &[usize]) -> Result<Vec<f32>> {
    let array = ArrayD::from_shape_vec(IxDyn(shape).f(), data).context("the array data does not match its shape")?;
    Ok(array.iter().copied().collect())
}

/// Reads a whole numeric array from an `.npy` stream whose data can be at most `limit` bytes
/// (what the file or archive member can hold).
fn read_array(reader: &mut impl Read, limit: u64) -> Result<Array> {
    let header = read_header(reader)?;
    if header.dtype == Dtype::Object {
        bail!("holds pickled Python objects where numbers were expected");
    }
    let size = data_bytes(&header)?;
    if size > limit {
        bail!(
            "its header describes {:?} values ({size} bytes), more than the {limit} bytes there can be",
            header.shape
        );
    }
    let data = read_f32_values(reader, size, header.dtype).context("the array data is shorter than its header says")?;
    let data = if header.fortran_order { fortran_to_c(data, &header.shape)? } else { data };
    Ok(Array { shape: header.shape, data })
}

/// `size` bytes of `dtype` values from `reader` as f32, converted chunk by chunk as they arrive
/// (a hostile size costs nothing until the data is really there).
fn read_f32_values(reader: &mut impl Read, size: u64, dtype: Dtype) -> Result<Vec<f32>> {
    let mut data = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut left = size;
    while left > 0 {
        chunk.clear();
        let want = left.min(CHUNK as u64);
        reader.take(want).read_to_end(&mut chunk)?;
        if (chunk.len() as u64) < want {
            bail!("{size} bytes expected, the data ends after {}", size - left + chunk.len() as u64);
        }
        data.extend(to_f32(&chunk, dtype));
        left -= want;
    }
    Ok(data)
}

/// The shape an `.npy` file's header declares (numeric or object arrays), without reading its data.
pub fn shape(path: &Path) -> Result<Vec<usize>> {
    let file = crate::fsutil::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let header = read_header(&mut std::io::BufReader::new(file))
        .with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    Ok(header.shape)
}

/// Reads the rows `rows` (in that order) of a table in an `.npy` file, e.g. the words of a
/// vocabulary from skip-thoughts' `utable.npy`: `[rows.len(), columns...]`. Numeric C-order
/// tables are read row by row; the original release's pickled object arrays (one vector per
/// word) are streamed, keeping only the requested rows.
pub fn read_rows(path: &Path, rows: &[usize]) -> Result<Array> {
    let open = || -> Result<std::io::BufReader<std::fs::File>> {
        let file = crate::fsutil::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let mut reader = open()?;
    let file_len = reader.get_ref().metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
    let header = read_header(&mut reader).with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    if header.dtype == Dtype::Object {
        let keep: BTreeSet<usize> = rows.iter().copied().collect();
        let table = object_array::read_object_rows(&mut reader, &keep)
            .with_context(|| format!("{}: cannot read its pickled rows", path.display()))?;
        let mut data = Vec::new();
        for &r in rows {
            let row = table.rows.get(r).and_then(Option::as_ref).with_context(|| {
                format!("{}: row {r} requested but the table has {} rows", path.display(), table.rows.len())
            })?;
            data.extend_from_slice(row);
        }
        let mut shape = vec![rows.len()];
        shape.extend(&table.row_shape);
        return Ok(Array { shape, data });
    }
    if header.shape.is_empty() {
        bail!("{}: expected a table, found a scalar", path.display());
    }
    let table_rows = header.shape[0];
    if let Some(&bad) = rows.iter().find(|&&r| r >= table_rows) {
        bail!("{}: row {bad} requested but the table has {table_rows} rows", path.display());
    }
    if header.fortran_order {
        let array =
            read_array(&mut open()?, file_len).with_context(|| format!("{}: cannot read the table", path.display()))?;
        let width = array.row_len();
        let data = rows.iter().flat_map(|&r| array.data[r * width..(r + 1) * width].iter().copied()).collect();
        let mut shape = array.shape;
        shape[0] = rows.len();
        return Ok(Array { shape, data });
    }
    let data_start = reader.stream_position()?;
    let size = data_bytes(&header).with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    if data_start.checked_add(size).is_none_or(|end| end > file_len) {
        bail!(
            "{}: its header describes {:?} values, more than the file holds (truncated?)",
            path.display(),
            header.shape
        );
    }
    let row_bytes = size / table_rows.max(1) as u64;
    let columns = row_bytes as usize / if header.dtype == Dtype::F32 { 4 } else { 8 };
    let mut data = Vec::with_capacity(rows.len() * columns);
    let mut buf = vec![0u8; row_bytes as usize];
    for &r in rows {
        reader.seek(SeekFrom::Start(data_start + r as u64 * row_bytes))?;
        reader.read_exact(&mut buf).with_context(|| format!("{}: truncated at row {r}", path.display()))?;
        data.extend(to_f32(&buf, header.dtype));
    }
    let mut shape = header.shape;
    shape[0] = rows.len();
    Ok(Array { shape, data })
}

/// Reads every array of an `.npz` archive (stored or deflated members), at most 1 GiB of data
/// in all.
pub fn read_npz(path: &Path) -> Result<HashMap<String, Array>> {
    let mut left = ARCHIVE_LIMIT;
    each_npz_member(path, |name, member| {
        // What a member can hold: its declared size, within what deflate can expand its
        // compressed bytes to (about 1:1032), and what the archive has left.
        let limit = member.size().min(member.compressed_size().saturating_mul(1100)).min(left);
        let array = read_array(member, limit)?;
        left -= (array.data.len() * 4) as u64;
        Ok((name.to_owned(), array))
    })
}

/// The shape of every array of an `.npz` archive, from the members' headers, after checking that
/// each member holds the data its header describes (read through, not kept; at most 1 GiB in
/// all, as [`read_npz`]).
pub fn npz_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    let mut left = ARCHIVE_LIMIT;
    each_npz_member(path, |name, member| {
        let header = read_header(member)?;
        let size = data_bytes(&header)?;
        if size > left {
            bail!("its header describes {:?} values ({size} bytes), more than the {left} bytes left", header.shape);
        }
        let present = std::io::copy(&mut member.take(size), &mut std::io::sink())?;
        if present < size {
            bail!("the array data is shorter than its header says ({present} of {size} bytes)");
        }
        left -= size;
        Ok((name.to_owned(), header.shape))
    })
}

/// `read(name, member)` over the members of an `.npz` archive (names without `.npy`); errors name
/// the file and the member.
fn each_npz_member<T>(
    path: &Path,
    mut read: impl FnMut(&str, &mut zip::read::ZipFile<std::fs::File>) -> Result<(String, T)>,
) -> Result<HashMap<String, T>> {
    let file = crate::fsutil::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{}: not an .npz (zip) file", path.display()))?;
    let mut values = HashMap::new();
    for i in 0..archive.len() {
        let mut member =
            archive.by_index(i).with_context(|| format!("{}: member {i} cannot be read", path.display()))?;
        let name = member.name().with_context(|| format!("{}: member {i} has no name", path.display()))?;
        let name = name.trim_end_matches(".npy").to_owned();
        let (key, value) = read(&name, &mut member).with_context(|| format!("{}: member {name}", path.display()))?;
        values.insert(key, value);
    }
    Ok(values)
}

/// Writes a float32 array as `.npy` (C order), atomically, as one of `outputs`.
pub fn write_f32<D: Dimension>(outputs: &mut Outputs, path: &Path, array: &ArrayView<f32, D>) -> Result<()> {
    outputs.write_with(path, |file| {
        let mut writer = std::io::BufWriter::new(file);
        array.write_npy(&mut writer)?;
        std::io::Write::flush(&mut writer)?;
        Ok(())
    })
}

/// Reads a whole numeric `.npy` file (float32 or float64, any shape) as float32. The header is
/// checked against the file's length before the data is read.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    let file = crate::fsutil::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let read = || -> Result<ArrayD<f32>> {
        let length = file.metadata()?.len();
        let mut reader = std::io::BufReader::new(&file);
        let header = read_header(&mut reader)?;
        let width = match header.dtype {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::Object => bail!("holds pickled Python objects where numbers were expected"),
        };
        let data_bytes = header.shape.iter().try_fold(width, |n: u64, &d| n.checked_mul(d as u64));
        let expected = data_bytes.and_then(|n| n.checked_add(reader.stream_position().ok()?));
        if expected != Some(length) {
            bail!("the file has {length} bytes, its header describes {:?} values", header.shape);
        }
        reader.rewind()?;
        let parsed = match header.dtype {
            Dtype::F64 => ArrayD::<f64>::read_npy(reader).map(|a| a.mapv(|v| v as f32)),
            _ => ArrayD::<f32>::read_npy(reader),
        };
        parsed.map_err(|e| match e {
            ndarray_npy::ReadNpyError::ParseHeader(_) => anyhow::anyhow!("its header cannot be parsed"),
            other => anyhow::anyhow!(one_line(&other.to_string())),
        })
    };
    read().with_context(|| format!("{}: not a readable .npy file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let data: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect();
        let mut outputs = Outputs::new(dir.path(), "scores", false).unwrap();
        write_f32(&mut outputs, &path, &ArrayView::from_shape((3, 4), &data).unwrap()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes.len() - data.len() * 4) % 64, 0, "header padded to 64 bytes");
        let back = read_f32(&path).unwrap();
        assert_eq!(
            Array { shape: back.shape().to_vec(), data: back.iter().copied().collect() },
            Array { shape: vec![3, 4], data: data.clone() }
        );
        let rows = read_rows(&path, &[2, 0]).unwrap();
        assert_eq!(rows.shape, [2, 4]);
        assert_eq!(rows.data, [4.0, 4.5, 5.0, 5.5, 0.0, 0.5, 1.0, 1.5]);
        assert!(
            format!("{:#}", read_rows(&path, &[3]).unwrap_err()).contains("row 3 requested but the table has 3 rows")
        );
    }

    #[test]
    fn fortran_order_is_reordered() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        assert_eq!(fortran_to_c(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0], &[2, 3]).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // [2, 2, 3]: element (i, j, k) is stored at i + 2j + 4k; C order runs k fastest.
        let stored: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let expected = [0.0, 4.0, 8.0, 2.0, 6.0, 10.0, 1.0, 5.0, 9.0, 3.0, 7.0, 11.0];
        assert_eq!(fortran_to_c(stored, &[2, 2, 3]).unwrap(), expected);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, b"not numpy").unwrap();
        assert!(format!("{:#}", read_f32(&path).unwrap_err()).contains("x.npy: not a readable .npy file"));
        let full = dir.path().join("full.npy");
        let mut outputs = Outputs::new(dir.path(), "scores", false).unwrap();
        write_f32(&mut outputs, &full, &ArrayView::from_shape((2, 2), &[1.0f32, 2.0, 3.0, 4.0][..]).unwrap()).unwrap();
        let mut bytes = std::fs::read(&full).unwrap();
        bytes.truncate(bytes.len() - 4);
        std::fs::write(&path, &bytes).unwrap();
        let err = format!("{:#}", read_f32(&path).unwrap_err());
        assert!(err.contains("the file has 140 bytes, its header describes [2, 2] values"), "{err}");
    }
}
