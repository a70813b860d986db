//! `wgsd tokenize`: the CLIP token ids a prompt becomes (as diffusers' tokenizer call
//! produces them), as JSON; warns on stderr when the prompt was cut at 77 tokens.

use std::path::Path;

use serde::Serialize;
use wgsd::loader::{ArchiveOptions, open_model_with};
use wgsd::tokenizer::Tokenizer;

#[derive(Serialize)]
struct Output<'a> {
    prompt: &'a str,
    ids: &'a [u32],
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<&'a [String]>,
    truncated: bool,
    dropped_tokens: usize,
}

pub fn run(
    model: &Path,
    single_file: &super::convert::SingleFileArgs,
    prompt: &str,
    verbose: bool,
) -> anyhow::Result<()> {
    let opts = ArchiveOptions {
        single_file: single_file.options()?,
        ..ArchiveOptions::default()
    };
    let dir = open_model_with(model, &opts)?;
    let tokenizer = Tokenizer::from_dir(&dir.component("tokenizer")?)?;
    let enc = tokenizer.encode(prompt)?;
    if enc.truncated {
        eprintln!(
            "warning: the prompt is longer than {} tokens; {} token(s) at its end were cut (as diffusers does)",
            tokenizer.max_length(),
            enc.dropped
        );
    }
    let out = Output {
        prompt,
        ids: &enc.ids,
        tokens: verbose.then_some(enc.tokens.as_slice()),
        truncated: enc.truncated,
        dropped_tokens: enc.dropped,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
