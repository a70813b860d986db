//! Test vectors for `parse_attention`. "doctest" marks the examples in the docstring of
//! A1111's `parse_prompt_attention` (modules/prompt_parser.py); the others follow from its
//! `re_attention` alternatives and bracket stacks as each comment explains (and were
//! checked against that code run in Python). Weights compare exactly in f64: A1111's
//! merge of equal runs depends on exact equality.

use super::*;

#[track_caller]
fn check(text: &str, expected: &[(&str, f64)]) {
    let got = parse_attention_f64(text);
    let want: Vec<(String, f64)> = expected.iter().map(|&(t, w)| (t.to_string(), w)).collect();
    assert_eq!(got, want, "text {text:?}");
    // The f32 API is the same, rounded.
    let got32 = parse_attention(text);
    let want32: Vec<(String, f32)> = want.iter().map(|(t, w)| (t.clone(), *w as f32)).collect();
    assert_eq!(got32, want32, "f32 of {text:?}");
}

#[test]
fn docstring_examples() {
    check("normal text", &[("normal text", 1.0)]);
    check(
        "an (important) word",
        &[("an ", 1.0), ("important", 1.1), (" word", 1.0)],
    );
    // doctest: a bracket still open at the end applies to the rest.
    check("(unbalanced", &[("unbalanced", 1.1)]);
    // doctest: escapes are literal characters.
    check("\\(literal\\]", &[("(literal]", 1.0)]);
    // doctest: equal neighbours merge.
    check("(unnecessary)(parens)", &[("unnecessaryparens", 1.1)]);
    // doctest: house = 1.3 * 1.1 * 1.1, sky = 1.1^4 (f64 rounding included), hill = 0.5
    // * 1.1 (the outer "(" is never closed: it multiplies everything after it by 1.1 at
    // the end).
    check(
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        &[
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    );
}

#[test]
fn weights_and_nesting() {
    check("(abc:1.5)", &[("abc", 1.5)]);
    // `:\s*([+-]?[.\d]+)\s*\)`: spaces around the number.
    check("(abc: 1.5 )", &[("abc", 1.5)]);
    // [] multiplies by 1 / 1.1 (not a division by 1.1).
    check("[abc]", &[("abc", 0.9090909090909091)]);
    check("[[abc]]", &[("abc", 0.8264462809917354)]);
    check("((abc))", &[("abc", 1.2100000000000002)]);
    check("[(a:1.5)]", &[("a", 1.3636363636363635)]);
    check("(a:1.)", &[("a", 1.0)]);
    check("(a:.5)", &[("a", 0.5)]);
    check("(a:+2)", &[("a", 2.0)]);
    check("(a:-1)", &[("a", -1.0)]);
    // Not a weight (no number, or `1e5` is not `[.\d]+` followed by `)`): the colon is
    // text and the `)` closes with 1.1.
    check("(a:x)", &[("a:x", 1.1)]);
    check("(a:1e5)", &[("a:1e5", 1.1)]);
    // A1111 raises on float("1.2.3"); here the colon is text.
    check("(a:1.2.3)", &[("a:1.2.3", 1.1)]);
    check("a:b", &[("a:b", 1.0)]);
    // Crossed brackets: each closer pops its own kind; "b" gets 1/1.1 * 1.1, which
    // rounds back to exactly 1.0.
    check(
        "[a (b] c)",
        &[("a ", 0.9090909090909091), ("b", 1.0), (" c", 1.1)],
    );
    check(
        "(a [b) c]",
        &[("a ", 1.1), ("b", 1.0), (" c", 0.9090909090909091)],
    );
}

#[test]
fn unbalanced_and_escapes() {
    // A closer with nothing open is text, and so is a weight.
    check("a ] b ) c", &[("a ] b ) c", 1.0)]);
    check("a :1.5) b", &[("a :1.5) b", 1.0)]);
    // A lone backslash is dropped (A1111 appends text[1:] of "\\" = ""); "\\\\" is one.
    check("a\\b", &[("ab", 1.0)]);
    check("a\\\\b", &[("a\\b", 1.0)]);
    check("", &[("", 1.0)]);
}

#[test]
fn break_segments() {
    check("a BREAK b", &[("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]);
    // Only the whole word; the whitespace around it goes with it.
    check("aBREAK b", &[("aBREAK b", 1.0)]);
    check("x  BREAK\n y", &[("x", 1.0), ("BREAK", -1.0), ("y", 1.0)]);
    check(
        "BREAK_ BREAK, c",
        &[("BREAK_", 1.0), ("BREAK", -1.0), (", c", 1.0)],
    );
    // re.split leaves the empty parts around each BREAK.
    check("BREAK", &[("", 1.0), ("BREAK", -1.0), ("", 1.0)]);
    check(
        "a BREAK BREAK b",
        &[
            ("a", 1.0),
            ("BREAK", -1.0),
            ("", 1.0),
            ("BREAK", -1.0),
            ("b", 1.0),
        ],
    );
    // Inside brackets BREAK is multiplied too: -1.1 is no longer a break.
    check("(a BREAK b)", &[("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]);
    check("(BREAK:1)", &[("", 1.0), ("BREAK", -1.0), ("", 1.0)]);
    check(
        "(a:0) BREAK",
        &[("a", 0.0), ("", 1.0), ("BREAK", -1.0), ("", 1.0)],
    );
}

#[test]
fn f32_weights_keep_non_breaks_off_minus_one() {
    // -1.00000000001 rounds to -1.0 in f32 but is not a break in A1111.
    let got = parse_attention("(BREAK:1.00000000001)");
    assert_eq!(got[1].0, "BREAK");
    assert!(
        got[1].1 != BREAK_WEIGHT && (got[1].1 + 1.0).abs() < 1e-6,
        "{got:?}"
    );
}
