//! SigLIP's caption tokenizer, equal to transformers' `SiglipTokenizer` (the slow,
//! `sentencepiece`-backed one that google/siglip-* checkpoints load) called as
//! `tok(caption, padding="max_length", max_length=L, truncation=…)`.
//!
//! What transformers does, step by step, and what this module reproduces:
//! 1. `tokenize` prepends `▁` to the caption (after replacing any `▁` in it by a space), then
//!    splits out the special tokens' text (`</s>`, `<unk>`: a literal `</s>` in a caption
//!    becomes the end id).
//! 2. Each remaining chunk is canonicalised as big_vision does: lower-cased (when
//!    `do_lower_case`, the default), ASCII punctuation (`string.punctuation`) removed, runs of
//!    whitespace (Python's `str.isspace`) folded to one space, stripped.
//! 3. `sentencepiece` encodes `"<unk>" + chunk` and the pieces of `"<unk>"` alone are dropped
//!    from the front (transformers' trick to keep a leading `▁`); sentencepiece itself
//!    normalises (the model's charsmap, `nmt_nfkc` for SigLIP) and adds its dummy `▁` prefix.
//! 4. A leading lone `▁` before a special token is dropped; the end id is appended unless the
//!    ids already end with it; with truncation the ids are cut to `L - 1` first; then the pad id
//!    fills up to `L` (SigLIP's pad token is `</s>`, so pad id = end id = 1 in the real models).
//!
//! Where pairlens differs on purpose: a caption with nothing left after canonicalisation
//! (empty, whitespace, punctuation only) is an [`Error::Caption`] (transformers returns just the
//! end id), and a too-long caption without `truncate` is an error (transformers returns the
//! longer sequence).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::sentencepiece::{PieceType, SentencePiece};
use super::text_clean::is_python_space;
use super::tokenizer::Encoded;
use crate::{Error, Result};

const SPIECE_UNDERLINE: char = '\u{2581}';
/// Largest JSON config read.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// SigLIP's SentencePiece tokenizer bound to a context length.
#[derive(Clone)]
pub struct SiglipTokenizer {
    sp: Arc<SentencePiece>,
    dir: PathBuf,
    context_length: usize,
    do_lower_case: bool,
    eos: u32,
    pad: u32,
    unk_token: String,
    /// Texts split out before canonicalisation (transformers' added/special tokens), with ids.
    specials: Vec<(String, u32)>,
    split_special_tokens: bool,
    /// How many pieces `sentencepiece` makes of the unknown token's text alone.
    unk_prefix_len: usize,
}

impl std::fmt::Debug for SiglipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiglipTokenizer")
            .field("dir", &self.dir)
            .field("vocab_size", &self.sp.len())
            .field("context_length", &self.context_length)
            .field("do_lower_case", &self.do_lower_case)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("specials", &self.specials)
            .finish_non_exhaustive()
    }
}

/// One token of a caption before the end id.
#[derive(Debug, Clone)]
struct Tok {
    id: u32,
    /// A special token split out of the caption's text.
    special: bool,
    /// The piece's text is a lone `▁` (transformers drops it before a special token).
    lone_underline: bool,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Error::bad_config(
            path,
            format!("larger than {} MiB", MAX_CONFIG_BYTES >> 20),
        ));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad_config(path, format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::bad_config(path, "not a JSON object"));
    }
    Ok(Some(v))
}

/// A token entry: a string or an AddedToken object (`{"content": …}`); `None` for JSON null.
fn token_text(v: &Value, path: &Path, key: &str) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(o) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(Error::bad_config(
                path,
                format!("`{key}` is an object without a string `content`"),
            )),
        },
        _ => Err(Error::bad_config(
            path,
            format!("`{key}` is neither a string nor a token object"),
        )),
    }
}

fn bool_key(cfg: &Value, path: &Path, key: &str, default: bool) -> Result<bool> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(Error::bad_config(path, format!("`{key}` is not a boolean"))),
    }
}

impl SiglipTokenizer {
    /// Reads `spiece.model` (+ `tokenizer_config.json` / `special_tokens_map.json` when present)
    /// in `dir`.
    pub fn from_dir(dir: &Path, context_length: usize) -> Result<Self> {
        if context_length < 2 {
            return Err(Error::InvalidArgument(format!(
                "SigLIP context length {context_length}: need at least 2 (a token and the end token)"
            )));
        }
        let model_path = dir.join("spiece.model");
        if !model_path.is_file() {
            return Err(Error::MissingFile {
                path: model_path,
                what: "SigLIP SentencePiece tokenizer model".into(),
            });
        }
        let mut sp = SentencePiece::from_file(&model_path)?;

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?.unwrap_or(Value::Object(Default::default()));
        let map_path = dir.join("special_tokens_map.json");
        let smap = read_json(&map_path)?;

        let do_lower_case = bool_key(&cfg, &cfg_path, "do_lower_case", true)?;
        let legacy = bool_key(&cfg, &cfg_path, "legacy", true)?;
        let split_special_tokens = bool_key(&cfg, &cfg_path, "split_special_tokens", false)?;
        if !legacy {
            // transformers' SentencePieceBackend turns the dummy prefix off for legacy=False.
            sp.set_add_dummy_prefix(false);
        }

        // Special tokens: SiglipTokenizer's defaults, then tokenizer_config.json; transformers
        // reads special_tokens_map.json only when the config has no added_tokens_decoder.
        let mut names = [
            ("eos_token", "</s>".to_string()),
            ("unk_token", "<unk>".to_string()),
            ("pad_token", "</s>".to_string()),
        ];
        let decoder = cfg.get("added_tokens_decoder");
        let mut sources: Vec<(&Value, &Path)> = vec![(&cfg, &cfg_path)];
        if let (Some(m), None) = (&smap, decoder) {
            sources.push((m, &map_path));
        }
        for (src, path) in &sources {
            for (key, value) in names.iter_mut() {
                if let Some(v) = src.get(*key) {
                    if let Some(t) = token_text(v, path, key)? {
                        *value = t;
                    }
                }
            }
        }
        let [(_, eos_token), (_, unk_token), (_, pad_token)] = names;

        // Added tokens with explicit ids.
        let mut added: Vec<(String, u32)> = Vec::new();
        if let Some(dec) = decoder {
            let obj = dec.as_object().ok_or_else(|| {
                Error::bad_config(&cfg_path, "`added_tokens_decoder` is not an object")
            })?;
            for (k, v) in obj {
                let id: u32 = k.parse().map_err(|_| {
                    Error::bad_config(&cfg_path, format!("added token id {k:?} is not a number"))
                })?;
                let text = token_text(v, &cfg_path, "added_tokens_decoder")?.ok_or_else(|| {
                    Error::bad_config(&cfg_path, format!("added token {id} has no content"))
                })?;
                added.push((text, id));
            }
        }
        let mut extra: Vec<String> = Vec::new();
        for key in ["additional_special_tokens", "extra_special_tokens"] {
            for (src, path) in &sources {
                match src.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) => {
                        for v in a {
                            if let Some(t) = token_text(v, path, key)? {
                                extra.push(t);
                            }
                        }
                    }
                    // A dict of named model-specific tokens.
                    Some(Value::Object(o)) => {
                        for v in o.values() {
                            if let Some(t) = token_text(v, path, key)? {
                                extra.push(t);
                            }
                        }
                    }
                    Some(_) => {
                        return Err(Error::bad_config(*path, format!("`{key}` is not a list")))
                    }
                }
            }
        }

        let vocab = sp.len();
        let id_of = |text: &str| -> Result<u32> {
            if let Some((_, id)) = added.iter().find(|(t, _)| t == text) {
                if (*id as usize) < vocab {
                    return Ok(*id);
                }
                return Err(Error::bad_config(
                    &cfg_path,
                    format!(
                        "added token {text:?} has id {id}, past the {vocab}-piece vocabulary of \
                         spiece.model (added tokens are not supported)"
                    ),
                ));
            }
            let id = sp.piece_to_id(text);
            if id == sp.unk_id() && sp.id_to_piece(id) != Some(text) {
                return Err(Error::bad_config(
                    &cfg_path,
                    format!(
                        "special token {text:?} is not in spiece.model's vocabulary (added \
                         tokens are not supported)"
                    ),
                ));
            }
            Ok(id)
        };
        let eos = id_of(&eos_token)?;
        let pad = id_of(&pad_token)?;
        id_of(&unk_token)?;
        let mut specials: Vec<(String, u32)> = Vec::new();
        let all = [eos_token.clone(), unk_token.clone(), pad_token.clone()]
            .into_iter()
            .chain(added.iter().map(|(t, _)| t.clone()))
            .chain(extra);
        for t in all {
            if t.is_empty() || specials.iter().any(|(s, _)| *s == t) {
                continue;
            }
            let id = id_of(&t)?;
            specials.push((t, id));
        }

        let unk_prefix_len = sp.encode(&unk_token)?.len();
        Ok(SiglipTokenizer {
            sp: Arc::new(sp),
            dir: dir.to_path_buf(),
            context_length,
            do_lower_case,
            eos,
            pad,
            unk_token,
            specials,
            split_special_tokens,
            unk_prefix_len,
        })
    }

    /// big_vision's / transformers' `canonicalize_text`: lower-case (when `do_lower_case`),
    /// drop ASCII punctuation, fold whitespace runs to one space, strip.
    pub fn canonicalize(&self, text: &str) -> String {
        let lowered;
        let text = if self.do_lower_case {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let mut out = String::with_capacity(text.len());
        let mut pending_space = false;
        for c in text.chars() {
            if c.is_ascii_punctuation() {
                continue;
            }
            if is_python_space(c) {
                pending_space = true;
                continue;
            }
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        }
        out
    }

    /// transformers' `_tokenize` for one chunk: canonicalise, encode `"<unk>" + chunk`, drop the
    /// pieces of `"<unk>"`.
    fn tokenize_chunk(&self, chunk: &str, out: &mut Vec<Tok>) -> Result<()> {
        let text = format!("{}{}", self.unk_token, self.canonicalize(chunk));
        let pieces = self.sp.encode(&text)?;
        let skip = if pieces.len() >= self.unk_prefix_len {
            self.unk_prefix_len
        } else {
            0
        };
        for p in &pieces[skip..] {
            // transformers maps the piece's text back to an id (added tokens first).
            let id = match self.specials.iter().find(|(s, _)| *s == p.piece) {
                Some((_, id)) => *id,
                None => self.sp.piece_to_id(&p.piece),
            };
            out.push(Tok {
                id,
                special: false,
                lone_underline: p.piece == "\u{2581}",
            });
        }
        Ok(())
    }

    /// Splits `text` around the special tokens' texts (leftmost, longest first).
    fn split_specials<'a>(&self, text: &'a str) -> Vec<(&'a str, Option<u32>)> {
        if self.split_special_tokens || self.specials.is_empty() {
            return vec![(text, None)];
        }
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let hit = self
                .specials
                .iter()
                .filter(|(s, _)| rest.starts_with(s.as_str()))
                .max_by_key(|(s, _)| s.len());
            if let Some((s, id)) = hit {
                out.push((&text[start..i], None));
                out.push((&text[i..i + s.len()], Some(*id)));
                i += s.len();
                start = i;
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        out.push((&text[start..], None));
        out
    }

    /// The caption's ids before the end token, as transformers' `tokenize` + `convert_tokens_to_ids`.
    fn content(&self, caption: &str) -> Result<Vec<Tok>> {
        let text = format!(
            "{SPIECE_UNDERLINE}{}",
            caption.replace(SPIECE_UNDERLINE, " ")
        );
        let mut toks = Vec::new();
        for (chunk, special) in self.split_specials(&text) {
            match special {
                Some(id) => toks.push(Tok {
                    id,
                    special: true,
                    lone_underline: false,
                }),
                None if chunk.is_empty() => {}
                None => self.tokenize_chunk(chunk, &mut toks)?,
            }
        }
        if toks.len() > 1 && toks[0].lone_underline && toks[1].special {
            toks.remove(0);
        }
        Ok(toks)
    }

    /// Ids padded to the context length with the pad id; `len` = content ids + EOS; `tokens` =
    /// display strings of `ids[..len]`. A caption with nothing left after canonicalisation is an
    /// [`Error::Caption`]; too long: an error unless `truncate`, which keeps the first
    /// `context_length - 1` ids and the end id, as transformers does.
    pub fn encode(&self, caption: &str, truncate: bool) -> Result<Encoded> {
        let err = |msg: String| Error::Caption {
            caption: caption.to_string(),
            msg,
        };
        let toks = self.content(caption)?;
        if toks.iter().all(|t| t.special) {
            return Err(err(if caption.chars().all(is_python_space) {
                "the caption is empty".into()
            } else {
                "the caption has no tokens left after SigLIP's canonicalisation (lower-casing, \
                 removing punctuation and extra whitespace)"
                    .into()
            }));
        }
        let mut ids: Vec<u32> = toks.iter().map(|t| t.id).collect();
        let ctx = self.context_length;
        if truncate {
            // transformers counts one special token to add, whether or not the ids already end
            // with the end id.
            if ids.len() + 1 > ctx {
                ids.truncate(ctx - 1);
            }
        } else {
            let n = ids.len() + usize::from(ids.last() != Some(&self.eos));
            if n > ctx {
                return Err(err(format!(
                    "{n} tokens (with the end token) exceed the context length of {ctx}; \
                     shorten the caption, or truncate it to its first {} tokens",
                    ctx - 1
                )));
            }
        }
        if ids.last() != Some(&self.eos) {
            ids.push(self.eos);
        }
        let len = ids.len();
        ids.resize(ctx, self.pad);
        let tokens = ids[..len].iter().map(|&id| self.token_str(id)).collect();
        Ok(Encoded { ids, len, tokens })
    }

    /// The text reference: every position the pad id; `len` 0, `tokens` empty.
    pub fn reference(&self) -> Encoded {
        Encoded {
            ids: vec![self.pad; self.context_length],
            len: 0,
            tokens: Vec::new(),
        }
    }

    /// Id filling the sequence after the end token (`</s>`, 1, in the real checkpoints).
    pub fn pad_id(&self) -> u32 {
        self.pad
    }
    /// End-of-sequence id, appended to every caption.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
    /// The unknown piece's id.
    pub fn unk_id(&self) -> u32 {
        self.sp.unk_id()
    }
    /// Number of pieces in `spiece.model` (32000 for google/siglip-*).
    pub fn vocab_size(&self) -> usize {
        self.sp.len()
    }
    /// Length every encoded sequence is padded to.
    pub fn context_length(&self) -> usize {
        self.context_length
    }
    /// The directory the tokenizer was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A display string for any id: a word-start `▁` is stripped (as the CLIP tokenizer strips
    /// `</w>`; a lone `▁` stays `▁`), other `▁` shown as spaces; control and unknown pieces
    /// as they are (`</s>`, `<pad>`, `<unk>`), byte pieces as `<0xNN>`; ids past the
    /// vocabulary as `<id N>`.
    pub fn token_str(&self, id: u32) -> String {
        let (Some(piece), Some(kind)) = (self.sp.id_to_piece(id), self.sp.piece_type(id)) else {
            return format!("<id {id}>");
        };
        match kind {
            PieceType::Control | PieceType::Unknown | PieceType::Byte => piece.to_string(),
            _ if piece == "\u{2581}" => piece.to_string(),
            _ => piece
                .strip_prefix(SPIECE_UNDERLINE)
                .unwrap_or(piece)
                .replace(SPIECE_UNDERLINE, " "),
        }
    }

    /// Words of the caption (after canonicalisation) that contain text the vocabulary maps to
    /// `<unk>`, in order, each once. The model reads `<unk>` for those characters, and
    /// nothing of what they were. Always empty under byte fallback.
    pub fn unknown_words(&self, caption: &str) -> Result<Vec<String>> {
        let unk = self.sp.unk_id();
        let mut words: Vec<String> = Vec::new();
        for word in self.canonicalize(caption).split(' ') {
            if word.is_empty() || words.iter().any(|w| w == word) {
                continue;
            }
            if self.sp.encode(word)?.iter().any(|p| p.id == unk) {
                words.push(word.to_string());
            }
        }
        Ok(words)
    }

    /// Every piece, in id order, as display strings ([`Self::token_str`]).
    pub fn vocabulary(&self) -> Vec<String> {
        (0..self.sp.len() as u32)
            .map(|id| self.token_str(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tokenizers/siglip-spm")
    }

    #[test]
    fn reads_the_fixture() {
        let t = SiglipTokenizer::from_dir(&fixture(), 16).unwrap();
        assert_eq!(t.vocab_size(), 300);
        assert_eq!((t.pad_id(), t.eos_id(), t.unk_id()), (1, 1, 2));
        assert_eq!(t.context_length(), 16);
        let e = t.encode("A photo of a DOG.", false).unwrap();
        assert_eq!(e.ids.len(), 16);
        assert_eq!(e.tokens.last().map(String::as_str), Some("</s>"));
        assert_eq!(e.len, e.tokens.len());
        assert!(e.ids[e.len..].iter().all(|&i| i == 1));
        let r = t.reference();
        assert_eq!((r.len, r.tokens.len()), (0, 0));
        assert!(r.ids.iter().all(|&i| i == 1));
        assert_eq!(t.vocabulary().len(), 300);
        assert_eq!(t.vocabulary()[..3], ["<pad>", "</s>", "<unk>"]);
        assert_eq!(t.token_str(1_000_000), "<id 1000000>");
    }

    #[test]
    fn empty_and_long_captions() {
        let t = SiglipTokenizer::from_dir(&fixture(), 16).unwrap();
        for c in ["", "   ", "\t\n", "!!!", "...", "\u{2581}"] {
            let e = t.encode(c, true).unwrap_err();
            assert!(matches!(e, Error::Caption { .. }), "{c:?}: {e}");
        }
        let long = "a dog ".repeat(20);
        let e = t.encode(&long, false).unwrap_err().to_string();
        assert!(e.contains("41 tokens") && e.contains("16"), "{e}");
        let ok = t.encode(&long, true).unwrap();
        assert_eq!(ok.len, 16);
        assert_eq!(ok.ids[15], 1);
        // A very long caption is cut, in time linear in its length.
        let huge = "a photo of a dog on the beach! ".repeat(20_000);
        let e = t.encode(&huge, true).unwrap();
        assert_eq!((e.len, e.ids.len()), (16, 16));
    }

    #[test]
    fn unknown_words_and_canonicalisation() {
        let t = SiglipTokenizer::from_dir(&fixture(), 64).unwrap();
        assert_eq!(
            t.canonicalize("  Hello,\tWORLD!!  x\u{1c}y "),
            "hello world x y"
        );
        assert_eq!(
            t.unknown_words("A cat 猫 and a dog 犬, 猫!").unwrap(),
            vec!["猫".to_string(), "犬".to_string()]
        );
        assert!(t.unknown_words("a photo of a dog").unwrap().is_empty());
    }

    #[test]
    fn missing_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("pairlens-siglip-tok-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let e = SiglipTokenizer::from_dir(&dir, 16).unwrap_err();
        assert!(matches!(e, Error::MissingFile { .. }), "{e}");
        std::fs::write(dir.join("spiece.model"), b"not a model").unwrap();
        let e = SiglipTokenizer::from_dir(&dir, 16).unwrap_err().to_string();
        assert!(
            e.contains("spiece.model") && e.contains("bad SentencePiece model"),
            "{e}"
        );
        std::fs::copy(fixture().join("spiece.model"), dir.join("spiece.model")).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), b"{not json").unwrap();
        let e = SiglipTokenizer::from_dir(&dir, 16).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json"), "{e}");
        std::fs::write(
            dir.join("tokenizer_config.json"),
            br#"{"eos_token": "<nope>"}"#,
        )
        .unwrap();
        let e = SiglipTokenizer::from_dir(&dir, 16).unwrap_err().to_string();
        assert!(e.contains("<nope>"), "{e}");
        std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
        // No configs at all: SiglipTokenizer's defaults.
        let t = SiglipTokenizer::from_dir(&dir, 16).unwrap();
        assert_eq!((t.pad_id(), t.eos_id()), (1, 1));
        assert!(SiglipTokenizer::from_dir(&dir, 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
