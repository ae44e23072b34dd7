//! The compile errors of `#[saga]`, one case per rule of DESIGN.md §3. Each `.stderr` was
//! read by a person: regenerate with `TRYBUILD=overwrite cargo test -p saga-tests --test ui`
//! and review the diff.

#[test]
fn compile_errors_are_spanned_and_say_how_to_fix_them() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
    cases.pass("ui-pass/*.rs");
}
