//! `#[task]` expansions that must compile and run (`tests/ui/pass`), and
//! misuses that must fail with the committed diagnostics (`tests/ui/fail`).
//!
//! After changing a diagnostic on purpose, regenerate the `.stderr` files
//! with `TRYBUILD=overwrite cargo test --test macro_ui` and review the diff.

#[test]
fn task_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
