//! Weighted segments to the text encoder's 77-token windows: AUTOMATIC1111's
//! `TextConditionalModel.tokenize_line` / `next_chunk` and the padding of
//! `process_tokens` (`modules/sd_hijack_clip.py`), without textual-inversion embeddings.
//!
//! Each segment is tokenized on its own (no BOS/EOS, no truncation) and its tokens carry
//! its weight. Tokens fill chunks of 75; a `BREAK` closes the current chunk early. When a
//! chunk is full and a comma lies within its last 20 tokens (`comma_padding_backtrack`),
//! the tokens after that comma move on to the next chunk. Each chunk is then BOS, its
//! tokens, EOS up to 77, weight 1.0 on all three kinds of filler; finally, where `pad`
//! differs from EOS (SD 2's OpenCLIP pads with 0; SD 1.x pads with EOS), every id after
//! the first EOS becomes `pad`. An empty prompt is one chunk. The prompt's chunks are encoded one by one and
//! concatenated (77 * n tokens).

use super::attention::BREAK_WEIGHT;

/// Prompt tokens per chunk (77 minus BOS and EOS).
pub const CHUNK_TOKENS: usize = 75;

/// A1111's `comma_padding_backtrack` default: how far back a full chunk looks for a comma.
pub const COMMA_PADDING_BACKTRACK: usize = 20;

/// The tokenizer's special ids for chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: u32,
    pub eos: u32,
    /// What follows the first EOS (SD 1.x: EOS; SD 2: 0, `!`).
    pub pad: u32,
    /// The id of `,</w>`, if the vocabulary has one.
    pub comma: Option<u32>,
}

/// One text-encoder window: `ids` and `weights` are both `CHUNK_TOKENS + 2` (77) long.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

/// A1111's `tokenize_line` on segments from `parse_attention` (see the module docs):
/// `tokenize` turns one segment's text into ids without special tokens or truncation.
pub fn chunk_prompt<E>(
    segments: &[(String, f32)],
    mut tokenize: impl FnMut(&str) -> Result<Vec<u32>, E>,
    special: &SpecialTokens,
) -> Result<Vec<Chunk>, E> {
    let mut b = Builder {
        special: *special,
        chunks: Vec::new(),
        ids: Vec::new(),
        weights: Vec::new(),
        last_comma: None,
    };
    for (text, weight) in segments {
        if text == "BREAK" && *weight == BREAK_WEIGHT {
            b.close();
            continue;
        }
        for id in tokenize(text)? {
            b.push(id, *weight);
        }
    }
    if !b.ids.is_empty() || b.chunks.is_empty() {
        b.close();
    }
    Ok(b.chunks)
}

struct Builder {
    special: SpecialTokens,
    chunks: Vec<Chunk>,
    /// The open chunk's tokens (at most `CHUNK_TOKENS`) and their weights.
    ids: Vec<u32>,
    weights: Vec<f32>,
    /// Position in `ids` of the open chunk's last comma.
    last_comma: Option<usize>,
}

impl Builder {
    /// One token, as the body of A1111's token loop.
    fn push(&mut self, id: u32, weight: f32) {
        if Some(id) == self.special.comma {
            self.last_comma = Some(self.ids.len());
        } else if let Some(comma) = self.last_comma
            && self.ids.len() == CHUNK_TOKENS
            && self.ids.len() - comma <= COMMA_PADDING_BACKTRACK
        {
            // Full, with a comma near the end: what follows the comma moves on.
            let moved_ids = self.ids.split_off(comma + 1);
            let moved_weights = self.weights.split_off(comma + 1);
            self.close();
            self.ids = moved_ids;
            self.weights = moved_weights;
        }
        if self.ids.len() == CHUNK_TOKENS {
            self.close();
        }
        self.ids.push(id);
        self.weights.push(weight);
    }

    /// A1111's `next_chunk`: EOS-fill to 75, BOS/EOS around, then `process_tokens`'s pad.
    fn close(&mut self) {
        let SpecialTokens { bos, eos, pad, .. } = self.special;
        let mut ids = Vec::with_capacity(CHUNK_TOKENS + 2);
        ids.push(bos);
        ids.append(&mut self.ids);
        ids.resize(CHUNK_TOKENS + 2, eos);
        let mut weights = Vec::with_capacity(CHUNK_TOKENS + 2);
        weights.push(1.0);
        weights.append(&mut self.weights);
        weights.resize(CHUNK_TOKENS + 2, 1.0);
        // Where pad is not EOS (SD 2), everything after the first EOS becomes pad: the
        // first EOS may be the prompt's own ("<|endoftext|>"). Where pad is EOS nothing
        // changes, not even after such an EOS.
        if pad != eos
            && let Some(first_eos) = ids.iter().position(|&i| i == eos)
        {
            ids[first_eos + 1..].fill(pad);
        }
        self.last_comma = None;
        self.chunks.push(Chunk { ids, weights });
    }
}

#[cfg(test)]
#[path = "chunks_tests.rs"]
mod tests;
