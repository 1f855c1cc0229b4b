//! An SDK call in a native `cargo test` is a test failure that says what to do, not
//! an abort of the whole test binary.

#[test]
#[should_panic(expected = "this code runs natively")]
fn a_native_cache_call_is_a_test_panic() {
    let _ = techub_guest::cache::get("users", "k");
}

#[test]
#[should_panic(expected = "a plain `cargo test` in a crate made by `techub-host new`")]
fn a_native_store_call_is_a_test_panic() {
    let _ = techub_guest::store::get("k");
}

#[test]
#[should_panic(expected = "this code runs natively")]
fn a_native_log_call_is_a_test_panic() {
    techub_guest::log::info("hello");
}
