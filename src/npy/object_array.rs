//! The object arrays `numpy.save` writes by pickling: an outer array whose elements are
//! numeric arrays (the skip-thoughts release stores `utable.npy` and `btable.npy` this way,
//! pickled by Python 2). The [`crate::pickle`] machine runs the pickle; this resolver builds
//! `numpy.dtype` and `_reconstruct` objects itself and refuses every other global.

use std::collections::BTreeSet;
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};

use crate::pickle::{self, Pickle, Resolver};

type Value = pickle::Value<NumpyObject>;

/// The rows of an object array of numeric arrays; rows not asked for are `None`.
#[derive(Debug)]
pub struct ObjectRows {
    pub rows: Vec<Option<Vec<f32>>>,
    /// Shape of one element (e.g. `[620]`).
    pub row_shape: Vec<usize>,
}

/// What NumPy's globals build.
#[derive(Debug, Clone, PartialEq)]
enum NumpyObject {
    /// A `numpy.dtype`: its type string (`f4`, `O8`, ...) and byte order (`<`, `|`, `>`).
    Dtype(String, char),
    /// An array from `_reconstruct`, filled by BUILD.
    Array(Box<ArrayValue>),
    /// An element that was not asked for.
    Dropped,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ArrayValue {
    shape: Vec<usize>,
    values: Option<Vec<f32>>,
    /// The list (in the pickle's lists) of an object array's elements.
    elements: Option<usize>,
}

/// Builds NumPy's objects, keeping only the elements in `keep`.
struct Numpy<'k> {
    keep: &'k BTreeSet<usize>,
}

impl Resolver for Numpy<'_> {
    type Object = NumpyObject;

    fn call(&mut self, _: &mut Pickle<NumpyObject>, module: &str, name: &str, args: Vec<Value>) -> Result<Value> {
        let object = match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => NumpyObject::Array(Box::default()),
            ("numpy", "dtype") => match args.first().and_then(Value::as_str) {
                Some(t) => NumpyObject::Dtype(t.to_owned(), '|'),
                None => bail!("unsupported pickle: numpy.dtype without a type string"),
            },
            ("_codecs", "encode") => match args.first() {
                Some(Value::Str(s)) => return Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())),
                _ => bail!("unsupported pickle: _codecs.encode without a string"),
            },
            _ => bail!("unsupported pickle: it calls {module}.{name}"),
        };
        Ok(Value::Object(object))
    }

    fn build(&mut self, object: Value, state: Value) -> Result<Value> {
        let built = match object {
            Value::Object(NumpyObject::Dtype(t, _)) => NumpyObject::Dtype(t, byte_order(&state)),
            Value::Object(NumpyObject::Array(_)) => NumpyObject::Array(Box::new(build_array(state)?)),
            Value::Object(NumpyObject::Dropped) => NumpyObject::Dropped,
            _ => bail!("unsupported pickle: BUILD on another object"),
        };
        Ok(Value::Object(built))
    }

    fn append(&mut self, index: usize, item: Value) -> Value {
        match item {
            Value::Object(NumpyObject::Array(_)) if !self.keep.contains(&index) => Value::Object(NumpyObject::Dropped),
            other => other,
        }
    }

    fn heavy(&self, object: &NumpyObject) -> bool {
        matches!(object, NumpyObject::Array(a) if a.values.as_ref().is_some_and(|v| v.len() > 64))
    }
}

/// The byte order in a `numpy.dtype`'s BUILD state (`<`, `>` or `|`).
fn byte_order(state: &Value) -> char {
    match state {
        Value::Tuple(s) => match s.get(1) {
            Some(Value::Str(o)) => o.chars().next().unwrap_or('|'),
            Some(Value::Bytes(o)) => o.first().map_or('|', |&b| b as char),
            _ => '|',
        },
        _ => '|',
    }
}

/// An array from the BUILD state of `_reconstruct`: `(version, shape, dtype, fortran, data)`,
/// with data either raw bytes (a numeric array) or a list (an object array's elements).
fn build_array(state: Value) -> Result<ArrayValue> {
    let Value::Tuple(s) = state else { bail!("unsupported pickle: array state is not a tuple") };
    let [_, Value::Tuple(shape), Value::Object(NumpyObject::Dtype(t, order)), Value::Bool(fortran), data] =
        s.as_slice()
    else {
        bail!("unsupported pickle: unexpected array state")
    };
    let shape = shape
        .iter()
        .map(|d| match d {
            Value::Int(n) if *n >= 0 => Ok(*n as usize),
            _ => Err(anyhow!("unsupported pickle: array shape")),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut array = ArrayValue { shape, ..Default::default() };
    match data {
        Value::Bytes(bytes) => {
            let values = decode_values(bytes, t, *order)?;
            if values.len() != array.shape.iter().product::<usize>() {
                bail!("a pickled array's data does not match its shape");
            }
            if *fortran && array.shape.len() > 1 {
                bail!("Fortran-order pickled elements are not supported");
            }
            array.values = Some(values);
        }
        Value::List(list) => array.elements = Some(*list),
        _ => bail!("unsupported pickle: array data of another kind"),
    }
    Ok(array)
}

/// Little-endian float32 or float64 bytes as float32 values.
fn decode_values(bytes: &[u8], dtype: &str, order: char) -> Result<Vec<f32>> {
    if order == '>' {
        bail!("big-endian arrays are not supported");
    }
    Ok(match dtype {
        "f4" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
        "f8" => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
        other => bail!("unsupported element type {other} in the pickled arrays"),
    })
}

/// Reads the pickle that follows an object-array `.npy` header, keeping the rows in `keep`.
pub fn read_object_rows(reader: &mut impl Read, keep: &BTreeSet<usize>) -> Result<ObjectRows> {
    let mut pickle = pickle::load(reader, &mut Numpy { keep })?;
    let Value::Object(NumpyObject::Array(outer)) = std::mem::replace(&mut pickle.root, Value::None) else {
        bail!("the pickle does not hold an array")
    };
    let list = outer.elements.context("the pickled array is not an object array")?;
    let elements = std::mem::take(pickle.lists.get_mut(list).context("the pickled array's elements are missing")?);
    let mut row_shape: Option<Vec<usize>> = None;
    let mut rows = Vec::with_capacity(elements.len());
    for (i, element) in elements.into_iter().enumerate() {
        match element {
            Value::Object(NumpyObject::Array(a)) => {
                let values = a.values.with_context(|| format!("element {i} is not a numeric array"))?;
                let shape: Vec<usize> = a.shape.into_iter().skip_while(|&d| d == 1).collect();
                match &row_shape {
                    Some(s) if *s != shape => bail!("element {i} has shape {shape:?}, others {s:?}"),
                    _ => row_shape = Some(shape),
                }
                rows.push(Some(values));
            }
            Value::Object(NumpyObject::Dropped) => rows.push(None),
            _ => bail!("element {i} is not an array"),
        }
    }
    Ok(ObjectRows { rows, row_shape: row_shape.unwrap_or_default() })
}
