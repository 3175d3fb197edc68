//! Bounds on the texts a plugin writes that the host keeps or shows: its `info()` (cached,
//! printed by `policy list|check`, the `PolicyPlugin` status message) and its error messages
//! (a `PolicyFailed` status message, an Event). A guest string is only bounded by the call's
//! memory cap, so each is cut here, visibly, rather than refused: these texts inform a
//! person and never steer a decision, so a verbose plugin keeps working and its author sees
//! the cut in `kvpilot policy check`.

/// `info().name` and `info().version`: one table cell each.
pub const INFO_NAME_BYTES: usize = 128;
/// `info().description`: a sentence or a short paragraph.
pub const INFO_DESCRIPTION_BYTES: usize = 4 * 1024;
/// A `validate-config` rejection or a hook's own error.
pub const MESSAGE_BYTES: usize = 4 * 1024;

/// `text` on one line, without control characters (a terminal escape in a plugin's name
/// would otherwise reach whoever runs `policy list`), cut to `max` bytes.
pub fn one_line(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(clean.trim(), max)
}

/// `text` without control characters other than newlines and tabs, cut to `max` bytes.
pub fn message(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    cut(&clean, max)
}

/// At most `max` bytes of `text`, cut on a character boundary, ending in a marker that says
/// how much was cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_kept() {
        assert_eq!(one_line("  stagger ", 10), "stagger");
        assert_eq!(message("line 1\nline 2\tend", 100), "line 1\nline 2\tend");
    }

    #[test]
    fn long_texts_are_cut_with_a_marker() {
        assert_eq!(one_line(&"x".repeat(10), 4), "xxxx… [6 more bytes]");
        // On a character boundary: `é` is two bytes.
        assert_eq!(message(&"é".repeat(3), 3), "é… [4 more bytes]");
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(one_line("evil\u{1b}[2Jname\nv2", 100), "evil [2Jname v2");
        assert_eq!(message("a\u{7}b\nc", 100), "a b\nc");
    }
}
