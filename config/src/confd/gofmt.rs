//! Go's `fmt` over gtmpl values: how text/template prints an action's value
//! ([`print_action`]) and what its `print`, `println` and `printf` return ([`sprint`],
//! [`sprintln`], [`sprintf`]).
//!
//! Values map to the Go values a confd template sees: a string, a bool, an `int` (gtmpl's
//! integers), a `float64`, a list (`[a b]`), a map (`map[k:v]`, keys sorted), an object (a
//! memkv `KVPair` struct, `{/key value}`), nil.

use std::fmt::Write as _;

use gtmpl::Value;

use super::funcs::go_float;

/// What `{{PIPELINE}}` writes for the pipeline's value: `fmt.Fprint`, with `<no value>`
/// for nil (text/template's `printableValue`).
pub(crate) fn print_action(value: &Value) -> String {
    match value {
        Value::NoValue | Value::Nil => "<no value>".to_owned(),
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            arg(&mut out, other, 'v', &Spec::default());
            out
        }
    }
}

/// Go's `fmt.Sprint`: `%v` of each, a space between two operands when neither is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut previous_string = false;
    for (i, value) in args.iter().enumerate() {
        let is_string = matches!(value, Value::String(_));
        if i > 0 && !is_string && !previous_string {
            out.push(' ');
        }
        arg(&mut out, value, 'v', &Spec::default());
        previous_string = is_string;
    }
    out
}

/// Go's `fmt.Sprintln`: `%v` of each, separated by spaces, then a newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, value) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        arg(&mut out, value, 'v', &Spec::default());
    }
    out.push('\n');
    out
}

/// The flags, width and precision of one verb.
#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// Go's `fmt.Sprintf`: verbs `%v %s %q %d %b %o %O %x %X %c %U %e %E %f %F %g %G %t %%`,
/// flags `- + # 0 space`, width and precision (also `*`); Go's `%!verb(type=value)`,
/// `%!verb(MISSING)`, `%!(NOVERB)` and `%!(EXTRA ...)` for what does not fit.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => {
                    spec.minus = true;
                    spec.zero = false;
                }
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                // Zero padding only to the left.
                '0' => spec.zero = !spec.minus,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, next: &mut usize| {
            if chars.peek() == Some(&'*') {
                chars.next();
                let n = args.get(*next).and_then(as_int);
                *next += 1;
                return Some(n.and_then(|n| usize::try_from(n).ok()));
            }
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n.map(Some)
        };
        match number(&mut chars, &mut next) {
            Some(Some(w)) => spec.width = Some(w),
            Some(None) => out.push_str("%!(BADWIDTH)"),
            None => {}
        }
        if chars.peek() == Some(&'.') {
            chars.next();
            match number(&mut chars, &mut next) {
                Some(Some(p)) => spec.precision = Some(p),
                Some(None) => out.push_str("%!(BADPREC)"),
                None => spec.precision = Some(0),
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        if verb == 'T' {
            match args.get(next) {
                Some(value) => pad(&mut out, type_name(value), &spec),
                None => out.push_str("%!T(MISSING)"),
            }
            next += 1;
            continue;
        }
        match args.get(next) {
            Some(value) => arg(&mut out, value, verb, &spec),
            None => {
                let _ = write!(out, "%!{verb}(MISSING)");
            }
        }
        next += 1;
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, value) in args[next..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}=", type_name(value));
            arg(&mut out, value, 'v', &Spec::default());
        }
        out.push(')');
    }
    out
}

fn as_int(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// The Go type a confd template would see for `value`.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.as_f64().is_some() => "float64",
        Value::Number(_) => "int",
        Value::Array(items) if items.iter().all(|v| matches!(v, Value::String(_))) => "[]string",
        Value::Array(items) if items.iter().all(|v| matches!(v, Value::Object(_))) => {
            "[]memkv.KVPair"
        }
        Value::Array(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Object(_) => "memkv.KVPair",
        Value::Function(_) => "func",
        Value::Nil | Value::NoValue => "<nil>",
    }
}

/// One operand with `verb` (Go's `printArg`/`printValue`); lists, maps and structs apply
/// the verb to each element.
fn arg(out: &mut String, value: &Value, verb: char, spec: &Spec) {
    match value {
        Value::String(s) => string(out, s, verb, spec, value),
        Value::Bool(b) => match verb {
            't' | 'v' => pad(out, if *b { "true" } else { "false" }, spec),
            _ => bad_verb(out, verb, value),
        },
        Value::Number(n) => match (n.as_f64(), as_int(value)) {
            (Some(f), _) => float(out, f, verb, spec, value),
            (None, Some(i)) => integer(out, i, verb, spec, value),
            (None, None) => bad_verb(out, verb, value),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                arg(out, item, verb, spec);
            }
            out.push(']');
        }
        Value::Map(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                string(out, key, verb, spec, value);
                out.push(':');
                arg(out, &map[key], verb, spec);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            // A KVPair's fields in declaration order, then any other field by name.
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort_by_key(|n| (n.as_str() != "Key", n.as_str() != "Value", n.as_str()));
            out.push('{');
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if spec.plus && verb == 'v' {
                    out.push_str(name);
                    out.push(':');
                }
                arg(out, &fields[name], verb, spec);
            }
            out.push('}');
        }
        Value::Nil | Value::NoValue => match verb {
            'v' => pad(out, "<nil>", spec),
            _ => bad_verb(out, verb, value),
        },
        Value::Function(_) => bad_verb(out, verb, value),
    }
}

fn bad_verb(out: &mut String, verb: char, value: &Value) {
    match value {
        Value::Nil | Value::NoValue => {
            let _ = write!(out, "%!{verb}(<nil>)");
        }
        _ => {
            let _ = write!(out, "%!{verb}({}=", type_name(value));
            arg(out, value, 'v', &Spec::default());
            out.push(')');
        }
    }
}

/// Pads `s` to the width with spaces (or zeros with the `0` flag), on the left unless `-`.
fn pad(out: &mut String, s: &str, spec: &Spec) {
    let len = s.chars().count();
    let fill = spec.width.unwrap_or(0).saturating_sub(len);
    if spec.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    } else {
        let c = if spec.zero { '0' } else { ' ' };
        out.extend(std::iter::repeat_n(c, fill));
        out.push_str(s);
    }
}

fn string(out: &mut String, s: &str, verb: char, spec: &Spec, value: &Value) {
    let truncated: String = match spec.precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_owned(),
    };
    match verb {
        'v' | 's' => pad(out, &truncated, spec),
        'q' => {
            if spec.sharp && !s.contains('`') && s.chars().all(|c| c == '\t' || !c.is_control()) {
                pad(out, &format!("`{s}`"), spec);
            } else {
                pad(out, &quote(&truncated, spec.plus), spec);
            }
        }
        'x' | 'X' => {
            let upper = verb == 'X';
            let mut hex = String::new();
            for (i, b) in truncated.bytes().enumerate() {
                if spec.space && i > 0 {
                    hex.push(' ');
                }
                if spec.sharp && (spec.space || i == 0) {
                    hex.push_str(if upper { "0X" } else { "0x" });
                }
                let _ = if upper {
                    write!(hex, "{b:02X}")
                } else {
                    write!(hex, "{b:02x}")
                };
            }
            pad(out, &hex, spec);
        }
        _ => bad_verb(out, verb, value),
    }
}

/// Go's `strconv.Quote` (`QuoteToASCII` when `ascii`).
pub(crate) fn quote(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        quote_char(&mut out, c, '"', ascii);
    }
    out.push('"');
    out
}

fn quote_char(out: &mut String, c: char, delimiter: char, ascii: bool) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == delimiter => {
            out.push('\\');
            out.push(c);
        }
        c if (ascii && !c.is_ascii()) || c.is_control() => {
            let n = u32::from(c);
            let _ = if n < 0x80 {
                write!(out, "\\x{n:02x}")
            } else if n < 0x10000 {
                write!(out, "\\u{n:04x}")
            } else {
                write!(out, "\\U{n:08x}")
            };
        }
        c => out.push(c),
    }
}

fn integer(out: &mut String, i: i128, verb: char, spec: &Spec, value: &Value) {
    let (radix, upper, prefix) = match verb {
        'v' | 'd' => (10, false, ""),
        'b' => (2, false, "0b"),
        'o' => (8, false, "0"),
        'O' => (8, false, "0o"),
        'x' => (16, false, "0x"),
        'X' => (16, true, "0X"),
        'c' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            return pad(out, &c.to_string(), spec);
        }
        'q' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let mut q = String::from('\'');
            quote_char(&mut q, c, '\'', spec.plus);
            q.push('\'');
            return pad(out, &q, spec);
        }
        'U' => {
            let mut u = format!("U+{:04X}", i.unsigned_abs());
            if spec.sharp {
                if let Some(c) = u32::try_from(i).ok().and_then(char::from_u32) {
                    let _ = write!(u, " '{c}'");
                }
            }
            return pad(out, &u, spec);
        }
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' | 's' | 't' => return bad_verb(out, verb, value),
        _ => return bad_verb(out, verb, value),
    };
    let negative = i < 0;
    let mut digits = match radix {
        2 => format!("{:b}", i.unsigned_abs()),
        8 => format!("{:o}", i.unsigned_abs()),
        16 if upper => format!("{:X}", i.unsigned_abs()),
        16 => format!("{:x}", i.unsigned_abs()),
        _ => i.unsigned_abs().to_string(),
    };
    // The precision is the minimum number of digits; with `0` and a width (and no
    // precision), the width less the sign.
    let min_digits = match spec.precision {
        Some(0) if i == 0 => {
            let blank = Spec {
                zero: false,
                ..*spec
            };
            return pad(out, "", &blank);
        }
        Some(p) => p,
        None if spec.zero && !spec.minus && spec.width.is_some() => {
            let w = spec.width.unwrap_or(0);
            if negative || spec.plus || spec.space {
                w.saturating_sub(1)
            } else {
                w
            }
        }
        None => 0,
    };
    if digits.len() < min_digits {
        digits.insert_str(0, &"0".repeat(min_digits - digits.len()));
    }
    let mut s = String::new();
    if negative {
        s.push('-');
    } else if spec.plus {
        s.push('+');
    } else if spec.space {
        s.push(' ');
    }
    let octal_has_zero = verb == 'o' && digits.starts_with('0');
    if (spec.sharp && !octal_has_zero) || verb == 'O' {
        s.push_str(prefix);
    }
    s.push_str(&digits);
    pad(
        out,
        &s,
        &Spec {
            zero: false,
            ..*spec
        },
    );
}

fn float(out: &mut String, f: f64, verb: char, spec: &Spec, value: &Value) {
    let body = match verb {
        'v' | 'g' | 'G' => {
            let s = match spec.precision {
                None => go_float(f),
                Some(p) => format_g(f, p.max(1)),
            };
            if verb == 'G' {
                s.to_uppercase()
            } else {
                s
            }
        }
        'e' | 'E' => {
            let s = format_e(f, spec.precision.unwrap_or(6));
            if verb == 'E' {
                s.to_uppercase()
            } else {
                s
            }
        }
        'f' | 'F' => {
            if f.is_finite() {
                format!("{:.*}", spec.precision.unwrap_or(6), f)
            } else {
                go_float(f)
            }
        }
        _ => return bad_verb(out, verb, value),
    };
    let (negative, digits) = match body.strip_prefix(['-', '+']) {
        Some(rest) => (body.starts_with('-'), rest.to_owned()),
        None => (false, body),
    };
    let sign = if negative {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    if !f.is_finite() {
        // Infinities and NaN are not zero padded; NaN has no sign unless asked.
        let sign = if f.is_nan() && !spec.plus && !spec.space {
            ""
        } else {
            sign
        };
        return pad(
            out,
            &format!("{sign}{digits}"),
            &Spec {
                zero: false,
                ..*spec
            },
        );
    }
    let len = sign.len() + digits.len();
    match spec.width {
        Some(w) if spec.zero && !spec.minus && w > len => {
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', w - len));
            out.push_str(&digits);
        }
        _ => pad(out, &format!("{sign}{digits}"), spec),
    }
}

/// Go's `%.{p}e`: exponent with a sign and at least two digits.
fn format_e(f: f64, p: usize) -> String {
    if !f.is_finite() {
        return go_float(f);
    }
    let s = format!("{f:.p$e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

/// Go's `%.{p}g`: `p` significant digits, trailing zeros dropped, exponent form when the
/// exponent is below -4 or at least the precision.
fn format_g(f: f64, p: usize) -> String {
    if !f.is_finite() {
        return go_float(f);
    }
    let s = format!("{:.*e}", p - 1, f.abs());
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = p as i32;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = usize::try_from(nd - dp).unwrap_or(0);
        format!("{sign}{:.*}", decimals, f.abs())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn printf_follows_go_fmt() {
        let cases: &[(&str, Vec<Value>, &str)] = &[
            ("%05.2f", vec![Value::from(1.5)], "01.50"),
            ("%5s|%-5s|", vec![s("ab"), s("ab")], "   ab|ab   |"),
            ("%q", vec![s("a\"b\n")], r#""a\"b\n""#),
            ("%.2s|%5.1s|", vec![s("abc"), s("xyz")], "ab|    x|"),
            (
                "%d|%5d|%-5d|%05d|%+d|% d",
                vec![Value::from(42); 6],
                "42|   42|42   |00042|+42| 42",
            ),
            (
                "%05d|%+05d",
                vec![Value::from(-42), Value::from(42)],
                "-0042|+0042",
            ),
            (
                "%x|%X|%#x|%o|%#o|%b",
                vec![Value::from(255); 6],
                "ff|FF|0xff|377|0377|11111111",
            ),
            ("%x|% x", vec![s("hi"), s("hi")], "6869|68 69"),
            (
                "%f|%.1f|%e|%.2e|%g|%.3g|%g",
                vec![
                    Value::from(3.24159),
                    Value::from(0.25),
                    Value::from(1234.5678),
                    Value::from(1234.5678),
                    Value::from(1.5e-7),
                    Value::from(1234.5678),
                    Value::from(0.5),
                ],
                "3.241590|0.2|1.234568e+03|1.23e+03|1.5e-07|1.23e+03|0.5",
            ),
            (
                "%+.1f|% .1f|%8.3f|%-8.3f|",
                vec![
                    Value::from(2.5),
                    Value::from(2.5),
                    Value::from(3.24159),
                    Value::from(3.24159),
                ],
                "+2.5| 2.5|   3.242|3.242   |",
            ),
            (
                "%t|%v|%5t",
                vec![Value::Bool(true), Value::Bool(false), Value::Bool(true)],
                "true|false| true",
            ),
            (
                "%c|%q|%U",
                vec![Value::from(65), Value::from(65), Value::from(65)],
                "A|'A'|U+0041",
            ),
            ("100%%", vec![], "100%"),
            ("%d", vec![s("x")], "%!d(string=x)"),
            ("%s", vec![Value::from(3)], "%!s(int=3)"),
            ("%d %d", vec![Value::from(1)], "1 %!d(MISSING)"),
            ("%d", vec![Value::from(1), s("x")], "1%!(EXTRA string=x)"),
            ("%", vec![], "%!(NOVERB)"),
            (
                "%v|%s|%q",
                vec![Value::Array(vec![s("a"), s("b")]); 3],
                r#"[a b]|[a b]|["a" "b"]"#,
            ),
            (
                "%*d|%-*d|",
                vec![
                    Value::from(4),
                    Value::from(7),
                    Value::from(3),
                    Value::from(7),
                ],
                "   7|7  |",
            ),
        ];
        for (format, args, want) in cases {
            assert_eq!(sprintf(format, args), *want, "printf {format:?}");
        }
    }

    #[test]
    fn values_print_as_go_prints_them() {
        let pair = |k: &str, v: &str| {
            Value::Object(HashMap::from([
                ("Key".to_owned(), s(k)),
                ("Value".to_owned(), s(v)),
            ]))
        };
        let map = Value::Map(HashMap::from([
            ("k2".to_owned(), s("v2")),
            ("k".to_owned(), s("v")),
            (
                "n".to_owned(),
                Value::Array(vec![Value::from(1), Value::NoValue]),
            ),
        ]));
        assert_eq!(print_action(&pair("/app/name", "shop")), "{/app/name shop}");
        assert_eq!(
            print_action(&Value::Array(vec![pair("/a", "1"), pair("/b", "2")])),
            "[{/a 1} {/b 2}]"
        );
        assert_eq!(print_action(&map), "map[k:v k2:v2 n:[1 <nil>]]");
        assert_eq!(print_action(&Value::NoValue), "<no value>");
        assert_eq!(print_action(&Value::from(0.000015)), "1.5e-05");
        assert_eq!(sprintf("%+v", &[pair("/a", "1")]), "{Key:/a Value:1}");
        assert_eq!(
            sprint(&[s("a"), s("b"), Value::from(1), Value::from(2), s("c")]),
            "ab1 2c"
        );
        assert_eq!(sprintln(&[s("a"), Value::from(1)]), "a 1\n");
    }
}
