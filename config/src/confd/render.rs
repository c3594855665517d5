//! Renders a resource's template over its keys with gtmpl and confd's functions.

use gtmpl::error::ParseError;
use gtmpl::{Context, Template, Value};

use super::builtins;
use super::error::ConfdError;
use super::funcs;
use super::resource::{check_inside, Resource};
use super::rewrite;
use super::store::KvStore;

/// The template of `resource` rendered over `store`. The template file is read again at
/// each render (as confd does), and refused when a symlink now leads it out of the
/// templates directory.
pub(crate) fn render(resource: &Resource, store: KvStore) -> Result<String, ConfdError> {
    let template_error = |reason: String| ConfdError::Template {
        resource: resource.file.clone(),
        template: resource.template.clone(),
        reason,
    };
    if !resource.template.exists() {
        return Err(template_error("missing template".to_owned()));
    }
    let real = check_inside(
        &resource.file,
        &resource.templates_dir,
        &resource.template,
        &resource.src,
    )?;
    let text = std::fs::read_to_string(&real).map_err(|e| template_error(e.to_string()))?;
    // confd names its template after the file (`template.New(filepath.Base(src))`).
    let name = resource.template.file_name().map_or_else(
        || resource.src.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (rendered, missing) = funcs::with_store(store, || render_text(&name, &text));
    rendered.map_err(|reason| match missing {
        Some(key) => ConfdError::MissingKey {
            resource: resource.file.clone(),
            template: resource.template.clone(),
            key,
            reason,
        },
        None => template_error(reason),
    })
}

/// Parses and executes `text` as the template `name` with text/template's and confd's
/// functions (the key functions read the store set by [`funcs::with_store`]). The error is
/// on one line and, as Go's, names the template: `template: NAME:LINE: reason` for a parse
/// error, `template: NAME: executing "NAME": reason` for an execution error (gtmpl does not
/// say where execution failed).
pub(crate) fn render_text(name: &str, text: &str) -> Result<String, String> {
    let mut template = new_template();
    if let Err(e) = template.parse(rewrite::rewrite(text)) {
        let reason = parse_reason(e);
        let line = error_line(text, &reason);
        return Err(one_line(&format!("template: {name}:{line}: {reason}")));
    }
    // confd executes its templates with nil data: `{{.}}` is `<no value>`.
    template
        .render(&Context::from(Value::NoValue))
        .map_err(|e| one_line(&format!("template: {name}: executing {name:?}: {e}")))
}

fn one_line(text: &str) -> String {
    super::error::one_line(text, 300)
}

fn new_template() -> Template {
    let mut template = Template::default();
    template.add_funcs(&builtins::all());
    template.add_funcs(&funcs::all());
    template.add_funcs(&rewrite::helpers());
    template
}

/// gtmpl's message without its location (its line numbers are wrong: its lexer counts
/// a line for every text and delimiter token).
fn parse_reason(error: ParseError) -> String {
    match error {
        ParseError::WithContext(_, reason) => reason,
        other => other.to_string(),
    }
}

/// What the first parse error of `text` is, if any.
fn first_parse_error(text: &str) -> Option<String> {
    new_template()
        .parse(rewrite::rewrite(text))
        .err()
        .map(parse_reason)
}

/// The line of `text` where the parse error `reason` is, as Go counts it.
///
/// gtmpl parses from left to right and stops at the first error, so the error is on line
/// `n` when the first `n` lines followed by a sentinel (an action calling an undefined
/// function, closing any action left open first) fail with the same `reason`, and the first
/// `n - 1` lines followed by it do not (they fail at the sentinel, or at the end). A binary
/// search finds `n`. An error that needs the end of the text to show (an unclosed `if`, an
/// unterminated comment) is, as in Go, on the last line.
fn error_line(text: &str, reason: &str) -> usize {
    const SENTINEL: &str = "}}{{_confdSentinel}}";
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain((!text.ends_with('\n') || text.is_empty()).then_some(text.len()))
        .collect();
    let last_line = text.matches('\n').count() + 1;
    let fails_by_line = |n: usize| {
        let prefix = format!("{}{SENTINEL}", &text[..ends[n - 1]]);
        first_parse_error(&prefix).as_deref() == Some(reason)
    };
    if !fails_by_line(ends.len()) {
        return last_line;
    }
    // The smallest n in 1..=ends.len() with fails_by_line(n).
    let (mut low, mut high) = (1, ends.len());
    while low < high {
        let mid = low + (high - low) / 2;
        if fails_by_line(mid) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// `check_cmd` with `{{.src}}` replaced by `stage`, as confd templates it.
pub(crate) fn check_command(command: &str, stage: &str) -> Result<String, String> {
    let mut data = std::collections::HashMap::new();
    data.insert("src".to_owned(), Value::from(stage));
    let mut template = Template::default();
    template
        .parse(command)
        .map_err(|e| super::error::one_line(&e.to_string(), 300))?;
    template
        .render(&Context::from(Value::Map(data)))
        .map_err(|e| super::error::one_line(&e.to_string(), 300))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn store() -> KvStore {
        let pairs = [
            ("/database/host", "127.0.0.1"),
            ("/database/port", "3306"),
            ("/upstream/app2", "10.0.1.11:8080"),
            ("/upstream/app1", "10.0.1.10:8080"),
            ("/services/web/a/addr", "a:80"),
            ("/services/web/b/addr", "b:80"),
            ("/services/db/x", "x"),
            (
                "/json/obj",
                r#"{"Id":"host1","IP":"10.0.0.1","port":8080,"big":1000000,"tags":["a","b"],"z":1,"m":2,"n":null}"#,
            ),
            ("/json/arr", r#"["c","a","b"]"#),
            ("/b64", "aGVsbG8gd29ybGQ="),
            ("/flag", "true"),
            ("/count", "3"),
        ];
        KvStore::from_map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    /// Each template renders (over [`store`]) to what it is paired with.
    fn assert_renders(cases: &[(&str, &str)]) {
        for (template, want) in cases {
            assert_eq!(
                render(template).as_deref(),
                Ok(*want),
                "template {template}"
            );
        }
    }

    fn render(text: &str) -> Result<String, String> {
        funcs::with_store(store(), || render_text("t.tmpl", text)).0
    }

    #[test]
    fn every_confd_function_renders_as_confd() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{{getv "/database/host"}}:{{getv "/database/port"}}"#,
                "127.0.0.1:3306",
            ),
            (r#"{{getv "/nope" "fallback"}}"#, "fallback"),
            (r#"{{getv "/database/host" "fallback"}}"#, "127.0.0.1"),
            (
                r#"{{range getvs "/upstream/*"}}[{{.}}]{{end}}"#,
                "[10.0.1.10:8080][10.0.1.11:8080]",
            ),
            (
                r#"{{with get "/database/host"}}{{.Key}}={{.Value}}{{end}}"#,
                "/database/host=127.0.0.1",
            ),
            (
                r#"{{range gets "/upstream/*"}}{{base .Key}}={{.Value}};{{end}}"#,
                "app1=10.0.1.10:8080;app2=10.0.1.11:8080;",
            ),
            (
                r#"{{range gets "/services/*/*/addr"}}{{.Value}} {{end}}"#,
                "a:80 b:80 ",
            ),
            (
                r#"{{if exists "/flag"}}yes{{end}}{{if exists "/nope"}}no{{end}}"#,
                "yes",
            ),
            (r#"{{range ls "/services"}}{{.}} {{end}}"#, "db web "),
            (r#"{{range ls "/services/web"}}{{.}} {{end}}"#, "a b "),
            (r#"{{range lsdir "/services"}}{{.}} {{end}}"#, "db web "),
            (r#"{{range lsdir "/services/db"}}{{.}} {{end}}|"#, "|"),
            (r#"{{range lsdir "/services/web"}}{{.}} {{end}}"#, "a b "),
            (r#"{{base "/a/b/c"}} {{dir "/a/b/c"}}"#, "c /a/b"),
            (
                r#"{{$p := split (getv "/upstream/app1") ":"}}{{index $p 0}} {{index $p 1}}"#,
                "10.0.1.10 8080",
            ),
            (
                r#"{{join (getvs "/upstream/*") ","}}"#,
                "10.0.1.10:8080,10.0.1.11:8080",
            ),
            (
                r#"{{toUpper "abc"}} {{toLower "ABC"}} {{getv "/database/host" | toUpper}}"#,
                "ABC abc 127.0.0.1",
            ),
            (
                r#"{{$d := json (getv "/json/obj")}}{{$d.Id}} {{$d.IP}} {{$d.port}} {{$d.big}} {{index $d.tags 1}} {{$d.missing}} {{$d.n}}"#,
                "host1 10.0.0.1 8080 1e+06 b <no value> <no value>",
            ),
            (
                r#"{{range $k, $v := json (getv "/json/obj")}}{{$k}},{{end}}"#,
                "IP,Id,big,m,n,port,tags,z,",
            ),
            (
                r#"{{range jsonArray (getv "/json/arr")}}{{.}}{{end}}"#,
                "cab",
            ),
            (
                r#"{{range reverse (jsonArray (getv "/json/arr"))}}{{.}}{{end}}"#,
                "bac",
            ),
            (
                r#"{{contains "hello" "ell"}} {{replace "a-b-c" "-" "_" -1}} {{replace "a-b-c" "-" "_" 1}} {{trimSuffix "file.conf" ".conf"}}"#,
                "true a_b_c a_b-c file",
            ),
            (
                r#"{{base64Encode "hello world"}} {{base64Decode (getv "/b64")}} {{base64Encode "ab"}}"#,
                "aGVsbG8gd29ybGQ= hello world YWI=",
            ),
            (r#"{{if parseBool (getv "/flag")}}on{{end}}"#, "on"),
            (
                r#"{{add 1 2}} {{sub 5 7}} {{mul 3 4}} {{div 7 2}} {{mod 7 2}} {{add (atoi (getv "/count")) 1}}"#,
                "3 -2 12 3 1 4",
            ),
            (
                r#"{{range seq 1 (atoi (getv "/count"))}}{{.}}{{end}}"#,
                "123",
            ),
            (
                r#"{{getenv "SVCKIT_CONFD_SURELY_UNSET"}}|{{getenv "SVCKIT_CONFD_SURELY_UNSET" "dflt"}}"#,
                "|dflt",
            ),
            (
                r#"{{fileExists "/"}} {{fileExists "/surely/not/here"}}"#,
                "true false",
            ),
            (
                r#"{{range sortByLength (split "ccc,a,bb" ",")}}{{.}} {{end}}"#,
                "a bb ccc ",
            ),
            (
                r#"{{$m := map "name" "es" "port" 9200}}{{index $m "name"}}:{{index $m "port"}}"#,
                "es:9200",
            ),
            (
                r#"{{range lookupIP "localhost"}}{{if eq . "127.0.0.1"}}lo{{end}}{{end}}"#,
                "lo",
            ),
            // Go template features confd templates use.
            (
                "a\n{{- range getvs \"/upstream/*\" }}\n  server {{ . }};\n{{- end }}\nb",
                "a\n  server 10.0.1.10:8080;\n  server 10.0.1.11:8080;\nb",
            ),
            (r#"{{range gets "/upstream/*"}}x{{else}}none{{end}}"#, "xx"),
            (r#"{{range gets "/nothing/*"}}x{{else}}none{{end}}"#, "none"),
            (
                r#"{{range $i, $kv := gets "/upstream/*"}}{{$i}}:{{$kv.Value}} {{end}}"#,
                "0:10.0.1.10:8080 1:10.0.1.11:8080 ",
            ),
            (
                r#"{{printf "%s-%d" (getv "/database/host") 3}}"#,
                "127.0.0.1-3",
            ),
            (
                r#"{{define "srv"}}server {{.}};{{end}}{{range getvs "/upstream/*"}}{{template "srv" .}}{{end}}"#,
                "server 10.0.1.10:8080;server 10.0.1.11:8080;",
            ),
            (
                r#"{{if eq (getv "/database/port") "3306"}}mysql{{else}}other{{end}}"#,
                "mysql",
            ),
            (r#"{{/* a comment */}}{{len (ls "/upstream")}}"#, "2"),
        ];
        assert_renders(cases);
    }

    #[test]
    fn errors_name_the_missing_key_and_stay_on_one_line() {
        let (out, missing) =
            funcs::with_store(store(), || render_text("t.tmpl", "a {{getv \"/nope\"}}"));
        assert_eq!(missing.as_deref(), Some("/nope"));
        assert!(out.unwrap_err().contains("key does not exist: /nope"));
        let (out, missing) =
            funcs::with_store(store(), || render_text("t.tmpl", "{{get \"/nope/x\"}}"));
        assert_eq!(missing.as_deref(), Some("/nope/x"));
        assert!(out.is_err());
        for bad in [
            "{{getv}}",
            "{{nosuchfunc \"x\"}}",
            "{{range gets \"/[\"}}{{end}}",
            "{{div 1 0}}",
            "{{atoi \"x\"}}",
            "{{json \"[1]\"}}",
            "{{ if }}",
        ] {
            let (out, missing) = funcs::with_store(store(), || render_text("t.tmpl", bad));
            let message = out.expect_err(bad);
            assert!(!message.contains('\n'), "{bad}: {message}");
            assert_eq!(missing, None, "{bad}");
        }
    }

    #[test]
    fn parse_errors_name_the_template_and_the_line_as_go() {
        let error = |text: &str| {
            render(text)
                .map(|_| ())
                .map_or_else(|e| e, |()| String::new())
        };
        let padding = "line\n".repeat(10);
        // Each expected message is Go's `template: NAME:LINE: ...` (the reason is gtmpl's).
        assert!(error("{{getv \"/x\" }").starts_with("template: t.tmpl:1: "));
        assert!(error("a\nb\nc\n{{getv \"/x\" }").starts_with("template: t.tmpl:4: "));
        assert_eq!(
            error(&format!("{padding}x {{{{getv \"/x}}}}\nmore\n")),
            "template: t.tmpl:11: unterminated quoted string"
        );
        // Ranges and printing actions before the error are rewritten on their lines.
        assert!(error(&format!(
            "{{{{range ls \"/services\"}}}}\n{{{{.}}}}\n{{{{else}}}}\nnone{{{{end}}}}\n{padding}{{{{nosuch 1}}}}"
        ))
        .starts_with("template: t.tmpl:15: "));
        // An error only the end shows is on the last line, as in Go.
        assert!(error("{{if true}}\nx\n").starts_with("template: t.tmpl:3: "));
        // Execution errors name the template too.
        assert_eq!(
            error("{{div 1 0}}"),
            "template: t.tmpl: executing \"t.tmpl\": error calling div: runtime error: integer divide by zero"
        );
    }

    #[test]
    fn comparisons_follow_go() {
        let cases: &[(&str, &str)] = &[
            (r#"{{if eq "a" "a" "b"}}y{{else}}n{{end}}"#, "y"),
            (r#"{{if eq "b" "a" "b"}}y{{else}}n{{end}}"#, "y"),
            (r#"{{if eq "c" "a" "b"}}y{{else}}n{{end}}"#, "n"),
            (
                r#"{{eq 1 1}} {{eq 1 2 3 1}} {{ne 1 2}} {{ne "a" "a"}}"#,
                "true true true false",
            ),
            (
                r#"{{lt 1 2}} {{le 2 2}} {{gt 1 2}} {{ge 2 3}} {{lt -1 1}}"#,
                "true true false false true",
            ),
            (
                r#"{{lt "a" "b"}} {{le "b" "b"}} {{gt "b" "a"}} {{ge "a" "b"}}"#,
                "true true true false",
            ),
            (r#"{{lt 1.5 2.5}} {{eq true true}}"#, "true true"),
        ];
        assert_renders(cases);
        for bad in [
            r#"{{eq "1" 1}}"#,
            r#"{{lt 1 "a"}}"#,
            r#"{{lt true false}}"#,
            "{{eq 1}}",
        ] {
            let message = render(bad).expect_err(bad);
            assert!(message.contains("error calling"), "{bad}: {message}");
        }
    }

    #[test]
    fn printf_and_print_follow_go_fmt() {
        let cases: &[(&str, &str)] = &[
            (r#"{{printf "%05.2f" 1.5}}"#, "01.50"),
            (
                r#"[{{printf "%5s" "ab"}}][{{printf "%-5s" "ab"}}]"#,
                "[   ab][ab   ]",
            ),
            (r#"{{printf "%q" "a b"}}"#, r#""a b""#),
            (
                r#"{{printf "%d|%+d|%x|%o|%5.1f|%e|%g|%t|%v|%%" 42 42 255 8 3.14159 1234.5 0.25 true "v"}}"#,
                "42|+42|ff|10|  3.1|1.234500e+03|0.25|true|v|%",
            ),
            (
                r#"{{printf "%s:%d" (getv "/database/host") (atoi (getv "/database/port"))}}"#,
                "127.0.0.1:3306",
            ),
            (
                r#"{{printf "%s" (getvs "/upstream/*")}}"#,
                "[10.0.1.10:8080 10.0.1.11:8080]",
            ),
            (
                r#"{{printf "%d"}}|{{printf "%d" "x"}}"#,
                "%!d(MISSING)|%!d(string=x)",
            ),
            (
                r#"{{print "a" "b" 1 2}}|{{println "a" 1}}|"#,
                "ab1 2|a 1\n|",
            ),
        ];
        assert_renders(cases);
    }

    #[test]
    fn html_js_urlquery_and_slice_are_gos() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{{html "<a href=\"x\">Tom & Jerry's</a>"}}"#,
                "&lt;a href=&#34;x&#34;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;",
            ),
            (r#"{{"<b>" | html}}"#, "&lt;b&gt;"),
            (
                r#"{{js "it's \"x\" <b> & a=b\\"}}"#,
                r#"it\'s \"x\" \u003Cb\u003E \u0026 a\u003Db\\"#,
            ),
            (r#"{{urlquery "a b&c=d/é~"}}"#, "a+b%26c%3Dd%2F%C3%A9~"),
            (r#"{{urlquery "a" 1}}"#, "a1"),
            (
                r#"{{slice "abcdef" 1 3}}|{{slice "abc" 1}}|{{slice "abc"}}"#,
                "bc|bc|abc",
            ),
            (
                r#"{{range slice (getvs "/upstream/*") 1}}{{.}}{{end}}"#,
                "10.0.1.11:8080",
            ),
            (r#"{{slice (split "a,b,c,d" ",") 1 3}}"#, "[b c]"),
        ];
        assert_renders(cases);
        for bad in [
            r#"{{slice "abc" 2 1}}"#,
            r#"{{slice "abc" 0 4}}"#,
            r#"{{slice "abc" 0 1 2}}"#,
        ] {
            assert!(render(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_print_as_go_prints_them() {
        let cases: &[(&str, &str)] = &[
            (r#"{{get "/database/host"}}"#, "{/database/host 127.0.0.1}"),
            (
                r#"{{getvs "/upstream/*"}}"#,
                "[10.0.1.10:8080 10.0.1.11:8080]",
            ),
            (
                r#"{{gets "/upstream/*"}}"#,
                "[{/upstream/app1 10.0.1.10:8080} {/upstream/app2 10.0.1.11:8080}]",
            ),
            (r#"{{ls "/services"}}"#, "[db web]"),
            (
                r#"{{json "{\"k2\":\"v2\",\"k\":\"v\"}"}}"#,
                "map[k:v k2:v2]",
            ),
            (r#"{{jsonArray (getv "/json/arr")}}"#, "[c a b]"),
            (r#"{{map "b" 1 "a" (split "x,y" ",")}}"#, "map[a:[x y] b:1]"),
            (
                r#"{{$kv := get "/flag"}}{{$kv}} {{$kv.Value}} {{seq 1 3}}"#,
                "{/flag true} true [1 2 3]",
            ),
            (r#"{{.}} {{true}} {{3}} {{1.5}}"#, "<no value> true 3 1.5"),
        ];
        assert_renders(cases);
    }

    #[test]
    fn a_render_is_stable_for_maps() {
        let template = r#"{{range $k, $v := json (getv "/json/obj")}}{{$k}}={{$v}};{{end}}"#;
        let first = render(template).unwrap();
        for _ in 0..20 {
            assert_eq!(render(template).unwrap(), first);
        }
    }

    #[test]
    fn check_command_templates_src() {
        assert_eq!(
            check_command("nginx -t -c {{.src}}", "/etc/.nginx.conf1").unwrap(),
            "nginx -t -c /etc/.nginx.conf1"
        );
        assert_eq!(check_command("true", "/x").unwrap(), "true");
    }

    #[test]
    fn go_floats_print_as_go() {
        use super::funcs::go_float;
        assert_eq!(go_float(8080.0), "8080");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(1_048_576.0), "1.048576e+06");
        assert_eq!(go_float(123_456.0), "123456");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(-2.5), "-2.5");
    }
}
