//! Emphasis weights: AUTOMATIC1111's `parse_prompt_attention` (`modules/prompt_parser.py`).
//!
//! `(a)` multiplies the weight of `a` by 1.1, `[a]` by 1/1.1, `(a:1.3)` by 1.3; they
//! nest by multiplying. `\(`, `\)`, `\[`, `\]` and `\\` are literal characters; any other
//! `\` is dropped. A `)` or `]` with nothing open is text; brackets still open at the end
//! apply to the rest of the prompt. `BREAK` (a whole word, with the whitespace around it)
//! becomes its own segment with weight -1 (only at weight exactly -1 does `chunks.rs`
//! treat it as a break, so a `BREAK` inside brackets is text, as in A1111). Weights are
//! computed in f64 in A1111's order (so runs compare equal exactly when A1111's do) and
//! returned as f32.

use super::grammar::is_py_space;

/// The weight `parse_attention` gives a `BREAK`.
pub const BREAK_WEIGHT: f32 = -1.0;

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// A1111's `parse_prompt_attention`: segments with weights, runs of equal weight merged,
/// `BREAK` as its own `("BREAK", -1.0)` segment, unbalanced brackets as A1111 treats them.
/// Never empty (`[("", 1.0)]` for an empty prompt).
pub fn parse_attention(text: &str) -> Vec<(String, f32)> {
    parse_attention_f64(text)
        .into_iter()
        .map(|(t, w)| {
            let mut w32 = w as f32;
            // Keep a weight that is not exactly -1 from becoming the break marker.
            if w32 == BREAK_WEIGHT && w != -1.0 {
                w32 = if w < -1.0 {
                    f32::from_bits(w32.to_bits() + 1)
                } else {
                    f32::from_bits(w32.to_bits() - 1)
                };
            }
            (t, w32)
        })
        .collect()
}

/// [`parse_attention`] with A1111's own f64 weights.
pub fn parse_attention_f64(text: &str) -> Vec<(String, f64)> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, f64)>, from: usize, m: f64| {
        for seg in &mut res[from..] {
            seg.1 *= m;
        }
    };
    let mut rest = text;
    while let Some((token, tail)) = next_token(rest) {
        rest = tail;
        match token {
            Token::Literal(s) => res.push((s.to_string(), 1.0)),
            Token::Open('(') => round.push(res.len()),
            Token::Open(_) => square.push(res.len()),
            // A weight or closer with nothing open is text.
            Token::Weight(w, s) => match round.pop() {
                Some(from) => multiply(&mut res, from, w),
                None => push_text(&mut res, s),
            },
            Token::Close(c) => {
                let (open, m) = if c == ")" {
                    (&mut round, ROUND)
                } else {
                    (&mut square, SQUARE)
                };
                match open.pop() {
                    Some(from) => multiply(&mut res, from, m),
                    None => push_text(&mut res, c),
                }
            }
            Token::Text(s) => push_text(&mut res, s),
        }
    }
    for from in round {
        multiply(&mut res, from, ROUND);
    }
    for from in square {
        multiply(&mut res, from, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    // Merge runs of identical weights.
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (t, w) in res {
        match merged.last_mut() {
            Some(last) if last.1 == w => last.0.push_str(&t),
            _ => merged.push((t, w)),
        }
    }
    merged
}

/// Text as A1111 appends it: split at `BREAK`s, each one a `("BREAK", -1)` segment.
fn push_text(res: &mut Vec<(String, f64)>, text: &str) {
    for (i, part) in split_break(text).into_iter().enumerate() {
        if i > 0 {
            res.push(("BREAK".to_string(), f64::from(BREAK_WEIGHT)));
        }
        res.push((part.to_string(), 1.0));
    }
}

/// One match of A1111's `re_attention`.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// An escape: `\(` -> "(", ...; a lone `\` -> "".
    Literal(&'a str),
    /// `(` or `[`.
    Open(char),
    /// `)` or `]`.
    Close(&'a str),
    /// `:1.3)` (spaces allowed around the number): the weight and the whole match.
    Weight(f64, &'a str),
    /// A run without `\ ( ) [ ] :`, or a lone `:`.
    Text(&'a str),
}

/// The token at the start of `s` and what follows it, as `re_attention`'s alternatives
/// in their order.
fn next_token(s: &str) -> Option<(Token<'_>, &str)> {
    let first = s.chars().next()?;
    let (token, len) = match first {
        '\\' => match s[1..].chars().next() {
            Some(c @ ('(' | ')' | '[' | ']' | '\\')) => {
                (Token::Literal(&s[1..2]), 1 + c.len_utf8())
            }
            _ => (Token::Literal(""), 1),
        },
        '(' | '[' => (Token::Open(first), 1),
        ')' | ']' => (Token::Close(&s[..1]), 1),
        ':' => match weight_at(s) {
            Some((w, len)) => (Token::Weight(w, &s[..len]), len),
            None => (Token::Text(":"), 1),
        },
        _ => {
            let len = s.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(s.len());
            (Token::Text(&s[..len]), len)
        }
    };
    Some((token, &s[len..]))
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s`: the weight and the match length. A
/// number Python's `float()` rejects (`1.2.3`) makes A1111 raise; here the `:` is then
/// plain text instead. Digits are ASCII (Python's `\d` also takes other scripts' digits).
fn weight_at(s: &str) -> Option<(f64, usize)> {
    let after_colon = &s[1..];
    let body = after_colon.trim_start_matches(is_py_space);
    let sign = usize::from(body.starts_with(['+', '-']));
    let digits = body[sign..]
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .unwrap_or(body.len() - sign);
    if digits == 0 {
        return None;
    }
    let number = &body[..sign + digits];
    let tail = body[sign + digits..].trim_start_matches(is_py_space);
    let tail = tail.strip_prefix(')')?;
    let weight = number.parse::<f64>().ok()?;
    Some((weight, s.len() - tail.len()))
}

/// Python's `re.split(r"\s*\bBREAK\b\s*", text)`: the parts between whole-word `BREAK`s
/// (each with the whitespace around it).
fn split_break(text: &str) -> Vec<&str> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut parts = Vec::new();
    let mut part_from = 0;
    let mut search_from = 0;
    while let Some(found) = text[search_from..].find("BREAK") {
        let at = search_from + found;
        let end = at + "BREAK".len();
        let word_before = text[..at].chars().next_back().is_some_and(is_word);
        let word_after = text[end..].chars().next().is_some_and(is_word);
        if word_before || word_after {
            search_from = at + 1;
            continue;
        }
        // The match starts at the whitespace run before BREAK (not before the part).
        let lead = text[part_from..at].trim_end_matches(is_py_space).len();
        parts.push(&text[part_from..part_from + lead]);
        let trail = text[end..].len() - text[end..].trim_start_matches(is_py_space).len();
        part_from = end + trail;
        search_from = part_from;
    }
    parts.push(&text[part_from..]);
    parts
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
