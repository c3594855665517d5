//! [`Failure`]: why a command failed, printed as one line on stderr (`svckit: what failed:
//! cause: cause`), and the exit code it maps to.

use std::error::Error;
use std::fmt;

/// The exit code of an operational failure (etcd, files, a failed resource). Usage errors
/// exit with 2 (clap's code).
pub(crate) const EXIT_FAILURE: u8 = 1;

/// A failed command: what failed and why (the error and its sources), or a failure already
/// reported line by line (confd's resources), or stdout closed by the reader.
#[derive(Debug)]
pub(crate) struct Failure {
    what: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
    quiet: bool,
    code: u8,
}

impl Failure {
    /// `what` failed because of `source`.
    pub(crate) fn new(
        what: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            what: what.into(),
            source: Some(source.into()),
            quiet: false,
            code: EXIT_FAILURE,
        }
    }

    /// `what` failed, with no further cause.
    pub(crate) fn msg(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
            quiet: false,
            code: EXIT_FAILURE,
        }
    }

    /// The reader of stdout went away (`svckit config get / | head`): stop quietly, as
    /// command-line tools do.
    pub(crate) fn stdout_closed() -> Self {
        Self {
            what: String::new(),
            source: None,
            quiet: true,
            code: 0,
        }
    }

    /// The process exit code.
    pub(crate) fn code(&self) -> u8 {
        self.code
    }

    /// Whether nothing is to be printed.
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {}", self.what, chain(source.as_ref())),
            None => f.write_str(&self.what),
        }
    }
}

/// `error` and its sources on one line: `error: source: source`. A source whose text the
/// line already holds is skipped (many errors print their source in their own message).
pub(crate) fn chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error, bool);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.1 {
                write!(f, "reading x: {}", self.0)
            } else {
                f.write_str("reading x")
            }
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn sources_are_walked_once() {
        let io = || std::io::Error::other("disk on fire");
        let plain = Failure::new("loading", Outer(io(), false));
        assert_eq!(plain.to_string(), "loading: reading x: disk on fire");
        let repeating = Failure::new("loading", Outer(io(), true));
        assert_eq!(repeating.to_string(), "loading: reading x: disk on fire");
        assert_eq!(Failure::msg("no").to_string(), "no");
        assert_eq!(Failure::msg("no").code(), EXIT_FAILURE);
    }
}
