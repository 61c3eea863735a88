//! Policy load errors with positions.

/// A policy that cannot be used, and where the problem is.
///
/// Displays as `FILE:LINE:COLUMN: message` (1-based). Errors that have no position in
/// the file (it cannot be read) have `line == 0` and display as `FILE: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file (or origin) the policy came from.
    pub file: String,
    /// 1-based line; 0 when the error has no position.
    pub line: usize,
    /// 1-based column; 0 when the error has no position.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    pub(crate) fn at(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Converts a serde_yaml error, moving its position into the fields.
    pub(crate) fn from_yaml(file: &str, err: &serde_yaml::Error) -> Self {
        let text = err.to_string();
        match err.location() {
            Some(loc) => {
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                let message = match text.find(&suffix) {
                    Some(i) => format!("{}{}", &text[..i], &text[i + suffix.len()..]),
                    None => text,
                };
                PolicyError::at(file, loc.line(), loc.column(), message)
            }
            None => {
                let message = if text == "EOF while parsing a value" {
                    "the policy is empty; it needs at least `version: 1`".to_owned()
                } else {
                    text
                };
                PolicyError::at(file, 1, 1, message)
            }
        }
    }
}
