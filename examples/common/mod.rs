//! Setup shared by the examples: logging, failing with one clear line, flag helpers.
#![allow(dead_code)]

use std::fmt::Display;

/// Logs to stderr; `RUST_LOG` overrides the default level (`info`).
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Prints one line that says what failed and exits with status 1.
pub(crate) fn fail(what: impl Display) -> ! {
    eprintln!("error: {what}");
    std::process::exit(1)
}

/// Splits a comma-separated flag value, dropping empty parts.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An error and its sources on one line: `what failed: why: why`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}
