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
    /// A closed stdout (the reader went away) is ignored: see [`Out::emit_or_closed`] for
    /// commands that print until stopped.
    pub(crate) fn emit(&self, text: impl Display, json: Value) {
        let _ = self.emit_or_closed(text, json);
    }

    /// As [`Out::emit`], but says when stdout is gone, so that a command that prints until
    /// stopped (`elect --listen | head -n 2`) can stop when nobody reads it any longer.
    pub(crate) fn emit_or_closed(&self, text: impl Display, json: Value) -> std::io::Result<()> {
        match self.format {
            Format::Text => write_line(&text.to_string()),
            Format::Json => write_line(&json.to_string()),
        }
    }

    /// Prints only in JSON mode.
    pub(crate) fn json(&self, json: Value) {
        if self.is_json() {
            // A closed stdout (the reader went away) is not worth dying for here.
            let _ = write_line(&json.to_string());
        }
    }
}

fn write_line(s: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{s}")?;
    stdout.flush()
}
