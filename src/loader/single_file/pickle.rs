//! A restricted unpickler for the `data.pkl` of a `torch.save` zip checkpoint (`.ckpt`).
//!
//! It reads pickle protocols 2 to 5 as `torch.save` writes them and rebuilds only what a
//! state dict holds: dicts, lists, tuples, numbers, strings, and tensors made by
//! `torch._utils._rebuild_tensor_v2` (or `_rebuild_parameter` around one) over a
//! `torch.*Storage` persistent id. The only other class it accepts is
//! `collections.OrderedDict` (an empty one: the tensor's backward hooks). Any other
//! `GLOBAL` / `STACK_GLOBAL` is refused at once with its name, before anything could use
//! it. Nothing is ever executed: "calling" an accepted global builds a plain value here.
//! (The same rules as PyTorch's `torch.load(weights_only=True)`, narrower.)

use std::collections::HashMap;

use super::tensors::StoredDType;

/// Why a pickle was not read.
#[derive(Debug, Clone, PartialEq)]
pub enum PickleError {
    /// A global other than the tensor-rebuilding ones (`os.system`, `builtins.eval`, ...).
    Refused(String),
    /// Not a pickle we understand (truncated, an unknown opcode, a bad structure).
    Malformed(String),
}

/// A tensor as the pickle describes it: a view into storage `key` of `dtype`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: String,
    pub dtype: StoredDType,
    /// Elements in the whole storage.
    pub storage_numel: usize,
    /// Offset of the first element, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A value of the restricted object model.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// An accepted global, not yet applied.
    Global(Global),
    /// A `('storage', torch.XStorage, key, location, numel)` persistent id, resolved.
    Storage {
        key: String,
        dtype: StoredDType,
        numel: usize,
    },
    Tensor(TensorRef),
}

/// The globals this unpickler accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Global {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    StorageType(StoredDType),
}

fn resolve_global(module: &str, name: &str) -> Result<Global, PickleError> {
    let storage = |d| Ok(Global::StorageType(d));
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch", "FloatStorage") => storage(StoredDType::F32),
        ("torch", "HalfStorage") => storage(StoredDType::F16),
        ("torch", "BFloat16Storage") => storage(StoredDType::BF16),
        ("torch", "DoubleStorage") => storage(StoredDType::F64),
        ("torch", "LongStorage") => storage(StoredDType::I64),
        ("torch", "IntStorage") => storage(StoredDType::I32),
        ("torch", "ShortStorage") => storage(StoredDType::I16),
        ("torch", "CharStorage") => storage(StoredDType::I8),
        ("torch", "ByteStorage") => storage(StoredDType::U8),
        ("torch", "BoolStorage") => storage(StoredDType::Bool),
        _ => Err(PickleError::Refused(format!("{module}.{name}"))),
    }
}

/// Stack entries: values and MARKs.
enum Item {
    Mark,
    V(Value),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| PickleError::Malformed("truncated pickle".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<usize, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a))
            .map_err(|_| PickleError::Malformed("length too large".into()))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| PickleError::Malformed("truncated pickle".into()))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| PickleError::Malformed("a GLOBAL name is not UTF-8".into()))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, PickleError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| PickleError::Malformed("bad UTF-8 string".into()))
    }
}

fn bad(msg: impl Into<String>) -> PickleError {
    PickleError::Malformed(msg.into())
}

/// Unpickles `data` (a `data.pkl`). Returns the top-level value.
pub fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Item>| match stack.pop() {
        Some(Item::V(v)) => Ok(v),
        Some(Item::Mark) => Err(bad("unexpected MARK")),
        None => Err(bad("stack underflow")),
    };
    let pop_mark = |stack: &mut Vec<Item>| -> Result<Vec<Value>, PickleError> {
        let at = stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| bad("no MARK on the stack"))?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Item::V(v) => Some(v),
                Item::Mark => None,
            })
            .collect())
    };
    let top = |stack: &mut Vec<Item>| -> Result<Value, PickleError> {
        match stack.last() {
            Some(Item::V(v)) => Ok(v.clone()),
            _ => Err(bad("MEMOIZE/PUT of a MARK or an empty stack")),
        }
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                // PROTO
                let v = r.u8()?;
                if !(2..=5).contains(&v) {
                    return Err(bad(format!("pickle protocol {v} (2 to 5 are read)")));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                r.u64()?;
            }
            b'.' => return pop(&mut stack), // STOP
            b'(' => stack.push(Item::Mark),
            b'}' => stack.push(Item::V(Value::Dict(Vec::new()))),
            b']' => stack.push(Item::V(Value::List(Vec::new()))),
            b')' => stack.push(Item::V(Value::Tuple(Vec::new()))),
            b'N' => stack.push(Item::V(Value::None)),
            0x88 => stack.push(Item::V(Value::Bool(true))),
            0x89 => stack.push(Item::V(Value::Bool(false))),
            b'K' => stack.push(Item::V(Value::Int(r.u8()? as i64))),
            b'M' => stack.push(Item::V(Value::Int(r.u16()? as i64))),
            b'J' => {
                let b = r.take(4)?;
                stack.push(Item::V(Value::Int(
                    i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
                )));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(bad("integer wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Item::V(Value::Int(v)));
            }
            b'G' => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                stack.push(Item::V(Value::Float(f64::from_be_bytes(a))));
            }
            b'X' => {
                let n = r.u32()?;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            0x8d => {
                let n = r.u64()?;
                stack.push(Item::V(Value::Str(r.string(n)?)));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())));
            }
            b'B' => {
                let n = r.u32()?;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())));
            }
            b'c' => {
                // GLOBAL "module\nname\n": refused unless it rebuilds tensors.
                let module = r.line()?.to_string();
                let name = r.line()?;
                stack.push(Item::V(Value::Global(resolve_global(&module, name)?)));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        stack.push(Item::V(Value::Global(resolve_global(&m, &n)?)))
                    }
                    _ => return Err(bad("STACK_GLOBAL without two strings")),
                }
            }
            b'q' => {
                let i = r.u8()? as usize;
                memo.insert(i, top(&mut stack)?);
            }
            b'r' => {
                let i = r.u32()?;
                memo.insert(i, top(&mut stack)?);
            }
            0x94 => {
                let i = memo.len();
                memo.insert(i, top(&mut stack)?);
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    r.u8()? as usize
                } else {
                    r.u32()?
                };
                let v = memo
                    .get(&i)
                    .cloned()
                    .ok_or_else(|| bad(format!("memo {i} read before it was written")))?;
                stack.push(Item::V(v));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::V(Value::Tuple(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack)?);
                }
                items.reverse();
                stack.push(Item::V(Value::Tuple(items)));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Item::V(Value::List(items)));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack)?]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last_mut() {
                    Some(Item::V(Value::List(l))) => l.extend(items),
                    _ => return Err(bad("APPEND to something not a list")),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                if items.len() % 2 != 0 {
                    return Err(bad("SETITEMS with an odd number of items"));
                }
                let Some(Item::V(Value::Dict(d))) = stack.last_mut() else {
                    return Err(bad("SETITEM on something not a dict"));
                };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'Q' => {
                // BINPERSID: ('storage', torch.XStorage, key, location, numel)
                let pid = pop(&mut stack)?;
                stack.push(Item::V(persistent_storage(pid)?));
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let func = pop(&mut stack)?;
                stack.push(Item::V(apply(func, args)?));
            }
            b'b' => {
                // BUILD: only an OrderedDict's (empty) state is accepted.
                let state = pop(&mut stack)?;
                let ok = matches!(&state, Value::None)
                    || matches!(&state, Value::Dict(d) if d.is_empty())
                    || matches!(&state, Value::Tuple(t) if t.is_empty());
                if !ok {
                    return Err(bad("BUILD with a state (only plain data is read)"));
                }
            }
            _ => {
                return Err(bad(format!(
                    "opcode 0x{op:02x} at byte {} is not one torch.save writes for a state dict",
                    r.pos - 1
                )));
            }
        }
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, PickleError> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(bad(format!("{what}: expected a non-negative integer"))),
    }
}

fn usizes(v: &Value, what: &str) -> Result<Vec<usize>, PickleError> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(|x| as_usize(x, what)).collect(),
        _ => Err(bad(format!("{what}: expected a tuple"))),
    }
}

fn persistent_storage(pid: Value) -> Result<Value, PickleError> {
    let Value::Tuple(t) = pid else {
        return Err(bad("persistent id is not a tuple"));
    };
    match t.as_slice() {
        [
            Value::Str(kind),
            Value::Global(Global::StorageType(dtype)),
            Value::Str(key),
            _location,
            numel,
        ] if kind == "storage" => Ok(Value::Storage {
            key: key.clone(),
            dtype: *dtype,
            numel: as_usize(numel, "storage size")?,
        }),
        _ => Err(bad(
            "persistent id is not ('storage', torch.XStorage, key, location, size)",
        )),
    }
}

/// REDUCE of an accepted global: builds the value, runs nothing.
fn apply(func: Value, args: Value) -> Result<Value, PickleError> {
    let Value::Tuple(args) = args else {
        return Err(bad("REDUCE arguments are not a tuple"));
    };
    match func {
        Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
        Value::Global(Global::RebuildTensorV2) => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err(bad("_rebuild_tensor_v2 with too few arguments"));
            };
            let Value::Storage { key, dtype, numel } = storage else {
                return Err(bad("_rebuild_tensor_v2 over something not a storage"));
            };
            let t = TensorRef {
                storage: key.clone(),
                dtype: *dtype,
                storage_numel: *numel,
                offset: as_usize(offset, "storage offset")?,
                shape: usizes(size, "tensor size")?,
                stride: usizes(stride, "tensor stride")?,
            };
            if t.shape.len() != t.stride.len() {
                return Err(bad("tensor size and stride differ in length"));
            }
            Ok(Value::Tensor(t))
        }
        Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
            Some(Value::Tensor(t)) => Ok(Value::Tensor(t)),
            _ => Err(bad("_rebuild_parameter over something not a tensor")),
        },
        Value::Global(g) => Err(bad(format!("REDUCE of {g:?} with these arguments"))),
        _ => Err(bad("REDUCE of something not a global")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_by_name() {
        // pickle.dumps of a class whose __reduce__ returns (os.system, ("echo hi",)).
        let p = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        assert_eq!(unpickle(p), Err(PickleError::Refused("os.system".into())));
        let p4 = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert_eq!(
            unpickle(p4),
            Err(PickleError::Refused("builtins.eval".into()))
        );
    }

    #[test]
    fn reads_plain_data_and_rejects_truncation() {
        // {"a": [1, -2, 3.5], "b": (True, None)}
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00bq\x03\x88N\x86q\x04u.";
        let v = unpickle(p).expect("valid pickle");
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("a".into()),
                    Value::List(vec![Value::Int(1), Value::Int(-2), Value::Float(3.5)])
                ),
                (
                    Value::Str("b".into()),
                    Value::Tuple(vec![Value::Bool(true), Value::None])
                ),
            ])
        );
        assert!(matches!(
            unpickle(&p[..p.len() - 3]),
            Err(PickleError::Malformed(_))
        ));
    }

    #[test]
    fn rebuilds_a_float_tensor() {
        // torch.save-style: _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 6), 2, (2, 2), (2, 1), False, OrderedDict())
        let p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x02K\x02K\x02\x86K\x02K\x01\x86\x89ccollections\nOrderedDict\n)RtR.";
        let v = unpickle(p).expect("tensor pickle");
        assert_eq!(
            v,
            Value::Tensor(TensorRef {
                storage: "0".into(),
                dtype: StoredDType::F32,
                storage_numel: 6,
                offset: 2,
                shape: vec![2, 2],
                stride: vec![2, 1],
            })
        );
    }
}
