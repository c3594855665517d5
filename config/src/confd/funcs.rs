//! confd's template functions (memkv's key functions and confd's `template_funcs.go`) as
//! gtmpl functions.
//!
//! gtmpl functions are plain `fn(&[Value]) -> Result<Value, FuncError>` pointers, not
//! closures, so they cannot capture the key space of the render. [`with_store`] puts it in a
//! thread-local for the duration of one synchronous render (gtmpl calls the functions on
//! the rendering thread, and a render never awaits), and restores what was there before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use gtmpl::{Func, FuncError, Value};

use super::gopath;
use super::store::KvStore;

/// What the functions of one render read, and what they report back.
struct Scope {
    store: KvStore,
    /// The first key a function found missing (for the error message).
    missing: RefCell<Option<String>>,
}

thread_local! {
    static SCOPE: RefCell<Option<Rc<Scope>>> = const { RefCell::new(None) };
}

/// Runs `render` with `store` visible to the key functions; returns its result and the key
/// a function found missing, if any.
pub(crate) fn with_store<R>(store: KvStore, render: impl FnOnce() -> R) -> (R, Option<String>) {
    struct Restore(Option<Rc<Scope>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = previous);
        }
    }
    let scope = Rc::new(Scope {
        store,
        missing: RefCell::new(None),
    });
    let previous = SCOPE.with(|s| s.borrow_mut().replace(scope.clone()));
    let restore = Restore(previous);
    let out = render();
    drop(restore);
    let missing = scope.missing.borrow_mut().take();
    (out, missing)
}

fn scope() -> Result<Rc<Scope>, FuncError> {
    SCOPE
        .with(|s| s.borrow().clone())
        .ok_or_else(|| FuncError::Generic("confd key functions used outside a render".into()))
}

/// Every function, by its confd name.
pub(crate) fn all() -> Vec<(&'static str, Func)> {
    vec![
        // memkv
        ("exists", exists as Func),
        ("get", get as Func),
        ("gets", gets as Func),
        ("getv", getv as Func),
        ("getvs", getvs as Func),
        ("ls", ls as Func),
        ("lsdir", lsdir as Func),
        // confd's template_funcs.go
        ("base", base as Func),
        ("dir", dir as Func),
        ("split", split as Func),
        ("join", join as Func),
        ("json", json as Func),
        ("jsonArray", json_array as Func),
        ("map", create_map as Func),
        ("getenv", getenv as Func),
        ("toUpper", to_upper as Func),
        ("toLower", to_lower as Func),
        ("contains", contains as Func),
        ("replace", replace as Func),
        ("trimSuffix", trim_suffix as Func),
        ("lookupIP", lookup_ip as Func),
        ("lookupIPV4", lookup_ipv4 as Func),
        ("lookupIPV6", lookup_ipv6 as Func),
        ("fileExists", file_exists as Func),
        ("base64Encode", base64_encode as Func),
        ("base64Decode", base64_decode as Func),
        ("parseBool", parse_bool as Func),
        ("reverse", reverse as Func),
        ("sortByLength", sort_by_length as Func),
        ("sortKVByLength", sort_kv_by_length as Func),
        ("add", add as Func),
        ("sub", sub as Func),
        ("mul", mul as Func),
        ("div", div as Func),
        ("mod", modulo as Func),
        ("seq", seq as Func),
        ("atoi", atoi as Func),
    ]
}

// ---- arguments ----

fn err(message: String) -> FuncError {
    FuncError::Generic(message)
}

fn arity(name: &str, args: &[Value], min: usize, max: usize) -> Result<(), FuncError> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        return Err(err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn string<'a>(name: &str, args: &'a [Value], i: usize) -> Result<&'a str, FuncError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(err(format!(
            "wrong type for value; {name} expected a string as argument {}, got {other}",
            i + 1
        ))),
        None => Err(err(format!("{name}: missing argument {}", i + 1))),
    }
}

fn int(name: &str, args: &[Value], i: usize) -> Result<i64, FuncError> {
    match args.get(i) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            err(format!(
                "wrong type for value; {name} expected an integer as argument {}, got {n}",
                i + 1
            ))
        }),
        Some(other) => Err(err(format!(
            "wrong type for value; {name} expected an integer as argument {}, got {other}",
            i + 1
        ))),
        None => Err(err(format!("{name}: missing argument {}", i + 1))),
    }
}

fn strings(name: &str, value: &Value) -> Result<Vec<String>, FuncError> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(err(format!(
                    "{name} expected a list of strings, got {other}"
                ))),
            })
            .collect(),
        other => Err(err(format!(
            "{name} expected a list of strings, got {other}"
        ))),
    }
}

fn str_list<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

fn kv_pair(key: &str, value: &str) -> Value {
    let mut fields = HashMap::new();
    fields.insert("Key".to_owned(), Value::from(key));
    fields.insert("Value".to_owned(), Value::from(value));
    Value::Object(fields)
}

// ---- memkv ----

fn missing(scope: &Scope, key: &str) -> FuncError {
    scope
        .missing
        .borrow_mut()
        .get_or_insert_with(|| key.to_owned());
    err(format!("key does not exist: {key}"))
}

fn bad_pattern(pattern: &str) -> FuncError {
    err(format!("syntax error in pattern {pattern:?}"))
}

fn exists(args: &[Value]) -> Result<Value, FuncError> {
    arity("exists", args, 1, 1)?;
    let key = string("exists", args, 0)?;
    Ok(Value::Bool(scope()?.store.get(key).is_some()))
}

fn get(args: &[Value]) -> Result<Value, FuncError> {
    arity("get", args, 1, 1)?;
    let key = string("get", args, 0)?;
    let scope = scope()?;
    match scope.store.get(key) {
        Some(value) => Ok(kv_pair(key, value)),
        None => Err(missing(&scope, key)),
    }
}

fn gets(args: &[Value]) -> Result<Value, FuncError> {
    arity("gets", args, 1, 1)?;
    let pattern = string("gets", args, 0)?;
    let scope = scope()?;
    let pairs = scope
        .store
        .gets(pattern)
        .map_err(|_| bad_pattern(pattern))?;
    Ok(Value::Array(
        pairs.into_iter().map(|(k, v)| kv_pair(k, v)).collect(),
    ))
}

fn getv(args: &[Value]) -> Result<Value, FuncError> {
    arity("getv", args, 1, usize::MAX)?;
    let key = string("getv", args, 0)?;
    let scope = scope()?;
    match (scope.store.get(key), args.get(1)) {
        (Some(value), _) => Ok(Value::from(value)),
        (None, Some(_)) => Ok(Value::from(string("getv", args, 1)?)),
        (None, None) => Err(missing(&scope, key)),
    }
}

fn getvs(args: &[Value]) -> Result<Value, FuncError> {
    arity("getvs", args, 1, 1)?;
    let pattern = string("getvs", args, 0)?;
    let scope = scope()?;
    let values = scope
        .store
        .getvs(pattern)
        .map_err(|_| bad_pattern(pattern))?;
    Ok(str_list(values))
}

fn ls(args: &[Value]) -> Result<Value, FuncError> {
    arity("ls", args, 1, 1)?;
    Ok(str_list(scope()?.store.ls(string("ls", args, 0)?)))
}

fn lsdir(args: &[Value]) -> Result<Value, FuncError> {
    arity("lsdir", args, 1, 1)?;
    Ok(str_list(scope()?.store.lsdir(string("lsdir", args, 0)?)))
}

// ---- strings and paths ----

fn base(args: &[Value]) -> Result<Value, FuncError> {
    arity("base", args, 1, 1)?;
    Ok(Value::from(gopath::base(string("base", args, 0)?)))
}

fn dir(args: &[Value]) -> Result<Value, FuncError> {
    arity("dir", args, 1, 1)?;
    Ok(Value::from(gopath::dir(string("dir", args, 0)?)))
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    arity("split", args, 2, 2)?;
    let (s, sep) = (string("split", args, 0)?, string("split", args, 1)?);
    if sep.is_empty() {
        return Ok(str_list(s.chars().map(String::from)));
    }
    Ok(str_list(s.split(sep)))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    arity("join", args, 2, 2)?;
    let items = strings("join", &args[0])?;
    Ok(Value::from(items.join(string("join", args, 1)?)))
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    arity("toUpper", args, 1, 1)?;
    Ok(Value::from(string("toUpper", args, 0)?.to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    arity("toLower", args, 1, 1)?;
    Ok(Value::from(string("toLower", args, 0)?.to_lowercase()))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    arity("contains", args, 2, 2)?;
    let (s, sub) = (string("contains", args, 0)?, string("contains", args, 1)?);
    Ok(Value::Bool(s.contains(sub)))
}

/// Go's `strings.Replace(s, old, new, n)`: `n < 0` replaces every occurrence.
fn replace(args: &[Value]) -> Result<Value, FuncError> {
    arity("replace", args, 4, 4)?;
    let s = string("replace", args, 0)?;
    let (old, new) = (string("replace", args, 1)?, string("replace", args, 2)?);
    let n = int("replace", args, 3)?;
    Ok(Value::from(match usize::try_from(n) {
        Ok(n) => s.replacen(old, new, n),
        Err(_) => s.replace(old, new),
    }))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    arity("trimSuffix", args, 2, 2)?;
    let (s, suffix) = (
        string("trimSuffix", args, 0)?,
        string("trimSuffix", args, 1)?,
    );
    Ok(Value::from(s.strip_suffix(suffix).unwrap_or(s)))
}

fn getenv(args: &[Value]) -> Result<Value, FuncError> {
    arity("getenv", args, 1, usize::MAX)?;
    let value = std::env::var(string("getenv", args, 0)?).unwrap_or_default();
    if value.is_empty() && args.len() > 1 {
        return Ok(Value::from(string("getenv", args, 1)?));
    }
    Ok(Value::from(value))
}

fn file_exists(args: &[Value]) -> Result<Value, FuncError> {
    arity("fileExists", args, 1, 1)?;
    let exists = match std::fs::metadata(string("fileExists", args, 0)?) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    };
    Ok(Value::Bool(exists))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(args: &[Value]) -> Result<Value, FuncError> {
    arity("parseBool", args, 1, 1)?;
    match string("parseBool", args, 0)? {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
        other => Err(err(format!(
            "strconv.ParseBool: parsing {other:?}: invalid syntax"
        ))),
    }
}

// ---- JSON ----

/// Go's `json.Unmarshal` into `interface{}`: objects are maps (a missing field prints
/// `<no value>`), numbers are float64 and print as Go prints them (`1e+06`), null is nil.
fn from_json(value: serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::NoValue,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::String(go_float(n.as_f64().unwrap_or(f64::NAN))),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => Value::Array(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(fields) => {
            Value::Map(fields.into_iter().map(|(k, v)| (k, from_json(v))).collect())
        }
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    arity("json", args, 1, 1)?;
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(string("json", args, 0)?).map_err(|e| err(format!("json: {e}")))?;
    Ok(parsed.map_or(Value::Map(HashMap::new()), |m| {
        from_json(serde_json::Value::Object(m))
    }))
}

fn json_array(args: &[Value]) -> Result<Value, FuncError> {
    arity("jsonArray", args, 1, 1)?;
    let parsed: Option<Vec<serde_json::Value>> =
        serde_json::from_str(string("jsonArray", args, 0)?)
            .map_err(|e| err(format!("jsonArray: {e}")))?;
    Ok(Value::Array(
        parsed
            .unwrap_or_default()
            .into_iter()
            .map(from_json)
            .collect(),
    ))
}

/// Go's `fmt` `%v` of a float64 (`%g` at the shortest precision): the shortest digits,
/// in exponent form when the exponent is below -4 or at least 6 (`1e+06`, `1.5e-05`), as a
/// confd template prints a JSON number.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Go's shortest formatting.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        format!("{f}")
    }
}

fn create_map(args: &[Value]) -> Result<Value, FuncError> {
    if args.len() % 2 != 0 {
        return Err(err("invalid map call".to_owned()));
    }
    let mut map = HashMap::new();
    for pair in args.chunks(2) {
        let Value::String(key) = &pair[0] else {
            return Err(err("map keys must be strings".to_owned()));
        };
        map.insert(key.clone(), pair[1].clone());
    }
    Ok(Value::Map(map))
}

// ---- lists ----

fn reverse(args: &[Value]) -> Result<Value, FuncError> {
    arity("reverse", args, 1, 1)?;
    Ok(match &args[0] {
        Value::Array(items) => Value::Array(items.iter().rev().cloned().collect()),
        other => other.clone(),
    })
}

fn sort_by_length(args: &[Value]) -> Result<Value, FuncError> {
    arity("sortByLength", args, 1, 1)?;
    let mut items = strings("sortByLength", &args[0])?;
    items.sort_by_key(String::len);
    Ok(str_list(items))
}

fn sort_kv_by_length(args: &[Value]) -> Result<Value, FuncError> {
    arity("sortKVByLength", args, 1, 1)?;
    let Value::Array(items) = &args[0] else {
        return Err(err(format!(
            "sortKVByLength expected a list of pairs, got {}",
            args[0]
        )));
    };
    let key_len = |v: &Value| match v {
        Value::Object(fields) => match fields.get("Key") {
            Some(Value::String(k)) => k.len(),
            _ => 0,
        },
        _ => 0,
    };
    let mut items = items.clone();
    items.sort_by_key(key_len);
    Ok(Value::Array(items))
}

/// GNU `seq`: the integers from `first` to `last`, both included.
fn seq(args: &[Value]) -> Result<Value, FuncError> {
    arity("seq", args, 2, 2)?;
    let (first, last) = (int("seq", args, 0)?, int("seq", args, 1)?);
    Ok(Value::Array((first..=last).map(Value::from).collect()))
}

// ---- numbers ----

fn arith(name: &str, args: &[Value], op: fn(i64, i64) -> Option<i64>) -> Result<Value, FuncError> {
    arity(name, args, 2, 2)?;
    let (a, b) = (int(name, args, 0)?, int(name, args, 1)?);
    op(a, b).map(Value::from).ok_or_else(|| {
        err(format!(
            "error calling {name}: runtime error: integer divide by zero"
        ))
    })
}

fn add(args: &[Value]) -> Result<Value, FuncError> {
    arith("add", args, |a, b| Some(a.wrapping_add(b)))
}

fn sub(args: &[Value]) -> Result<Value, FuncError> {
    arith("sub", args, |a, b| Some(a.wrapping_sub(b)))
}

fn mul(args: &[Value]) -> Result<Value, FuncError> {
    arith("mul", args, |a, b| Some(a.wrapping_mul(b)))
}

fn div(args: &[Value]) -> Result<Value, FuncError> {
    arith("div", args, |a, b| (b != 0).then(|| a.wrapping_div(b)))
}

fn modulo(args: &[Value]) -> Result<Value, FuncError> {
    arith("mod", args, |a, b| (b != 0).then(|| a.wrapping_rem(b)))
}

/// Go's `strconv.Atoi`.
fn atoi(args: &[Value]) -> Result<Value, FuncError> {
    arity("atoi", args, 1, 1)?;
    let s = string("atoi", args, 0)?;
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!("strconv.Atoi: parsing {s:?}: invalid syntax")));
    }
    s.parse::<i64>()
        .map(Value::from)
        .map_err(|_| err(format!("strconv.Atoi: parsing {s:?}: value out of range")))
}

// ---- base64 (standard alphabet, padded, as Go's base64.StdEncoding) ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(args: &[Value]) -> Result<Value, FuncError> {
    arity("base64Encode", args, 1, 1)?;
    let data = string("base64Encode", args, 0)?.as_bytes();
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    Ok(Value::from(out))
}

fn base64_decode(args: &[Value]) -> Result<Value, FuncError> {
    arity("base64Decode", args, 1, 1)?;
    let text = string("base64Decode", args, 0)?;
    // Go's decoder skips line breaks.
    let input: Vec<u8> = text
        .bytes()
        .filter(|b| *b != b'\n' && *b != b'\r')
        .collect();
    let illegal = |at: usize| err(format!("illegal base64 data at input byte {at}"));
    if input.len() % 4 != 0 {
        return Err(illegal(input.len() / 4 * 4));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    for (q, quad) in input.chunks(4).enumerate() {
        let last = q == input.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in quad.iter().enumerate() {
            let v = if c == b'=' && last && i >= 2 {
                pad += 1;
                0
            } else if pad > 0 {
                return Err(illegal(q * 4 + i));
            } else {
                B64.iter()
                    .position(|&x| x == c)
                    .ok_or_else(|| illegal(q * 4 + i))? as u32
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(Value::from(String::from_utf8_lossy(&out).into_owned()))
}

// ---- DNS ----

/// Go's `net.LookupIP`, sorted so that a reordering by the resolver changes nothing; empty
/// when the name does not resolve.
fn lookup(host: &str) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut ips: Vec<String> = (host, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip().to_string()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

fn lookup_ip(args: &[Value]) -> Result<Value, FuncError> {
    arity("lookupIP", args, 1, 1)?;
    Ok(str_list(lookup(string("lookupIP", args, 0)?)))
}

fn lookup_ipv4(args: &[Value]) -> Result<Value, FuncError> {
    arity("lookupIPV4", args, 1, 1)?;
    Ok(str_list(
        lookup(string("lookupIPV4", args, 0)?)
            .into_iter()
            .filter(|ip| ip.contains('.')),
    ))
}

fn lookup_ipv6(args: &[Value]) -> Result<Value, FuncError> {
    arity("lookupIPV6", args, 1, 1)?;
    Ok(str_list(
        lookup(string("lookupIPV6", args, 0)?)
            .into_iter()
            .filter(|ip| ip.contains(':')),
    ))
}
