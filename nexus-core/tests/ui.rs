//! The attributes work for a crate that depends on `nexus-core` alone (the root `tests/ui.rs`
//! covers the `nexus` facade and every compile error).

#[test]
fn attributes_through_nexus_core_alone() {
    trybuild::TestCases::new().pass("tests/ui/core-only.rs");
}
