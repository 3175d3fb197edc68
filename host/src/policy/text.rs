//! The one cleaning function for text a plugin (or a user) wrote that the host keeps or shows
//! (docs/architecture.md, rule 10): its `info()`, its error messages, its wait reasons, the
//! names it answers, the answers quoted in decisions and events, and every error that quotes
//! them, before they reach a log, a terminal, an event or a status.
//!
//! A guest string is only bounded by the call's memory cap, so each is cut here, visibly,
//! rather than refused: these texts inform a person and never steer a decision, so a verbose
//! plugin keeps working and its author sees the cut in `kvpilot policy check`. Control
//! characters (C0, DEL, C1: a terminal escape such as `ESC [2J`, a NUL that ends a C string,
//! a newline that forges a log line) and the Unicode controls that reorder how a line is
//! displayed (bidirectional overrides and isolates) become spaces.

/// `info().name` and `info().version`: one table cell each.
pub const INFO_NAME_BYTES: usize = 128;
/// `info().description`: a sentence or a short paragraph.
pub const INFO_DESCRIPTION_BYTES: usize = 4 * 1024;
/// A `validate-config` rejection, a hook's own error, a wait reason, or an error that quotes
/// what a plugin answered.
pub const MESSAGE_BYTES: usize = 4 * 1024;
/// A name a plugin answered (a member it chose), as quoted in an error.
pub const NAME_BYTES: usize = 256;

/// `text` on one line, each control character replaced by a space, cut to at most `max`
/// bytes on a character boundary with a marker that says how much was cut.
pub fn clean(text: &str, max: usize) -> String {
    // Cut first (on the raw text, with some slack for the replacements, which keep lengths
    // or shrink them), so a huge text is not copied whole before it is cut.
    let slack = max.saturating_add(64);
    let (head, dropped) = if text.len() > slack {
        let end = floor_char_boundary(text, slack);
        (&text[..end], text.len() - end)
    } else {
        (text, 0)
    };
    let replaced: String = head
        .chars()
        .map(|c| if is_unsafe(c) { ' ' } else { c })
        .collect();
    if replaced.len() <= max && dropped == 0 {
        return replaced;
    }
    let end = floor_char_boundary(&replaced, max);
    let more = replaced.len() - end + dropped;
    format!("{}… [{more} more bytes]", &replaced[..end])
}

/// [`clean`], without leading and trailing spaces: a table cell or a name.
pub fn one_line(text: &str, max: usize) -> String {
    clean(text.trim(), max).trim().to_string()
}

/// JSON text for a terminal: every character [`clean`] would replace that is still raw in
/// `json` (serde escapes only U+0000..U+001F inside strings) written as a `\uXXXX` escape
/// instead. Nothing is lost, the JSON means the same, and no escape sequence reaches the
/// terminal. The newlines of pretty printing are whitespace between tokens and stay; inside
/// strings serde has escaped them already.
pub fn json_for_terminal(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c != '\n' && is_unsafe(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `c` must not reach a terminal or a log as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_kept() {
        assert_eq!(one_line("  stagger ", 10), "stagger");
        assert_eq!(clean("plain words", 100), "plain words");
    }

    #[test]
    fn long_texts_are_cut_with_a_marker() {
        assert_eq!(one_line(&"x".repeat(10), 4), "xxxx… [6 more bytes]");
        // On a character boundary: `é` is two bytes.
        assert_eq!(clean(&"é".repeat(3), 3), "é… [4 more bytes]");
        // A huge text: the marker counts every byte that was cut.
        let huge = "y".repeat(10 << 20);
        let cut = clean(&huge, 100);
        assert_eq!(
            cut,
            format!("{}… [{} more bytes]", "y".repeat(100), (10 << 20) - 100)
        );
    }

    #[test]
    fn json_for_a_terminal_escapes_what_serde_leaves_raw() {
        let json =
            serde_json::to_string(&serde_json::json!({"wait": "a\u{1b}b\u{9b}c\u{7f}d\u{202e}e"}))
                .unwrap();
        assert!(json.contains('\u{9b}'), "serde leaves C1 raw: {json}");
        let safe = json_for_terminal(&json);
        assert_eq!(safe, r#"{"wait":"a\u001bb\u009bc\u007fd\u202ee"}"#);
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        let pretty = serde_json::to_string_pretty(&back).unwrap();
        assert!(json_for_terminal(&pretty).contains("{\n  \"wait\""));
        assert_eq!(back["wait"], "a\u{1b}b\u{9b}c\u{7f}d\u{202e}e");
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(one_line("evil\u{1b}[2Jname\nv2", 100), "evil [2Jname v2");
        assert_eq!(
            clean("a\u{7}b\nc\td\0e\u{7f}f\u{9b}g", 100),
            "a b c d e f g"
        );
        // A bidirectional override would show `gnp.exe` as `exe.png`.
        assert_eq!(clean("file\u{202e}gnp.exe", 100), "file gnp.exe");
        assert_eq!(clean("\u{2066}x\u{2069}", 100), " x ");
    }
}
