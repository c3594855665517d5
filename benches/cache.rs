//! Placeholder: replaced by the cache benchmark.
fn main() {}
