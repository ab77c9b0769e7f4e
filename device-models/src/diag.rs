//! Diagnostics: one problem in one file, located by line, column and field path.

use std::fmt;
use std::path::PathBuf;

use crate::yaml::Pos;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The object cannot be used; `check` fails.
    Error,
    /// Probably a mistake, but the object works.
    Warning,
    /// Information, such as a skipped non-device object.
    Notice,
}

/// One problem, printed as `file:line:column: field.path: message` (warnings and notices say
/// so after the position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// How bad.
    pub severity: Severity,
    /// The file, as it was named to the loader.
    pub file: PathBuf,
    /// Line and column in the file (0:0 when the problem is the whole file).
    pub pos: Pos,
    /// Field path in the document, for instance `spec.properties[2].visitors`; may be empty.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Diagnostic {
    /// Whether this problem makes its object unusable.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.column)?;
        }
        f.write_str(": ")?;
        match self.severity {
            Severity::Error => {}
            Severity::Warning => f.write_str("warning: ")?,
            Severity::Notice => f.write_str("notice: ")?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_a_compiler() {
        let d = Diagnostic {
            severity: Severity::Error,
            file: "rig7/wellhead.yaml".into(),
            pos: Pos {
                line: 23,
                column: 9,
            },
            path: "spec.properties[2].visitors.configData.register".into(),
            message: "unknown register type \"HoldReg\"".into(),
        };
        assert_eq!(
            d.to_string(),
            "rig7/wellhead.yaml:23:9: spec.properties[2].visitors.configData.register: unknown register type \"HoldReg\""
        );
        let w = Diagnostic {
            severity: Severity::Warning,
            path: String::new(),
            pos: Pos::default(),
            ..d
        };
        assert_eq!(
            w.to_string(),
            "rig7/wellhead.yaml: warning: unknown register type \"HoldReg\""
        );
    }
}
