//! AUTOMATIC1111's prompt-editing grammar (`modules/prompt_parser.py`, the lark grammar
//! `schedule_parser`) as a hand-written recursive-descent parser.
//!
//! The grammar, in words: a prompt is plain text (`\x` escapes any character but a
//! newline), whitespace and bracket groups:
//! - `(p)`, `(p:p)` and `[p]` (emphasis; kept as text here, `attention.rs` weighs them),
//! - `[to:when]` and `[from:to:when]` (prompt editing; `when` a number, spaces allowed
//!   around it),
//! - `[a|b|c]` (alternation; options may be empty).
//!
//! Inside a group every bracket must belong to a group of its own; at the top level a
//! bracket or colon that fits no group is kept as a stray character, but a `|` outside an
//! alternation, or a `\` with nothing (or a newline) after it, makes the whole prompt
//! unparseable (A1111 then uses it unchanged for every step).
//!
//! Which parse wins: a group is recognised whenever its brackets pair up by nesting and
//! its content is valid; only otherwise are its brackets stray. This is what lark's
//! Earley parser returns for well-formed prompts (checked by fuzzing against lark 1.1.2,
//! A1111's pinned version). For some malformed prompts (stray brackets at the top level
//! next to a valid `[..:when]` group) lark's choice depends on Python's per-process string
//! hash seed, so A1111 itself has no fixed answer; there this rule picks one of its
//! answers.

/// One piece of a parsed prompt: what A1111's `AtStep` transformer needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    /// Written out as is at every step: plain text, whitespace, emphasis brackets, stray
    /// brackets and colons.
    Text(&'a str),
    /// `[before:after:when]` (`before` empty for `[after:when]`): `before` while the step
    /// is at most `when`, then `after`.
    Scheduled {
        before: Vec<Node<'a>>,
        after: Vec<Node<'a>>,
        /// The number as written (`3`, `.5`, `1e1`); `schedule.rs` turns it into a step.
        when: &'a str,
    },
    /// `[a|b|c]`: option `(step - 1) % len` at step `step`.
    Alternate(Vec<Vec<Node<'a>>>),
}

/// Deeper bracket nesting than this is treated as unparseable (lark would exhaust
/// Python's recursion limit; a Rust parser must not exhaust its stack).
const MAX_DEPTH: usize = 100;

/// Why a group could not be read.
enum Fail {
    /// Not a valid group: at the top level its brackets become stray characters.
    Invalid,
    /// The whole prompt is unparseable.
    Fatal,
}

/// Parses `prompt`; `None` when A1111's parser rejects it.
pub(crate) fn parse(prompt: &str) -> Option<Vec<Node<'_>>> {
    let close = match_brackets(prompt)?;
    let p = Parser { s: prompt, close };
    p.top_level().ok()
}

/// Python's `\s` on `str` (Unicode whitespace and the separators `\x1c`..`\x1f`).
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Byte length of the escape `\x` at `i`, `None` when nothing escapable follows (a `\`
/// at the end or before a newline: lark's `\\.` does not match a newline).
fn escape_len(s: &str, i: usize) -> Option<usize> {
    match s[i + 1..].chars().next() {
        Some('\n') | None => None,
        Some(c) => Some(1 + c.len_utf8()),
    }
}

/// For each `(` / `[` (by byte index), the byte index of the bracket closing it by
/// nesting, if any: scanning on from the opener, the first closer that leaves it with no
/// open bracket, provided no closer of the wrong kind comes first. One pass with a stack:
/// a wrong closer ends every group still open. `None` when an escape is unreadable.
fn match_brackets(s: &str) -> Option<Vec<Option<usize>>> {
    let b = s.as_bytes();
    let mut close = vec![None; b.len()];
    let mut open: Vec<usize> = Vec::new();
    let mut j = 0;
    while j < b.len() {
        match b[j] {
            b'\\' => {
                j += escape_len(s, j)?;
                continue;
            }
            b'(' | b'[' => open.push(j),
            c @ (b')' | b']') => {
                if let Some(&top) = open.last() {
                    if (b[top] == b'(') == (c == b')') {
                        close[top] = Some(j);
                        open.pop();
                    } else {
                        open.clear();
                    }
                }
            }
            _ => {}
        }
        j += 1;
    }
    Some(close)
}

struct Parser<'a> {
    s: &'a str,
    close: Vec<Option<usize>>,
}

impl<'a> Parser<'a> {
    /// A1111's `start`: groups, text and stray `[ ] ( ) :`.
    fn top_level(&self) -> Result<Vec<Node<'a>>, Fail> {
        let b = self.s.as_bytes();
        let mut out = Vec::new();
        let (mut j, mut text_from) = (0, 0);
        while j < b.len() {
            match b[j] {
                // Escapes were all checked by `match_brackets`.
                b'\\' => j += escape_len(self.s, j).ok_or(Fail::Fatal)?,
                b'(' | b'[' => {
                    let group = match self.close[j] {
                        Some(k) => match self.group(j, k, 1) {
                            Ok(nodes) => Some((k, nodes)),
                            Err(Fail::Invalid) => None,
                            Err(Fail::Fatal) => return Err(Fail::Fatal),
                        },
                        None => None,
                    };
                    match group {
                        Some((k, nodes)) => {
                            push_text(&mut out, &self.s[text_from..j]);
                            out.extend(nodes);
                            j = k + 1;
                            text_from = j;
                        }
                        // A stray bracket: part of the text.
                        None => j += 1,
                    }
                }
                b'|' => return Err(Fail::Fatal),
                _ => j += 1,
            }
        }
        push_text(&mut out, &self.s[text_from..]);
        Ok(out)
    }

    /// The group from the opener at `i` to its closer at `k`.
    fn group(&self, i: usize, k: usize, depth: usize) -> Result<Vec<Node<'a>>, Fail> {
        if depth > MAX_DEPTH {
            return Err(Fail::Fatal);
        }
        let (parts, seps) = self.split(i + 1, k)?;
        let colons = seps.iter().filter(|&&c| c == b':').count();
        let bars = seps.len() - colons;
        let s = self.s;
        if s.as_bytes()[i] == b'(' {
            // `(p)` or `(p:p)`: emphasis, all of it text but nested groups.
            if bars > 0 || colons > 1 {
                return Err(Fail::Invalid);
            }
            let mut out = vec![Node::Text("(")];
            for (n, &(a, b)) in parts.iter().enumerate() {
                if n > 0 {
                    out.push(Node::Text(":"));
                }
                out.extend(self.prompt(a, b, depth)?);
            }
            out.push(Node::Text(")"));
            return Ok(out);
        }
        if bars > 0 {
            if colons > 0 {
                return Err(Fail::Invalid);
            }
            let options = parts
                .iter()
                .map(|&(a, b)| self.prompt(a, b, depth))
                .collect::<Result<_, _>>()?;
            return Ok(vec![Node::Alternate(options)]);
        }
        match colons {
            0 => {
                let mut out = vec![Node::Text("[")];
                out.extend(self.prompt(i + 1, k, depth)?);
                out.push(Node::Text("]"));
                Ok(out)
            }
            1 | 2 => {
                let (a, b) = parts[colons];
                let when = s[a..b].trim_matches(is_py_space);
                if !is_number(when) {
                    return Err(Fail::Invalid);
                }
                let before = if colons == 2 {
                    self.prompt(parts[0].0, parts[0].1, depth)?
                } else {
                    Vec::new()
                };
                let (a, b) = parts[colons - 1];
                let after = self.prompt(a, b, depth)?;
                Ok(vec![Node::Scheduled {
                    before,
                    after,
                    when,
                }])
            }
            _ => Err(Fail::Invalid),
        }
    }

    /// Splits `a..b` (a group's content) at its own `:` and `|` (not those of nested
    /// groups): the parts' byte ranges and the separators between them.
    #[allow(clippy::type_complexity)]
    fn split(&self, a: usize, b: usize) -> Result<(Vec<(usize, usize)>, Vec<u8>), Fail> {
        let bytes = self.s.as_bytes();
        let (mut parts, mut seps) = (Vec::new(), Vec::new());
        let (mut j, mut from) = (a, a);
        while j < b {
            match bytes[j] {
                b'\\' => j += escape_len(self.s, j).ok_or(Fail::Fatal)?,
                // Nested groups lie inside ours (else ours would not have matched).
                b'(' | b'[' => j = self.close[j].ok_or(Fail::Invalid)? + 1,
                c @ (b':' | b'|') => {
                    parts.push((from, j));
                    seps.push(c);
                    j += 1;
                    from = j;
                }
                _ => j += 1,
            }
        }
        parts.push((from, b));
        Ok((parts, seps))
    }

    /// A1111's `prompt` inside a group: text, whitespace and valid groups only.
    fn prompt(&self, a: usize, b: usize, depth: usize) -> Result<Vec<Node<'a>>, Fail> {
        let bytes = self.s.as_bytes();
        let mut out = Vec::new();
        let (mut j, mut text_from) = (a, a);
        while j < b {
            match bytes[j] {
                b'\\' => j += escape_len(self.s, j).ok_or(Fail::Fatal)?,
                b'(' | b'[' => {
                    let k = self.close[j].filter(|&k| k < b).ok_or(Fail::Invalid)?;
                    push_text(&mut out, &self.s[text_from..j]);
                    out.extend(self.group(j, k, depth + 1)?);
                    j = k + 1;
                    text_from = j;
                }
                b')' | b']' | b':' | b'|' => return Err(Fail::Invalid),
                _ => j += 1,
            }
        }
        push_text(&mut out, &self.s[text_from..b]);
        Ok(out)
    }
}

fn push_text<'a>(out: &mut Vec<Node<'a>>, text: &'a str) {
    if !text.is_empty() {
        out.push(Node::Text(text));
    }
}

/// lark's `SIGNED_NUMBER`, all of `s`: `[+-]` then `12`, `1.`, `1.5`, `.5`, each with an
/// optional exponent (`1e5`, `1.5E-2`).
pub(crate) fn is_number(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(e) => (&s[..e], Some(&s[e + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (digits(int) || int.is_empty())
                && (digits(frac) || frac.is_empty())
                && !(int.is_empty() && frac.is_empty())
        }
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(|n| match n {
                Node::Text(t) => t.to_string(),
                Node::Scheduled {
                    before,
                    after,
                    when,
                } => format!("{{{}=>{}@{when}}}", text(before), text(after)),
                Node::Alternate(o) => {
                    let o: Vec<String> = o.iter().map(|x| text(x)).collect();
                    format!("{{{}}}", o.join("|"))
                }
            })
            .collect()
    }

    fn shown(p: &str) -> Option<String> {
        parse(p).map(|n| text(&n))
    }

    #[test]
    fn numbers_are_larks_signed_number() {
        for ok in [
            "3", "+3", "-3", ".5", "1.", "1.5", "1e5", "1.e5", "1.5E-2", ".5e+1",
        ] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in [
            "", ".", "+", "e5", "1e", "1.5e", "1..2", "1.2.3", "x", "1 2", "١",
        ] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn groups_and_strays() {
        assert_eq!(shown("a [b:c:3] d").as_deref(), Some("a {b=>c@3} d"));
        assert_eq!(shown("[b: 3 ]").as_deref(), Some("{=>b@3}"));
        assert_eq!(shown("(x [a|b|])").as_deref(), Some("(x {a|b|})"));
        // A group whose content is invalid leaves its brackets stray; groups inside it
        // still count at the top level.
        assert_eq!(shown("(x:y:[a:1])").as_deref(), Some("(x:y:{=>a@1})"));
        assert_eq!(shown("[a [b:1]").as_deref(), Some("[a {=>b@1}"));
        // Mismatched nesting: no group.
        assert_eq!(shown("[a (b:1] c)").as_deref(), Some("[a (b:1] c)"));
        assert_eq!(shown("\\[a:1]").as_deref(), Some("\\[a:1]"));
    }

    #[test]
    fn unparseable_prompts() {
        for p in ["a | b", "a [b:c|d:1]", "trailing \\", "x \\\ny", "[a:1] |"] {
            assert_eq!(shown(p), None, "{p:?}");
        }
        let deep = format!("{}a{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(shown(&deep), None);
        let ok = format!("{}a{}", "(".repeat(50), ")".repeat(50));
        assert_eq!(shown(&ok).as_deref(), Some(ok.as_str()));
        // Unmatched openers stay stray, in linear time.
        let stray = "(".repeat(100_000);
        assert_eq!(shown(&stray).as_deref(), Some(stray.as_str()));
    }
}
