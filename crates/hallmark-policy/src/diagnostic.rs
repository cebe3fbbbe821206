//! Errors and warnings about a policy document, each naming the file, the
//! line, the group or rule, and the rule of the format it breaks.

use std::fmt;

use serde::Serialize;

/// What a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Subject {
    /// The document as a whole (top-level keys, YAML syntax).
    Document,
    /// A group, by name.
    Group(String),
    /// A rule, by name, or by position (`#3`, 1-based) when it has none.
    Rule(String),
}

/// Whether a diagnostic refuses the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, printed as `FILE:LINE: rule `web-to-db`: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based line of the node the finding is about.
    pub line: usize,
    pub subject: Subject,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        match &self.subject {
            Subject::Document => {}
            Subject::Group(name) => write!(f, "group `{name}`: ")?,
            Subject::Rule(name) if name.starts_with('#') => write!(f, "rule {name}: ")?,
            Subject::Rule(name) => write!(f, "rule `{name}`: ")?,
        }
        f.write_str(&self.message)
    }
}

/// A refused document: every error found, in document order, and the
/// warnings found alongside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyErrors {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "policy refused: {n} error{}",
            if n == 1 { "" } else { "s" }
        )?;
        for d in self.errors.iter().chain(&self.warnings) {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}
