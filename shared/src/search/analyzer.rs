//! The one text analysis of the project: both search adapters index and query with it, so
//! that they return the same hits.
//!
//! - Chinese, Japanese and Korean characters are one token each. A phrase query of per-character
//!   tokens is a substring match: "表格存储" finds "欢迎使用表格存储服务", whereas a word
//!   segmenter would cut the query and the sentence differently and miss it.
//! - Everything else is split into words by the Unicode word-boundary rules (UAX #29, what
//!   Lucene's `standard` tokenizer implements), keeping words with a letter or digit.
//! - Tokens are lowercased code point by code point (as Lucene's `lowercase` filter does).
//!
//! OpenSearch reproduces this with a `pattern_replace` char filter that puts spaces around each
//! character of [`CJK_RANGES`], the `standard` tokenizer and the `lowercase` filter (see
//! `infra/opensearch/`; a test keeps the two in step).

use unicode_segmentation::UnicodeSegmentation;

/// Code point ranges analysed one character at a time.
pub const CJK_RANGES: &[(u32, u32)] = &[
    (0x1100, 0x11FF),   // Hangul Jamo
    (0x3040, 0x309F),   // Hiragana
    (0x30A0, 0x30FF),   // Katakana
    (0x3130, 0x318F),   // Hangul Compatibility Jamo
    (0x31F0, 0x31FF),   // Katakana Phonetic Extensions
    (0x3400, 0x4DBF),   // CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),   // CJK Unified Ideographs
    (0xAC00, 0xD7AF),   // Hangul Syllables
    (0xF900, 0xFAFF),   // CJK Compatibility Ideographs
    (0xFF66, 0xFF9F),   // Halfwidth Katakana
    (0x20000, 0x3134F), // CJK Unified Ideographs Extensions B–G
];

/// Lucene's StandardTokenizer splits longer tokens at this length.
pub const MAX_TOKEN_CHARS: usize = 255;

pub fn is_cjk(c: char) -> bool {
    let c = c as u32;
    CJK_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// One token: its text and where it came from (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tok {
    pub text: String,
    pub from: usize,
    pub to: usize,
}

fn lowercase(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// The tokens of `text`, in order (a token's position is its index).
pub fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut run_start = 0;
    let flush = |out: &mut Vec<Tok>, start: usize, end: usize| {
        for (i, w) in text[start..end].unicode_word_indices() {
            let mut from = start + i;
            let mut chars = w.char_indices().peekable();
            // Split over-long words the way Lucene does.
            while chars.peek().is_some() {
                let piece_start = chars.peek().map_or(0, |(j, _)| *j);
                let piece_end =
                    chars.by_ref().take(MAX_TOKEN_CHARS).last().map_or(piece_start, |(j, c)| j + c.len_utf8());
                let piece = &w[piece_start..piece_end];
                out.push(Tok { text: lowercase(piece), from, to: from + piece.len() });
                from += piece.len();
            }
        }
    };
    for (i, c) in text.char_indices() {
        if is_cjk(c) {
            flush(&mut out, run_start, i);
            out.push(Tok { text: lowercase(&text[i..i + c.len_utf8()]), from: i, to: i + c.len_utf8() });
            run_start = i + c.len_utf8();
        }
    }
    flush(&mut out, run_start, text.len());
    out
}

/// The token texts only.
pub fn terms(text: &str) -> Vec<String> {
    tokens(text).into_iter().map(|t| t.text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_is_one_token_per_character() {
        assert_eq!(terms("欢迎使用表格存储服务"), ["欢", "迎", "使", "用", "表", "格", "存", "储", "服", "务"]);
        assert_eq!(terms("東京タワーに行きました"), ["東", "京", "タ", "ワ", "ー", "に", "行", "き", "ま", "し", "た"]);
        assert_eq!(terms("한국어 검색"), ["한", "국", "어", "검", "색"]);
    }

    #[test]
    fn latin_words_follow_unicode_word_boundaries_lowercased() {
        assert_eq!(
            terms("Hello, World! It's e-mail: a.b@c.com 3.14"),
            ["hello", "world", "it's", "e", "mail", "a.b", "c.com", "3.14"]
        );
        assert_eq!(terms("ΟΔΟΣ Straße"), ["οδοσ", "straße"], "per code point, like Lucene");
        assert!(terms("  ... !!! ").is_empty());
    }

    #[test]
    fn mixed_text_keeps_both_analyses_and_offsets() {
        let toks = tokens("用Rust写IM服务");
        assert_eq!(toks.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["用", "rust", "写", "im", "服", "务"]);
        for t in &toks {
            assert_eq!(lowercase(&"用Rust写IM服务"[t.from..t.to]), t.text);
        }
    }

    #[test]
    fn overlong_words_are_split() {
        let t = terms(&"a".repeat(600));
        assert_eq!(t.iter().map(|s| s.len()).collect::<Vec<_>>(), [255, 255, 90]);
    }
}
