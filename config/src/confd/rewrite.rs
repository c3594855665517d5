//! Three differences between gtmpl 0.7 and Go's text/template that change what a confd
//! template renders, worked around by rewriting the template text before gtmpl parses it
//! (gtmpl's parse tree is private, so the text is the only place to act):
//!
//! - gtmpl runs a range's `{{else}}` branch even after a non-empty range; Go only when the
//!   range is empty;
//! - gtmpl visits a map in hash order (a different order at each render, which would make
//!   confd rewrite `dest` and reload for nothing); Go visits it in key order;
//! - gtmpl prints a list, a map or a `KVPair` in Rust's debug form; Go as `fmt.Print` does
//!   (`[a b]`, `map[k:v]`, `{/key value}`).
//!
//! Every `{{range PIPELINE}}` becomes `{{$__confd_rN := PIPELINE}}{{range
//! _confdEntries $__confd_rN}}` (maps' values in key order; with `$k, $v :=` the key is
//! looked up by position), and its `{{else}}` becomes `{{end}}{{if not $__confd_rN}}`.
//! Every action that prints (not a keyword, a declaration or a comment) gets
//! ` | _confdPrint` appended to its pipeline, which formats the value as Go's `fmt` does
//! ([`gofmt::print_action`]). Trim markers (`{{-`, `-}}`) stay on the outer ends.
//!
//! The rewrite keeps every action on its line (a line break it would drop inside an action
//! goes into an empty comment beside it), so gtmpl's parse errors point at the lines of the
//! template as written. A template the scanner cannot follow (an unterminated action) is
//! left as it is for gtmpl to report.

use std::collections::HashMap;

use gtmpl::{Func, FuncError, Value};

use super::gofmt;

/// The helper functions the rewritten templates call.
pub(crate) fn helpers() -> Vec<(&'static str, Func)> {
    vec![
        ("_confdEntries", entries as Func),
        ("_confdKeys", keys as Func),
        ("_confdPrint", print as Func),
    ]
}

/// What an action writes for its value (appended to every printing action's pipeline).
fn print(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [value] => Ok(Value::String(gofmt::print_action(value))),
        _ => Err(FuncError::Generic(format!(
            "wrong number of args for print: want 1 got {}",
            args.len()
        ))),
    }
}

fn sorted(map: &HashMap<String, Value>) -> Vec<(&String, &Value)> {
    let mut pairs: Vec<_> = map.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs
}

/// What `range` iterates: a list as it is, a map's values in key order, nothing for nil.
fn entries(args: &[Value]) -> Result<Value, FuncError> {
    match args.first() {
        Some(Value::Array(items)) => Ok(Value::Array(items.clone())),
        Some(Value::Map(m) | Value::Object(m)) => Ok(Value::Array(
            sorted(m).into_iter().map(|(_, v)| v.clone()).collect(),
        )),
        Some(Value::Nil | Value::NoValue) | None => Ok(Value::Array(Vec::new())),
        Some(other) => Err(FuncError::Generic(format!(
            "range can't iterate over {other}"
        ))),
    }
}

/// The keys matching [`entries`]: indices of a list, a map's keys in order.
fn keys(args: &[Value]) -> Result<Value, FuncError> {
    match args.first() {
        Some(Value::Array(items)) => Ok(Value::Array((0..items.len()).map(Value::from).collect())),
        Some(Value::Map(m) | Value::Object(m)) => Ok(Value::Array(
            sorted(m)
                .into_iter()
                .map(|(k, _)| Value::from(k.as_str()))
                .collect(),
        )),
        _ => Ok(Value::Array(Vec::new())),
    }
}

/// One `{{...}}` action of the template text.
struct Action<'a> {
    raw: &'a str,
    /// `{{- `
    left_trim: bool,
    /// ` -}}`
    right_trim: bool,
    /// The inside, trim markers and surrounding space removed.
    body: &'a str,
}

impl<'a> Action<'a> {
    fn new(raw: &'a str) -> Self {
        let inner = &raw[2..raw.len() - 2];
        let left_trim = inner.len() >= 2
            && inner.starts_with('-')
            && inner[1..].starts_with(|c: char| c.is_ascii_whitespace());
        let right_trim = inner.len() >= 2
            && inner.ends_with('-')
            && inner[..inner.len() - 1].ends_with(|c: char| c.is_ascii_whitespace());
        let mut body = inner;
        if left_trim {
            body = &body[1..];
        }
        if right_trim {
            body = &body[..body.len() - 1];
        }
        Self {
            raw,
            left_trim,
            right_trim,
            body: body.trim(),
        }
    }

    /// Where the body starts and ends in `raw`.
    fn body_range(&self) -> (usize, usize) {
        let start = self.body.as_ptr() as usize - self.raw.as_ptr() as usize;
        (start, start + self.body.len())
    }

    /// An empty comment holding the line breaks of `raw` that its rewrite, which keeps only
    /// `kept` of it, drops: the lines stay where they were.
    fn kept_lines(&self, kept: &str) -> String {
        let breaks = self.raw.matches('\n').count() - kept.matches('\n').count();
        if breaks == 0 {
            String::new()
        } else {
            format!("{{{{/*{}*/}}}}", "\n".repeat(breaks))
        }
    }

    /// Whether the action writes its pipeline's value: not a keyword, a declaration or a
    /// comment.
    fn prints(&self) -> bool {
        const KEYWORDS: &[&str] = &[
            "if", "else", "end", "range", "with", "define", "block", "template", "break",
            "continue",
        ];
        if self.body.is_empty() || self.body.starts_with("/*") || KEYWORDS.contains(&self.keyword())
        {
            return false;
        }
        let (_, _, rest) = declaration(self.body);
        if rest.len() != self.body.len() {
            return false;
        }
        // `$x = value` (assignment).
        let after_var = self.body.strip_prefix('$').map(|v| {
            v.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_')
                .trim_start()
        });
        !matches!(after_var, Some(rest) if rest.starts_with('=') && !rest.starts_with("=="))
    }

    fn keyword(&self) -> &str {
        self.body
            .split(|c: char| c.is_ascii_whitespace() || c == '(')
            .next()
            .unwrap_or_default()
    }

    fn open(&self) -> &'static str {
        if self.left_trim {
            "{{- "
        } else {
            "{{"
        }
    }

    fn close(&self) -> &'static str {
        if self.right_trim {
            " -}}"
        } else {
            "}}"
        }
    }
}

/// Splits `text` into text and actions; `None` when an action is not terminated.
fn scan(text: &str) -> Option<Vec<Result<&str, Action<'_>>>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = text[pos..].find("{{") {
        let start = pos + found;
        if start > pos {
            out.push(Ok(&text[pos..start]));
        }
        let mut i = start + 2;
        let mut body_start = i;
        if bytes.get(i) == Some(&b'-') && bytes.get(i + 1).is_some_and(u8::is_ascii_whitespace) {
            body_start = i + 2;
        }
        let end = if text[body_start..].starts_with("/*") {
            let close = body_start + 2 + text[body_start + 2..].find("*/")?;
            close + 2 + text[close + 2..].find("}}")? + 2
        } else {
            loop {
                match bytes.get(i)? {
                    b'"' | b'\'' => {
                        let quote = bytes[i];
                        i += 1;
                        while *bytes.get(i)? != quote {
                            i += if bytes[i] == b'\\' { 2 } else { 1 };
                        }
                        i += 1;
                    }
                    b'`' => i += 2 + text[i + 1..].find('`')?,
                    b'}' if bytes.get(i + 1) == Some(&b'}') => break i + 2,
                    _ => i += 1,
                }
            }
        };
        out.push(Err(Action::new(&text[start..end])));
        pos = end;
    }
    if pos < text.len() {
        out.push(Ok(&text[pos..]));
    }
    Some(out)
}

/// The range declaration at the start of `pipeline`: (`$k`, `$v`) of `$k, $v :=`, (`None`,
/// `$v`) of `$v :=`, and the rest.
fn declaration(pipeline: &str) -> (Option<&str>, Option<&str>, &str) {
    let var = |s: &str| -> Option<usize> {
        let s_bytes = s.as_bytes();
        if s_bytes.first() != Some(&b'$') {
            return None;
        }
        Some(
            1 + s[1..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len() - 1),
        )
    };
    let Some(n1) = var(pipeline) else {
        return (None, None, pipeline);
    };
    let first = &pipeline[..n1];
    let rest = pipeline[n1..].trim_start();
    if let Some(after) = rest.strip_prefix(":=") {
        return (None, Some(first), after.trim_start());
    }
    if let Some(after_comma) = rest.strip_prefix(',') {
        let after_comma = after_comma.trim_start();
        if let Some(n2) = var(after_comma) {
            let second = &after_comma[..n2];
            if let Some(after) = after_comma[n2..].trim_start().strip_prefix(":=") {
                return (Some(first), Some(second), after.trim_start());
            }
        }
    }
    (None, None, pipeline)
}

/// `text` with the escapes gtmpl's lexer or unquoting gets wrong spelled as `\xNN` in every
/// double-quoted string of an action: `\\` (gtmpl takes the `"` of `"a\\"` as escaped and
/// reports an unterminated string), `\a` and `\v` (which it does not know).
fn respell_escapes(text: &str) -> String {
    let Some(parts) = scan(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    for part in parts {
        let action = match part {
            Ok(text) => {
                out.push_str(text);
                continue;
            }
            Err(action) => action.raw,
        };
        let bytes = action.as_bytes();
        let mut i = 0;
        let mut in_string = false;
        let mut start = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => in_string = !in_string,
                b'\\' if in_string => {
                    let spelled = match bytes.get(i + 1) {
                        Some(b'\\') => Some("\\x5c"),
                        Some(b'a') => Some("\\x07"),
                        Some(b'v') => Some("\\x0b"),
                        _ => None,
                    };
                    if let Some(spelled) = spelled {
                        out.push_str(&action[start..i]);
                        out.push_str(spelled);
                        start = i + 2;
                    }
                    i += 2;
                    continue;
                }
                // Raw strings, char constants and comments hold no `"` to follow.
                b'`' if !in_string => {
                    i += 1 + action[i + 1..].find('`').unwrap_or(action.len() - i - 1);
                }
                b'\'' if !in_string => {
                    while i + 1 < bytes.len() && bytes[i + 1] != b'\'' {
                        i += if bytes[i + 1] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'/' if !in_string && bytes.get(i + 1) == Some(&b'*') => break,
                _ => {}
            }
            i += 1;
        }
        out.push_str(&action[start..]);
    }
    out
}

/// `text` rewritten (see the module docs).
pub(crate) fn rewrite(text: &str) -> String {
    let text = &respell_escapes(text);
    let Some(parts) = scan(text) else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len() + 64);
    // The open blocks: `Some(n)` for the n-th range, `None` for other blocks.
    let mut blocks: Vec<Option<usize>> = Vec::new();
    let mut ranges = 0;
    for part in parts {
        let action = match part {
            Ok(text) => {
                out.push_str(text);
                continue;
            }
            Err(action) => action,
        };
        match action.keyword() {
            "range" => {
                ranges += 1;
                let n = ranges;
                blocks.push(Some(n));
                let pipeline = action.body["range".len()..].trim();
                let (key, value, expr) = declaration(pipeline);
                let var = format!("$__confd_r{n}");
                out.push_str(&format!("{}{var} := {expr}}}}}", action.open()));
                out.push_str(&action.kept_lines(expr));
                match (key, value) {
                    (Some(key), Some(value)) => out.push_str(&format!(
                        "{{{{range $__confd_i{n}, {value} := _confdEntries {var}}}}}{{{{{key} := index (_confdKeys {var}) $__confd_i{n}{}",
                        action.close()
                    )),
                    (_, Some(value)) => out.push_str(&format!(
                        "{{{{range {value} := _confdEntries {var}{}",
                        action.close()
                    )),
                    _ => out.push_str(&format!(
                        "{{{{range _confdEntries {var}{}",
                        action.close()
                    )),
                }
            }
            "if" | "with" | "define" | "block" => {
                blocks.push(None);
                out.push_str(action.raw);
            }
            "end" => {
                blocks.pop();
                out.push_str(action.raw);
            }
            "else" if action.body == "else" => match blocks.last() {
                Some(Some(n)) => out.push_str(&format!(
                    "{}end}}}}{}{{{{if not $__confd_r{n}{}",
                    action.open(),
                    action.kept_lines(""),
                    action.close()
                )),
                _ => out.push_str(action.raw),
            },
            _ if action.prints() => {
                let (_, end) = action.body_range();
                out.push_str(&action.raw[..end]);
                out.push_str(" | _confdPrint");
                out.push_str(&action.raw[end..]);
            }
            _ => out.push_str(action.raw),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_rewritten_and_the_rest_is_kept() {
        assert_eq!(
            rewrite("a{{- range gets \"/x/*\" -}}{{.Key}}{{- else -}}none{{end}}b"),
            "a{{- $__confd_r1 := gets \"/x/*\"}}{{range _confdEntries $__confd_r1 -}}{{.Key | _confdPrint}}{{- end}}{{if not $__confd_r1 -}}none{{end}}b"
        );
        assert_eq!(
            rewrite("{{range $k, $v := json .Value}}{{$k}}{{end}}"),
            "{{$__confd_r1 := json .Value}}{{range $__confd_i1, $v := _confdEntries $__confd_r1}}{{$k := index (_confdKeys $__confd_r1) $__confd_i1}}{{$k | _confdPrint}}{{end}}"
        );
        assert_eq!(
            rewrite("{{range $v := ls \"/\"}}{{if $v}}{{else}}e{{end}}{{end}}"),
            "{{$__confd_r1 := ls \"/\"}}{{range $v := _confdEntries $__confd_r1}}{{if $v}}{{else}}e{{end}}{{end}}"
        );
        // Strings, raw strings and comments holding braces do not confuse the scanner.
        let tricky = "{{/* {{range}} }} */}}{{printf \"}}{{range\"}}{{`}}`}}x";
        assert_eq!(
            rewrite(tricky),
            "{{/* {{range}} }} */}}{{printf \"}}{{range\" | _confdPrint}}{{`}}` | _confdPrint}}x"
        );
        // Printing actions go through _confdPrint; declarations, assignments, keywords and
        // comments do not.
        assert_eq!(
            rewrite("{{- getv \"/a\" | toUpper -}}{{$x := 1}}{{$x = 2}}{{template \"t\" .}}{{- /* c */ -}}{{ $x }}{{eq $x 1}}"),
            "{{- getv \"/a\" | toUpper | _confdPrint -}}{{$x := 1}}{{$x = 2}}{{template \"t\" .}}{{- /* c */ -}}{{ $x | _confdPrint }}{{eq $x 1 | _confdPrint}}"
        );
        // Line breaks a rewritten action drops are kept in a comment beside it.
        assert_eq!(
            rewrite("{{range\n ls \"/\"}}{{.}}{{else\n}}{{end}}"),
            "{{$__confd_r1 := ls \"/\"}}{{/*\n*/}}{{range _confdEntries $__confd_r1}}{{. | _confdPrint}}{{end}}{{/*\n*/}}{{if not $__confd_r1}}{{end}}"
        );
        // Escapes gtmpl cannot read are spelled as \x escapes, in strings only.
        assert_eq!(
            rewrite(r#"{{"a\\" | printf "%s\a\v\"\n"}}x\\{{`\\`}}{{'\\'}}"#),
            r#"{{"a\x5c" | printf "%s\x07\x0b\"\n" | _confdPrint}}x\\{{`\\` | _confdPrint}}{{'\\' | _confdPrint}}"#
        );
        // An unterminated action is left to gtmpl.
        assert_eq!(rewrite("{{range x"), "{{range x");
    }
}
