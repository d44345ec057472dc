//! `--template`: the subject, body and text of a message rendered with minijinja
//! (Jinja2's syntax: `{{ name }}`, `{% if %}`, `{% for %}`, filters). Variables come from
//! `--var KEY=VALUE`, `--vars-file` (JSON or TOML) and the environment as `env.NAME`.
//!
//! An undefined variable is an error that names it (65), never an empty string: a
//! report that says "Dear ," went out because nobody noticed.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::error::{Error, Result};

/// The variables of a template, by name.
pub type Vars = BTreeMap<String, serde_json::Value>;

/// Renders `source` (from `label`, like `--subject`) with `vars`; HTML-escapes the
/// values when `html` (the body of an HTML message), so a variable holding `<` cannot
/// change the page.
pub fn render(label: &str, source: &str, vars: &Vars, html: bool) -> Result<String> {
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
    template.render(&context).map_err(|e| {
        let missing: Vec<String> = template
            .undeclared_variables(true)
            .into_iter()
            .filter(|name| !defined(vars, name))
            .collect();
        if e.kind() == minijinja::ErrorKind::UndefinedError && !missing.is_empty() {
            let mut missing = missing;
            missing.sort();
            Error::invalid(format!(
                "{label}: {}: give it with --var NAME=VALUE or in --vars-file (the \
                 environment is env.NAME)",
                undefined(&missing)
            ))
        } else {
            Error::invalid(format!("{label}: {}", describe(&e)))
        }
    })
}

/// The one engine setup for every template of envoi (`send --template`, `batch`'s CSV
/// merge): an undefined variable is an error, never an empty string.
pub(crate) fn strict_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
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
fn describe(e: &minijinja::Error) -> String {
    // The kind's Display is its description ("undefined value", "syntax error").
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
}
