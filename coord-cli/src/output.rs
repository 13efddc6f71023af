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

/// Bytes from the store as one line of text: as they are when they are UTF-8 without
/// control characters; otherwise escaped as in a Rust string literal (`\n`, `\0`,
/// `\u{1b}`, `\\`), with bytes that are not UTF-8 as `\xNN`. A key or value with a newline
/// would otherwise break the two-line key/value output, and a lossy conversion would print
/// a different key than the store holds.
pub(crate) fn printable(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => std::borrow::Cow::Borrowed(s),
        _ => {
            let mut text = String::new();
            for chunk in bytes.utf8_chunks() {
                text.extend(chunk.valid().chars().flat_map(char::escape_debug));
                for b in chunk.invalid() {
                    text.push_str(&format!("\\x{b:02x}"));
                }
            }
            std::borrow::Cow::Owned(text)
        }
    }
}

/// Adds bytes from the store to a JSON object as `field` (a string; invalid UTF-8
/// replaced by U+FFFD), plus `field_hex` with the exact bytes in hex when they are not
/// UTF-8, so that a script can tell keys apart that the string would show alike.
pub(crate) fn json_bytes(object: &mut Value, field: &str, bytes: &[u8]) {
    object[field] = Value::String(String::from_utf8_lossy(bytes).into_owned());
    if std::str::from_utf8(bytes).is_err() {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        object[format!("{field}_hex")] = Value::String(hex);
    }
}

/// Prints a warning on stderr: `coord: warning: …`, or `{"warning": "…"}` with `-o json`.
pub(crate) fn warn(out: Out, message: impl Display) {
    if out.is_json() {
        eprintln!("{}", serde_json::json!({"warning": message.to_string()}));
    } else {
        eprintln!("coord: warning: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_control_characters_and_bytes_that_are_not_utf8() {
        assert_eq!(printable(b"plain/k\xc3\xa9y"), "plain/k\u{e9}y");
        assert_eq!(printable(b"a\nb"), "a\\nb");
        assert_eq!(printable(b"a\\b\0"), "a\\\\b\\0");
        assert_eq!(printable(b"\xffx\x1b"), "\\xffx\\u{1b}");
    }

    #[test]
    fn json_bytes_adds_hex_only_for_bytes_that_are_not_utf8() {
        let mut j = serde_json::json!({});
        json_bytes(&mut j, "key", b"k\n");
        assert_eq!(j, serde_json::json!({"key": "k\n"}));
        json_bytes(&mut j, "key", b"\xff1");
        assert_eq!(
            j,
            serde_json::json!({"key": "\u{fffd}1", "key_hex": "ff31"})
        );
    }
}
