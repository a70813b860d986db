//! How a prompt's text becomes the text encoder's input.
//!
//! [`PromptSyntax::Plain`] is diffusers' `StableDiffusionPipeline._encode_prompt`: one
//! 77-token window, cut at the end. [`PromptSyntax::A1111`] is AUTOMATIC1111's
//! (`modules/prompt_parser.py`, `modules/sd_hijack_clip.py`): emphasis, `BREAK`, 75-token
//! chunks concatenated instead of cut, and prompt editing / alternation scheduled per step.
//!
//! The A1111 language, in the order A1111 applies it to one prompt:
//! 1. [`prompt_schedule`] (`schedule.rs`, over the grammar in `grammar.rs`): the texts a
//!    prompt takes over the steps (`[from:to:when]`, `[a|b]`); [`entry_at`] picks one per
//!    sampling step.
//! 2. [`parse_attention`] (`attention.rs`): each text to weighted segments (`(a:1.2)`,
//!    `[a]`, `BREAK`).
//! 3. [`chunk_prompt`] (`chunks.rs`): segments to 77-token windows with a weight per
//!    token, to be encoded one by one and concatenated.

mod attention;
mod chunks;
mod grammar;
mod schedule;

pub use attention::{BREAK_WEIGHT, parse_attention, parse_attention_f64};
pub use chunks::{CHUNK_TOKENS, COMMA_PADDING_BACKTRACK, Chunk, SpecialTokens, chunk_prompt};
pub use schedule::{ScheduledText, entry_at, prompt_schedule};

/// Which prompt language a request speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PromptSyntax {
    /// diffusers: the text as it is, truncated to the tokenizer's window.
    #[default]
    Plain,
    /// AUTOMATIC1111's prompt syntax (its `/sdapi/v1` routes use it).
    A1111,
}

impl PromptSyntax {
    /// `plain` (also `diffusers`) or `a1111` (also `automatic1111`, `webui`).
    pub fn as_str(self) -> &'static str {
        match self {
            PromptSyntax::Plain => "plain",
            PromptSyntax::A1111 => "a1111",
        }
    }
}

impl std::str::FromStr for PromptSyntax {
    type Err = String;

    fn from_str(s: &str) -> Result<PromptSyntax, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "plain" | "diffusers" => Ok(PromptSyntax::Plain),
            "a1111" | "automatic1111" | "webui" => Ok(PromptSyntax::A1111),
            other => Err(format!(
                "unknown prompt syntax {other:?}: expected plain (diffusers) or a1111"
            )),
        }
    }
}
