//! A minimal unpickler for what `numpy.save` writes for object arrays: a pickled outer array
//! whose elements are numeric arrays (the skip-thoughts release stores `utable.npy` and
//! `btable.npy` this way, pickled by Python 2). It understands the opcodes of protocols 2-4 that
//! numpy's pickles use, builds `numpy.dtype` and `_reconstruct` objects itself, and never runs
//! anything else: an unknown global is an error.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};

/// The rows of an object array of numeric arrays; rows not asked for are `None`.
#[derive(Debug)]
pub struct ObjectRows {
    pub rows: Vec<Option<Vec<f32>>>,
    /// Shape of one element (e.g. `[620]`).
    pub row_shape: Vec<usize>,
}

/// Largest byte string kept in the memo; bigger ones are array payloads, never shared.
const MEMO_BYTES_LIMIT: usize = 256;

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    /// Index into the list arena.
    List(usize),
    Dict,
    Global(String, String),
    /// A `numpy.dtype`: its type string (`f4`, `O8`, ...) and byte order (`<`, `|`, `>`).
    Dtype(String, char),
    /// An array from `_reconstruct`, filled by BUILD.
    Array(Box<ArrayValue>),
    /// An element that was not asked for.
    Dropped,
    /// A large byte string that was not memoised.
    Unmemoized,
}

#[derive(Debug, Clone, Default)]
struct ArrayValue {
    shape: Vec<usize>,
    values: Option<Vec<f32>>,
    elements: Option<usize>,
}

struct Machine<'k> {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    lists: Vec<Vec<Value>>,
    keep: &'k BTreeSet<usize>,
}

fn read_n<const N: usize>(r: &mut impl Read) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).context("the pickle ends early")?;
    Ok(b)
}

fn read_vec(r: &mut impl Read, n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    r.read_exact(&mut b).context("the pickle ends early")?;
    Ok(b)
}

fn read_line(r: &mut impl Read) -> Result<String> {
    let mut out = Vec::new();
    loop {
        let [b] = read_n::<1>(r)?;
        if b == b'\n' {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b);
    }
}

impl Machine<'_> {
    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| anyhow!("pickle stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("pickle mark missing"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<&Value> {
        self.stack.last().ok_or_else(|| anyhow!("pickle stack underflow"))
    }

    fn memoize(&mut self, key: u32) -> Result<()> {
        let value = match self.top()? {
            Value::Bytes(b) if b.len() > MEMO_BYTES_LIMIT => Value::Unmemoized,
            Value::Array(_) => Value::Array(Box::default()),
            v => v.clone(),
        };
        self.memo.insert(key, value);
        Ok(())
    }

    fn get(&mut self, key: u32) -> Result<()> {
        let value = self.memo.get(&key).cloned().ok_or_else(|| anyhow!("pickle memo key {key} missing"))?;
        if matches!(value, Value::Unmemoized) {
            bail!("unsupported pickle: a large byte string is referenced twice");
        }
        self.stack.push(value);
        Ok(())
    }

    fn append(&mut self, list: usize, items: Vec<Value>) {
        for item in items {
            let index = self.lists[list].len();
            let item = match item {
                Value::Array(_) if !self.keep.contains(&index) => Value::Dropped,
                other => other,
            };
            self.lists[list].push(item);
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(module, name) = callable else { bail!("unsupported pickle: calls a non-global") };
        let Value::Tuple(args) = args else { bail!("unsupported pickle: arguments are not a tuple") };
        match (module.as_str(), name.as_str()) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Ok(Value::Array(Box::default())),
            ("numpy", "dtype") => match args.first() {
                Some(Value::Str(t)) => Ok(Value::Dtype(t.clone(), '|')),
                Some(Value::Bytes(t)) => Ok(Value::Dtype(String::from_utf8_lossy(t).into_owned(), '|')),
                _ => bail!("unsupported pickle: numpy.dtype without a type string"),
            },
            ("_codecs", "encode") => match args.first() {
                Some(Value::Str(s)) => Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())),
                _ => bail!("unsupported pickle: _codecs.encode without a string"),
            },
            _ => bail!("unsupported pickle: it calls {module}.{name}"),
        }
    }

    fn build(&mut self, object: Value, state: Value) -> Result<Value> {
        match object {
            Value::Dtype(t, _) => {
                let order = match &state {
                    Value::Tuple(s) => match s.get(1) {
                        Some(Value::Str(o)) => o.chars().next().unwrap_or('|'),
                        Some(Value::Bytes(o)) => o.first().map_or('|', |&b| b as char),
                        _ => '|',
                    },
                    _ => '|',
                };
                Ok(Value::Dtype(t, order))
            }
            Value::Array(_) => {
                let Value::Tuple(s) = state else { bail!("unsupported pickle: array state is not a tuple") };
                let [_, Value::Tuple(shape), Value::Dtype(t, order), Value::Bool(fortran), data] = s.as_slice() else {
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
                        if *order == '>' {
                            bail!("big-endian arrays are not supported");
                        }
                        let values: Vec<f32> = match t.as_str() {
                            "f4" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                            "f8" => bytes
                                .chunks_exact(8)
                                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                                .collect(),
                            other => bail!("unsupported element type {other} in the pickled arrays"),
                        };
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
                Ok(Value::Array(Box::new(array)))
            }
            Value::Dropped => Ok(Value::Dropped),
            _ => bail!("unsupported pickle: BUILD on another object"),
        }
    }

    fn run(&mut self, r: &mut impl Read) -> Result<Value> {
        loop {
            let [op] = read_n::<1>(r)?;
            match op {
                0x80 => {
                    read_n::<1>(r)?;
                }
                0x95 => {
                    read_n::<8>(r)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => self.stack.push(Value::Int(i32::from_le_bytes(read_n(r)?) as i64)),
                b'K' => self.stack.push(Value::Int(read_n::<1>(r)?[0] as i64)),
                b'M' => self.stack.push(Value::Int(u16::from_le_bytes(read_n(r)?) as i64)),
                0x8a => {
                    let n = read_n::<1>(r)?[0] as usize;
                    let bytes = read_vec(r, n)?;
                    if n > 8 {
                        bail!("unsupported pickle: integer of {n} bytes");
                    }
                    let mut v: i64 = 0;
                    for (i, b) in bytes.iter().enumerate() {
                        v |= (*b as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'I' => {
                    let line = read_line(r)?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(line.parse().context("bad INT in pickle")?),
                    };
                    self.stack.push(v);
                }
                b'U' => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                b'T' | b'B' => {
                    let n = u32::from_le_bytes(read_n(r)?) as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                b'C' => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                0x8e => {
                    let n = u64::from_le_bytes(read_n(r)?) as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                0x8c => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Str(String::from_utf8(read_vec(r, n)?)?));
                }
                b'X' => {
                    let n = u32::from_le_bytes(read_n(r)?) as usize;
                    self.stack.push(Value::Str(String::from_utf8(read_vec(r, n)?)?));
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        bail!("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b']' => {
                    self.lists.push(Vec::new());
                    self.stack.push(Value::List(self.lists.len() - 1));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.lists.push(Vec::new());
                    let id = self.lists.len() - 1;
                    self.append(id, items);
                    self.stack.push(Value::List(id));
                }
                b'a' => {
                    let item = self.pop()?;
                    let Value::List(id) = *self.top()? else { bail!("APPEND to a non-list") };
                    self.append(id, vec![item]);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let Value::List(id) = *self.top()? else { bail!("APPENDS to a non-list") };
                    self.append(id, items);
                }
                b'}' => self.stack.push(Value::Dict),
                b's' => {
                    self.pop()?;
                    self.pop()?;
                }
                b'u' => {
                    self.pop_mark()?;
                }
                b'c' => {
                    let module = read_line(r)?;
                    let name = read_line(r)?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => bail!("STACK_GLOBAL without names"),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.stack.push(value);
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    let value = self.build(object, state)?;
                    self.stack.push(value);
                }
                b'q' => {
                    let key = read_n::<1>(r)?[0] as u32;
                    self.memoize(key)?;
                }
                b'r' => {
                    let key = u32::from_le_bytes(read_n(r)?);
                    self.memoize(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u32;
                    self.memoize(key)?;
                }
                b'p' => {
                    let key = read_line(r)?.parse().context("bad PUT in pickle")?;
                    self.memoize(key)?;
                }
                b'h' => {
                    let key = read_n::<1>(r)?[0] as u32;
                    self.get(key)?;
                }
                b'j' => {
                    let key = u32::from_le_bytes(read_n(r)?);
                    self.get(key)?;
                }
                b'g' => {
                    let key = read_line(r)?.parse().context("bad GET in pickle")?;
                    self.get(key)?;
                }
                other => bail!("unsupported pickle opcode 0x{other:02x}"),
            }
        }
    }
}

/// Reads the pickle that follows an object-array `.npy` header, keeping the rows in `keep`.
pub fn read_object_rows(reader: &mut impl Read, keep: &BTreeSet<usize>) -> Result<ObjectRows> {
    let mut machine = Machine { stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), lists: Vec::new(), keep };
    let Value::Array(outer) = machine.run(reader)? else { bail!("the pickle does not hold an array") };
    let list = outer.elements.context("the pickled array is not an object array")?;
    let elements = std::mem::take(&mut machine.lists[list]);
    let mut row_shape: Option<Vec<usize>> = None;
    let mut rows = Vec::with_capacity(elements.len());
    for (i, element) in elements.into_iter().enumerate() {
        match element {
            Value::Array(a) => {
                let values = a.values.with_context(|| format!("element {i} is not a numeric array"))?;
                let shape: Vec<usize> = a.shape.into_iter().skip_while(|&d| d == 1).collect();
                match &row_shape {
                    Some(s) if *s != shape => bail!("element {i} has shape {shape:?}, others {s:?}"),
                    _ => row_shape = Some(shape),
                }
                rows.push(Some(values));
            }
            Value::Dropped => rows.push(None),
            _ => bail!("element {i} is not an array"),
        }
    }
    Ok(ObjectRows { rows, row_shape: row_shape.unwrap_or_default() })
}
