//! text/template's own functions where gtmpl 0.7 lacks them or differs from Go: the
//! comparisons (`eq` with several arguments, Go's rules on types), `print`/`printf`/
//! `println` over Go's `fmt` ([`gofmt`](super::gofmt)), `html`, `js`, `urlquery`, `slice`.
//! Registered after gtmpl's builtins, so they replace them.

use std::cmp::Ordering;

use gtmpl::{Func, FuncError, Value};

use super::gofmt;

/// Every function, by its text/template name.
pub(crate) fn all() -> Vec<(&'static str, Func)> {
    vec![
        ("eq", eq as Func),
        ("ne", ne as Func),
        ("lt", lt as Func),
        ("le", le as Func),
        ("gt", gt as Func),
        ("ge", ge as Func),
        ("print", print as Func),
        ("printf", printf as Func),
        ("println", println as Func),
        ("html", html as Func),
        ("js", js as Func),
        ("urlquery", urlquery as Func),
        ("slice", slice as Func),
    ]
}

fn calling(name: &str, message: impl std::fmt::Display) -> FuncError {
    FuncError::Generic(format!("error calling {name}: {message}"))
}

// ---- comparisons (text/template's funcs.go) ----

/// Go's `basicKind`: what may be compared with what.
#[derive(Debug, PartialEq)]
enum Basic<'a> {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Nil,
    Other,
}

fn basic(value: &Value) -> Basic<'_> {
    match value {
        Value::Bool(b) => Basic::Bool(*b),
        Value::String(s) => Basic::Str(s),
        Value::Number(n) => match (n.as_f64(), n.as_i64(), n.as_u64()) {
            (Some(f), _, _) => Basic::Float(f),
            (None, Some(i), _) => Basic::Int(i128::from(i)),
            (None, None, Some(u)) => Basic::Int(i128::from(u)),
            _ => Basic::Other,
        },
        Value::Nil | Value::NoValue => Basic::Nil,
        _ => Basic::Other,
    }
}

/// `a == b` under Go's rules: integers of any sign compare by value, other kinds must match.
fn equal(name: &str, a: &Value, b: &Value) -> Result<bool, FuncError> {
    match (basic(a), basic(b)) {
        (Basic::Bool(x), Basic::Bool(y)) => Ok(x == y),
        (Basic::Int(x), Basic::Int(y)) => Ok(x == y),
        (Basic::Float(x), Basic::Float(y)) => Ok(x == y),
        (Basic::Str(x), Basic::Str(y)) => Ok(x == y),
        (Basic::Nil, Basic::Nil) => Ok(true),
        // nil against a value: not equal (Go compares only when both are valid).
        (Basic::Nil, _) | (_, Basic::Nil) => Ok(false),
        (Basic::Other, Basic::Other) => Err(calling(name, "non-comparable types")),
        _ => Err(calling(name, "incompatible types for comparison")),
    }
}

/// Go's `eq arg1 arg2 arg3...`: `arg1 == arg2 || arg1 == arg3 || ...`.
fn eq(args: &[Value]) -> Result<Value, FuncError> {
    let Some((first, rest)) = args.split_first() else {
        return Err(calling("eq", "missing argument for comparison"));
    };
    if rest.is_empty() {
        return Err(calling("eq", "missing argument for comparison"));
    }
    for other in rest {
        if equal("eq", first, other)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn two<'a>(name: &str, args: &'a [Value]) -> Result<(&'a Value, &'a Value), FuncError> {
    match args {
        [a, b] => Ok((a, b)),
        _ => Err(calling(
            name,
            format!("wrong number of args for {name}: want 2 got {}", args.len()),
        )),
    }
}

fn ne(args: &[Value]) -> Result<Value, FuncError> {
    let (a, b) = two("ne", args)?;
    Ok(Value::Bool(!equal("ne", a, b)?))
}

/// Go's `lt`: ordered kinds only (integers, floats, strings), of one kind.
fn less(name: &str, args: &[Value]) -> Result<Ordering, FuncError> {
    let (a, b) = two(name, args)?;
    let order = match (basic(a), basic(b)) {
        (Basic::Int(x), Basic::Int(y)) => Some(x.cmp(&y)),
        (Basic::Float(x), Basic::Float(y)) => x.partial_cmp(&y),
        (Basic::Str(x), Basic::Str(y)) => Some(x.cmp(y)),
        (Basic::Bool(_), Basic::Bool(_)) | (Basic::Other, Basic::Other) => {
            return Err(calling(name, "invalid type for comparison"))
        }
        _ => return Err(calling(name, "incompatible types for comparison")),
    };
    // NaN: every comparison is false; Greater makes lt and le false, and gt/ge are
    // computed as their negation in Go too.
    Ok(order.unwrap_or(Ordering::Greater))
}

fn lt(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(less("lt", args)? == Ordering::Less))
}

fn le(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(less("le", args)? != Ordering::Greater))
}

fn gt(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(less("gt", args)? == Ordering::Greater))
}

fn ge(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(less("ge", args)? != Ordering::Less))
}

// ---- printing ----

fn print(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(gofmt::sprint(args)))
}

fn println(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::from(gofmt::sprintln(args)))
}

fn printf(args: &[Value]) -> Result<Value, FuncError> {
    match args.split_first() {
        Some((Value::String(format), rest)) => Ok(Value::from(gofmt::sprintf(format, rest))),
        Some((other, _)) => Err(calling(
            "printf",
            format!(
                "wrong type for value; expected string; got {}",
                gofmt::sprint(std::slice::from_ref(other))
            ),
        )),
        None => Err(calling(
            "printf",
            "wrong number of args for printf: want at least 1 got 0",
        )),
    }
}

/// text/template's `evalArgs`: a single string as it is, else `fmt.Sprint` of them all.
fn text_of(args: &[Value]) -> String {
    match args {
        [Value::String(s)] => s.clone(),
        _ => gofmt::sprint(args),
    }
}

/// Go's `template.HTMLEscaper`.
fn html(args: &[Value]) -> Result<Value, FuncError> {
    let text = text_of(args);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

/// Go's `template.JSEscaper`.
fn js(args: &[Value]) -> Result<Value, FuncError> {
    let text = text_of(args);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c if !c.is_ascii() && c.is_control() => {
                out.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

/// Go's `url.QueryEscape` (what `template.URLQueryEscaper` applies): letters, digits and
/// `-_.~` stay, a space is `+`, every other byte `%XX`.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b' ');

fn urlquery(args: &[Value]) -> Result<Value, FuncError> {
    let text = text_of(args);
    Ok(Value::from(
        percent_encoding::utf8_percent_encode(&text, QUERY)
            .to_string()
            .replace(' ', "+"),
    ))
}

/// Go's `slice x 1 2` (`x[1:2]`) of a string (by bytes) or a list; `slice x 1 2 3` of a list.
fn slice(args: &[Value]) -> Result<Value, FuncError> {
    let Some((item, indexes)) = args.split_first() else {
        return Err(calling(
            "slice",
            "wrong number of args for slice: want at least 1 got 0",
        ));
    };
    if indexes.len() > 3 {
        return Err(calling(
            "slice",
            format!("too many slice indexes: {}", indexes.len()),
        ));
    }
    let len = match item {
        Value::String(s) => {
            if indexes.len() == 3 {
                return Err(calling("slice", "cannot 3-index slice a string"));
            }
            s.len()
        }
        Value::Array(items) => items.len(),
        Value::Nil | Value::NoValue => return Err(calling("slice", "slice of untyped nil")),
        other => {
            return Err(calling(
                "slice",
                format!(
                    "can't slice item of type {}",
                    gofmt::sprintf("%T", std::slice::from_ref(other))
                ),
            ))
        }
    };
    let mut idx = [0, len, len];
    for (i, index) in indexes.iter().enumerate() {
        let n = match basic(index) {
            Basic::Int(n) => n,
            _ => return Err(calling("slice", "cannot index slice/array with type")),
        };
        idx[i] = usize::try_from(n)
            .ok()
            .filter(|n| *n <= len)
            .ok_or_else(|| calling("slice", format!("index out of range: {n}")))?;
    }
    if idx[0] > idx[1] {
        return Err(calling(
            "slice",
            format!("invalid slice index: {} > {}", idx[0], idx[1]),
        ));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(calling(
            "slice",
            format!("invalid slice index: {} > {}", idx[1], idx[2]),
        ));
    }
    match item {
        Value::String(s) => Ok(Value::from(
            String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]]).into_owned(),
        )),
        Value::Array(items) => Ok(Value::Array(items[idx[0]..idx[1]].to_vec())),
        _ => unreachable!("checked above"),
    }
}
