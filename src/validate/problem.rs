//! One finding of validation: where it is (row, column), what it is (a stable code) and what to do.

use serde::Serialize;

/// A broken rule. `row` is the 1-based data row (the first row after the header is row 1),
/// `None` for problems of the whole batch. Messages never quote personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub row: Option<usize>,
    pub column: Option<String>,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// Collects errors and warnings in the order they are found.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Findings {
    pub fn error(&mut self, row: Option<usize>, column: Option<&str>, code: &'static str, message: impl Into<String>) {
        self.push(Severity::Error, row, column, code, message.into());
    }

    pub fn warning(&mut self, row: Option<usize>, column: Option<&str>, code: &'static str, message: impl Into<String>) {
        self.push(Severity::Warning, row, column, code, message.into());
    }

    fn push(&mut self, severity: Severity, row: Option<usize>, column: Option<&str>, code: &'static str, message: String) {
        let problem = Problem { row, column: column.map(str::to_owned), code, message };
        match severity {
            Severity::Error => self.errors.push(problem),
            Severity::Warning => self.warnings.push(problem),
        }
    }

    pub fn extend(&mut self, other: Findings) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}
