//! `--template`: the subject, body and text of a message rendered with minijinja
//! (Jinja2's syntax: `{{ name }}`, `{% if %}`, `{% for %}`, filters). Variables come from
//! `--var KEY=VALUE`, `--vars-file` (JSON or TOML), and the environment variables named
//! one by one with `--var-env NAME` as `env.NAME`: a template sees nothing else, so a
//! body built from someone else's text cannot read the process's secrets.
//!
//! An undefined variable is an error that names it (65), never an empty string: a
//! report that says "Dear ," went out because nobody noticed.
//!
//! Rendering is bounded: a template runs at most [`FUEL`] engine steps and gives at most
//! [`MAX_RENDERED`] bytes, so a template bomb (nested loops, a string repeated in a loop)
//! ends with 65 instead of holding a CPU or filling memory.

use std::collections::BTreeMap;
use std::io;

use minijinja::{AutoEscape, Environment, Template, UndefinedBehavior, Value};

use crate::error::{Error, Result};

/// The variables of a template, by name.
pub type Vars = BTreeMap<String, serde_json::Value>;

/// Renders `source` (from `label`, like `--subject`) with `vars`; HTML-escapes the
/// values when `html` (the body of an HTML message), so a variable holding `<` cannot
/// change the page.
pub fn render(label: &str, source: &str, vars: &Vars, html: bool) -> Result<String> {
    render_hinted(label, source, vars, html, None)
}

/// [`render`] for a template over a record's own values (`batch --unsubscribe-url`):
/// an undefined variable's error ends with `hint` (where the value should have been),
/// not with the `--var` flags of `send`.
pub fn render_record(label: &str, source: &str, vars: &Vars, hint: &str) -> Result<String> {
    render_hinted(label, source, vars, false, Some(hint))
}

fn render_hinted(
    label: &str,
    source: &str,
    vars: &Vars,
    html: bool,
    record_hint: Option<&str>,
) -> Result<String> {
    let mut env = strict_env();
    env.set_auto_escape_callback(move |_| {
        if html {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_template("t", source)
        .map_err(|e| Error::invalid(format!("{label}: not a valid template: {}", describe(&e))))?;
    let template = env
        .get_template("t")
        .map_err(|e| Error::invalid(format!("{label}: {}", describe(&e))))?;
    let context = Value::from_serialize(vars);
    render_bounded(&template, &context).map_err(|e| {
        let e = match e {
            Bounded::TooLarge => return too_large(label),
            Bounded::Engine(e) => e,
        };
        let missing: Vec<String> = template
            .undeclared_variables(true)
            .into_iter()
            .filter(|name| !defined(vars, name))
            .collect();
        if e.kind() == minijinja::ErrorKind::UndefinedError && !missing.is_empty() {
            let mut missing = missing;
            missing.sort();
            let hint = if let Some(hint) = record_hint {
                hint
            } else if missing.iter().all(|name| name.starts_with("env.")) {
                "name an environment variable with --var-env NAME (and set it)"
            } else {
                "give it with --var NAME=VALUE or in --vars-file (an environment variable \
                 with --var-env NAME)"
            };
            Error::invalid(format!("{label}: {}: {hint}", undefined(&missing)))
        } else {
            Error::invalid(format!("{label}: {}", describe(&e)))
        }
    })
}

/// The most engine steps one rendering may take: far more than a report looping over
/// thousands of items needs (a fraction of a second of CPU), far less than a bomb wants.
pub const FUEL: u64 = 5_000_000;

/// The most text one rendering may give: 16 MiB, more than any mail body.
pub const MAX_RENDERED: usize = 16 << 20;

/// The one engine setup for every template of envoi (`send --template`, `batch`'s CSV
/// merge): an undefined variable is an error, never an empty string, and a rendering
/// runs out of fuel after [`FUEL`] steps.
pub(crate) fn strict_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env
}

/// Why a bounded rendering failed.
pub(crate) enum Bounded {
    /// The text grew past [`MAX_RENDERED`].
    TooLarge,
    /// The engine's own error (out of fuel among them).
    Engine(minijinja::Error),
}

/// Renders `template` with `context`, stopping once the text passes [`MAX_RENDERED`]:
/// the text is written to a buffer that refuses to grow further, so a bomb stops at
/// the cap instead of after it has filled memory.
pub(crate) fn render_bounded(
    template: &Template<'_, '_>,
    context: &Value,
) -> std::result::Result<String, Bounded> {
    let mut out = CappedBuf::default();
    if let Err(e) = template.render_captured_to(context, &mut out) {
        return Err(if out.over {
            Bounded::TooLarge
        } else {
            Bounded::Engine(e)
        });
    }
    // The engine writes only the template's text and values: UTF-8 throughout.
    String::from_utf8(out.text).map_err(|e| {
        Bounded::Engine(minijinja::Error::new(
            minijinja::ErrorKind::WriteFailure,
            e.to_string(),
        ))
    })
}

/// The error for a rendering past [`MAX_RENDERED`], naming the template.
pub(crate) fn too_large(label: &str) -> Error {
    Error::invalid(format!(
        "{label}: the template gives more than {} MiB of text, the most envoi renders",
        MAX_RENDERED >> 20
    ))
}

/// A buffer that refuses a write taking it past [`MAX_RENDERED`], and remembers that it
/// did, so the caller can tell why the engine stopped.
#[derive(Default)]
struct CappedBuf {
    text: Vec<u8>,
    over: bool,
}

impl io::Write for CappedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.text.len() + buf.len() > MAX_RENDERED {
            self.over = true;
            return Err(io::Error::other("the rendered text is too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// "undefined variable {{ a }}, {{ b }}": how an error names what a template lacks.
pub(crate) fn undefined(names: &[impl AsRef<str>]) -> String {
    let listed: Vec<String> = names
        .iter()
        .map(|v| format!("{{{{ {} }}}}", v.as_ref()))
        .collect();
    format!("undefined variable {}", listed.join(", "))
}

/// Whether `name` (`user` or `user.name`, as minijinja lists them) has a value in `vars`.
fn defined(vars: &Vars, name: &str) -> bool {
    let mut parts = name.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let mut value = match vars.get(first) {
        Some(v) => v,
        None => return false,
    };
    for part in parts {
        match value.get(part) {
            Some(v) => value = v,
            None => return false,
        }
    }
    true
}

/// A minijinja error in one line, with where it is (`line 3`).
pub(crate) fn describe(e: &minijinja::Error) -> String {
    // The kind's Display is its description ("undefined value", "syntax error").
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "the template ran too long (over {} million steps); is a loop unbounded?",
            FUEL / 1_000_000
        );
    }
    let what = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned);
    match e.line() {
        Some(line) => format!("{what} (line {line})"),
        None => what,
    }
}

/// Parses `--var KEY=VALUE`: a key of letters, digits and `_` not starting with a digit
/// (a name a template can say), the value as text.
pub fn parse_var(text: &str) -> Result<(String, serde_json::Value)> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(Error::usage(format!("--var {text:?}: give NAME=VALUE")));
    };
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid || key == "env" {
        return Err(Error::usage(format!(
            "--var {text:?}: {key:?} is not a variable name (letters, digits and _, not \
             starting with a digit; env is the environment)"
        )));
    }
    Ok((key.to_owned(), serde_json::Value::String(value.to_owned())))
}

/// Reads `--vars-file`: a JSON or TOML (by the `.toml` extension) table of variables.
pub fn parse_vars_file(label: &str, name: &str, text: &str) -> Result<Vars> {
    let value: serde_json::Value = if name.ends_with(".toml") {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| Error::invalid(format!("{label}: not valid TOML: {}", e.message())))?;
        serde_json::to_value(table)
            .map_err(|e| Error::invalid(format!("{label}: cannot use its values: {e}")))?
    } else {
        serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("{label}: not valid JSON: {e}")))?
    };
    match value {
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        _ => Err(Error::invalid(format!(
            "{label}: must hold a table (a JSON object) of variables"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn vars(json: serde_json::Value) -> Vars {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn renders_and_names_what_is_undefined() {
        let v = vars(serde_json::json!({"name": "Ann", "job": {"id": 7}, "env": {"HOST": "ci"}}));
        assert_eq!(
            render(
                "--subject",
                "Hi {{ name }}, job {{ job.id }} on {{ env.HOST }}",
                &v,
                false
            )
            .unwrap(),
            "Hi Ann, job 7 on ci"
        );
        let err = render("--subject", "Hi {{ nmae }} {{ job.idd }}", &v, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().contains("{{ nmae }}"), "{err}");
        let err = render("--body", "{% if %}", &v, false).unwrap_err();
        assert!(
            err.message().starts_with("--body: not a valid template"),
            "{err}"
        );
    }

    #[test]
    fn html_bodies_escape_values() {
        let v = vars(serde_json::json!({"x": "<b>&"}));
        assert_eq!(
            render("--body", "<p>{{ x }}</p>", &v, true).unwrap(),
            "<p>&lt;b&gt;&amp;</p>"
        );
        assert_eq!(render("--subject", "{{ x }}", &v, false).unwrap(), "<b>&");
    }

    #[test]
    fn vars_from_flags_and_files() {
        assert_eq!(parse_var("a_1=x=y").unwrap(), ("a_1".into(), "x=y".into()));
        for bad in ["noequals", "1a=x", "a-b=x", "env=x"] {
            assert_eq!(
                parse_var(bad).unwrap_err().kind(),
                ErrorKind::Usage,
                "{bad}"
            );
        }
        let toml =
            parse_vars_file("--vars-file", "v.toml", "n = 3\n[user]\nname = \"Ann\"\n").unwrap();
        assert_eq!(toml["user"]["name"], "Ann");
        let json = parse_vars_file("--vars-file", "v.json", r#"{"n": [1, 2]}"#).unwrap();
        assert_eq!(json["n"][1], 2);
        assert!(parse_vars_file("--vars-file", "v.json", "[1]").is_err());
    }

    /// MD04: a template bomb ends with 65 and a plain reason, not with a held CPU or a
    /// full memory.
    #[test]
    fn md04_rendering_is_bounded() {
        let v = Vars::new();
        let loops = "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}";
        let err = render("--body", loops, &v, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.message().contains("ran too long") || err.message().contains("MiB"),
            "{err}"
        );
        let quiet =
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
        let err = render("--body", quiet, &v, false).unwrap_err();
        assert!(err.message().contains("ran too long"), "{err}");
        let big = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";
        let err = render("--subject", big, &v, false).unwrap_err();
        assert!(
            err.message()
                .starts_with("--subject: the template gives more than 16 MiB"),
            "{err}"
        );
        // A real report stays well inside both bounds.
        let files: Vec<serde_json::Value> = (0..10_000)
            .map(|i| serde_json::json!({"name": format!("f{i}"), "size": i}))
            .collect();
        let v = vars(serde_json::json!({ "files": files }));
        let report = "{% for f in files %}- {{ f.name }} ({{ f.size }} bytes)\n{% endfor %}";
        assert!(render("--body", report, &v, false).is_ok());
    }
}
