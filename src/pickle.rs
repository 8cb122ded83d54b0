//! A pickle virtual machine that never runs code: it understands the opcodes of protocols 0-5
//! that NumPy's and PyTorch's pickles use and hands every call of a global (`REDUCE`,
//! `NEWOBJ`), every `BUILD` and every persistent id to a [`Resolver`], which knows the few
//! globals its format needs and refuses any other by name. Every file is hostile: nesting,
//! the stack, the memo and the lists are bounded, and a large value is never duplicated.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};

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
    pub const BINFLOAT: u8 = b'G';
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
    pub const DICT: u8 = b'd';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const NEWOBJ: u8 = 0x81;
    pub const BUILD: u8 = b'b';
    pub const BINPERSID: u8 = b'Q';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const PUT: u8 = b'p';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GET: u8 = b'g';
}

/// Largest value (in bytes) kept in the memo or duplicated; bigger ones are payloads, never
/// shared, so a hostile pickle cannot multiply them.
const MEMO_BYTES_LIMIT: usize = 256;
/// Most values a pickle may make, whatever its size: each value pushed, and every part of each
/// copy that `GET` and `DUP` make (a few bytes of opcodes can copy a value of 256 bytes).
const MAX_VALUES: u64 = 16 << 20;
/// Values a pickle may make per byte it has, beyond the first million (a plain pickle makes at
/// most one per opcode byte; copies of memoised values make the rest).
const VALUES_PER_BYTE: u64 = 4;
/// Deepest nesting of tuples accepted (NumPy's and PyTorch's pickles nest a few levels).
const MAX_DEPTH: usize = 32;
/// Most entries of the stack, the memo, the lists or the dicts (each costs memory beyond the
/// byte that made it).
const MAX_ITEMS: usize = 8 << 20;
/// Longest text line (GLOBAL names, INT, PUT and GET arguments).
const MAX_LINE: usize = 4096;

/// A Python value; `T` is what the format's [`Resolver`] builds from its globals.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<T> {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: its little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value<T>>),
    /// Index into [`Pickle::lists`].
    List(usize),
    /// Index into [`Pickle::dicts`].
    Dict(usize),
    /// A global named by `GLOBAL`/`STACK_GLOBAL`, before it is called.
    Global(String, String),
    /// What the resolver built.
    Object(T),
    /// A large byte string that was not memoised.
    Unmemoized,
}

impl<T> Value<T> {
    /// Bytes this value holds (roughly; what cloning it costs).
    fn weight(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Bytes(b) | Value::BigInt(b) => b.len(),
            Value::Tuple(items) => items.iter().map(Value::weight).sum::<usize>() + items.len(),
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

    /// The text of a `str` (or of a Python 2 `str`, which pickles as bytes).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// A non-negative integer.
    pub fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        }
    }
}

/// What a format allows a pickle to build.
pub trait Resolver {
    /// What its globals build.
    type Object: Clone;
    /// Calls `module.name(*args)` (`REDUCE`, `NEWOBJ`); refuses any global the format does
    /// not need, naming it.
    fn call(
        &mut self,
        pickle: &mut Pickle<Self::Object>,
        module: &str,
        name: &str,
        args: Vec<Value<Self::Object>>,
    ) -> Result<Value<Self::Object>>;
    /// Applies `state` to `object` (`BUILD`).
    fn build(&mut self, object: Value<Self::Object>, state: Value<Self::Object>) -> Result<Value<Self::Object>>;
    /// The object a persistent id names (`BINPERSID`).
    fn persistent(&mut self, id: Value<Self::Object>) -> Result<Value<Self::Object>> {
        let _ = id;
        bail!("unsupported pickle: it refers to persistent objects")
    }
    /// What to keep of item `index` appended to a list (NumPy drops rows not asked for).
    fn append(&mut self, index: usize, item: Value<Self::Object>) -> Value<Self::Object> {
        let _ = index;
        item
    }
    /// Whether a value is too large to memoise (then it is never shared).
    fn heavy(&self, object: &Self::Object) -> bool {
        let _ = object;
        false
    }
}

/// Plain data only (numbers, text, tuples, lists, dicts): every global is refused by name.
pub struct Plain;

impl Resolver for Plain {
    type Object = ();

    fn call(&mut self, _: &mut Pickle<()>, module: &str, name: &str, _: Vec<Value<()>>) -> Result<Value<()>> {
        bail!("unsupported pickle: it calls {module}.{name}")
    }

    fn build(&mut self, _: Value<()>, _: Value<()>) -> Result<Value<()>> {
        bail!("unsupported pickle: BUILD where plain data is expected")
    }
}

/// What a pickle built: its value, and the lists and dicts that values refer to by index.
#[derive(Debug)]
pub struct Pickle<T> {
    /// The value the pickle returns (at its STOP).
    pub root: Value<T>,
    pub lists: Vec<Vec<Value<T>>>,
    /// Dicts as key-value pairs in insertion order.
    pub dicts: Vec<Vec<(Value<T>, Value<T>)>>,
}

impl<T> Pickle<T> {
    /// A new empty dict (`collections.OrderedDict()` builds one too).
    pub fn new_dict(&mut self) -> Value<T> {
        self.dicts.push(Vec::new());
        Value::Dict(self.dicts.len() - 1)
    }

    /// The entries of a dict value.
    pub fn dict(&self, value: &Value<T>) -> Option<&[(Value<T>, Value<T>)]> {
        match value {
            Value::Dict(id) => self.dicts.get(*id).map(Vec::as_slice),
            _ => None,
        }
    }

    /// The items of a list value.
    pub fn list(&self, value: &Value<T>) -> Option<&[Value<T>]> {
        match value {
            Value::List(id) => self.lists.get(*id).map(Vec::as_slice),
            _ => None,
        }
    }
}

/// A tuple of `items`, refused past [`MAX_DEPTH`] (a deep chain would overflow the stack when
/// dropped).
fn tuple<T>(items: Vec<Value<T>>) -> Result<Value<T>> {
    let value = Value::Tuple(items);
    if value.depth() > MAX_DEPTH {
        bail!("unsupported pickle: tuples nested deeper than {MAX_DEPTH}");
    }
    Ok(value)
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

/// A LONG1 integer: little-endian two's complement; wider than 8 bytes it stays bytes.
fn decode_long<T>(bytes: Vec<u8>) -> Value<T> {
    let n = bytes.len();
    if n > 8 {
        return Value::BigInt(bytes);
    }
    let mut v: i64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= (*b as i64) << (8 * i);
    }
    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
        v -= 1i64 << (8 * n);
    }
    Value::Int(v)
}

/// An INT line: `00`/`01` are the booleans of protocol 0, anything else a decimal integer.
fn decode_int_line<T>(line: &str) -> Result<Value<T>> {
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

/// Runs one pickle from `reader` to its STOP. What it may build is bounded by its own size: at
/// most [`VALUES_PER_BYTE`] values per byte beyond the first million, and [`MAX_VALUES`] in all,
/// so a small (or well compressed) pickle cannot expand into gigabytes of lists or copies.
pub fn load<R: Resolver>(reader: &mut impl Read, resolver: &mut R) -> Result<Pickle<R::Object>> {
    let mut machine = Machine {
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        pickle: Pickle { root: Value::None, lists: Vec::new(), dicts: Vec::new() },
        resolver,
        made: 0,
    };
    let mut counted = Counted { inner: reader, bytes: 0 };
    machine.pickle.root = machine.run(&mut counted)?;
    Ok(machine.pickle)
}

/// A reader that counts the bytes read through it.
struct Counted<'a, R> {
    inner: &'a mut R,
    bytes: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

struct Machine<'r, R: Resolver> {
    stack: Vec<Value<R::Object>>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value<R::Object>>,
    pickle: Pickle<R::Object>,
    resolver: &'r mut R,
    /// Values made so far: one per push, and each copy's weight.
    made: u64,
}

impl<R: Resolver> Machine<'_, R> {
    fn pop(&mut self) -> Result<Value<R::Object>> {
        self.stack.pop().ok_or_else(|| anyhow!("pickle stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value<R::Object>>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("pickle mark missing"))?;
        if mark > self.stack.len() {
            bail!("pickle stack underflow");
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<&Value<R::Object>> {
        self.stack.last().ok_or_else(|| anyhow!("pickle stack underflow"))
    }

    fn push(&mut self, value: Value<R::Object>) {
        self.made += 1;
        self.stack.push(value);
    }

    /// A copy of `value`, counted by its weight.
    fn copy(&mut self, value: &Value<R::Object>) -> Value<R::Object> {
        self.made += value.weight() as u64;
        value.clone()
    }

    fn too_heavy(&self, value: &Value<R::Object>) -> bool {
        match value {
            Value::Object(object) => self.resolver.heavy(object),
            v => v.weight() > MEMO_BYTES_LIMIT,
        }
    }

    fn memoize(&mut self, key: u32) -> Result<()> {
        let top = self.top()?;
        let value = if self.too_heavy(top) { Value::Unmemoized } else { top.clone() };
        self.memo.insert(key, value);
        Ok(())
    }

    fn get(&mut self, key: u32) -> Result<()> {
        let memoised = self.memo.get(&key).ok_or_else(|| anyhow!("pickle memo key {key} missing"))?;
        if matches!(memoised, Value::Unmemoized) {
            bail!("unsupported pickle: a large value is referenced twice");
        }
        let value = memoised.clone();
        let value = self.copy(&value);
        self.push(value);
        Ok(())
    }

    fn append(&mut self, items: Vec<Value<R::Object>>) -> Result<()> {
        let Value::List(id) = *self.top()? else { bail!("unsupported pickle: APPEND to a non-list") };
        for item in items {
            let index = self.pickle.lists[id].len();
            let item = self.resolver.append(index, item);
            self.pickle.lists[id].push(item);
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value<R::Object>>) -> Result<()> {
        if items.len() % 2 != 0 {
            bail!("unsupported pickle: SETITEMS with an odd number of values");
        }
        let Value::Dict(id) = *self.top()? else { bail!("unsupported pickle: SETITEM on a non-dict") };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            self.pickle.dicts[id].push((key, value));
        }
        Ok(())
    }

    fn reduce(&mut self) -> Result<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Value::Global(module, name) = callable else { bail!("unsupported pickle: calls a non-global") };
        let Value::Tuple(args) = args else { bail!("unsupported pickle: arguments are not a tuple") };
        let value = self.resolver.call(&mut self.pickle, &module, &name, args)?;
        self.push(value);
        Ok(())
    }

    fn run<T: Read>(&mut self, r: &mut Counted<T>) -> Result<Value<R::Object>> {
        loop {
            let containers = self.pickle.lists.len() + self.pickle.dicts.len();
            if self.stack.len() > MAX_ITEMS || self.memo.len() > MAX_ITEMS || containers > MAX_ITEMS {
                bail!("unsupported pickle: more than {MAX_ITEMS} objects on its stack, memo or containers");
            }
            let allowed = MAX_VALUES.min(r.bytes.saturating_mul(VALUES_PER_BYTE) + (1 << 20));
            if self.made > allowed {
                bail!(
                    "unsupported pickle: it builds more than {allowed} values from {} bytes (a pickle bomb)",
                    r.bytes
                );
            }
            let [opcode] = read_n::<1>(r)?;
            if opcode == op::STOP {
                return self.pop();
            }
            self.step(opcode, r)?;
        }
    }

    fn step(&mut self, opcode: u8, r: &mut impl Read) -> Result<()> {
        match opcode {
            op::PROTO => drop(read_n::<1>(r)?),
            op::FRAME => drop(read_n::<8>(r)?),
            op::MARK => self.marks.push(self.stack.len()),
            op::POP => drop(self.pop()?),
            op::POP_MARK => drop(self.pop_mark()?),
            op::DUP => {
                let top = self.top()?;
                if self.too_heavy(top) {
                    bail!("unsupported pickle: DUP of a large value");
                }
                let top = top.clone();
                let copy = self.copy(&top);
                self.push(copy);
            }
            op::NONE => self.push(Value::None),
            op::NEWTRUE => self.push(Value::Bool(true)),
            op::NEWFALSE => self.push(Value::Bool(false)),
            op::BININT => self.push(Value::Int(i32::from_le_bytes(read_n(r)?) as i64)),
            op::BININT1 => self.push(Value::Int(read_n::<1>(r)?[0] as i64)),
            op::BININT2 => self.push(Value::Int(u16::from_le_bytes(read_n(r)?) as i64)),
            op::LONG1 => {
                let n = read_n::<1>(r)?[0] as usize;
                self.push(decode_long(read_vec(r, n)?));
            }
            op::INT => {
                let value = decode_int_line(&read_line(r)?)?;
                self.push(value);
            }
            op::BINFLOAT => self.push(Value::Float(f64::from_be_bytes(read_n(r)?))),
            _ => return self.step_containers(opcode, r),
        }
        Ok(())
    }

    fn step_containers(&mut self, opcode: u8, r: &mut impl Read) -> Result<()> {
        match opcode {
            op::SHORT_BINSTRING | op::SHORT_BINBYTES => {
                let n = read_n::<1>(r)?[0] as usize;
                self.push(Value::Bytes(read_vec(r, n)?));
            }
            op::BINSTRING | op::BINBYTES => {
                let n = u32::from_le_bytes(read_n(r)?) as usize;
                self.push(Value::Bytes(read_vec(r, n)?));
            }
            op::BINBYTES8 => {
                let n = usize::try_from(u64::from_le_bytes(read_n(r)?)).context("unsupported pickle: huge bytes")?;
                self.push(Value::Bytes(read_vec(r, n)?));
            }
            op::SHORT_BINUNICODE => {
                let n = read_n::<1>(r)?[0] as usize;
                self.push(Value::Str(String::from_utf8(read_vec(r, n)?)?));
            }
            op::BINUNICODE => {
                let n = u32::from_le_bytes(read_n(r)?) as usize;
                self.push(Value::Str(String::from_utf8(read_vec(r, n)?)?));
            }
            op::EMPTY_TUPLE => self.push(Value::Tuple(Vec::new())),
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(tuple(items)?);
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = (opcode - op::TUPLE1 + 1) as usize;
                if self.stack.len() < n {
                    bail!("pickle stack underflow");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(tuple(items)?);
            }
            op::EMPTY_LIST | op::LIST => {
                let items = if opcode == op::LIST { self.pop_mark()? } else { Vec::new() };
                self.pickle.lists.push(Vec::new());
                self.push(Value::List(self.pickle.lists.len() - 1));
                self.append(items)?;
            }
            op::APPEND => {
                let item = self.pop()?;
                self.append(vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            op::EMPTY_DICT | op::DICT => {
                let items = if opcode == op::DICT { self.pop_mark()? } else { Vec::new() };
                let dict = self.pickle.new_dict();
                self.push(dict);
                self.set_items(items)?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![key, value])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            _ => return self.step_objects(opcode, r),
        }
        Ok(())
    }

    fn step_objects(&mut self, opcode: u8, r: &mut impl Read) -> Result<()> {
        match opcode {
            op::GLOBAL => {
                let module = read_line(r)?;
                let name = read_line(r)?;
                self.push(Value::Global(module, name));
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n)),
                    _ => bail!("unsupported pickle: STACK_GLOBAL without names"),
                }
            }
            op::REDUCE | op::NEWOBJ => self.reduce()?,
            op::BUILD => {
                let state = self.pop()?;
                let object = self.pop()?;
                let value = self.resolver.build(object, state)?;
                self.push(value);
            }
            op::BINPERSID => {
                let id = self.pop()?;
                let value = self.resolver.persistent(id)?;
                self.push(value);
            }
            op::BINPUT => self.memoize(read_n::<1>(r)?[0] as u32)?,
            op::LONG_BINPUT => self.memoize(u32::from_le_bytes(read_n(r)?))?,
            op::MEMOIZE => self.memoize(self.memo.len() as u32)?,
            op::PUT => self.memoize(read_line(r)?.parse().context("bad PUT in pickle")?)?,
            op::BINGET => self.get(read_n::<1>(r)?[0] as u32)?,
            op::LONG_BINGET => self.get(u32::from_le_bytes(read_n(r)?))?,
            op::GET => self.get(read_line(r)?.parse().context("bad GET in pickle")?)?,
            other => bail!("unsupported pickle opcode 0x{other:02x}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps({'a': [1, -2, 3.5], 'b': (True, None, 'x'), 'c': 2**70}, protocol=2)`.
    const DICT: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00bq\x03\x88NX\x01\x00\x00\x00xq\x04\x87q\x05X\x01\x00\x00\x00cq\x06\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@u.";

    #[test]
    fn plain_values_and_containers() {
        let pickle = load(&mut &DICT[..], &mut Plain).unwrap();
        let entries = pickle.dict(&pickle.root).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0, Value::Str("a".into()));
        assert_eq!(pickle.list(&entries[0].1).unwrap(), [Value::Int(1), Value::Int(-2), Value::Float(3.5)]);
        assert_eq!(entries[1].1, Value::Tuple(vec![Value::Bool(true), Value::None, Value::Str("x".into())]));
        assert_eq!(entries[2].1, Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40]));
    }

    #[test]
    fn globals_are_refused_by_name_and_nesting_is_bounded() {
        let call = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let err = format!("{:#}", load(&mut &call[..], &mut Plain).unwrap_err());
        assert_eq!(err, "unsupported pickle: it calls os.system");
        let mut deep = b"\x80\x02N".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 40));
        deep.push(b'.');
        let err = format!("{:#}", load(&mut &deep[..], &mut Plain).unwrap_err());
        assert!(err.contains("nested deeper than 32"), "{err}");
        let err = format!("{:#}", load(&mut &b"\x80\x02u."[..], &mut Plain).unwrap_err());
        assert!(err.contains("mark missing"), "{err}");
    }

    /// A list of 2 million items from 6 MB of opcodes is a pickle; 20 million from 60 MB is over
    /// the absolute bound, and a memoised tuple copied by two-byte GETs is over the bound per byte.
    #[test]
    fn what_a_pickle_builds_is_bounded_by_its_size() {
        let list = |n: usize| [&b"\x80\x02]q\x00"[..], &b"K\x07a".repeat(n), b"."].concat();
        let pickle = load(&mut list(2_000_000).as_slice(), &mut Plain).unwrap();
        assert_eq!(pickle.list(&pickle.root).unwrap().len(), 2_000_000);
        let err = format!("{:#}", load(&mut list(20_000_000).as_slice(), &mut Plain).unwrap_err());
        assert!(err.contains("more than 16777216 values"), "{err}");

        // (0, 1, ..., 99) memoised once, then copied 100,000 times into a list (200 kB of GETs).
        let mut copies = b"\x80\x02](".to_vec();
        (0..100u8).for_each(|k| copies.extend([b'K', k]));
        copies.extend(b"tq\x01a");
        copies.extend(b"h\x01a".repeat(100_000));
        copies.push(b'.');
        let err = format!("{:#}", load(&mut copies.as_slice(), &mut Plain).unwrap_err());
        assert!(err.contains("a pickle bomb"), "{err}");
    }
}
