//! Placeholder: replaced by the balancer benchmark.
fn main() {}
