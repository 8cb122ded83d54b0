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

/// The pickle opcodes this reader understands (names of CPython's `pickletools`).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const INT: u8 = b'I';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINSTRING: u8 = b'T';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES8: u8 = 0x8e;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE: u8 = b'X';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const EMPTY_LIST: u8 = b']';
    pub const LIST: u8 = b'l';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const NEWOBJ: u8 = 0x81;
    pub const BUILD: u8 = b'b';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const PUT: u8 = b'p';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GET: u8 = b'g';
}

/// Largest value (in bytes) kept in the memo or duplicated; bigger ones are array payloads,
/// never shared, so a hostile pickle cannot multiply them.
const MEMO_BYTES_LIMIT: usize = 256;
/// Deepest nesting of tuples accepted (numpy's pickles nest three deep).
const MAX_DEPTH: usize = 32;
/// Most entries of the stack, the memo or the list arena (each costs memory beyond the byte
/// that made it).
const MAX_ITEMS: usize = 8 << 20;
/// Longest text line (GLOBAL names, INT, PUT and GET arguments).
const MAX_LINE: usize = 4096;

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

impl Value {
    /// Bytes this value holds (roughly; what cloning it costs).
    fn weight(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Tuple(items) => items.iter().map(Value::weight).sum::<usize>() + items.len(),
            Value::Array(a) => a.values.as_ref().map_or(0, |v| v.len() * 4),
            _ => 1,
        }
    }

    /// Nesting depth of tuples (bounded by [`MAX_DEPTH`] for every tuple built).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}

/// A tuple of `items`, refused past [`MAX_DEPTH`] (a deep chain would overflow the stack when
/// dropped).
fn tuple(items: Vec<Value>) -> Result<Value> {
    let value = Value::Tuple(items);
    if value.depth() > MAX_DEPTH {
        bail!("unsupported pickle: tuples nested deeper than {MAX_DEPTH}");
    }
    Ok(value)
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

/// `n` bytes, allocated only as they arrive (a hostile length costs nothing).
fn read_vec(r: &mut impl Read, n: usize) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    r.take(n as u64).read_to_end(&mut b)?;
    if b.len() < n {
        bail!("the pickle ends early");
    }
    Ok(b)
}

/// A LONG1 integer: little-endian two's complement of up to 8 bytes.
fn decode_long(bytes: &[u8]) -> Result<i64> {
    let n = bytes.len();
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
    Ok(v)
}

/// An INT line: `00`/`01` are the booleans of protocol 0, anything else a decimal integer.
fn decode_int_line(line: &str) -> Result<Value> {
    Ok(match line {
        "00" => Value::Bool(false),
        "01" => Value::Bool(true),
        _ => Value::Int(line.parse().context("bad INT in pickle")?),
    })
}

fn read_line(r: &mut impl Read) -> Result<String> {
    let mut out = Vec::new();
    loop {
        let [b] = read_n::<1>(r)?;
        if b == b'\n' {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        if out.len() == MAX_LINE {
            bail!("unsupported pickle: a text argument longer than {MAX_LINE} bytes");
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
            Value::Array(_) => Value::Array(Box::default()),
            v if v.weight() > MEMO_BYTES_LIMIT => Value::Unmemoized,
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
            Value::Dtype(t, _) => Ok(Value::Dtype(t, byte_order(&state))),
            Value::Array(_) => Ok(Value::Array(Box::new(build_array(state)?))),
            Value::Dropped => Ok(Value::Dropped),
            _ => bail!("unsupported pickle: BUILD on another object"),
        }
    }

    fn run(&mut self, r: &mut impl Read) -> Result<Value> {
        loop {
            if self.stack.len() > MAX_ITEMS || self.memo.len() > MAX_ITEMS || self.lists.len() > MAX_ITEMS {
                bail!("unsupported pickle: more than {MAX_ITEMS} objects on its stack, memo or lists");
            }
            let [opcode] = read_n::<1>(r)?;
            match opcode {
                op::PROTO => {
                    read_n::<1>(r)?;
                }
                op::FRAME => {
                    read_n::<8>(r)?;
                }
                op::STOP => return self.pop(),
                op::MARK => self.marks.push(self.stack.len()),
                op::POP => {
                    self.pop()?;
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let v = self.top()?;
                    if v.weight() > MEMO_BYTES_LIMIT {
                        bail!("unsupported pickle: DUP of a large value");
                    }
                    let v = v.clone();
                    self.stack.push(v);
                }
                op::NONE => self.stack.push(Value::None),
                op::NEWTRUE => self.stack.push(Value::Bool(true)),
                op::NEWFALSE => self.stack.push(Value::Bool(false)),
                op::BININT => self.stack.push(Value::Int(i32::from_le_bytes(read_n(r)?) as i64)),
                op::BININT1 => self.stack.push(Value::Int(read_n::<1>(r)?[0] as i64)),
                op::BININT2 => self.stack.push(Value::Int(u16::from_le_bytes(read_n(r)?) as i64)),
                op::LONG1 => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Int(decode_long(&read_vec(r, n)?)?));
                }
                op::INT => {
                    let value = decode_int_line(&read_line(r)?)?;
                    self.stack.push(value);
                }
                op::SHORT_BINSTRING => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                op::BINSTRING | op::BINBYTES => {
                    let n = u32::from_le_bytes(read_n(r)?) as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                op::SHORT_BINBYTES => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                op::BINBYTES8 => {
                    let n = u64::from_le_bytes(read_n(r)?) as usize;
                    self.stack.push(Value::Bytes(read_vec(r, n)?));
                }
                op::SHORT_BINUNICODE => {
                    let n = read_n::<1>(r)?[0] as usize;
                    self.stack.push(Value::Str(String::from_utf8(read_vec(r, n)?)?));
                }
                op::BINUNICODE => {
                    let n = u32::from_le_bytes(read_n(r)?) as usize;
                    self.stack.push(Value::Str(String::from_utf8(read_vec(r, n)?)?));
                }
                op::EMPTY_TUPLE => self.stack.push(Value::Tuple(Vec::new())),
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.stack.push(tuple(items)?);
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = (opcode - op::TUPLE1 + 1) as usize;
                    if self.stack.len() < n {
                        bail!("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(tuple(items)?);
                }
                op::EMPTY_LIST => {
                    self.lists.push(Vec::new());
                    self.stack.push(Value::List(self.lists.len() - 1));
                }
                op::LIST => {
                    let items = self.pop_mark()?;
                    self.lists.push(Vec::new());
                    let id = self.lists.len() - 1;
                    self.append(id, items);
                    self.stack.push(Value::List(id));
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let Value::List(id) = *self.top()? else { bail!("APPEND to a non-list") };
                    self.append(id, vec![item]);
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let Value::List(id) = *self.top()? else { bail!("APPENDS to a non-list") };
                    self.append(id, items);
                }
                op::EMPTY_DICT => self.stack.push(Value::Dict),
                op::SETITEM => {
                    self.pop()?;
                    self.pop()?;
                }
                op::SETITEMS => {
                    self.pop_mark()?;
                }
                op::GLOBAL => {
                    let module = read_line(r)?;
                    let name = read_line(r)?;
                    self.stack.push(Value::Global(module, name));
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => bail!("STACK_GLOBAL without names"),
                    }
                }
                op::REDUCE | op::NEWOBJ => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.reduce(callable, args)?;
                    self.stack.push(value);
                }
                op::BUILD => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    let value = self.build(object, state)?;
                    self.stack.push(value);
                }
                op::BINPUT => {
                    let key = read_n::<1>(r)?[0] as u32;
                    self.memoize(key)?;
                }
                op::LONG_BINPUT => {
                    let key = u32::from_le_bytes(read_n(r)?);
                    self.memoize(key)?;
                }
                op::MEMOIZE => {
                    let key = self.memo.len() as u32;
                    self.memoize(key)?;
                }
                op::PUT => {
                    let key = read_line(r)?.parse().context("bad PUT in pickle")?;
                    self.memoize(key)?;
                }
                op::BINGET => {
                    let key = read_n::<1>(r)?[0] as u32;
                    self.get(key)?;
                }
                op::LONG_BINGET => {
                    let key = u32::from_le_bytes(read_n(r)?);
                    self.get(key)?;
                }
                op::GET => {
                    let key = read_line(r)?.parse().context("bad GET in pickle")?;
                    self.get(key)?;
                }
                other => bail!("unsupported pickle opcode 0x{other:02x}"),
            }
        }
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
