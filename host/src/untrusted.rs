//! Text a guest chose, on its way to a place that is not the guest's own:
//! the host's log, a delivery record (`last_error`), a response, a
//! terminal. A guest's error message, a trap's backtrace (with the guest's
//! own function names), a host name it asked to reach or a response body
//! it wrote are all guest-chosen.
//!
//! [`clip`] bounds such text and escapes its control characters, so that
//! a guest can neither make those records large nor forge a line of the
//! host's log or a terminal escape sequence; [`escape`] only escapes (for
//! `wisp logs` on a terminal, where the lines are already bounded).
//!
//! ```
//! use wisp_host::untrusted::{clip, escape};
//!
//! assert_eq!(escape("ok\n\x1b[2Jforged"), "ok\\n\\u{1b}[2Jforged");
//! let long = "x".repeat(5000);
//! assert!(clip(&long).ends_with("… [3976 bytes cut]"));
//! ```

use std::borrow::Cow;
use std::fmt::Write;

/// Bytes of guest-chosen text [`clip`] keeps (after escaping; its marker
/// comes on top).
pub const CLIP_BYTES: usize = 1024;

/// Whether `c` is escaped: the C0 controls (newlines, ESC, ...), DEL and
/// the C1 controls (CSI among them, which some terminals obey like
/// `ESC [`); the Unicode line and paragraph separators, which some log
/// viewers break lines at; and the bidirectional-text controls, which can
/// make a line display other than it reads.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// `s` with every control character escaped: `\n`, `\r`, `\t`, and the
/// others as `\u{1b}` (see the module docs for which). Everything else,
/// backslashes included, is unchanged, so escaping twice changes nothing
/// more. Borrowed when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`clip_to`] at [`CLIP_BYTES`].
pub fn clip(s: &str) -> Cow<'_, str> {
    clip_to(s, CLIP_BYTES)
}

/// `s` escaped as by [`escape`] and, if that is longer than `max` bytes,
/// cut at a character boundary to at most `max` bytes, followed by a
/// marker saying how many bytes of `s` were cut: `… [9216 bytes cut]`.
/// Never more than `max` bytes plus the marker, however long `s` is, and
/// the work is bounded by `max` too.
pub fn clip_to(s: &str, max: usize) -> Cow<'_, str> {
    let clean_end = s.find(needs_escape).unwrap_or(s.len());
    if clean_end == s.len() && s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(max.min(s.len()) + 32);
    // The clean prefix in one piece (as much of it as fits).
    let mut cut_at = floor_char_boundary(s, clean_end.min(max));
    out.push_str(&s[..cut_at]);
    if cut_at == clean_end {
        cut_at = s.len();
        for (i, c) in s[clean_end..].char_indices() {
            let before = out.len();
            push_escaped(&mut out, c);
            if out.len() > max {
                out.truncate(before);
                cut_at = clean_end + i;
                break;
            }
        }
    }
    if cut_at < s.len() {
        let _ = write!(out, "… [{} bytes cut]", s.len() - cut_at);
    }
    Cow::Owned(out)
}

/// The largest character boundary of `s` at or below `i` (`str::
/// floor_char_boundary` is not stable yet).
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_and_unchanged() {
        let s = "the handler returned an error: no such order (id 7) \\n é ✓";
        assert!(matches!(escape(s), Cow::Borrowed(_)));
        assert!(matches!(clip(s), Cow::Borrowed(_)));
        assert_eq!(clip(s), s);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape("a\nb\r\nc\td\x1b[31mred\x07\x7f\u{9b}2J\u{85}"),
            "a\\nb\\r\\nc\\td\\u{1b}[31mred\\u{7}\\u{7f}\\u{9b}2J\\u{85}"
        );
        assert_eq!(
            escape("x\u{2028}y\u{202e}z\u{2066}"),
            "x\\u{2028}y\\u{202e}z\\u{2066}"
        );
        // Nothing a terminal or a line-based log reader acts on is left.
        let hostile: String = (0u32..0x200)
            .filter_map(char::from_u32)
            .chain(['\u{2028}', '\u{202e}'])
            .collect();
        let escaped = escape(&hostile);
        assert!(!escaped.chars().any(needs_escape), "{escaped}");
        // Escaping is idempotent: the escapes are printable.
        assert_eq!(escape(&escaped), escaped);
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let s = "y".repeat(10 * 1024);
        let c = clip(&s);
        assert_eq!(c.len(), CLIP_BYTES + "… [9216 bytes cut]".len());
        assert!(c.starts_with(&"y".repeat(CLIP_BYTES)));
        assert!(c.ends_with("… [9216 bytes cut]"), "{c}");
        // At the bound exactly: kept whole.
        assert_eq!(clip(&s[..CLIP_BYTES]), &s[..CLIP_BYTES]);
    }

    #[test]
    fn the_bound_applies_after_escaping_and_at_a_character_boundary() {
        // Each ESC becomes 6 bytes: 10 of them are 60, past a bound of 40.
        let s = "\x1b".repeat(10);
        let c = clip_to(&s, 40);
        assert_eq!(c, format!("{}… [4 bytes cut]", "\\u{1b}".repeat(6)));
        // A multi-byte character is never split.
        let s = "ab€€€";
        assert_eq!(clip_to(s, 4), "ab… [9 bytes cut]");
        assert_eq!(clip_to(s, 5), "ab€… [6 bytes cut]");
        // Clean prefix, then controls past the bound.
        let s = "abc\n\n\n";
        assert_eq!(clip_to(s, 6), "abc\\n… [2 bytes cut]");
        assert_eq!(clip_to(s, 9), "abc\\n\\n\\n");
    }

    #[test]
    fn a_forged_log_line_stays_on_its_line() {
        let forged = format!(
            "oops\n2026-01-01T00:00:00Z  INFO wisp::invocation: all fine\x1b[2K{}",
            "z".repeat(4000)
        );
        let c = clip(&forged);
        assert!(!c.contains('\n') && !c.contains('\x1b'));
        assert!(c.contains("oops\\n2026"));
        assert!(c.len() <= CLIP_BYTES + 32);
        assert!(c.ends_with("bytes cut]"));
    }
}
