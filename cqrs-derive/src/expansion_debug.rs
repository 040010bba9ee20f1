//! `CQRS_DERIVE_DEBUG=1` prints every expansion to stderr, formatted by `rustfmt` when it is on
//! the `PATH`.

use std::io::Write;
use std::process::{Command, Stdio};

use proc_macro2::TokenStream;

/// The environment variable that turns the printing on.
const DEBUG_VAR: &str = "CQRS_DERIVE_DEBUG";

/// Prints `expansion` when `CQRS_DERIVE_DEBUG` is set (and not `0`), then returns it unchanged.
pub(crate) fn print(
    macro_name: &str,
    item: &dyn std::fmt::Display,
    expansion: TokenStream,
) -> TokenStream {
    let enabled =
        std::env::var_os(DEBUG_VAR).is_some_and(|value| value != "0" && !value.is_empty());
    if enabled {
        // The compiler's `to_string` breaks lines and spaces out paths where rustfmt will not
        // touch them (inside attributes); tidy that first. Debug output only.
        let source = tidy_paths(&expansion.to_string().replace('\n', " "));
        let pretty = rustfmt(&source).unwrap_or(source);
        eprintln!("// ---- {macro_name} on `{item}` ----\n{pretty}");
    }
    expansion
}

/// `a :: b` -> `a::b`, except after a `:` where it would make `:::`.
fn tidy_paths(source: &str) -> String {
    let mut tidy = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(index) = rest.find(" :: ") {
        let (before, after) = rest.split_at(index);
        tidy.push_str(before);
        if before.ends_with(':') {
            tidy.push_str(" ::");
        } else {
            tidy.push_str("::");
        }
        rest = &after[" :: ".len()..];
    }
    tidy.push_str(rest);
    for open in ["(", "<", "["] {
        tidy = tidy.replace(&format!("{open}:: "), &format!("{open}::"));
    }
    tidy
}

/// Formats `source` with `rustfmt`; `None` when it is missing or refuses the input.
fn rustfmt(source: &str) -> Option<String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(source.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}
