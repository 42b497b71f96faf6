//! Compile-time behaviour of the attributes, in one trybuild run against `nexus-core` alone:
//! every misuse is an error at the offending tokens with a message that says how to fix it
//! (`tests/ui/fail`), and correct uses compile and run whatever the user's code shadows
//! (`tests/ui/pass`).
//!
//! After a change to a message, bless with `TRYBUILD=overwrite cargo test -p nexus-macros --test
//! ui` and read the diff of the `.stderr` files.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
