//! The UNet's text conditioning for one run: every prompt and negative prompt of a batch
//! through the tokenizer and the CLIP text encoder, as one `[rows, tokens, dim]` context.
//!
//! - [`PromptSyntax::Plain`] mirrors diffusers' `StableDiffusionPipeline.encode_prompt`:
//!   one 77-token window per prompt, cut at the end, the same context for every step.
//! - [`PromptSyntax::A1111`] mirrors AUTOMATIC1111 (`modules/prompt_parser.py`,
//!   `modules/sd_hijack_clip.py`): each prompt is scheduled per step (prompt editing and
//!   alternation), weighted (emphasis) and cut into 75-token chunks that are encoded one
//!   by one and concatenated along the tokens. Every prompt of the run is padded with
//!   empty chunks to the longest one (A1111 pads a shorter cond or uncond with the empty
//!   prompt's encoding the same way). Each distinct chunk is encoded once; each step's
//!   context is gathered from the encoded chunks, and steps that see the same prompts
//!   share one context tensor (so the cross-attention K/V cache keeps working).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::models::clip::ClipTextModel;
use crate::ops;
use crate::pipeline::GenerateRequest;
use crate::prompt::{self, Chunk, PromptSyntax, SpecialTokens};
use crate::tokenizer::Tokenizer;

/// What [`encode`] needs from the pipeline.
pub(crate) struct TextStage<'a> {
    pub tokenizer: &'a Tokenizer,
    pub text_encoder: &'a ClipTextModel,
    /// The UNet's activation dtype (contexts are cast to it once).
    pub act: DType,
}

/// The contexts of a run and which step uses which.
pub(crate) struct Conditioning {
    /// Distinct contexts `[rows, tokens, dim]`, rows `[uncond...; cond...]`.
    contexts: Vec<Tensor>,
    /// The context of each UNet call (empty: `contexts[0]` for all).
    per_step: Vec<usize>,
    /// Per request: prompts whose tokens did not all fit (index, tokens dropped).
    pub truncated: Vec<Vec<(usize, usize)>>,
}

impl Conditioning {
    /// The context of UNet call `i` (calls past the schedule use its last entry).
    pub fn at_step(&self, i: usize) -> &Tensor {
        let k = self
            .per_step
            .get(i)
            .or(self.per_step.last())
            .copied()
            .unwrap_or(0);
        &self.contexts[k]
    }
}

/// One text row: its text, how many latent rows repeat it, and where it came from
/// (request, prompt index) when it is a prompt rather than a negative prompt.
struct Row<'r> {
    text: &'r str,
    repeat: usize,
    prompt_of: Option<(usize, usize)>,
}

/// Rows `[uncond...; cond...]`: each prompt repeated per image, the requests one after
/// another within each half (the order of the latent rows).
fn rows<'r>(items: &[&'r GenerateRequest], cfg: bool) -> Vec<Row<'r>> {
    let mut uncond = Vec::new();
    let mut cond = Vec::new();
    for (k, r) in items.iter().enumerate() {
        for (i, p) in r.prompts.iter().enumerate() {
            cond.push(Row {
                text: p,
                repeat: r.num_images_per_prompt,
                prompt_of: Some((k, i)),
            });
            if cfg {
                let neg = match r.negative_prompts.len() {
                    0 => "",
                    1 => r.negative_prompts[0].as_str(),
                    _ => r.negative_prompts[i].as_str(),
                };
                uncond.push(Row {
                    text: neg,
                    repeat: r.num_images_per_prompt,
                    prompt_of: None,
                });
            }
        }
    }
    uncond.extend(cond);
    uncond
}

/// The conditioning of a run of `items` (which share a prompt syntax) with `steps`
/// sampling steps.
pub(crate) fn encode(
    rec: &mut Recorder,
    stage: &TextStage,
    items: &[&GenerateRequest],
    cfg: bool,
    steps: usize,
) -> Result<Conditioning> {
    let rows = rows(items, cfg);
    match items.first().map(|r| r.prompt_syntax) {
        Some(PromptSyntax::A1111) => encode_a1111(rec, stage, items.len(), &rows, steps),
        _ => encode_plain(rec, stage, items.len(), &rows),
    }
}

fn encode_plain(
    rec: &mut Recorder,
    stage: &TextStage,
    n_items: usize,
    rows: &[Row],
) -> Result<Conditioning> {
    let gpu = rec.gpu();
    let mut truncated = vec![Vec::new(); n_items];
    let mut flat = Vec::new();
    let mut n_rows = 0;
    let mut seq = 0;
    for row in rows {
        let e = stage.tokenizer.encode(row.text)?;
        if let (Some((k, i)), true) = (row.prompt_of, e.truncated) {
            truncated[k].push((i, e.dropped));
        }
        seq = e.ids.len();
        for _ in 0..row.repeat {
            flat.extend_from_slice(&e.ids);
        }
        n_rows += row.repeat;
    }
    let ids = Tensor::from_u32(gpu, &[n_rows, seq], &flat)?;
    let context = stage.text_encoder.forward(rec, &ids)?;
    // Once per generation in the UNet's storage type (the cross-attention K/V cache is
    // keyed by this one tensor).
    let context = ops::cast::cast(rec, &context, stage.act)?;
    Ok(Conditioning {
        contexts: vec![context],
        per_step: Vec::new(),
        truncated,
    })
}

/// A row's schedule: A1111's entries, and each entry's index in the run's distinct texts.
struct Schedule {
    entries: Vec<prompt::ScheduledText>,
    text: Vec<usize>,
}

/// The tokens' special ids as A1111's chunker needs them.
fn special_tokens(tokenizer: &Tokenizer) -> SpecialTokens {
    SpecialTokens {
        bos: tokenizer.bos_id(),
        eos: tokenizer.eos_id(),
        pad: tokenizer.pad_id(),
        comma: tokenizer.comma_id(),
    }
}

/// One text's chunks in A1111's syntax (emphasis, `BREAK`, 75-token chunks).
fn chunks_of(tokenizer: &Tokenizer, special: &SpecialTokens, text: &str) -> Result<Vec<Chunk>> {
    let segments = prompt::parse_attention(text);
    prompt::chunk_prompt(&segments, |s| tokenizer.encode_plain(s), special)
}

/// How many 77-token chunks a request's A1111 context has alone (its longest prompt,
/// negative prompt or scheduled variant): requests batch together only when equal, as
/// padding a shorter one with empty chunks would change its image.
pub(crate) fn a1111_chunk_count(tokenizer: &Tokenizer, req: &GenerateRequest) -> Result<usize> {
    let special = special_tokens(tokenizer);
    let mut most = 1;
    let texts = req
        .prompts
        .iter()
        .chain(&req.negative_prompts)
        .map(String::as_str)
        .chain(std::iter::once(""));
    for text in texts {
        for entry in prompt::prompt_schedule(text, req.steps) {
            most = most.max(chunks_of(tokenizer, &special, &entry.text)?.len());
        }
    }
    Ok(most)
}

fn encode_a1111(
    rec: &mut Recorder,
    stage: &TextStage,
    n_items: usize,
    rows: &[Row],
    steps: usize,
) -> Result<Conditioning> {
    let gpu = rec.gpu();
    let special = special_tokens(stage.tokenizer);

    // Each row's schedule over the run's distinct texts.
    let mut texts: Vec<String> = Vec::new();
    let mut text_index: HashMap<String, usize> = HashMap::new();
    let mut schedules: Vec<Schedule> = Vec::with_capacity(rows.len());
    for row in rows {
        let entries = prompt::prompt_schedule(row.text, steps);
        if entries.is_empty() {
            return Err(Error::InvalidInput(format!(
                "the prompt {:?} gave no schedule",
                row.text
            )));
        }
        let text = entries
            .iter()
            .map(|entry| {
                let next = texts.len();
                let k = *text_index.entry(entry.text.clone()).or_insert(next);
                if k == next {
                    texts.push(entry.text.clone());
                }
                k
            })
            .collect();
        schedules.push(Schedule { entries, text });
    }

    // Their chunks, padded with the empty prompt's chunk to the longest.
    let chunked: Vec<Vec<Chunk>> = texts
        .iter()
        .map(|t| chunks_of(stage.tokenizer, &special, t))
        .collect::<Result<_>>()?;
    let empty = chunks_of(stage.tokenizer, &special, "")?
        .into_iter()
        .next()
        .ok_or_else(|| Error::InvalidInput("the empty prompt gave no chunk".into()))?;
    let per_text = chunked.iter().map(Vec::len).max().unwrap_or(1).max(1);

    // Distinct chunks, encoded once each.
    let mut unique: Vec<&Chunk> = Vec::new();
    let mut unique_index: HashMap<(&[u32], Vec<u32>), u32> = HashMap::new();
    let mut text_chunks: Vec<Vec<u32>> = Vec::with_capacity(texts.len());
    for chunks in &chunked {
        let padded = chunks
            .iter()
            .chain(std::iter::repeat_n(&empty, per_text - chunks.len()));
        let mut ids = Vec::with_capacity(per_text);
        for c in padded {
            let key = (
                c.ids.as_slice(),
                c.weights.iter().map(|w| w.to_bits()).collect(),
            );
            let next = unique.len() as u32;
            let k = *unique_index.entry(key).or_insert(next);
            if k == next {
                unique.push(c);
            }
            ids.push(k);
        }
        text_chunks.push(ids);
    }
    let tokens = empty.ids.len();
    let flat_ids: Vec<u32> = unique.iter().flat_map(|c| c.ids.iter().copied()).collect();
    let ids = Tensor::from_u32(gpu, &[unique.len(), tokens], &flat_ids)?;
    let mut z = stage.text_encoder.forward(rec, &ids)?;
    // Only weighted chunks are rescaled: a prompt without emphasis is the plain
    // encoding bit for bit.
    if unique.iter().any(|c| c.weights.iter().any(|&w| w != 1.0)) {
        let flat_w: Vec<f32> = unique
            .iter()
            .flat_map(|c| c.weights.iter().copied())
            .collect();
        let w = Tensor::from_f32(gpu, &[unique.len(), tokens], &flat_w, DType::F32)?;
        z = ops::prompt_weight::prompt_weight(rec, &z, &w)?;
    }
    let z = ops::cast::cast(rec, &z, stage.act)?;
    let dim = z.shape()[2];

    // One context per distinct combination of the rows' scheduled texts. PNDM makes one
    // UNet call more than `steps`: calls past the schedule keep its last entry.
    let n_rows: usize = rows.iter().map(|r| r.repeat).sum();
    let mut contexts: Vec<Tensor> = Vec::new();
    let mut by_key: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut per_step = Vec::with_capacity(steps + 1);
    for step in 0..=steps {
        let mut key = Vec::with_capacity(n_rows * per_text);
        for (row, schedule) in rows.iter().zip(&schedules) {
            let at = prompt::entry_at(&schedule.entries, step).min(schedule.text.len() - 1);
            for _ in 0..row.repeat {
                key.extend_from_slice(&text_chunks[schedule.text[at]]);
            }
        }
        let k = match by_key.get(&key) {
            Some(&k) => k,
            None => {
                let gathered = ops::gather::gather_rows(rec, &z, &key)?;
                contexts.push(gathered.reshape(&[n_rows, per_text * tokens, dim])?);
                by_key.insert(key, contexts.len() - 1);
                contexts.len() - 1
            }
        };
        per_step.push(k);
    }
    Ok(Conditioning {
        contexts,
        per_step,
        truncated: vec![Vec::new(); n_items],
    })
}
