//! Captions → token ids for both checkpoint formats.
//!
//! - HF directories: their `tokenizer.json` through the `tokenizers` crate (the same Rust code
//!   Python's `transformers` runs, so ids match exactly); no extra cleaning.
//! - open_clip: the standard CLIP BPE vocabulary ships inside pairlens
//!   (`assets/clip_bpe_tokenizer.json.gz`, built from open_clip's `bpe_simple_vocab_16e6.txt.gz`
//!   by `scripts/fixtures/tokenizers.py`), cleaned like open_clip ([`crate::io::text_clean`]) and
//!   split with open_clip's own regex, so ids match `open_clip.tokenize`.
//!
//! Sequences are `[SOT, tokens…, EOT, pad…]`; truncation keeps the first `context_length - 2`
//! tokens and ends with EOT, which is what both open_clip and HF produce.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior,
    Tokenizer,
};

use crate::io::clip_bpe::ClipBpe;
use crate::io::text_clean;
use crate::{Error, Result};

/// The standard CLIP BPE vocabulary as an HF tokenizer.json (gzipped).
static BUNDLED_GZ: &[u8] = include_bytes!("../../assets/clip_bpe_tokenizer.json.gz");

/// open_clip `SimpleTokenizer.pat` as Python's `regex` runs it with `re.IGNORECASE`: the
/// literals match case-insensitively (`'ſ` matches `'s`), the letter/number classes are
/// unaffected, and the negated class no longer matches U+0345 (it case-folds to ι, a letter), so
/// that character matches no alternative and is dropped — exhaustively checked over all code
/// points against `regex` in the venv.
const OPEN_CLIP_PATTERN: &str = r"(?i:<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d)|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}\x{345}]+";

/// How a caption is cleaned before the tokenizer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextCleaning {
    /// HF: tokenizer.json's own normalizer only.
    None,
    /// open_clip `clean='lower'`: ftfy-lite + html.unescape×2 + whitespace folding + lowercase.
    OpenClip,
}

/// A caption tokenized to a fixed context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, `len == context_length`.
    pub ids: Vec<u32>,
    /// Number of ids from SOT to EOT inclusive.
    pub len: usize,
    /// A human-readable string per id in `ids[..len]`, e.g. `<sot>`, `dog`, `ing`, `🙂`.
    pub tokens: Vec<String>,
}

/// A CLIP-style tokenizer bound to a context length.
#[derive(Clone)]
pub struct ClipTokenizer {
    tok: Tokenizer,
    cleaning: TextCleaning,
    context_length: usize,
    sot: u32,
    eot: u32,
    pad: u32,
    /// Token strings are GPT-2 byte-level encoded (undo for display).
    byte_level: bool,
    /// BPE end-of-word marker (`</w>` for CLIP), stripped for display.
    end_of_word_suffix: Option<String>,
    /// open_clip's regex split (bundled vocabulary only): bypasses tokenizer.json's normalizer
    /// and pre-tokenizer, which differ from `SimpleTokenizer` in corner cases.
    open_clip_split: Option<Split>,
    /// The bundled vocabulary's BPE, which then holds every token (`tok` only the added ones).
    clip_bpe: Option<&'static ClipBpe>,
    /// Where the vocabulary came from, for error messages.
    source: String,
    /// Vocabulary size including added tokens ([`vocab_size_with_added`]).
    vocab_size: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("source", &self.source)
            .field("cleaning", &self.cleaning)
            .field("context_length", &self.context_length)
            .field("sot", &self.sot)
            .field("eot", &self.eot)
            .field("pad", &self.pad)
            .finish_non_exhaustive()
    }
}

/// A special token's name, with its id where the post-processor gives one.
type Special = (String, Option<u32>);

/// What pairlens reads from tokenizer.json besides the `tokenizers` object.
struct JsonInfo {
    byte_level: bool,
    end_of_word_suffix: Option<String>,
    /// (first, last) special token names of the post-processor, with ids when given there.
    post_specials: Option<(Special, Special)>,
    pad_id: Option<u32>,
}

fn has_type(v: &serde_json::Value, ty: &str) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            m.get("type").and_then(|t| t.as_str()) == Some(ty)
                || m.values().any(|x| has_type(x, ty))
        }
        serde_json::Value::Array(a) => a.iter().any(|x| has_type(x, ty)),
        _ => false,
    }
}

/// SOT/EOT as the post-processor adds them: Roberta/Bert `cls`/`sep`, or the first and last
/// special token of a template's `single`.
fn post_specials(pp: &serde_json::Value) -> Option<(Special, Special)> {
    let pair = |v: &serde_json::Value| -> Option<(String, Option<u32>)> {
        let a = v.as_array()?;
        Some((
            a.first()?.as_str()?.to_string(),
            a.get(1).and_then(|x| x.as_u64()).map(|x| x as u32),
        ))
    };
    match pp.get("type")?.as_str()? {
        "RobertaProcessing" | "BertProcessing" => {
            Some((pair(pp.get("cls")?)?, pair(pp.get("sep")?)?))
        }
        "TemplateProcessing" => {
            let names: Vec<String> = pp
                .get("single")?
                .as_array()?
                .iter()
                .filter_map(|p| {
                    p.get("SpecialToken")?
                        .get("id")?
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            let id_of = |name: &str| -> Option<u32> {
                let ids = pp
                    .get("special_tokens")?
                    .get(name)?
                    .get("ids")?
                    .as_array()?;
                ids.first()?.as_u64().map(|x| x as u32)
            };
            let (first, last) = (names.first()?.clone(), names.last()?.clone());
            if names.len() < 2 {
                return None;
            }
            let (fi, li) = (id_of(&first), id_of(&last));
            Some(((first, fi), (last, li)))
        }
        "Sequence" => pp
            .get("processors")?
            .as_array()?
            .iter()
            .find_map(post_specials),
        _ => None,
    }
}

/// Every top-level section of a tokenizer.json but the model, and the model's
/// `end_of_word_suffix`. Parsing skips the vocabulary and merges (most of the file) instead of
/// building them into a map: that map was a third of `explain`'s start-up on CLIP's vocabulary.
#[derive(serde::Deserialize)]
pub(crate) struct Sections {
    #[serde(default)]
    version: serde_json::Value,
    #[serde(default)]
    truncation: serde_json::Value,
    #[serde(default)]
    padding: serde_json::Value,
    #[serde(default)]
    added_tokens: Vec<serde_json::Value>,
    #[serde(default)]
    normalizer: serde_json::Value,
    #[serde(default)]
    pre_tokenizer: serde_json::Value,
    #[serde(default)]
    post_processor: serde_json::Value,
    #[serde(default)]
    decoder: serde_json::Value,
    model: Option<ModelHead>,
}

#[derive(serde::Deserialize)]
struct ModelHead {
    #[serde(default)]
    end_of_word_suffix: serde_json::Value,
}

impl Sections {
    pub(crate) fn parse(bytes: &[u8]) -> serde_json::Result<Sections> {
        serde_json::from_slice(bytes)
    }

    /// The sections as one JSON value, with `model` standing in for the file's model.
    fn to_json(&self, model: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "truncation": self.truncation,
            "padding": self.padding,
            "added_tokens": self.added_tokens,
            "normalizer": self.normalizer,
            "pre_tokenizer": self.pre_tokenizer,
            "post_processor": self.post_processor,
            "decoder": self.decoder,
            "model": model,
        })
    }

    /// What [`json_info`] reads.
    fn head(&self) -> serde_json::Value {
        let model = match &self.model {
            Some(m) => serde_json::json!({ "end_of_word_suffix": m.end_of_word_suffix }),
            None => serde_json::Value::Null,
        };
        self.to_json(model)
    }
}

fn json_info(json: &serde_json::Value) -> JsonInfo {
    let null = serde_json::Value::Null;
    JsonInfo {
        byte_level: has_type(json.get("pre_tokenizer").unwrap_or(&null), "ByteLevel")
            || has_type(json.get("decoder").unwrap_or(&null), "ByteLevel"),
        end_of_word_suffix: json
            .get("model")
            .and_then(|m| m.get("end_of_word_suffix"))
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        post_specials: json.get("post_processor").and_then(post_specials),
        pad_id: json
            .get("padding")
            .and_then(|p| p.get("pad_id"))
            .and_then(|x| x.as_u64())
            .map(|x| x as u32),
    }
}

/// `pad_token` from transformers' side files next to tokenizer.json (a plain string or an
/// AddedToken object), e.g. "!" for LAION's HF CLIP checkpoints.
fn side_file_pad_token(dir: &Path) -> Option<String> {
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        match v.get("pad_token") {
            Some(serde_json::Value::String(s)) => return Some(s.clone()),
            Some(obj @ serde_json::Value::Object(_)) => {
                if let Some(s) = obj.get("content").and_then(|c| c.as_str()) {
                    return Some(s.to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// GPT-2's byte → printable char table (the inverse is used for display).
fn byte_decoder() -> &'static std::collections::HashMap<char, u8> {
    static T: OnceLock<std::collections::HashMap<char, u8>> = OnceLock::new();
    T.get_or_init(|| {
        byte_encoder()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

fn byte_encoder() -> &'static [char; 256] {
    static T: OnceLock<[char; 256]> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0..256u32 {
            let printable = (0x21..=0x7E).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b);
            t[b as usize] = if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
        }
        t
    })
}

/// Display form of byte-level token text: valid UTF-8 decoded, stray bytes as `<0xNN>`.
fn readable_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap());
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                for b in &bad[..n] {
                    out.push_str(&format!("<0x{b:02X}>"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

/// A tokenizer.json as a `tokenizers::Tokenizer`. `Tokenizer::from_bytes` sends the "model"
/// section through two generic buffers (an untagged enum, then a JSON map of the whole
/// vocabulary) before building it: for CLIP's 49k-token BPE that was the longest step of an
/// explain's start-up. So a BPE is read in two cheap parts ([`bpe_tokenizer_from_json`]) when
/// that gives the same tokenizer — every added token already in the vocabulary under its own id,
/// as in CLIP's files — and anything else the usual way. `tests/tokenizer_parity.rs` checks the
/// results against transformers and open_clip.
pub(crate) fn tokenizer_from_json(
    json: &[u8],
    sections: &Sections,
) -> std::result::Result<Tokenizer, String> {
    match bpe_tokenizer_from_json(json, sections) {
        Some(tok) => Ok(tok),
        None => Tokenizer::from_bytes(json).map_err(|e| e.to_string()),
    }
}

/// The BPE straight from its section through its own deserializer, the other `sections`
/// through `from_str` with a stand-in model that holds only the added tokens (so they keep their
/// ids), then swapped out. `None` when the model is not a BPE, the file does not parse this way,
/// or an added token is missing from the vocabulary or has another id there (tokenizers would
/// then give it a new id).
fn bpe_tokenizer_from_json(json: &[u8], sections: &Sections) -> Option<Tokenizer> {
    #[derive(serde::Deserialize)]
    struct Model {
        model: bpe_section::Bpe,
    }
    let bpe = serde_json::from_slice::<Model>(json).ok()?.model.0;
    let mut tok = shell_tokenizer(sections, |content| bpe.token_to_id(content))?;
    tok.with_model(bpe);
    Some(tok)
}

/// The file's sections with a stand-in model that holds only the added tokens (so they keep
/// their ids); `None` when an added token is not `id_of` its own id.
fn shell_tokenizer(sections: &Sections, id_of: impl Fn(&str) -> Option<u32>) -> Option<Tokenizer> {
    let mut stand_in = serde_json::Map::new();
    for t in &sections.added_tokens {
        let content = t.get("content")?.as_str()?;
        let id = t.get("id")?.as_u64()?;
        if id_of(content) != Some(u32::try_from(id).ok()?) {
            return None;
        }
        stand_in.insert(content.to_string(), id.into());
    }
    let shell = sections.to_json(serde_json::json!({
        "type": "BPE", "vocab": stand_in, "merges": [],
    }));
    shell.to_string().parse().ok()
}

/// A tokenizer.json `model` section of type BPE, read as `tokenizers` reads it but for the
/// merges: `tokenizers` accepts `["a", "b"]` and the legacy `"a b"` through an untagged enum,
/// which buffers all 49k merges of CLIP's vocabulary as generic values first (half of the
/// tokenizer's build time). Here each merge is read in either form directly.
mod bpe_section {
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use tokenizers::models::bpe::{BpeBuilder, Vocab, BPE};

    pub(super) struct Bpe(pub BPE);

    /// One merge, `["a", "b"]` or `"a b"`.
    struct Merge(String, String);

    impl<'de> serde::Deserialize<'de> for Merge {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Merge;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a merge: [\"a\", \"b\"] or \"a b\"")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Merge, E> {
                    // As tokenizers' legacy form: exactly two parts around one space.
                    let mut parts = v.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => Ok(Merge(a.into(), b.into())),
                        _ => Err(E::custom(format!("merge {v:?} is not two tokens"))),
                    }
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Merge, A::Error> {
                    let a = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                    let b = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                    if seq.next_element::<de::IgnoredAny>()?.is_some() {
                        return Err(de::Error::invalid_length(3, &self));
                    }
                    Ok(Merge(a, b))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'de> serde::Deserialize<'de> for Bpe {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Bpe;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a BPE model")
                }
                // The same keys and the same builder calls as tokenizers' own `BPEVisitor`.
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bpe, A::Error> {
                    let mut builder = BpeBuilder::new();
                    let (mut vocab, mut merges): (Option<Vocab>, Option<Vec<Merge>>) = (None, None);
                    while let Some(key) = map.next_key::<String>()? {
                        match key.as_str() {
                            "dropout" => {
                                if let Some(p) = map.next_value()? {
                                    builder = builder.dropout(p);
                                }
                            }
                            "unk_token" => {
                                if let Some(t) = map.next_value()? {
                                    builder = builder.unk_token(t);
                                }
                            }
                            "continuing_subword_prefix" => {
                                if let Some(p) = map.next_value()? {
                                    builder = builder.continuing_subword_prefix(p);
                                }
                            }
                            "end_of_word_suffix" => {
                                if let Some(s) = map.next_value()? {
                                    builder = builder.end_of_word_suffix(s);
                                }
                            }
                            "fuse_unk" => {
                                if let Some(b) = map.next_value()? {
                                    builder = builder.fuse_unk(b);
                                }
                            }
                            "byte_fallback" => {
                                if let Some(b) = map.next_value()? {
                                    builder = builder.byte_fallback(b);
                                }
                            }
                            "ignore_merges" => {
                                if let Some(b) = map.next_value()? {
                                    builder = builder.ignore_merges(b);
                                }
                            }
                            "vocab" => vocab = Some(map.next_value()?),
                            "merges" => merges = Some(map.next_value()?),
                            "type" => {
                                let t: String = map.next_value()?;
                                if t != "BPE" {
                                    return Err(de::Error::custom(format!("model type {t:?}")));
                                }
                            }
                            _ => {
                                map.next_value::<de::IgnoredAny>()?;
                            }
                        }
                    }
                    let (Some(vocab), Some(merges)) = (vocab, merges) else {
                        return Err(de::Error::custom("missing vocab or merges"));
                    };
                    let merges = merges.into_iter().map(|Merge(a, b)| (a, b)).collect();
                    let bpe = builder.vocab_and_merges(vocab, merges).build();
                    Ok(Bpe(bpe.map_err(de::Error::custom)?))
                }
            }
            d.deserialize_map(V)
        }
    }
}

/// `tok.get_vocab_size(true)` without building the vocabulary map (tokenizers clones every
/// token string to count them: ~15 ms for CLIP's 49k tokens): the model's tokens plus the
/// added tokens it does not have.
fn vocab_size_with_added(tok: &Tokenizer) -> usize {
    let model = tok.get_model();
    let added: std::collections::HashSet<String> = tok
        .get_added_tokens_decoder()
        .into_values()
        .map(|t| t.content)
        .filter(|c| model.token_to_id(c).is_none())
        .collect();
    model.get_vocab_size() + added.len()
}

/// The bundled vocabulary as open_clip uses it: the file's sections, a tokenizer shell holding
/// only the added tokens, and the BPE itself ([`ClipBpe`]).
struct Bundled {
    head: serde_json::Value,
    shell: Tokenizer,
    bpe: ClipBpe,
}

/// The bundled file, decompressed once for the process.
fn bundled_json() -> std::result::Result<&'static [u8], String> {
    static J: OnceLock<std::result::Result<Vec<u8>, String>> = OnceLock::new();
    J.get_or_init(|| {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(BUNDLED_GZ)
            .read_to_end(&mut json)
            .map_err(|e| format!("bundled CLIP vocabulary: cannot decompress: {e}"))?;
        Ok(json)
    })
    .as_ref()
    .map(Vec::as_slice)
    .map_err(Clone::clone)
}

/// Tables `build.rs` derives from the bundled file ([`ClipBpe`]).
static BUNDLED_MERGES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/clip_merges.bin"));
static BUNDLED_HEAD: &str = include_str!(concat!(env!("OUT_DIR"), "/clip_head.json"));

fn bundled_vocabulary() -> Result<&'static Bundled> {
    #[derive(serde::Deserialize)]
    struct Head {
        tokenizer: serde_json::Value,
        base: std::collections::HashMap<u32, String>,
        size: usize,
    }
    static T: OnceLock<std::result::Result<Bundled, String>> = OnceLock::new();
    T.get_or_init(|| {
        let bad = |what: &str| format!("bundled CLIP vocabulary: {what}");
        let head: Head = serde_json::from_str(BUNDLED_HEAD).map_err(|e| bad(&e.to_string()))?;
        let sections: Sections =
            serde_json::from_value(head.tokenizer).map_err(|e| bad(&e.to_string()))?;
        let suffix = sections
            .model
            .as_ref()
            .and_then(|m| m.end_of_word_suffix.as_str());
        let bpe = ClipBpe::from_tables(
            BUNDLED_MERGES,
            head.base,
            head.size,
            suffix.ok_or_else(|| bad("no end-of-word suffix"))?,
            byte_encoder(),
        )
        .ok_or_else(|| bad("inconsistent merge tables"))?;
        let shell = shell_tokenizer(&sections, |c| bpe.base_id(c))
            .ok_or_else(|| bad("added tokens do not match the vocabulary"))?;
        Ok(Bundled {
            head: sections.head(),
            shell,
            bpe,
        })
    })
    .as_ref()
    .map_err(|e| Error::Tokenizer(e.clone()))
}

/// The bundled vocabulary as a whole `tokenizers` pipeline (for HF-style encoding with it).
fn bundled_tokenizer() -> Result<&'static (Tokenizer, serde_json::Value)> {
    static T: OnceLock<std::result::Result<(Tokenizer, serde_json::Value), String>> =
        OnceLock::new();
    T.get_or_init(|| {
        let json = bundled_json()?;
        let sections =
            Sections::parse(json).map_err(|e| format!("bundled CLIP vocabulary: {e}"))?;
        let tok = tokenizer_from_json(json, &sections)
            .map_err(|e| format!("bundled CLIP vocabulary: {e}"))?;
        Ok((tok, sections.head()))
    })
    .as_ref()
    .map_err(|e| Error::Tokenizer(e.clone()))
}

impl ClipTokenizer {
    /// tokenizer.json from a checkpoint directory. SOT/EOT are `<|startoftext|>`/`<|endoftext|>`
    /// or else the post-processor's first/last special token. Padding: `pad_id`, else the
    /// `pad_token` of special_tokens_map.json/tokenizer_config.json beside the file, else
    /// tokenizer.json's padding id, else EOT. With `TextCleaning::OpenClip` the caption is
    /// cleaned like open_clip, then goes through the file's own normalizer/pre-tokenizer (only
    /// the bundled vocabulary swaps in `SimpleTokenizer`'s split: [`Self::bundled_open_clip`]).
    pub fn from_file(
        path: &Path,
        cleaning: TextCleaning,
        context_length: usize,
        pad_id: Option<u32>,
    ) -> Result<Self> {
        Self::from_file_with_specials(path, cleaning, context_length, pad_id, None)
    }

    /// As [`Self::from_file`] with explicit SOT/EOT token names (for vocabularies whose
    /// specials are named otherwise, e.g. `("[BOS]", "[EOS]")`).
    pub fn from_file_with_specials(
        path: &Path,
        cleaning: TextCleaning,
        context_length: usize,
        pad_id: Option<u32>,
        specials: Option<(&str, &str)>,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::bad_config(path, msg);
        let sections =
            Sections::parse(&bytes).map_err(|e| bad(format!("not a tokenizer.json: {e}")))?;
        let tok = tokenizer_from_json(&bytes, &sections)
            .map_err(|e| bad(format!("cannot load tokenizer: {e}")))?;
        let json = sections.head();
        let side_pad = path.parent().and_then(side_file_pad_token);
        let pad_id = match (pad_id, side_pad) {
            (Some(p), _) => Some(p),
            (None, Some(name)) => Some(
                tok.token_to_id(&name)
                    .ok_or_else(|| bad(format!("pad token {name:?} (from the tokenizer config beside it) is not in the vocabulary")))?,
            ),
            (None, None) => None,
        };
        Self::build(
            tok,
            &json,
            path.display().to_string(),
            cleaning,
            context_length,
            pad_id,
            specials,
            None,
        )
    }

    /// The bundled standard CLIP BPE vocabulary with open_clip cleaning, padded with 0, giving
    /// the ids of `open_clip.tokenize`.
    pub fn bundled_open_clip(context_length: usize) -> Result<Self> {
        Self::bundled(TextCleaning::OpenClip, context_length, Some(0))
    }

    /// The bundled vocabulary with any cleaning. `TextCleaning::None` behaves like HF's
    /// `CLIPTokenizerFast` for `openai/clip-*` (pads with EOT unless `pad_id`);
    /// `TextCleaning::OpenClip` like open_clip's `SimpleTokenizer`.
    pub fn bundled(
        cleaning: TextCleaning,
        context_length: usize,
        pad_id: Option<u32>,
    ) -> Result<Self> {
        let source = "bundled CLIP vocabulary".to_string();
        if cleaning == TextCleaning::OpenClip {
            let b = bundled_vocabulary()?;
            let (tok, head) = (b.shell.clone(), &b.head);
            return Self::build(
                tok,
                head,
                source,
                cleaning,
                context_length,
                pad_id,
                None,
                Some(&b.bpe),
            );
        }
        let (tok, json) = bundled_tokenizer()?;
        Self::build(
            tok.clone(),
            json,
            source,
            cleaning,
            context_length,
            pad_id,
            None,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        mut tok: Tokenizer,
        json: &serde_json::Value,
        source: String,
        cleaning: TextCleaning,
        context_length: usize,
        pad_id: Option<u32>,
        specials: Option<(&str, &str)>,
        clip_bpe: Option<&'static ClipBpe>,
    ) -> Result<Self> {
        let bad = |msg: String| Error::Tokenizer(format!("{source}: {msg}"));
        if context_length < 2 {
            return Err(Error::InvalidArgument(format!(
                "context length {context_length} is too small: it must hold the start and end tokens"
            )));
        }
        let info = json_info(json);
        let lookup = |name: &str| tok.token_to_id(name);
        let (sot, eot) = if let Some((s, e)) = specials {
            (
                lookup(s)
                    .ok_or_else(|| bad(format!("start token {s:?} is not in the vocabulary")))?,
                lookup(e)
                    .ok_or_else(|| bad(format!("end token {e:?} is not in the vocabulary")))?,
            )
        } else if let (Some(s), Some(e)) = (lookup("<|startoftext|>"), lookup("<|endoftext|>")) {
            (s, e)
        } else if let Some(((sn, si), (en, ei))) = &info.post_specials {
            (
                si.or_else(|| lookup(sn))
                    .ok_or_else(|| bad(format!("start token {sn:?} is not in the vocabulary")))?,
                ei.or_else(|| lookup(en))
                    .ok_or_else(|| bad(format!("end token {en:?} is not in the vocabulary")))?,
            )
        } else {
            return Err(bad(
                "cannot tell the start/end tokens: no <|startoftext|>/<|endoftext|> and no post-processor naming them"
                    .into(),
            ));
        };
        let pad = pad_id.or(info.pad_id).unwrap_or(eot);
        let vocab = clip_bpe.map_or_else(|| vocab_size_with_added(&tok), |b| b.len());
        for (what, id) in [("start", sot), ("end", eot), ("pad", pad)] {
            if id as usize >= vocab
                && tok.id_to_token(id).is_none()
                && clip_bpe.and_then(|b| b.token(id)).is_none()
            {
                return Err(bad(format!(
                    "{what} token id {id} is outside the vocabulary of {vocab}"
                )));
            }
        }
        // pairlens pads, truncates and adds SOT/EOT itself.
        tok.with_padding(None);
        tok.with_truncation(None).map_err(|e| bad(e.to_string()))?;
        let open_clip_split = if clip_bpe.is_some() {
            Some(
                Split::new(
                    SplitPattern::Regex(OPEN_CLIP_PATTERN.into()),
                    SplitDelimiterBehavior::Removed,
                    true,
                )
                .map_err(|e| bad(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Self {
            tok,
            cleaning,
            context_length,
            sot,
            eot,
            pad,
            byte_level: info.byte_level,
            end_of_word_suffix: info.end_of_word_suffix,
            open_clip_split,
            clip_bpe,
            source,
            vocab_size: vocab,
        })
    }

    /// Start-of-text id, first in every sequence.
    pub fn sot_id(&self) -> u32 {
        self.sot
    }
    /// End-of-text id, closing every sequence (where CLIP's text tower pools).
    pub fn eot_id(&self) -> u32 {
        self.eot
    }
    /// Id filling the sequence after EOT up to the context length.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }
    /// Length every encoded sequence is padded to, SOT and EOT included.
    pub(crate) fn context_length(&self) -> usize {
        self.context_length
    }
    /// Vocabulary size including added tokens (49408 for CLIP).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The caption as the tokenizer sees it (after open_clip cleaning, if any).
    fn clean(&self, caption: &str) -> String {
        match self.cleaning {
            TextCleaning::None => caption.to_string(),
            TextCleaning::OpenClip => text_clean::open_clip_clean(caption),
        }
    }

    /// Token ids between SOT and EOT, untruncated.
    pub fn content_ids(&self, caption: &str) -> Result<Vec<u32>> {
        let err = |msg: String| Error::Caption {
            caption: caption.to_string(),
            msg,
        };
        let text = self.clean(caption);
        let Some(split) = &self.open_clip_split else {
            let enc = self
                .tok
                .encode(text.as_str(), false)
                .map_err(|e| err(format!("{}: {e}", self.source)))?;
            return Ok(enc.get_ids().to_vec());
        };
        let mut pre = PreTokenizedString::from(text.as_str());
        split
            .pre_tokenize(&mut pre)
            .map_err(|e| err(e.to_string()))?;
        let enc = byte_encoder();
        let mut ids = Vec::new();
        for (piece, _, _) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            match piece {
                "<start_of_text>" => ids.push(self.sot),
                "<end_of_text>" => ids.push(self.eot),
                _ if self.clip_bpe.is_some() => {
                    ids.extend(self.clip_bpe.expect("checked").tokenize(piece.as_bytes()));
                }
                _ => {
                    let word: String = piece.bytes().map(|b| enc[b as usize]).collect();
                    let toks = self
                        .tok
                        .get_model()
                        .tokenize(&word)
                        .map_err(|e| err(format!("{}: {e}", self.source)))?;
                    ids.extend(toks.iter().map(|t| t.id));
                }
            }
        }
        Ok(ids)
    }

    /// Ids SOT..EOT padded to the context length. Too long → `Error::Caption` unless
    /// `truncate` (then the first `context_length - 2` tokens are kept, ending with EOT, like
    /// open_clip/HF). Empty or whitespace-only → `Error::Caption`.
    pub fn encode(&self, caption: &str, truncate: bool) -> Result<Encoded> {
        let err = |msg: String| Error::Caption {
            caption: caption.to_string(),
            msg,
        };
        if caption
            .chars()
            .all(|c| c.is_whitespace() || text_clean::is_python_space(c))
        {
            return Err(err("the caption is empty".into()));
        }
        let content = self.content_ids(caption)?;
        if content.is_empty() {
            return Err(err("the caption has no tokens left after cleaning".into()));
        }
        let ctx = self.context_length;
        let n = content.len() + 2;
        let keep = if n > ctx {
            if !truncate {
                return Err(err(format!(
                    "{n} tokens (with start and end tokens) exceed the context length of {ctx}; \
                     shorten the caption, or truncate it to its first {}",
                    ctx - 1
                )));
            }
            ctx - 2
        } else {
            content.len()
        };
        let mut ids = Vec::with_capacity(ctx);
        ids.push(self.sot);
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.eot);
        let len = ids.len();
        ids.resize(ctx, self.pad);
        let tokens = ids[..len].iter().map(|&id| self.token_str(id)).collect();
        Ok(Encoded { ids, len, tokens })
    }

    /// Reference text `[SOT, filler × n (id 0, "!" for CLIP), EOT, pad…]` for the attribution
    /// method; `filler_len` is capped at `context_length - 2`.
    pub fn reference(&self, filler_len: usize) -> Encoded {
        let n = filler_len.min(self.context_length - 2);
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(self.sot);
        ids.extend(std::iter::repeat_n(0, n));
        ids.push(self.eot);
        let len = ids.len();
        ids.resize(self.context_length, self.pad);
        let tokens = ids[..len].iter().map(|&id| self.token_str(id)).collect();
        Encoded { ids, len, tokens }
    }

    /// The words of `caption` that the vocabulary does not hold, in order, each once: the
    /// tokenizer replaces them by its unknown token (`<unk>`), so the model reads nothing of
    /// them, and a caption of unknown words still gets a score. Neighbouring unknown pieces
    /// ("red-hot" split at the hyphen) are reported as one word. Always empty for byte-level
    /// vocabularies such as CLIP's, which spell any text.
    pub fn unknown_words(&self, caption: &str) -> Result<Vec<String>> {
        if self.clip_bpe.is_some() {
            return Ok(Vec::new());
        }
        let Some((unk, unk_name)) = self.unknown_token() else {
            return Ok(Vec::new());
        };
        let text = self.clean(caption);
        let enc = self
            .tok
            .encode(text.as_str(), false)
            .map_err(|e| Error::Caption {
                caption: caption.to_string(),
                msg: format!("{}: {e}", self.source),
            })?;
        // (start, end) byte ranges of the unknown pieces, neighbours merged.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            // The unknown token's own text (CLIP's HF BPE names EOT as unknown) is no word.
            let piece = text.get(start..end).unwrap_or("");
            if id != unk || piece.is_empty() || piece == unk_name {
                continue;
            }
            match spans.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => spans.push((start, end)),
            }
        }
        let mut words: Vec<String> = Vec::new();
        for (start, end) in spans {
            let word = text[start..end].to_string();
            if !words.contains(&word) {
                words.push(word);
            }
        }
        Ok(words)
    }

    /// The unknown token's id and text, where the vocabulary's model has one in the vocabulary.
    fn unknown_token(&self) -> Option<(u32, String)> {
        use tokenizers::models::ModelWrapper;
        let name = match self.tok.get_model() {
            ModelWrapper::BPE(m) => m.unk_token.clone()?,
            ModelWrapper::WordPiece(m) => m.unk_token.clone(),
            ModelWrapper::WordLevel(m) => m.unk_token.clone(),
            // Unigram keeps its unknown id private; CLIP-style models do not use it.
            ModelWrapper::Unigram(_) => return None,
        };
        Some((self.tok.token_to_id(&name)?, name))
    }

    /// Every token of the vocabulary in id order, as [`Encoded::tokens`] shows them (end-of-word
    /// marks stripped, byte-level encoding undone), each form once, special tokens left out:
    /// what captions are made of. For a word-level vocabulary (the built-in model's) these are
    /// the words it knows; for a byte-level one, pieces of words that spell any text.
    pub fn vocabulary(&self) -> Vec<String> {
        let added = self.tok.get_added_tokens_decoder();
        let mut seen = std::collections::HashSet::new();
        (0..self.vocab_size as u32)
            .filter(|id| ![self.sot, self.eot, self.pad].contains(id))
            .filter(|id| !added.get(id).is_some_and(|a| a.special))
            .filter(|&id| match self.clip_bpe {
                Some(b) => b.token(id).is_some(),
                None => self.tok.id_to_token(id).is_some(),
            })
            .map(|id| self.token_str(id))
            .filter(|t| seen.insert(t.clone()))
            .collect()
    }

    /// Human-readable form of one id: `<sot>`/`<eot>`, end-of-word marker stripped, byte-level
    /// encoding undone (stray bytes of a split character shown as `<0xNN>`).
    fn token_str(&self, id: u32) -> String {
        if id == self.sot {
            return "<sot>".into();
        }
        if id == self.eot {
            return "<eot>".into();
        }
        let token = match self.clip_bpe {
            Some(b) => b.token(id),
            None => self.tok.id_to_token(id),
        };
        let Some(t) = token else {
            return format!("<id {id}>");
        };
        if self
            .tok
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|a| a.special)
        {
            return t;
        }
        let t = match &self.end_of_word_suffix {
            Some(s) => t.strip_suffix(s.as_str()).unwrap_or(&t).to_string(),
            None => t,
        };
        if !self.byte_level {
            return t;
        }
        let dec = byte_decoder();
        match t
            .chars()
            .map(|c| dec.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
        {
            Some(bytes) => readable_bytes(&bytes),
            None => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2() {
        let e = byte_encoder();
        assert_eq!(e[b'a' as usize], 'a');
        assert_eq!(e[b' ' as usize], 'Ġ');
        assert_eq!(e[0], 'Ā');
        assert_eq!(readable_bytes(&[0xF0, 0x9F, b'a']), "<0xF0><0x9F>a");
    }

    /// A word-level vocabulary like the built-in model's names the words it turns into
    /// `<unk>`, once each, neighbours joined; a byte-level one has none.
    #[test]
    fn unknown_words_and_vocabulary() {
        let dir = std::env::temp_dir().join(format!("pairlens-unk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        let vocab = serde_json::json!({"<pad>": 0, "<unk>": 1, "<|startoftext|>": 2,
            "<|endoftext|>": 3, "a": 4, "bag": 5, "red": 6});
        let added: Vec<_> = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": i, "content": t, "special": true,
                "single_word": false, "lstrip": false, "rstrip": false, "normalized": false})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let t = ClipTokenizer::from_file(&path, TextCleaning::None, 16, None).unwrap();
        let words = t
            .unknown_words("A Red bag, a blue-green bag and a blue one")
            .unwrap();
        assert_eq!(words, [",", "blue-green", "and", "blue", "one"]);
        assert_eq!(t.unknown_words("a red bag").unwrap(), Vec::<String>::new());
        assert_eq!(t.vocabulary(), ["a", "bag", "red"]);
        std::fs::remove_dir_all(&dir).ok();

        let clip = ClipTokenizer::bundled_open_clip(77).unwrap();
        assert!(clip.unknown_words("zxqv blorp 🙂").unwrap().is_empty());
        let v = clip.vocabulary();
        assert!(
            v.len() > 30_000 && v.contains(&"dog".to_string()),
            "{}",
            v.len()
        );
    }

    #[test]
    fn bundled_basics() {
        let t = ClipTokenizer::bundled_open_clip(77).unwrap();
        assert_eq!(
            (t.sot_id(), t.eot_id(), t.pad_id(), t.vocab_size()),
            (49406, 49407, 0, 49408)
        );
        let e = t.encode("a photo of a dog", false).unwrap();
        assert_eq!(&e.ids[..7], &[49406, 320, 1125, 539, 320, 1929, 49407]);
        assert_eq!(e.tokens, ["<sot>", "a", "photo", "of", "a", "dog", "<eot>"]);
    }

    /// The bundled vocabulary's own BPE gives `tokenizers`' ids for every word of the parity
    /// captions and more, and the same text for every id.
    #[test]
    fn clip_bpe_equals_tokenizers_bpe() {
        let (full, _) = bundled_tokenizer().unwrap();
        let bpe = &bundled_vocabulary().unwrap().bpe;
        assert_eq!(bpe.len(), full.get_vocab_size(true));
        for id in 0..bpe.len() as u32 {
            assert_eq!(bpe.token(id), full.id_to_token(id), "id {id}");
        }
        let enc = byte_encoder();
        let text = "a photo of a dog  naïve café 123 ÆØÅ 日本語 🙂🙂 don't aaaaaaa ababab \
                    mississippi antidisestablishmentarianism <|endoftext|> x_y-z !!! ...";
        for word in text.split(' ').filter(|w| !w.is_empty()) {
            let symbols: String = word.bytes().map(|b| enc[b as usize]).collect();
            let want: Vec<u32> = full
                .get_model()
                .tokenize(&symbols)
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(bpe.tokenize(word.as_bytes()), want, "{word:?}");
        }
    }

    /// The two-part BPE reader builds the same tokenizer as `Tokenizer::from_bytes` (merges as
    /// pairs or in the legacy "a b" form), and declines a file whose added token would get
    /// another id.
    #[test]
    fn two_part_bpe_reader_equals_tokenizers_own() {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(BUNDLED_GZ)
            .read_to_end(&mut json)
            .unwrap();
        let sections = |json: &[u8]| Sections::parse(json).unwrap();
        // The same file with its merges in the legacy "a b" form.
        let mut legacy: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let pairs = legacy["model"]["merges"].as_array().unwrap().clone();
        legacy["model"]["merges"] = pairs
            .iter()
            .map(|p| format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()).into())
            .collect::<Vec<serde_json::Value>>()
            .into();
        let legacy = legacy.to_string();
        let slow = Tokenizer::from_bytes(&json).unwrap();
        assert_eq!(vocab_size_with_added(&slow), slow.get_vocab_size(true));
        for file in [json.as_slice(), legacy.as_bytes()] {
            let fast = bpe_tokenizer_from_json(file, &sections(file))
                .expect("CLIP's file takes the two-part path");
            assert_eq!(fast.get_vocab_size(true), slow.get_vocab_size(true));
            for text in [
                "a photo of a dog",
                "<|startoftext|>Hello, WORLD!! naïve café 123<|endoftext|>",
                "  multiple   spaces and a very_long-compound word  ",
            ] {
                let (f, s) = (
                    fast.encode(text, true).unwrap(),
                    slow.encode(text, true).unwrap(),
                );
                assert_eq!(f.get_ids(), s.get_ids(), "{text:?}");
                assert_eq!(f.get_tokens(), s.get_tokens(), "{text:?}");
            }
        }
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["added_tokens"][0]["id"] = 5.into();
        let moved = v.to_string();
        assert!(bpe_tokenizer_from_json(moved.as_bytes(), &sections(moved.as_bytes())).is_none());
        let word_level = crate::data::word_level_tokenizer_json(&crate::data::vocabulary());
        let wl = word_level.as_bytes();
        assert!(bpe_tokenizer_from_json(wl, &sections(wl)).is_none());
        let wl = tokenizer_from_json(wl, &sections(wl)).unwrap();
        assert_eq!(vocab_size_with_added(&wl), wl.get_vocab_size(true));
    }
}
