//! Attacker-provided text on its way into a log line or a response: bounded and escaped.
//!
//! Anything a client sends (a key, a path segment, a query value, a JSON value quoted in a
//! parser error) may be megabytes long or carry terminal escapes and line breaks that forge
//! log lines. [`printable`] is the one place that makes such text safe to show.

/// The most characters of one attacker-provided string that are logged or echoed.
pub const ECHO_MAX_CHARS: usize = 200;

/// `s` with control and invisible formatting characters escaped (`\n`, `\u{1b}`, …) and cut
/// to at most `max_chars` characters of output; a cut string ends in `…(N bytes)` with the
/// original length, so the reader knows it was cut.
pub fn printable(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars) + 16);
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let escaped;
        let piece: &str = if needs_escape(c) {
            escaped = c.escape_default().to_string();
            &escaped
        } else {
            &s[i..i + c.len_utf8()]
        };
        let width = piece.chars().count();
        if used + width > max_chars {
            out.push_str(&format!("…({} bytes)", s.len()));
            return out;
        }
        out.push_str(piece);
        used += width;
    }
    out
}

/// Control characters, and the invisible ones that reorder or hide text on a terminal
/// (bidirectional overrides, zero-width characters, the byte-order mark).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_passes_unchanged() {
        assert_eq!(printable("pump-0001 ✓", 200), "pump-0001 ✓");
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(printable("a\nb\u{1b}[31m", 200), "a\\nb\\u{1b}[31m");
        assert_eq!(printable("x\u{202E}y", 200), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let long = "A".repeat(65_536);
        let out = printable(&long, 200);
        assert!(out.starts_with(&"A".repeat(200)));
        assert!(out.ends_with("…(65536 bytes)"), "{out}");
        assert!(out.chars().count() < 220);
        // An escape is never split: it counts whole.
        let out = printable(&"\n".repeat(10), 5);
        assert_eq!(out, "\\n\\n…(10 bytes)");
    }
}
