//! The CLIP tokenizer as transformers' `CLIPTokenizer` (what diffusers calls with
//! `padding="max_length", max_length=77, truncation=True`), built on the `tokenizers`
//! crate.
//!
//! transformers 5 builds CLIPTokenizer the same way from either archive layout: it takes
//! only the BPE vocabulary and merges (from `tokenizer.json`'s model, or from the legacy
//! `vocab.json` + `merges.txt`) and puts its own pipeline around them: NFC, runs of
//! whitespace to one space, lowercase; a split on CLIP's regex; byte-level BPE with a
//! `</w>` word suffix; `<|startoftext|>` ... `<|endoftext|>` around the ids. The special
//! tokens (bos, eos, unk, pad) come from `special_tokens_map.json` over
//! `tokenizer_config.json`, and are "added tokens": they are cut out of the prompt text
//! before BPE. So SD 2's pad token `!` inside a prompt becomes id 0 (`!`) rather than
//! BPE's `!</w>` (256), exactly as transformers does. We rebuild the same pipeline here
//! rather than trust the `tokenizer.json`'s own pipeline, because transformers does too.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::Result;
use crate::loader::LoadError;

/// CLIP's split regex (transformers' CLIPTokenizer).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// One tokenised prompt, padded or truncated to the model's length (77).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, `max_length` of them: BOS, prompt, EOS, then pad ids.
    pub ids: Vec<u32>,
    /// Token strings for `ids` (`"photo</w>"`, `"<|endoftext|>"`, ...).
    pub tokens: Vec<String>,
    /// True when the prompt had more tokens than fit (they were cut, as diffusers does).
    pub truncated: bool,
    /// How many tokens were cut.
    pub dropped: usize,
}

/// A special token as transformers adds it to the backend.
#[derive(Debug, Clone)]
struct Special {
    content: String,
    normalized: bool,
    lstrip: bool,
    rstrip: bool,
    single_word: bool,
}

/// CLIP BPE tokenizer with transformers' special tokens, truncation and padding.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same without truncation or padding (to count what was cut).
    untruncated: tokenizers::Tokenizer,
    max_length: usize,
    pad_id: u32,
    pad_token: String,
    bos_id: u32,
    eos_id: u32,
    dir: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("dir", &self.dir)
            .field("max_length", &self.max_length)
            .field("pad", &(&self.pad_token, self.pad_id))
            .finish()
    }
}

fn read_value(path: &Path) -> Result<Value, LoadError> {
    crate::loader::read_json(path)
}

/// A special-token entry: either `"text"` or `{"content": "text", ...}`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `dir` (a pipeline's `tokenizer/` folder), either layout.
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let err = |path: &Path, msg: String| LoadError::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        if !dir.is_dir() {
            let (root, component) = match (dir.parent(), dir.file_name()) {
                (Some(r), Some(c)) => (r.to_path_buf(), c.to_string_lossy().into_owned()),
                _ => (dir.to_path_buf(), "tokenizer".to_string()),
            };
            return Err(LoadError::MissingComponent { root, component }.into());
        }
        let tj = dir.join("tokenizer.json");
        // Added tokens saved in tokenizer.json keep their flags (transformers reads them).
        let mut file_added: Vec<Value> = Vec::new();
        let (vocab, merges) = if tj.is_file() {
            let mut v = read_value(&tj)?;
            if let Some(a) = v.get_mut("added_tokens").map(Value::take)
                && let Value::Array(a) = a
            {
                file_added = a;
            }
            let model = v
                .get_mut("model")
                .ok_or_else(|| err(&tj, "no \"model\" section".into()))?;
            if model
                .get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t != "BPE")
            {
                return Err(err(&tj, format!("model type {} is not BPE", model["type"])).into());
            }
            let vocab = model
                .get_mut("vocab")
                .map(Value::take)
                .filter(Value::is_object)
                .ok_or_else(|| err(&tj, "model.vocab is not an object".into()))?;
            let merges = model
                .get_mut("merges")
                .map(Value::take)
                .filter(Value::is_array)
                .ok_or_else(|| err(&tj, "model.merges is not a list".into()))?;
            (vocab, merges)
        } else {
            let vj = dir.join("vocab.json");
            let mt = dir.join("merges.txt");
            if !vj.is_file() || !mt.is_file() {
                return Err(err(
                    dir,
                    "neither tokenizer.json nor vocab.json + merges.txt found".into(),
                )
                .into());
            }
            let vocab = read_value(&vj)?;
            if !vocab.is_object() {
                return Err(err(&vj, "not a JSON object of token -> id".into()).into());
            }
            let text = std::fs::read_to_string(&mt).map_err(|e| LoadError::io(&mt, e))?;
            let mut merges = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                    continue;
                }
                match line.split_once(' ') {
                    Some((a, b)) if !b.contains(' ') => merges.push(json!([a, b])),
                    _ => {
                        return Err(
                            err(&mt, format!("line {}: not \"a b\": {line:?}", i + 1)).into()
                        );
                    }
                }
            }
            (vocab, Value::Array(merges))
        };

        // Special tokens: special_tokens_map.json wins over tokenizer_config.json.
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.is_file() {
            read_value(&cfg_path)?
        } else {
            json!({})
        };
        let map_path = dir.join("special_tokens_map.json");
        let map = if map_path.is_file() {
            read_value(&map_path)?
        } else {
            json!({})
        };
        let special = |key: &str, default: &str| {
            map.get(key)
                .and_then(token_content)
                .or_else(|| cfg.get(key).and_then(token_content))
                .unwrap_or_else(|| default.to_string())
        };
        let bos = special("bos_token", "<|startoftext|>");
        let eos = special("eos_token", "<|endoftext|>");
        let unk = special("unk_token", "<|endoftext|>");
        let pad = special("pad_token", "<|endoftext|>");
        let max_length = cfg
            .get("model_max_length")
            .and_then(|v| v.as_u64())
            .filter(|&n| (3..=4096).contains(&n))
            .unwrap_or(77) as usize;

        let id_of = |t: &str| -> Result<u32, LoadError> {
            vocab
                .get(t)
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
                .ok_or_else(|| err(dir, format!("special token {t:?} is not in the vocabulary")))
        };
        let (bos_id, eos_id, pad_id) = (id_of(&bos)?, id_of(&eos)?, id_of(&pad)?);

        // Added tokens, as transformers 5 ends up with them: entries of
        // `added_tokens_decoder` keep their flags; the named special tokens are added
        // normalized, except the pad token (added as a plain string, so not normalized),
        // which also decides the flags of a token it shares with eos/unk.
        let mut specials: Vec<(u32, Special)> = Vec::new();
        let from_file = file_added
            .iter()
            .filter_map(|t| Some((t.get("id")?.as_u64()?.to_string(), t)));
        let from_cfg = cfg
            .get("added_tokens_decoder")
            .and_then(|d| d.as_object())
            .into_iter()
            .flat_map(|d| d.iter().map(|(k, v)| (k.clone(), v)));
        for (id, t) in from_file.chain(from_cfg) {
            let (Ok(id), Some(content)) = (id.parse::<u32>(), token_content(t)) else {
                continue;
            };
            if specials
                .iter()
                .any(|(i, s)| *i == id || s.content == content)
            {
                continue;
            }
            let flag = |k: &str, d: bool| t.get(k).and_then(|v| v.as_bool()).unwrap_or(d);
            specials.push((
                id,
                Special {
                    content,
                    normalized: flag("normalized", false),
                    lstrip: flag("lstrip", false),
                    rstrip: flag("rstrip", false),
                    single_word: flag("single_word", false),
                },
            ));
        }
        for (tok, normalized) in [(&bos, true), (&eos, true), (&unk, true), (&pad, false)] {
            let normalized = normalized && *tok != pad;
            if specials.iter().any(|(_, s)| s.content == *tok) {
                continue;
            }
            specials.push((
                id_of(tok)?,
                Special {
                    content: tok.clone(),
                    normalized,
                    lstrip: false,
                    rstrip: false,
                    single_word: false,
                },
            ));
        }
        specials.sort_by_key(|(id, _)| *id);
        let added: Vec<Value> = specials
            .iter()
            .map(|(id, s)| {
                json!({"id": id, "content": s.content, "single_word": s.single_word,
                       "lstrip": s.lstrip, "rstrip": s.rstrip, "normalized": s.normalized,
                       "special": true})
            })
            .collect();

        let spec = json!({
            "version": "1.0",
            "truncation": {"direction": "Right", "max_length": max_length,
                           "strategy": "LongestFirst", "stride": 0},
            "padding": {"strategy": {"Fixed": max_length}, "direction": "Right",
                        "pad_to_multiple_of": null, "pad_id": pad_id, "pad_type_id": 0,
                        "pad_token": pad},
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"}]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed",
                 "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                 "use_regex": true}]},
            "post_processor": {"type": "RobertaProcessing", "sep": [eos, eos_id],
                               "cls": [bos, bos_id], "trim_offsets": false,
                               "add_prefix_space": false},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let inner: tokenizers::Tokenizer = serde_json::from_value(spec)
            .map_err(|e| err(dir, format!("building the BPE model: {e}")))?;
        let mut untruncated = inner.clone();
        untruncated
            .with_truncation(None)
            .map_err(|e| err(dir, e.to_string()))?
            .with_padding(None);
        Ok(Tokenizer {
            inner,
            untruncated,
            max_length,
            pad_id,
            pad_token: pad,
            bos_id,
            eos_id,
            dir: dir.to_path_buf(),
        })
    }

    /// Tokenises one prompt: `max_length` ids (BOS, tokens, EOS, pad), truncated as
    /// diffusers does (the EOS stays last).
    pub fn encode(&self, prompt: &str) -> Result<Encoding> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| LoadError::Tokenizer {
                path: self.dir.clone(),
                msg: format!("encoding {prompt:?}: {e}"),
            })?;
        let truncated = !enc.get_overflowing().is_empty();
        // The overflow pieces do not simply add up to what was cut: count the prompt's
        // tokens without truncation instead (only when something was cut).
        let dropped = if truncated {
            let kept = enc
                .get_special_tokens_mask()
                .iter()
                .filter(|&&m| m == 0)
                .count();
            self.tokens_untruncated(prompt)?.len().saturating_sub(kept)
        } else {
            0
        };
        Ok(Encoding {
            ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            truncated,
            dropped,
        })
    }

    /// The prompt's tokens without BOS/EOS, truncation or padding (for counting).
    pub fn tokens_untruncated(&self, prompt: &str) -> Result<Vec<String>> {
        let enc = self
            .untruncated
            .encode(prompt, false)
            .map_err(|e| LoadError::Tokenizer {
                path: self.dir.clone(),
                msg: format!("encoding {prompt:?}: {e}"),
            })?;
        Ok(enc.get_tokens().to_vec())
    }

    /// The prompt's ids without BOS/EOS, truncation or padding (what A1111's
    /// `tokenize_line` gets for each weighted segment).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .untruncated
            .encode(text, false)
            .map_err(|e| LoadError::Tokenizer {
                path: self.dir.clone(),
                msg: format!("encoding {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The id of `,</w>` (A1111's `comma_token`, where long prompts prefer to break).
    pub fn comma_id(&self) -> Option<u32> {
        self.inner.token_to_id(",</w>")
    }

    /// Token id used for padding (SD 2: `!` = 0, SD 1: `<|endoftext|>` = 49407).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Sequence length of every encoding (`model_max_length`, 77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Text of ids (special tokens skipped), as transformers' `decode` gives it.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let s = self
            .inner
            .decode(ids, true)
            .map_err(|e| LoadError::Tokenizer {
                path: self.dir.clone(),
                msg: e.to_string(),
            })?;
        Ok(s.replace("</w>", " ").trim().to_string())
    }
}
