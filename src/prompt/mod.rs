//! How a prompt's text becomes the text encoder's input.
//!
//! [`PromptSyntax::Plain`] is diffusers' `StableDiffusionPipeline._encode_prompt`: one
//! 77-token window, cut at the end. [`PromptSyntax::A1111`] is AUTOMATIC1111's
//! (`modules/prompt_parser.py`, `modules/sd_hijack_clip.py`): emphasis, `BREAK`, 75-token
//! chunks concatenated instead of cut, and prompt editing / alternation scheduled per step.

/// Which prompt language a request speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PromptSyntax {
    /// diffusers: the text as it is, truncated to the tokenizer's window.
    #[default]
    Plain,
    /// AUTOMATIC1111's prompt syntax (its `/sdapi/v1` routes use it).
    A1111,
}
