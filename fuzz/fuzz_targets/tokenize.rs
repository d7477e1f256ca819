//! A caption (UTF-8, or any bytes read lossily) → every caption path: the built-in model's
//! tokenizer (WordLevel tokenizer.json, no cleaning), the bundled CLIP BPE with open_clip's
//! cleaning and regex split (`bundled_open_clip`), the bundled vocabulary through its
//! tokenizer.json pipeline (HF `CLIPTokenizerFast` behaviour), a byte-level BPE tokenizer.json
//! with open_clip cleaning, SigLIP's SentencePiece tokenizer and SigLIP 2's Gemma tokenizer.json
//! (the tiny fixtures), each with and without truncation; and the cleaning functions on their
//! own. Errors are fine; panics are not, and a success must be a well-formed sequence.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pairlens::io::caption_tokenizer::CaptionTokenizer;
use pairlens::io::siglip_tokenizer::SiglipTokenizer;
use pairlens::io::text_clean::{html_unescape, open_clip_clean};
use pairlens::io::tokenizer::{ClipTokenizer, TextCleaning};
use pairlens::Device;

static TOKENIZERS: LazyLock<Vec<CaptionTokenizer>> = LazyLock::new(|| {
    let builtin = pairlens::builtin::load(&Device::Cpu)
        .expect("the built-in model loads")
        .tokenizer;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tokenizers");
    let tiny_bpe = fixtures.join("tiny_bpe_tokenizer.json");
    vec![
        builtin,
        ClipTokenizer::bundled_open_clip(77).unwrap().into(),
        ClipTokenizer::bundled(TextCleaning::None, 77, None)
            .unwrap()
            .into(),
        ClipTokenizer::from_file(&tiny_bpe, TextCleaning::OpenClip, 16, None)
            .unwrap()
            .into(),
        SiglipTokenizer::from_dir(&fixtures.join("siglip-spm"), 16)
            .unwrap()
            .into(),
        SiglipTokenizer::from_dir(&fixtures.join("gemma-bpe"), 16)
            .unwrap()
            .into(),
    ]
});

fuzz_target!(|data: &[u8]| {
    let tokenizers = &*TOKENIZERS;
    let caption = String::from_utf8_lossy(data);

    // The cleaning chain (`open_clip_clean` is `ftfy_fix_text`, `html_unescape` twice,
    // whitespace folding, lowercase), and `html_unescape` on the raw caption. (ftfy_fix_text is
    // not idempotent, like ftfy: a line break it makes of U+2028 can start a line without `<`,
    // whose entities a second pass then unescapes.)
    let _ = html_unescape(&caption);
    let cleaned = open_clip_clean(&caption);
    assert!(!cleaned.starts_with(' ') && !cleaned.ends_with(' '));

    for tok in tokenizers {
        // Truncation only changes the outcome of a caption that is too long.
        let full = tok.encode(&caption, false);
        let truncated = full.is_err().then(|| tok.encode(&caption, true));
        for result in std::iter::once(full).chain(truncated) {
            match (result, tok) {
                (Ok(e), CaptionTokenizer::Clip(clip)) => {
                    assert!(e.len >= 2 && e.len <= e.ids.len(), "{e:?}");
                    assert_eq!(e.tokens.len(), e.len);
                    assert_eq!(e.ids[0], clip.sot_id());
                    assert_eq!(e.ids[e.len - 1], clip.eot_id());
                    assert!(e.ids[e.len..].iter().all(|&id| id == tok.pad_id()));
                }
                (Ok(e), CaptionTokenizer::Siglip(siglip)) => {
                    // Content, `</s>`, padding; every row has a display string.
                    assert!(e.len >= 2 && e.len <= e.ids.len(), "{e:?}");
                    assert_eq!(e.tokens.len(), e.len);
                    assert_eq!(e.ids[e.len - 1], siglip.eos_id());
                    assert!(e.ids[e.len..].iter().all(|&id| id == tok.pad_id()));
                    assert_eq!(tok.row_tokens(&e).len(), e.ids.len());
                }
                (Err(_), _) => {
                    // Too long without truncation, or nothing left after cleaning.
                }
            }
        }
    }
});
