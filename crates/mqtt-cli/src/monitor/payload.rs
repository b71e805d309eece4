//! One-line payload previews in the monitor's three formats.
//!
//! The formats and their rules are `subscribe`'s ([`crate::format::Format`]: auto is text when
//! the payload is UTF-8, else hex). A table cell needs one bounded line rather than
//! `subscribe`'s multi-line hex dump, built from a bounded prefix of the payload.

use std::fmt::Write as _;

pub(crate) use crate::format::Format;

/// The format after this one, as `f` cycles: auto, binary, text, auto, …
pub(crate) fn next(format: Format) -> Format {
    match format {
        Format::Auto => Format::Binary,
        Format::Binary => Format::Text,
        // JSON is for `subscribe`'s output, not for a table cell.
        Format::Text | Format::Json => Format::Auto,
    }
}

/// Its name in the menu (as `subscribe --format` spells it).
pub(crate) fn label(format: Format) -> &'static str {
    match format {
        Format::Auto => "auto",
        Format::Binary => "binary",
        Format::Text => "text",
        Format::Json => "json",
    }
}

/// `text` with its control characters as `·`: topics and property values from the network
/// must not reach the terminal as escape sequences (ratatui passes them through).
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .collect()
}

/// How many payload bytes a message keeps for its preview: more than a terminal line shows in
/// any format. Copying this prefix also frees the (possibly large, shared) receive buffer.
pub(crate) const PREVIEW_BYTES: usize = 1024;

/// A one-line preview of `prefix` (the first bytes of a payload of `size` bytes) in at most
/// `max_chars` characters; a truncated preview ends in `…`.
pub(crate) fn preview(prefix: &[u8], size: usize, format: Format, max_chars: usize) -> String {
    let truncated = prefix.len() < size;
    let text = match format {
        Format::Auto | Format::Json => match utf8_text(prefix, truncated) {
            Some(text) => std::borrow::Cow::Borrowed(text),
            None => return hex_line(prefix, truncated, max_chars),
        },
        Format::Binary => return hex_line(prefix, truncated, max_chars),
        Format::Text => String::from_utf8_lossy(prefix),
    };
    text_line(&text, truncated, max_chars)
}

/// `prefix` (the first bytes of a payload of `size` bytes) in full, for the details view: text
/// with its line breaks (tabs as spaces, other control characters as `·`), or `subscribe`'s
/// hex dump.
pub(crate) fn full(prefix: &[u8], size: usize, format: Format) -> String {
    let truncated = prefix.len() < size;
    let text = match format {
        Format::Auto | Format::Json => match utf8_text(prefix, truncated) {
            Some(text) => std::borrow::Cow::Borrowed(text),
            None => return crate::format::hex_dump(prefix),
        },
        Format::Binary => return crate::format::hex_dump(prefix),
        Format::Text => String::from_utf8_lossy(prefix),
    };
    text.chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\t' => Some(' '),
            '\r' => None,
            _ if c.is_control() => Some('·'),
            _ => Some(c),
        })
        .collect()
}

/// The prefix as text if it is UTF-8. A prefix cut inside a character is still text.
fn utf8_text(prefix: &[u8], truncated: bool) -> Option<&str> {
    match std::str::from_utf8(prefix) {
        Ok(text) => Some(text),
        Err(error) if truncated && error.error_len().is_none() => {
            std::str::from_utf8(prefix.get(..error.valid_up_to())?).ok()
        }
        Err(_) => None,
    }
}

/// Text on one line.
fn text_line(text: &str, truncated: bool, max_chars: usize) -> String {
    let mut out = String::new();
    // Runs of white space (line breaks, indentation) become one space, so that a multi-line
    // document previews as one line; other control characters become `·`.
    let mut previous_space = false;
    let mut chars = text.chars().filter_map(|c| {
        let space = c.is_whitespace();
        let skip = space && previous_space;
        previous_space = space;
        match c {
            _ if skip => None,
            _ if space => Some(' '),
            _ if c.is_control() => Some('·'),
            _ => Some(c),
        }
    });
    for _ in 0..max_chars {
        match chars.next() {
            Some(c) => out.push(c),
            None => {
                if truncated {
                    ellipsis(&mut out, max_chars);
                }
                return out;
            }
        }
    }
    if chars.next().is_some() || truncated {
        ellipsis(&mut out, max_chars);
    }
    out
}

/// Hex bytes separated by spaces: `de ad be ef`, or `de ad…` when they do not all fit.
fn hex_line(prefix: &[u8], truncated: bool, max_chars: usize) -> String {
    // `n` bytes take 3n - 1 characters; with an ellipsis, 3n.
    let all_fit = prefix.len() * 3 <= max_chars + 1;
    let (shown, ellipsis) = if all_fit && !truncated {
        (prefix.len(), false)
    } else {
        (prefix.len().min(max_chars / 3), max_chars > 0)
    };
    let mut out = String::with_capacity(shown * 3);
    for (i, byte) in prefix.iter().take(shown).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{byte:02x}");
    }
    if ellipsis {
        out.push('…');
    }
    out
}

/// Ends `out` with `…`, dropping its last character if there is no room.
fn ellipsis(out: &mut String, max_chars: usize) {
    if max_chars == 0 {
        return;
    }
    if out.chars().count() >= max_chars {
        out.pop();
    }
    out.push('…');
}

/// A size for the table: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub(crate) fn human_size(size: usize) -> String {
    const KIB: f64 = 1024.0;
    // Display only: the precision lost converting to f64 is far below what one decimal shows.
    let bytes = size as f64;
    if size < 1024 {
        format!("{size} B")
    } else if bytes < KIB * KIB {
        format!("{:.1} KiB", bytes / KIB)
    } else if bytes < KIB * KIB * KIB {
        format!("{:.1} MiB", bytes / (KIB * KIB))
    } else {
        format!("{:.1} GiB", bytes / (KIB * KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(payload: &[u8], format: Format, max: usize) -> String {
        preview(payload, payload.len(), format, max)
    }

    #[test]
    fn formats_cycle_auto_binary_text() {
        let mut format = Format::default();
        let mut labels = Vec::new();
        for _ in 0..4 {
            labels.push(label(format));
            format = next(format);
        }
        assert_eq!(labels, ["auto", "binary", "text", "auto"]);
        assert_eq!(next(Format::Json), Format::Auto);
    }

    #[test]
    fn auto_shows_utf8_as_text_and_the_rest_as_hex() {
        assert_eq!(show("héllo".as_bytes(), Format::Auto, 40), "héllo");
        // One line: white space collapsed, other control characters as `·`.
        assert_eq!(
            show(b"{\n  \"a\": 1\n}\0", Format::Auto, 40),
            "{ \"a\": 1 }·"
        );
        assert_eq!(
            show(&[0xde, 0xad, 0xbe, 0xef], Format::Auto, 40),
            "de ad be ef"
        );
        assert_eq!(show(b"", Format::Auto, 40), "");
    }

    #[test]
    fn binary_and_text_are_forced() {
        assert_eq!(show(b"hi", Format::Binary, 40), "68 69");
        assert_eq!(show(&[0xff, b'a'], Format::Text, 40), "\u{fffd}a");
        assert_eq!(show(b"a\0b", Format::Text, 40), "a·b");
    }

    #[test]
    fn previews_fit_their_width() {
        assert_eq!(show(b"abcdef", Format::Text, 4), "abc…");
        assert_eq!(show(b"abcd", Format::Text, 4), "abcd");
        assert_eq!(show(&[1, 2, 3, 4], Format::Binary, 8), "01 02…");
        assert_eq!(show(&[1, 2, 3], Format::Binary, 8), "01 02 03");
        assert_eq!(show(b"abc", Format::Text, 0), "");
        assert_eq!(show(b"abc", Format::Binary, 0), "");
        assert_eq!(show(b"abc", Format::Binary, 1), "…");
    }

    #[test]
    fn a_truncated_prefix_says_so_and_may_end_inside_a_character() {
        // "é" is two bytes; the prefix keeps only the first.
        assert_eq!(preview(&[b'a', 0xc3], 3, Format::Auto, 40), "a…");
        assert_eq!(preview(b"ab", 10, Format::Binary, 40), "61 62…");
        assert_eq!(preview(b"ab", 10, Format::Text, 40), "ab…");
    }

    #[test]
    fn full_payloads_keep_their_lines() {
        assert_eq!(
            full(b"{\n  \"a\": 1\n}", 13, Format::Auto),
            "{\n  \"a\": 1\n}"
        );
        assert_eq!(full(b"a\tb\r\n\0", 6, Format::Text), "a b\n·");
        assert_eq!(
            full(b"AB", 2, Format::Binary),
            "00000000  41 42                                             |AB|"
        );
        assert_eq!(
            full(&[0xff], 1, Format::Auto),
            full(&[0xff], 1, Format::Binary)
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("a/\u{1b}[2J/b\n"), "a/·[2J/b·");
        assert_eq!(printable("plain/topic"), "plain/topic");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(12 * 1024 * 1024), "12.0 MiB");
    }
}
