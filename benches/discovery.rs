//! Placeholder: replaced by the discovery benchmark.
fn main() {}
