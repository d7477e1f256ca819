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
//! SigLIP 2 (a `tokenizer.json`, Gemma's BPE with byte fallback, and no `spiece.model`): read by
//! the `tokenizers` crate, the same Rust code transformers' fast tokenizer runs, set up as
//! transformers sets it: the class named in `tokenizer_config.json` (`GemmaTokenizer`: its own
//! normaliser `" "` → `▁`; `Siglip2Tokenizer`: lower-cased first), `add_bos_token` /
//! `add_eos_token` rebuilding the post-processor (`$A <eos>` for google/siglip2-*), truncation
//! to the context (keeping `<eos>`), fixed padding on the right with `<pad>` (0). See
//! `fixtures/tokenizers/gemma-bpe/README.md`.
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
struct SpmTokenizer {
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

impl std::fmt::Debug for SpmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpmTokenizer")
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

impl SpmTokenizer {
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
        Ok(SpmTokenizer {
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
}

/// Largest tokenizer.json read (Gemma's, with 256000 tokens, is about 17 MiB).
const MAX_TOKENIZER_JSON_BYTES: u64 = 256 << 20;

/// The tokenizer.json one (SigLIP 2's Gemma tokenizer), run through the `tokenizers` crate as
/// transformers' fast tokenizer runs it.
#[derive(Clone)]
struct JsonTokenizer {
    /// Truncation to the context and fixed-length padding on the right, as transformers sets
    /// them for `padding="max_length", max_length=L, truncation=True`.
    fixed: Arc<tokenizers::Tokenizer>,
    /// Neither: counts the tokens of a caption that does not fit.
    plain: Arc<tokenizers::Tokenizer>,
    dir: PathBuf,
    context_length: usize,
    eos: u32,
    pad: u32,
    unk: u32,
    vocab_size: usize,
    lower_case: bool,
}

impl std::fmt::Debug for JsonTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonTokenizer")
            .field("dir", &self.dir)
            .field("vocab_size", &self.vocab_size)
            .field("context_length", &self.context_length)
            .field("lower_case", &self.lower_case)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish_non_exhaustive()
    }
}

/// A JSON file's bytes, refusing files over `limit`.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::bad_config(
            path,
            format!("larger than {} MiB", limit >> 20),
        ));
    }
    Ok(bytes)
}

impl JsonTokenizer {
    /// `tokenizer.json` + `tokenizer_config.json` in `dir`, as transformers 5 loads them for a
    /// `model_type: "siglip"` directory: the class named by `tokenizer_class` (GemmaTokenizer
    /// for google/siglip2-*) rebuilds the normaliser and pre-tokenizer (Siglip2Tokenizer's
    /// lower-cases first), `add_bos_token` / `add_eos_token` rebuild the post-processor.
    fn from_dir(dir: &Path, context_length: usize) -> Result<Self> {
        use tokenizers::normalizers::{Lowercase, Replace, Sequence};
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::processors::template::TemplateProcessing;
        use tokenizers::{
            NormalizerWrapper, PaddingDirection, PaddingParams, PaddingStrategy,
            SplitDelimiterBehavior, TruncationDirection, TruncationParams, TruncationStrategy,
        };

        let path = dir.join("tokenizer.json");
        let bytes = read_bounded(&path, MAX_TOKENIZER_JSON_BYTES)?;
        let bad = |msg: String| Error::bad_config(&path, msg);
        let sections = super::tokenizer::Sections::parse(&bytes)
            .map_err(|e| bad(format!("not a tokenizer.json: {e}")))?;
        let mut tok = super::tokenizer::tokenizer_from_json(&bytes, &sections)
            .map_err(|e| bad(format!("cannot load tokenizer: {e}")))?;
        drop(bytes);

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = read_json(&cfg_path)?.unwrap_or(Value::Object(Default::default()));
        let class = match cfg.get("tokenizer_class") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim_end_matches("Fast").to_string()),
            Some(_) => {
                return Err(Error::bad_config(
                    &cfg_path,
                    "`tokenizer_class` is not a string",
                ))
            }
        };
        let gemma_like = matches!(
            class.as_deref(),
            Some("GemmaTokenizer") | Some("Siglip2Tokenizer")
        );
        let lower_case = class.as_deref() == Some("Siglip2Tokenizer");
        if gemma_like {
            // GemmaTokenizer's own pipeline, whatever the file says (transformers keeps only
            // the vocabulary, merges and post-processor of the file).
            let replace: NormalizerWrapper = Replace::new(" ", "\u{2581}")
                .map_err(|e| bad(e.to_string()))?
                .into();
            let normalizer: NormalizerWrapper = if lower_case {
                Sequence::new(vec![Lowercase.into(), replace]).into()
            } else {
                replace
            };
            tok.with_normalizer(Some(normalizer));
            let split = Split::new(
                SplitPattern::String(" ".into()),
                SplitDelimiterBehavior::MergedWithPrevious,
                false,
            )
            .map_err(|e| bad(e.to_string()))?;
            tok.with_pre_tokenizer(Some(split));
        }

        let side = match cfg.get("padding_side") {
            None | Some(Value::Null) => (if gemma_like { "left" } else { "right" }).to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Err(Error::bad_config(
                    &cfg_path,
                    "`padding_side` is not a string",
                ))
            }
        };
        if side != "right" {
            return Err(Error::bad_config(
                &cfg_path,
                format!(
                    "padding side {side:?}{}: pairlens reads captions padded on the right (as \
                     google/siglip2-* set `padding_side: \"right\"`)",
                    if cfg.get("padding_side").is_none() {
                        " (the tokenizer class's default)"
                    } else {
                        ""
                    }
                ),
            ));
        }

        let mut names = [
            ("eos_token", "<eos>".to_string()),
            ("pad_token", "<pad>".to_string()),
            ("bos_token", "<bos>".to_string()),
            ("unk_token", "<unk>".to_string()),
        ];
        for (key, value) in names.iter_mut() {
            if let Some(v) = cfg.get(*key) {
                if let Some(t) = token_text(v, &cfg_path, key)? {
                    *value = t;
                }
            }
        }
        let [(_, eos_token), (_, pad_token), (_, bos_token), (_, unk_token)] = names;
        let id_of = |text: &str| -> Result<u32> {
            tok.token_to_id(text).ok_or_else(|| {
                Error::bad_config(
                    &cfg_path,
                    format!("special token {text:?} is not in tokenizer.json's vocabulary"),
                )
            })
        };
        let (eos, pad, unk) = (id_of(&eos_token)?, id_of(&pad_token)?, id_of(&unk_token)?);

        // transformers rebuilds the post-processor when the config names either flag.
        let add_bos = cfg.get("add_bos_token").is_some_and(|v| !v.is_null());
        let add_eos = cfg.get("add_eos_token").is_some_and(|v| !v.is_null());
        if add_bos || add_eos {
            let add_bos = bool_key(&cfg, &cfg_path, "add_bos_token", false)?;
            let add_eos = bool_key(&cfg, &cfg_path, "add_eos_token", false)?;
            let part = |seq: &str| {
                let mut p = Vec::new();
                if add_bos {
                    p.push(format!("{bos_token}:{seq}"));
                }
                p.push(format!("${}:{seq}", if seq == "0" { "A" } else { "B" }));
                if add_eos {
                    p.push(format!("{eos_token}:{seq}"));
                }
                p.join(" ")
            };
            let mut specials = Vec::new();
            if add_bos {
                specials.push((bos_token.clone(), id_of(&bos_token)?));
            }
            if add_eos {
                specials.push((eos_token.clone(), eos));
            }
            let template = TemplateProcessing::builder()
                .try_single(part("0"))
                .and_then(|b| b.try_pair(format!("{} {}", part("0"), part("1"))))
                .map_err(|e| bad(format!("post-processor: {e}")))?
                .special_tokens(specials)
                .build()
                .map_err(|e| bad(format!("post-processor: {e}")))?;
            tok.with_post_processor(Some(template));
        }

        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| bad(e.to_string()))?;
        let plain = tok.clone();
        tok.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: context_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| bad(format!("truncation to {context_length}: {e}")))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: pad,
            pad_type_id: 0,
            pad_token,
        }));
        let vocab_size = tok.get_vocab_size(true);
        Ok(JsonTokenizer {
            fixed: Arc::new(tok),
            plain: Arc::new(plain),
            dir: dir.to_path_buf(),
            context_length,
            eos,
            pad,
            unk,
            vocab_size,
            lower_case,
        })
    }

    fn encode(&self, caption: &str, truncate: bool) -> Result<Encoded> {
        let err = |msg: String| Error::Caption {
            caption: caption.to_string(),
            msg,
        };
        if caption.chars().all(is_python_space) {
            return Err(err("the caption is empty".into()));
        }
        let tok_err =
            |e: tokenizers::Error| Error::Tokenizer(format!("{}: {e}", self.dir.display()));
        let enc = self.fixed.encode(caption, true).map_err(tok_err)?;
        if !truncate && !enc.get_overflowing().is_empty() {
            let n = self.plain.encode(caption, true).map_err(tok_err)?.len();
            let ctx = self.context_length;
            let added = self.plain.get_post_processor().map_or(0, |p| {
                use tokenizers::PostProcessor;
                p.added_tokens(false)
            });
            return Err(err(format!(
                "{n} tokens (with the end token) exceed the context length of {ctx}; \
                 shorten the caption, or truncate it to its first {} tokens",
                ctx.saturating_sub(added)
            )));
        }
        let ids = enc.get_ids().to_vec();
        let len = enc.get_attention_mask().iter().filter(|&&m| m != 0).count();
        let tokens = ids[..len].iter().map(|&id| self.token_str(id)).collect();
        Ok(Encoded { ids, len, tokens })
    }

    /// The piece, a word-start `▁` stripped (a lone `▁` stays), other `▁` as spaces; special and
    /// byte-fallback pieces as they are (`<eos>`, `<0xE6>`); unknown ids as `<id N>`.
    fn token_str(&self, id: u32) -> String {
        let Some(piece) = self.fixed.id_to_token(id) else {
            return format!("<id {id}>");
        };
        if piece.starts_with('<') && piece.ends_with('>') || piece == "\u{2581}" {
            return piece;
        }
        piece
            .strip_prefix(SPIECE_UNDERLINE)
            .unwrap_or(&piece)
            .replace(SPIECE_UNDERLINE, " ")
    }

    fn unknown_words(&self, caption: &str) -> Result<Vec<String>> {
        let mut words: Vec<String> = Vec::new();
        for word in caption.split(is_python_space) {
            if word.is_empty() || words.iter().any(|w| w == word) {
                continue;
            }
            let enc = self
                .plain
                .encode(word, false)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.dir.display())))?;
            if enc.get_ids().contains(&self.unk) {
                words.push(word.to_string());
            }
        }
        Ok(words)
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Spm(SpmTokenizer),
    Json(JsonTokenizer),
}

/// SigLIP's caption tokenizer bound to a context length: the SentencePiece one of SigLIP
/// (`spiece.model`, transformers' `SiglipTokenizer`), or the `tokenizer.json` one of SigLIP 2
/// (Gemma's BPE with byte fallback, transformers' `GemmaTokenizer`).
#[derive(Clone, Debug)]
pub struct SiglipTokenizer {
    kind: Kind,
}

impl SiglipTokenizer {
    /// Reads `spiece.model` (+ `tokenizer_config.json` / `special_tokens_map.json` when present)
    /// in `dir`, or where there is none, `tokenizer.json` (+ `tokenizer_config.json`).
    pub fn from_dir(dir: &Path, context_length: usize) -> Result<Self> {
        if context_length < 2 {
            return Err(Error::InvalidArgument(format!(
                "SigLIP context length {context_length}: need at least 2 (a token and the end token)"
            )));
        }
        let kind = if !dir.join("spiece.model").is_file() && dir.join("tokenizer.json").is_file() {
            Kind::Json(JsonTokenizer::from_dir(dir, context_length)?)
        } else {
            Kind::Spm(SpmTokenizer::from_dir(dir, context_length)?)
        };
        Ok(SiglipTokenizer { kind })
    }

    /// The text as the tokenizer reads it: SigLIP's canonicalisation (lower-casing when
    /// `do_lower_case`, no ASCII punctuation, whitespace folded); for tokenizer.json, the
    /// caption itself (lower-cased for `Siglip2Tokenizer`).
    pub fn canonicalize(&self, text: &str) -> String {
        match &self.kind {
            Kind::Spm(t) => t.canonicalize(text),
            Kind::Json(t) if t.lower_case => text.to_lowercase(),
            Kind::Json(_) => text.to_string(),
        }
    }

    /// Ids padded to the context length with the pad id; `len` = the caption's ids and the end
    /// token; `tokens` = display strings of `ids[..len]`. An empty caption is an
    /// [`Error::Caption`]; too long: an error unless `truncate`, which keeps the first ids and
    /// the end id, as transformers does.
    pub fn encode(&self, caption: &str, truncate: bool) -> Result<Encoded> {
        match &self.kind {
            Kind::Spm(t) => t.encode(caption, truncate),
            Kind::Json(t) => t.encode(caption, truncate),
        }
    }

    /// The text reference: every position the pad id; `len` 0, `tokens` empty.
    pub fn reference(&self) -> Encoded {
        Encoded {
            ids: vec![self.pad_id(); self.context_length()],
            len: 0,
            tokens: Vec::new(),
        }
    }

    /// Id filling the sequence after the end token (`</s>`, 1, for SigLIP; `<pad>`, 0, for
    /// SigLIP 2).
    pub fn pad_id(&self) -> u32 {
        match &self.kind {
            Kind::Spm(t) => t.pad_id(),
            Kind::Json(t) => t.pad,
        }
    }
    /// End-of-sequence id, appended to every caption (1 for both).
    pub fn eos_id(&self) -> u32 {
        match &self.kind {
            Kind::Spm(t) => t.eos_id(),
            Kind::Json(t) => t.eos,
        }
    }
    /// The unknown piece's id.
    pub fn unk_id(&self) -> u32 {
        match &self.kind {
            Kind::Spm(t) => t.unk_id(),
            Kind::Json(t) => t.unk,
        }
    }
    /// Number of tokens (32000 for google/siglip-*, 256000 for google/siglip2-*).
    pub fn vocab_size(&self) -> usize {
        match &self.kind {
            Kind::Spm(t) => t.vocab_size(),
            Kind::Json(t) => t.vocab_size,
        }
    }
    /// Length every encoded sequence is padded to.
    pub fn context_length(&self) -> usize {
        match &self.kind {
            Kind::Spm(t) => t.context_length(),
            Kind::Json(t) => t.context_length,
        }
    }
    /// The directory the tokenizer was read from.
    pub fn dir(&self) -> &Path {
        match &self.kind {
            Kind::Spm(t) => t.dir(),
            Kind::Json(t) => &t.dir,
        }
    }

    /// A display string for any id: a word-start `▁` is stripped (as the CLIP tokenizer strips
    /// `</w>`; a lone `▁` stays `▁`), other `▁` shown as spaces; control, special and unknown
    /// pieces as they are (`</s>`, `<eos>`, `<pad>`, `<unk>`), byte pieces as `<0xNN>` (one per
    /// byte: a character read through byte fallback shows as its UTF-8 bytes); ids past the
    /// vocabulary as `<id N>`.
    pub fn token_str(&self, id: u32) -> String {
        match &self.kind {
            Kind::Spm(t) => t.token_str(id),
            Kind::Json(t) => t.token_str(id),
        }
    }

    /// Words of the caption that contain text the vocabulary maps to `<unk>`, in order, each
    /// once. The model reads `<unk>` for those characters, and nothing of what they were.
    /// Always empty under byte fallback with all 256 byte pieces (google/siglip2-*).
    pub fn unknown_words(&self, caption: &str) -> Result<Vec<String>> {
        match &self.kind {
            Kind::Spm(t) => t.unknown_words(caption),
            Kind::Json(t) => t.unknown_words(caption),
        }
    }

    /// Every token, in id order, as display strings ([`Self::token_str`]).
    pub fn vocabulary(&self) -> Vec<String> {
        (0..self.vocab_size() as u32)
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
