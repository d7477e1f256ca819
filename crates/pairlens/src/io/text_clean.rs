//! open_clip's caption cleaning, reimplemented so that pairlens feeds the text tower the same ids
//! as `open_clip.tokenize` without Python.
//!
//! open_clip (`clean='lower'`, its default) does
//! `whitespace_clean(basic_clean(text)).lower()` where
//! `basic_clean = ftfy.fix_text → html.unescape → html.unescape → strip`. [`open_clip_clean`]
//! reproduces that chain; [`html_unescape`] is Python's `html.unescape` exactly (HTML5 entity
//! table, legacy entities without `;`, longest-prefix rule, numeric references with the
//! Windows-1252 remapping of `&#128;`–`&#159;`, invalid code points dropped or replaced).
//!
//! [`ftfy_fix_text`] is "ftfy-lite": the deterministic fixers of ftfy 6's default `fix_text`,
//! applied per line, in ftfy's order and repeated until nothing changes, like ftfy:
//! `unescape_html` (ftfy's own semicolon-only variant incl. ALL-CAPS names, disabled for a line
//! containing `<` and all lines after it), `fix_c1_controls`, `fix_latin_ligatures`,
//! `fix_character_width`, `uncurl_quotes`, `fix_line_breaks`, `remove_terminal_escapes`,
//! `remove_control_chars`, NFC. (`fix_surrogates` has nothing to do: a Rust `str` holds no
//! surrogates.)
//!
//! NOT done: `fix_encoding` (mojibake detection and repair via ftfy's `is_bad` heuristic and
//! re-decoding through sloppy single-byte codecs, with `restore_byte_a0`,
//! `replace_lossy_sequences`, `decode_inconsistent_utf8`). Text that ftfy considers mojibake
//! therefore differs: `"The cafÃ© is closed"` becomes `"the café is closed"` in open_clip but
//! `"the cafã© is closed"` here. Clean captions are unaffected, since ftfy leaves text alone
//! unless it looks like mojibake. Also not bit-exact: Unicode-version differences between
//! Python's `unicodedata` (14.0 for Python 3.11) and the Rust crates (newer), which only matter
//! for characters assigned after Unicode 14.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

/// open_clip's `_clean_lower`: ftfy-lite, `html.unescape` twice, whitespace folding, lowercase.
pub fn open_clip_clean(text: &str) -> String {
    let text = ftfy_fix_text(text);
    let text = html_unescape(&html_unescape(&text)).into_owned();
    python_lower(&python_whitespace_fold(&text))
}

/// Python's `" ".join(text.split())` (which also strips).
fn python_whitespace_fold(text: &str) -> String {
    text.split(is_python_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `str.lower()` (full case mapping incl. final sigma, like Rust's).
fn python_lower(text: &str) -> String {
    text.to_lowercase()
}

/// Python's `str.isspace()` for one character (what `str.split()`/`strip()` use): includes the
/// information separators U+001C–U+001F, which Unicode's White_Space does not.
pub(crate) fn is_python_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{d}'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

// ---------------------------------------------------------------------------------------------
// html.unescape

/// Windows-1252 meaning of 0x80–0x9F (HTML5's numeric-reference remapping and ftfy's
/// `fix_c1_controls`); `None` for the five bytes Windows-1252 leaves undefined.
fn cp1252_c1(c: u32) -> Option<char> {
    let t: [u32; 32] = [
        0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
        0x0152, 0, 0x017D, 0, 0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC,
        0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
    ];
    match c {
        0x80..=0x9F => match t[(c - 0x80) as usize] {
            0 => None,
            v => char::from_u32(v),
        },
        _ => None,
    }
}

/// Python's `html._replace_charref` for a numeric reference (`num` saturated at u64::MAX).
fn numeric_charref(num: u64, out: &mut String) {
    match num {
        0 => out.push('\u{FFFD}'),
        0x0D => out.push('\r'),
        0x80..=0x9F => match cp1252_c1(num as u32) {
            Some(c) => out.push(c),
            None => out.push(char::from_u32(num as u32).unwrap()), // 0x81, 0x8D, 0x8F, 0x90, 0x9D
        },
        0xD800..=0xDFFF => out.push('\u{FFFD}'),
        n if n > 0x10FFFF => out.push('\u{FFFD}'),
        n => {
            let n = n as u32;
            let invalid = matches!(n, 0x1..=0x8 | 0xB | 0xE..=0x1F | 0x7F | 0xFDD0..=0xFDEF)
                || (n & 0xFFFE) == 0xFFFE;
            if !invalid {
                out.push(char::from_u32(n).unwrap());
            }
        }
    }
}

/// The HTML5 named references (`html.entities.html5`), keyed without the leading `&`.
fn html5_get(name: &str) -> Option<&'static str> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(b'&');
    key.extend_from_slice(name.as_bytes());
    htmlize::ENTITIES
        .get(key.as_slice())
        .map(|v| std::str::from_utf8(v).unwrap_or(""))
}

/// Every HTML5 named reference as (name without `&`, expansion): Python's `html.entities.html5`.
pub fn html5_entities() -> impl Iterator<Item = (&'static str, &'static str)> {
    htmlize::ENTITIES.entries().filter_map(|(k, v)| {
        Some((
            std::str::from_utf8(k).ok()?.strip_prefix('&')?,
            std::str::from_utf8(v).ok()?,
        ))
    })
}

/// Python's `html.unescape`, exactly.
pub fn html_unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match match_charref(after, &mut out) {
            Some(consumed) => rest = &after[consumed..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Tries `_charref` right after an `&`: on a match appends the replacement and returns the
/// number of bytes consumed after the `&`.
fn match_charref(after: &str, out: &mut String) -> Option<usize> {
    let b = after.as_bytes();
    if b.first() == Some(&b'#') {
        let (hex, start) = match b.get(1) {
            Some(b'x' | b'X') if b.get(2).is_some_and(|c| c.is_ascii_hexdigit()) => (true, 2),
            Some(c) if c.is_ascii_digit() => (false, 1),
            _ => return None, // `&#` not followed by digits: no alternative can match ('#' excluded)
        };
        let radix = if hex { 16 } else { 10 };
        let mut end = start;
        let mut num: u64 = 0;
        while end < b.len() && (b[end] as char).is_digit(radix) {
            let d = (b[end] as char).to_digit(radix).unwrap() as u64;
            num = num.saturating_mul(radix as u64).saturating_add(d);
            end += 1;
        }
        if b.get(end) == Some(&b';') {
            end += 1;
        }
        numeric_charref(num, out);
        return Some(end);
    }
    // Named: `[^\t\n\f <&#;]{1,32};?` (32 code points).
    let mut end = 0;
    let mut nchars = 0;
    for (i, c) in after.char_indices() {
        if nchars == 32 || matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        nchars += 1;
        end = i + c.len_utf8();
    }
    if nchars == 0 {
        return None;
    }
    if after[end..].starts_with(';') {
        end += 1;
    }
    let name = &after[..end];
    if let Some(v) = html5_get(name) {
        out.push_str(v);
        return Some(end);
    }
    // Longest prefix of 2..len-1 code points that is an entity (only legacy names lack ';').
    let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).collect();
    for x in (2..bounds.len()).rev() {
        if let Some(v) = html5_get(&name[..bounds[x]]) {
            out.push_str(v);
            out.push_str(&name[bounds[x]..]);
            return Some(end);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// ftfy-lite

/// ftfy's `HTML_ENTITIES`: `&name;` for every HTML5 name with a semicolon, plus `&NAME;` in
/// capitals for lowercase names whose capitalised form is not itself a reference.
fn ftfy_entities() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m = HashMap::new();
        for (name, value) in html5_entities() {
            if !name.ends_with(';') {
                continue;
            }
            m.insert(format!("&{name}"), value.to_string());
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    m.insert(upper, value.to_uppercase());
                }
            }
        }
        m
    })
}

/// ftfy's `unescape_html`: `&#?[0-9A-Za-z]{1,24};` replaced when it is a known entity (or a
/// numeric reference that `html.unescape` fully consumes).
fn ftfy_unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let cand = &rest[amp..];
        let b = cand.as_bytes();
        let mut i = 1;
        if b.get(1) == Some(&b'#') {
            i = 2;
        }
        let run = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        if (1..=24).contains(&run) && b.get(i + run) == Some(&b';') {
            let m = &cand[..i + run + 1];
            let rep = if let Some(v) = ftfy_entities().get(m) {
                v.clone()
            } else if m.starts_with("&#") {
                let u = html_unescape(m);
                if u.contains(';') {
                    m.to_string()
                } else {
                    u.into_owned()
                }
            } else {
                m.to_string()
            };
            out.push_str(&rep);
            rest = &cand[m.len()..];
        } else {
            out.push('&');
            rest = &cand[1..];
        }
    }
    out.push_str(rest);
    out
}

fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| cp1252_c1(c as u32).unwrap_or(c))
        .collect()
}

fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let rep = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(rep);
    }
    out
}

/// U+3000 → space; U+FF01–U+FFEF → their NFKC form where that differs.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FFEF}' => out.extend(std::iter::once(c).nfkc()),
            _ => out.push(c),
        }
    }
    out
}

fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{201C}'..='\u{201F}' => '"',
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => '\'',
            _ => c,
        })
        .collect()
}

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// `\x1b\[((?:\d|;)*)([a-zA-Z])` removed (`\d` = Unicode decimal digits, approximated by
/// `char::is_numeric`).
fn remove_terminal_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(p) = rest.find("\x1b[") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let run: usize = after
            .chars()
            .take_while(|&c| c == ';' || c.is_numeric())
            .map(char::len_utf8)
            .sum();
        match after[run..].chars().next() {
            Some(c) if c.is_ascii_alphabetic() => rest = &after[run + 1..],
            _ => {
                out.push('\x1b');
                rest = &rest[p + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !matches!(c,
                '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
                | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
        })
        .collect()
}

/// One line of `ftfy.fix_and_explain` without `fix_encoding`, repeated until stable.
fn fix_segment(text: &str, unescape: bool) -> String {
    let mut text = text.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

/// ftfy 6 `fix_text` with default config, minus `fix_encoding` (see the module docs).
pub fn ftfy_fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // unescape_html="auto": turned off for the first line containing '<' and every later one.
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_basics() {
        assert_eq!(html_unescape("a &amp; b"), "a & b");
        assert_eq!(html_unescape("&ampx &notit; &#128;&#x27;"), "&x ¬it; €'");
        assert_eq!(html_unescape("&#0;&#1;&#x110000;"), "\u{FFFD}\u{FFFD}");
        assert_eq!(html_unescape("&#x; &"), "&#x; &");
    }

    #[test]
    fn ftfy_lite() {
        assert_eq!(ftfy_fix_text("ﬂuﬃeﬆ"), "fluffiest");
        assert_eq!(ftfy_fix_text("ＬＯＵＤ　ＮＯＩＳＥＳ"), "LOUD NOISES");
        assert_eq!(
            ftfy_fix_text("P&EACUTE;REZ BUNDESSTRA&SZLIG;E"),
            "PÉREZ BUNDESSTRASSE"
        );
        assert_eq!(ftfy_fix_text("\u{201c}here\u{2019}s\u{201d}"), "\"here's\"");
        assert_eq!(ftfy_fix_text("\x1b[36;44mblue\x1b[0m"), "blue");
        assert_eq!(ftfy_fix_text("a < b &amp; c"), "a < b &amp; c");
    }

    #[test]
    fn open_clip_chain() {
        assert_eq!(
            open_clip_clean("  Salt &amp;amp; PEPPER\t\n x "),
            "salt & pepper x"
        );
    }
}
