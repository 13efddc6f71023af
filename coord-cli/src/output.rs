//! Printing results as text lines or as one JSON object per line.

use std::fmt::Display;
use std::io::Write;

use serde_json::Value;

use super::Format;

/// Where results go: stdout, as text or JSON lines. Each call prints whole lines and
/// flushes, so a reader of a pipe sees them at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    format: Format,
}

impl Out {
    pub(crate) fn new(format: Format) -> Self {
        Out { format }
    }

    pub(crate) fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints `text` (one or more lines) in text mode, or `json` as one line in JSON mode.
    pub(crate) fn emit(&self, text: impl Display, json: Value) {
        match self.format {
            Format::Text => write_line(&text.to_string()),
            Format::Json => write_line(&json.to_string()),
        }
    }

    /// Prints only in JSON mode.
    pub(crate) fn json(&self, json: Value) {
        if self.is_json() {
            write_line(&json.to_string());
        }
    }
}

fn write_line(s: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (the reader went away) is not worth dying for.
    let _ = writeln!(stdout, "{s}");
    let _ = stdout.flush();
}
