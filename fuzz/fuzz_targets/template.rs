//! Templates (`send --template`, and the engine `batch`'s CSV merge shares): hostile
//! templates and hostile values through `template::render`, with the variables read as
//! `--vars-file` (JSON or TOML) and `--var NAME=VALUE` read them.
//!
//! Input: `OPTIONS\0TEMPLATE\0VARS-FILE\0VAR\0VAR…`, NUL-separated; OPTIONS holds `html`
//! (render an HTML body: values escaped) and/or `toml` (the vars file is TOML, else
//! JSON); an empty VARS-FILE is none. Without a NUL the whole input is the template.
//!
//! Invariants (a panic is a bug):
//! - nothing panics; rendering ends within libFuzzer's timeout and memory limit;
//! - the output is at most `MAX_OUTPUT` octets;
//! - every error is an `envoi::Error` of a documented kind (not 70), in printable words.
#![no_main]

use envoi::message::template::{self, Vars};
use envoi_fuzz::check_error;
use libfuzzer_sys::fuzz_target;

/// The most a rendering may give: far above any real subject or body, far below what
/// an unbounded template makes.
const MAX_OUTPUT: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let show = || format!("\n--- input ---\n{}", String::from_utf8_lossy(data));
    let sections: Vec<String> = data
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let (options, source, vars_file, vars) = match &sections[..] {
        [source] => ("", source.as_str(), "", &[][..]),
        [options, source] => (options.as_str(), source.as_str(), "", &[][..]),
        [options, source, file, vars @ ..] => {
            (options.as_str(), source.as_str(), file.as_str(), vars)
        }
        [] => return,
    };
    let html = options.contains("html");
    let mut all = Vars::new();
    if !vars_file.is_empty() {
        let name = if options.contains("toml") {
            "vars.toml"
        } else {
            "vars.json"
        };
        match template::parse_vars_file("--vars-file vars", name, vars_file) {
            Ok(read) => all.extend(read),
            Err(e) => return check_error(&e, &show),
        }
    }
    for var in vars {
        match template::parse_var(var) {
            Ok((name, value)) => {
                all.insert(name, value);
            }
            Err(e) => return check_error(&e, &show),
        }
    }
    match template::render("--body", source, &all, html) {
        Ok(out) => assert!(
            out.len() <= MAX_OUTPUT,
            "a rendering of {} octets{}",
            out.len(),
            show()
        ),
        Err(e) => check_error(&e, &show),
    }
});
