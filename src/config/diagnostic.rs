//! Config errors and warnings as compilers and `nginx -t` print them:
//! `file:line:column: message`, one per line, all of them at once.

use std::fmt;
use std::path::PathBuf;

/// Where config text came from: named in every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file the operator wrote.
    File(PathBuf),
    /// `-`: standard input.
    Stdin,
    /// `serve --upstream URL --listen ADDR [--admin ADDR]`: there is no file, so messages
    /// name the flag instead of a line.
    Arguments,
    /// Text handed to [`crate::config::Config::parse`] (tests, embedded configs).
    Text,
}

impl Origin {
    /// The `file` part of `file:line:column`.
    fn name(&self) -> String {
        match self {
            Origin::File(p) => p.display().to_string(),
            Origin::Stdin => "<stdin>".into(),
            Origin::Arguments => "command line".into(),
            Origin::Text => "<config>".into(),
        }
    }
}

/// One finding, at a 1-based line and column of the config text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(line: usize, column: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
        }
    }
}

/// Diagnostics of one config, rendered against its origin.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub origin: Origin,
    pub items: Vec<Diagnostic>,
}

/// The lines `Config::simple` writes its arguments on, so that a finding there can name
/// the flag (see [`crate::config::Config::simple`]).
pub(crate) const ARGUMENT_LINES: [(usize, &str); 3] =
    [(2, "--listen"), (5, "--upstream"), (7, "--admin")];

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match &self.origin {
                Origin::Arguments => {
                    let flag = ARGUMENT_LINES
                        .iter()
                        .find(|(line, _)| *line == d.line)
                        .map_or("command line", |(_, flag)| flag);
                    write!(f, "{flag}: {}", d.message)?;
                }
                origin => write!(
                    f,
                    "{}:{}:{}: {}",
                    origin.name(),
                    d.line,
                    d.column,
                    d.message
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_prefixed_line_per_finding() {
        let d = Diagnostics {
            origin: Origin::File("a.yaml".into()),
            items: vec![Diagnostic::new(3, 5, "bad"), Diagnostic::new(0, 0, "worse")],
        };
        assert_eq!(d.to_string(), "a.yaml:3:5: bad\na.yaml:1:1: worse");
        let d = Diagnostics {
            origin: Origin::Arguments,
            items: vec![Diagnostic::new(2, 14, "`x` is not an address")],
        };
        assert_eq!(d.to_string(), "--listen: `x` is not an address");
    }
}
