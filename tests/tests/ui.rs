//! The macros' compile-time behavior: every mistake in `ui/` fails with one message on the
//! user's own tokens (checked against its `.stderr`), every case in `pass/` compiles.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p cqrs-tests --test ui`,
//! then read the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/**/*.rs");
    t.pass("pass/*.rs");
}
