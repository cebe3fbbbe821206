//! Error reports with their causes.

use std::error::Error;

/// `outer: inner: innermost`, one message per source, skipping a source
/// whose text the message so far already contains (many errors repeat their
/// source's text in their own). Transport errors alone say little ("transport
/// error"): their sources say what failed.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn joins_sources_and_skips_repeats() {
        let e = Layer(
            "transport error",
            Some(Box::new(Layer(
                "connecting to /run/x.sock",
                Some(Box::new(Layer("No such file or directory", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "transport error: connecting to /run/x.sock: No such file or directory"
        );
        let repeated = Layer(
            "reading config: permission denied",
            Some(Box::new(Layer("permission denied", None))),
        );
        assert_eq!(error_chain(&repeated), "reading config: permission denied");
        assert_eq!(error_chain(&Layer("alone", None)), "alone");
    }
}
