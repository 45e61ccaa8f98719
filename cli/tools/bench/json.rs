//! One JSON object on one line, written by hand (the crate has no JSON dependency, and the
//! bench's report is flat: strings, numbers and nulls).

use std::fmt::Write as _;

/// A JSON object under construction; [`JsonLine::finish`] closes it.
pub struct JsonLine {
    text: String,
}

impl JsonLine {
    pub fn new() -> JsonLine {
        JsonLine {
            text: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        push_string(&mut self.text, key);
        self.text.push(':');
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_string(&mut self.text, value);
        self
    }

    pub fn optional_string(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.string(key, value),
            None => self.null(key),
        }
    }

    pub fn integer(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        // Writing to a String cannot fail.
        let _ = write!(self.text, "{value}");
        self
    }

    /// A number with `decimals` digits after the point; NaN and infinities become null.
    pub fn number(&mut self, key: &str, value: f64, decimals: usize) -> &mut Self {
        if !value.is_finite() {
            return self.null(key);
        }
        self.key(key);
        let _ = write!(self.text, "{value:.decimals$}");
        self
    }

    pub fn optional_number(&mut self, key: &str, value: Option<f64>, decimals: usize) -> &mut Self {
        match value {
            Some(value) => self.number(key, value, decimals),
            None => self.null(key),
        }
    }

    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.text.push_str("null");
        self
    }

    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.text);
        text.push('}');
        text
    }
}

/// A JSON string literal, escaped (RFC 8259 §7).
fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_flat_object() {
        let line = JsonLine::new()
            .string("scenario", "1->1 \"q\\1\"\n")
            .integer("sent", 42)
            .number("rate", 1234.5678, 1)
            .number("bad", f64::NAN, 1)
            .optional_string("group", None)
            .boolean("drained", true)
            .finish();
        assert_eq!(
            line,
            r#"{"scenario":"1->1 \"q\\1\"\n","sent":42,"rate":1234.6,"bad":null,"group":null,"drained":true}"#
        );
    }
}
