//! `chunk_prompt` with a stand-in tokenizer whose ids are readable: `t<N>` is id N, `,`
//! is the comma (id 267, CLIP's `,</w>`), `eos` is EOS. Expected chunks follow A1111's
//! `tokenize_line` step by step (modules/sd_hijack_clip.py). The real CLIP tokenizer is
//! tested with this in tests/tokenizer.rs.

use super::*;
use crate::prompt::attention::parse_attention;

const BOS: u32 = 49406;
const EOS: u32 = 49407;
const COMMA: u32 = 267;

/// SD 2's ids: pad 0 after the first EOS.
const SD2: SpecialTokens = SpecialTokens {
    bos: BOS,
    eos: EOS,
    pad: 0,
    comma: Some(COMMA),
};

fn tokenize(text: &str) -> Result<Vec<u32>, String> {
    text.split_whitespace()
        .map(|w| match w {
            "," => Ok(COMMA),
            "eos" => Ok(EOS),
            _ => w
                .strip_prefix('t')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("unknown word {w:?}")),
        })
        .collect()
}

fn words(ids: impl IntoIterator<Item = u32>) -> String {
    ids.into_iter()
        .map(|i| {
            if i == COMMA {
                ",".into()
            } else {
                format!("t{i}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn chunks_of(prompt: &str, special: &SpecialTokens) -> Vec<Chunk> {
    chunk_prompt(&parse_attention(prompt), tokenize, special).expect("chunks")
}

/// BOS, `tokens`, EOS, then `pad` to 77.
fn window(tokens: &[u32], pad: u32) -> Vec<u32> {
    let mut ids = vec![BOS];
    ids.extend_from_slice(tokens);
    ids.push(EOS);
    ids.resize(77, pad);
    ids
}

#[test]
fn short_prompt_is_one_window() {
    let c = chunks_of("t1 t2 t3", &SD2);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].ids, window(&[1, 2, 3], 0));
    assert_eq!(c[0].weights, vec![1.0; 77]);
    // SD 1.x pads with EOS.
    let sd1 = SpecialTokens { pad: EOS, ..SD2 };
    assert_eq!(chunks_of("t1 t2 t3", &sd1)[0].ids, window(&[1, 2, 3], EOS));
}

#[test]
fn empty_prompt_is_one_window() {
    let c = chunks_of("", &SD2);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].ids, window(&[], 0));
    assert_eq!(c[0].weights, vec![1.0; 77]);
}

#[test]
fn long_prompts_continue_in_more_windows() {
    let all: Vec<u32> = (1..=150).collect();
    let c = chunks_of(&words(all.clone()), &SD2);
    assert_eq!(c.len(), 2, "150 tokens are two full windows");
    assert_eq!(c[0].ids, window(&all[..75], 0));
    assert_eq!(c[1].ids, window(&all[75..], 0));
    // One more token opens a third window.
    let c = chunks_of(&words(1..=151), &SD2);
    assert_eq!(c.len(), 3);
    assert_eq!(c[2].ids, window(&[151], 0));
    // Exactly 75: one window, no empty one after it.
    assert_eq!(chunks_of(&words(1..=75), &SD2).len(), 1);
}

#[test]
fn weights_follow_their_tokens() {
    let c = chunks_of("t1 (t2 t3) [t4]", &SD2);
    let w = &c[0].weights;
    assert_eq!(w[..5], [1.0, 1.0, 1.1, 1.1, (1.0 / 1.1) as f32]);
    assert!(w[5..].iter().all(|&x| x == 1.0), "EOS and padding weigh 1");
    assert_eq!(c[0].ids, window(&[1, 2, 3, 4], 0));
}

#[test]
fn break_closes_the_window() {
    let c = chunks_of("t1 t2 BREAK t3", &SD2);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].ids, window(&[1, 2], 0));
    assert_eq!(c[1].ids, window(&[3], 0));
    // A BREAK first gives an empty window; two in a row give one in between.
    let c = chunks_of("BREAK t1 BREAK BREAK t2", &SD2);
    let got: Vec<Vec<u32>> = c.into_iter().map(|c| c.ids).collect();
    let empty = window(&[], 0);
    assert_eq!(
        got,
        [empty.clone(), window(&[1], 0), empty, window(&[2], 0)]
    );
    // A trailing BREAK leaves no empty window at the end.
    assert_eq!(chunks_of("t1 BREAK", &SD2).len(), 1);
    // After exactly 75 tokens a BREAK closes the full window, nothing more.
    let c = chunks_of(&format!("{} BREAK t9", words(1..=75)), &SD2);
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].ids, window(&[9], 0));
    // Inside brackets BREAK weighs -1.1: A1111 then tokenizes the word itself.
    let segs = parse_attention("(t1 BREAK t2)");
    let mut seen = Vec::new();
    let c = chunk_prompt(
        &segs,
        |t| -> Result<Vec<u32>, String> {
            seen.push(t.to_string());
            Ok(vec![5])
        },
        &SD2,
    )
    .expect("chunks");
    assert_eq!(c.len(), 1);
    assert_eq!(seen, ["t1", "BREAK", "t2"]);
}

/// 60 tokens, a comma at position `comma_at`, then more tokens up to `total`.
fn with_comma(comma_at: usize, total: u32) -> (String, Vec<u32>) {
    let mut ids: Vec<u32> = (1..=total).collect();
    ids.insert(comma_at, COMMA);
    ids.pop();
    (words(ids.clone()), ids)
}

#[test]
fn full_window_moves_the_text_after_a_near_comma() {
    // Comma at index 55 of the full window: 75 - 55 = 20 <= 20, so the 76th token moves
    // what follows the comma (19 tokens) to the next window.
    let (prompt, ids) = with_comma(55, 80);
    let c = chunks_of(&prompt, &SD2);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].ids, window(&ids[..56], 0));
    assert_eq!(c[1].ids, window(&ids[56..], 0));
    // Weights move with their tokens.
    let (prompt, _) = with_comma(55, 80);
    let weighted = format!("({prompt})");
    let c = chunks_of(&weighted, &SD2);
    assert_eq!(c[0].weights[1..57], [1.1; 56]);
    assert_eq!(c[0].weights[57], 1.0, "EOS fill");
    assert_eq!(c[1].weights[1..1 + 24], [1.1; 24]);
}

#[test]
fn far_comma_does_not_move_text() {
    // Comma at index 54: 75 - 54 = 21 > 20, a plain cut at 75.
    let (prompt, ids) = with_comma(54, 80);
    let c = chunks_of(&prompt, &SD2);
    assert_eq!(c[0].ids, window(&ids[..75], 0));
    assert_eq!(c[1].ids, window(&ids[75..], 0));
    // Without a comma token in the vocabulary nothing moves either.
    let (prompt, ids) = with_comma(70, 80);
    let no_comma = SpecialTokens { comma: None, ..SD2 };
    let c = chunk_prompt(&parse_attention(&prompt), tokenize, &no_comma).expect("chunks");
    assert_eq!(c[0].ids, window(&ids[..75], 0));
}

#[test]
fn comma_on_a_full_window_starts_the_next() {
    let mut ids: Vec<u32> = (1..=75).collect();
    ids.push(COMMA);
    ids.push(76);
    let c = chunks_of(&words(ids.clone()), &SD2);
    assert_eq!(c[0].ids, window(&ids[..75], 0));
    assert_eq!(c[1].ids, window(&[COMMA, 76], 0));
}

#[test]
fn first_eos_starts_the_padding() {
    // An EOS inside the prompt (a literal "<|endoftext|>"): A1111's process_tokens pads
    // from the first EOS on, for SD 2.
    let c = chunks_of("t1 eos t2", &SD2);
    let mut want = vec![BOS, 1, EOS];
    want.resize(77, 0);
    assert_eq!(c[0].ids, want);
    assert_eq!(c[0].weights, vec![1.0; 77]);
    // SD 1.x (pad is EOS): process_tokens does nothing, the rest of the prompt stays.
    let sd1 = SpecialTokens { pad: EOS, ..SD2 };
    let c = chunks_of("t1 eos t2", &sd1);
    assert_eq!(c[0].ids, window(&[1, EOS, 2], EOS));
}

#[test]
fn tokenizer_errors_are_returned() {
    let err = chunk_prompt(&parse_attention("t1 oops"), tokenize, &SD2).expect_err("bad word");
    assert!(err.contains("oops"), "{err}");
}
