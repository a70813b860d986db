//! CLIP tokenizer parity with transformers' CLIPTokenizer (as diffusers calls it:
//! `padding="max_length", max_length=77, truncation=True`), on the fixture archives of
//! both tokenizer layouts: sd2-tiny (legacy vocab.json + merges.txt, pad "!") and
//! sd1-tiny-fp16 (transformers 5 tokenizer.json, pad "<|endoftext|>"). Also the ids
//! A1111's prompt chunking gets from it (`encode_plain`, `comma_id`).

use std::path::{Path, PathBuf};

use wgsd::loader::{ArchiveOptions, open_model_with};
use wgsd::prompt::{Chunk, SpecialTokens, chunk_prompt, parse_attention};
use wgsd::tokenizer::Tokenizer;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The fixture's tokenizer folder, extracted into a throwaway cache.
fn fixture_tokenizer(archive: &str, cache: &Path) -> Tokenizer {
    let opts = ArchiveOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    };
    let model =
        open_model_with(&repo(archive), &opts).unwrap_or_else(|e| panic!("opening {archive}: {e}"));
    Tokenizer::from_dir(&model.root.join("tokenizer"))
        .unwrap_or_else(|e| panic!("tokenizer of {archive}: {e}"))
}

fn cases() -> serde_json::Value {
    let path = repo("tests/fixtures/tokenizer_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tests/fixtures/make_fixtures.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("tokenizer_cases.json is JSON")
}

fn check_fixture(name: &str) {
    let all = cases();
    let fx = &all["fixtures"][name];
    let cache = tempfile::tempdir().expect("tempdir");
    let tok = fixture_tokenizer(fx["archive"].as_str().expect("archive"), cache.path());
    assert_eq!(
        tok.pad_id() as u64,
        fx["pad_token_id"].as_u64().expect("pad id"),
        "{name} pad id"
    );
    assert_eq!(
        tok.pad_token(),
        fx["pad_token"].as_str().expect("pad token")
    );
    assert_eq!(
        tok.max_length() as u64,
        fx["model_max_length"].as_u64().expect("max len")
    );
    let list = fx["cases"].as_array().expect("cases");
    assert!(list.len() >= 20, "{name}: only {} cases", list.len());
    let mut bad = Vec::new();
    for c in list {
        let prompt = c["prompt"].as_str().expect("prompt");
        let want: Vec<u32> = serde_json::from_value(c["ids"].clone()).expect("ids");
        let want_tokens: Vec<String> = serde_json::from_value(c["tokens"].clone()).expect("tokens");
        let untruncated = c["untruncated_ids"].as_array().expect("untruncated").len();
        let got = tok.encode(prompt).expect("encode");
        assert_eq!(got.ids.len(), 77);
        if got.ids != want || got.tokens != want_tokens {
            bad.push(format!(
                "{prompt:?}\n  got  {:?}\n  want {:?}\n  tokens {:?}",
                got.ids, want, got.tokens
            ));
        }
        assert_eq!(
            got.truncated,
            untruncated > 77,
            "{name} {prompt:?}: truncated flag"
        );
        if got.truncated {
            assert_eq!(
                got.dropped,
                untruncated - 77,
                "{name} {prompt:?}: dropped count"
            );
            assert_eq!(
                *got.ids.last().expect("ids"),
                tok.eos_id(),
                "EOS stays last"
            );
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} prompts differ from transformers:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn sd2_legacy_layout_matches_transformers() {
    check_fixture("sd2-tiny");
}

#[test]
fn sd1_tokenizer_json_layout_matches_transformers() {
    check_fixture("sd1-tiny-fp16");
}

/// Hand-checked against transformers 5.24: SD 2's pad token "!" is a special token, so a
/// "!" in the prompt is cut out as id 0, where SD 1 gives BPE's "!</w>" (256) / "!!!</w>".
#[test]
fn pad_token_inside_prompt_is_split_out_like_transformers() {
    let cache = tempfile::tempdir().expect("tempdir");
    let sd2 = fixture_tokenizer("weights/sd2-tiny.zip", cache.path());
    let sd1 = fixture_tokenizer("tests/fixtures/sd1-tiny-fp16/model.zip", cache.path());
    let head = |t: &Tokenizer, p: &str| -> Vec<u32> {
        let ids = t.encode(p).expect("encode").ids;
        let end = ids.iter().position(|&i| i == 49407).expect("eos") + 1;
        ids[..end].to_vec()
    };
    assert_eq!(
        head(&sd2, "hello ! world!"),
        [49406, 3306, 0, 1002, 0, 49407]
    );
    assert_eq!(
        head(&sd1, "hello ! world!"),
        [49406, 3306, 256, 1002, 256, 49407]
    );
    assert_eq!(head(&sd2, "!!!"), [49406, 0, 0, 0, 49407]);
    assert_eq!(head(&sd1, "!!!"), [49406, 995, 49407]);
    // Empty prompt: BOS, EOS, then padding.
    let e = sd2.encode("").expect("encode");
    assert_eq!(&e.ids[..3], &[49406, 49407, 0]);
    assert!(e.ids[2..].iter().all(|&i| i == 0) && !e.truncated);
    let e = sd1.encode("").expect("encode");
    assert!(e.ids[1..].iter().all(|&i| i == 49407));
}

#[test]
fn missing_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Tokenizer::from_dir(dir.path()).expect_err("empty folder");
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("vocab.json"),
        "{msg}"
    );
    let err = Tokenizer::from_dir(&dir.path().join("tokenizer")).expect_err("no folder");
    assert!(err.to_string().contains("no tokenizer/ folder"), "{err}");
    std::fs::write(dir.path().join("tokenizer.json"), "{ not json").expect("write");
    let err = Tokenizer::from_dir(dir.path()).expect_err("bad json");
    assert!(err.to_string().contains("bad JSON"), "{err}");
}

/// `encode_plain` is `encode` without BOS/EOS, padding or truncation (A1111's
/// `tokenizer(texts, truncation=False, add_special_tokens=False)`), and `comma_id` is
/// CLIP's `,</w>`.
#[test]
fn encode_plain_and_comma_id() {
    let all = cases();
    let cache = tempfile::tempdir().expect("tempdir");
    for name in ["sd2-tiny", "sd1-tiny-fp16"] {
        let fx = &all["fixtures"][name];
        let tok = fixture_tokenizer(fx["archive"].as_str().expect("archive"), cache.path());
        assert_eq!(tok.comma_id(), Some(267), "{name}: CLIP's ',</w>'");
        for c in fx["cases"].as_array().expect("cases") {
            let prompt = c["prompt"].as_str().expect("prompt");
            let want: Vec<u32> = serde_json::from_value(c["untruncated_ids"].clone()).expect("ids");
            let got = tok.encode_plain(prompt).expect("encode_plain");
            // untruncated_ids are transformers' ids with BOS/EOS and no truncation.
            assert_eq!(got, want[1..want.len() - 1], "{name} {prompt:?}");
        }
        assert_eq!(tok.encode_plain("a, b").expect("ids")[1], 267);
        assert!(tok.encode_plain("").expect("ids").is_empty());
    }
}

fn special_tokens(tok: &Tokenizer) -> SpecialTokens {
    SpecialTokens {
        bos: tok.bos_id(),
        eos: tok.eos_id(),
        pad: tok.pad_id(),
        comma: tok.comma_id(),
    }
}

fn a1111_chunks(tok: &Tokenizer, prompt: &str) -> Vec<Chunk> {
    chunk_prompt(
        &parse_attention(prompt),
        |t| tok.encode_plain(t),
        &special_tokens(tok),
    )
    .expect("chunks")
}

/// A1111's chunking of a plain prompt of at most 75 tokens is exactly diffusers' input
/// (BOS, tokens, EOS, pad), for both pad conventions (SD 2 "!" = 0, SD 1 EOS).
#[test]
fn a1111_chunk_of_a_plain_prompt_is_the_diffusers_encoding() {
    let all = cases();
    let cache = tempfile::tempdir().expect("tempdir");
    for name in ["sd2-tiny", "sd1-tiny-fp16"] {
        let fx = &all["fixtures"][name];
        let tok = fixture_tokenizer(fx["archive"].as_str().expect("archive"), cache.path());
        let mut compared = 0;
        for c in fx["cases"].as_array().expect("cases") {
            let prompt = c["prompt"].as_str().expect("prompt");
            let plain = parse_attention(prompt) == [(prompt.to_string(), 1.0)];
            if !plain || c["untruncated_ids"].as_array().expect("ids").len() > 77 {
                continue; // emphasis syntax or more than one window: not plain
            }
            let chunks = a1111_chunks(&tok, prompt);
            let diffusers = tok.encode(prompt).expect("encode").ids;
            assert_eq!(chunks.len(), 1, "{name} {prompt:?}");
            assert_eq!(chunks[0].weights, vec![1.0; 77]);
            // A1111's process_tokens pads from the first EOS on where pad is not EOS, so
            // on SD 2 a prompt holding the EOS token itself ("<|endoftext|>", any case)
            // loses what follows it.
            let first_eos = diffusers.iter().position(|&i| i == tok.eos_id());
            let mut want = diffusers.clone();
            if tok.pad_id() != tok.eos_id() {
                want[first_eos.expect("eos") + 1..].fill(tok.pad_id());
            }
            assert_eq!(chunks[0].ids, want, "{name} {prompt:?}");
            if want != diffusers {
                assert!(name == "sd2-tiny" && prompt.to_lowercase().contains("<|endoftext|>"));
            }
            compared += 1;
        }
        assert!(compared >= 12, "{name}: only {compared} plain prompts");
    }
}

#[test]
fn a1111_long_prompt_and_break_with_the_real_tokenizer() {
    let cache = tempfile::tempdir().expect("tempdir");
    let tok = fixture_tokenizer("weights/sd2-tiny.zip", cache.path());
    // "a red circle" is 3 tokens: 50 of them are 150 tokens, two full windows.
    let long = vec!["a red circle"; 50].join(" ");
    let ids = tok.encode_plain(&long).expect("ids");
    assert_eq!(ids.len(), 150);
    let chunks = a1111_chunks(&tok, &long);
    assert_eq!(chunks.len(), 2);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.ids[0], tok.bos_id());
        assert_eq!(c.ids[1..76], ids[75 * i..75 * (i + 1)]);
        assert_eq!(c.ids[76], tok.eos_id());
    }
    // BREAK: two windows, each padded after its EOS with SD 2's pad id.
    let chunks = a1111_chunks(&tok, "a red circle BREAK on a white background");
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].ids, tok.encode("a red circle").expect("ids").ids);
    let second = tok.encode("on a white background").expect("ids").ids;
    assert_eq!(chunks[1].ids, second);
    // Emphasis changes weights, not ids.
    let chunks = a1111_chunks(&tok, "a (red:1.5) circle");
    assert_eq!(chunks[0].ids, tok.encode("a red circle").expect("ids").ids);
    assert_eq!(chunks[0].weights[..5], [1.0, 1.0, 1.5, 1.0, 1.0]);
}
