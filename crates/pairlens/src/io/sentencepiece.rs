//! A small, bounded reader of SentencePiece model files (`spiece.model`, the `ModelProto`
//! protobuf) and an encoder that reproduces the `sentencepiece` library (0.2.x) for Unigram
//! models: the precompiled-charsmap normaliser (`nmt_nfkc`, `nmt_nfkc_cf`, `identity`, custom
//! rules: whatever the file carries), whitespace handling (`add_dummy_prefix`,
//! `remove_extra_whitespaces`, `escape_whitespaces`, `treat_whitespace_as_suffix`),
//! user-defined symbols, the optimised Viterbi search with its exact `f32` arithmetic and tie
//! breaking, merging of runs of unknown characters, and byte fallback.
//!
//! The reader is written for untrusted files: every length is checked against the bytes left,
//! nothing is allocated beyond what the input itself holds, nesting is fixed (the reader only
//! descends into the messages it knows), and every malformed input is an
//! [`Error::Tokenizer`] naming the file and the problem, never a panic. BPE, WORD and CHAR
//! models are refused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Largest model file read (the real SigLIP `spiece.model` is under 1 MB, Gemma's 4 MB).
pub const MAX_MODEL_BYTES: u64 = 64 << 20;
/// Longest piece accepted, in bytes (sentencepiece's default limit is 16 characters): keeps the
/// search linear in the caption's length whatever the file holds.
pub const MAX_PIECE_BYTES: usize = 1024;
/// Deepest walk into the normaliser's trie per position (real rules are a few characters).
const MAX_CHARSMAP_DEPTH: usize = 1024;

/// What a piece is, as `ModelProto.SentencePiece.Type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece, found by the Viterbi search.
    Normal,
    /// The unknown piece (`<unk>`); exactly one per model.
    Unknown,
    /// A control symbol (`<pad>`, `</s>`, `<s>`): never produced from text.
    Control,
    /// A user-defined symbol: matched as-is before normalisation and always preferred.
    UserDefined,
    /// A piece kept in the vocabulary but never produced.
    Unused,
    /// A byte piece `<0xNN>` (byte fallback).
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece's text (`▁` marks a word start).
    pub piece: String,
    /// Its log-probability (Unigram score).
    pub score: f32,
    /// Its type.
    pub kind: PieceType,
}

/// The `NormalizerSpec` fields the encoder uses (proto2 defaults where absent).
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    /// The rule's name (`nmt_nfkc`, `identity`, …): informational, the charsmap is what counts.
    pub name: String,
    /// The compiled rule: a double-array trie and the replacement strings.
    pub precompiled_charsmap: Vec<u8>,
    /// Prepend `▁` to the text.
    pub add_dummy_prefix: bool,
    /// Drop leading/trailing spaces and fold runs of spaces.
    pub remove_extra_whitespaces: bool,
    /// Write spaces as `▁`.
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        NormalizerSpec {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// The `TrainerSpec` fields that matter at encoding time.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    /// 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR.
    pub model_type: u64,
    /// Unknown characters become byte pieces instead of `<unk>`.
    pub byte_fallback: bool,
    /// The dummy `▁` goes after the text instead of before.
    pub treat_whitespace_as_suffix: bool,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        TrainerSpec {
            model_type: 1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
        }
    }
}

/// A parsed `ModelProto`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelProto {
    /// The vocabulary, in id order.
    pub pieces: Vec<Piece>,
    /// Trainer settings used at encoding time.
    pub trainer: TrainerSpec,
    /// The normaliser.
    pub normalizer: NormalizerSpec,
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format
// ---------------------------------------------------------------------------------------------

/// A cursor over protobuf bytes; every read is bounds-checked.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(format!("truncated varint at byte {}", self.pos));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(format!(
                    "varint longer than 64 bits at byte {}",
                    self.pos - 1
                ));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: u64, what: &str) -> std::result::Result<&'a [u8], String> {
        let left = self.buf.len() - self.pos;
        if n > left as u64 {
            return Err(format!(
                "{what} of {n} bytes at byte {} runs past the end ({left} bytes left)",
                self.pos
            ));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next field: (number, value).
    fn field(&mut self) -> std::result::Result<(u64, Value<'a>), String> {
        let at = self.pos;
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(format!("invalid field number {number} at byte {at}"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8, "fixed64 field")?;
                Value::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n, "length-delimited field")?)
            }
            5 => {
                let b = self.take(4, "fixed32 field")?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            t => {
                return Err(format!(
                    "unsupported wire type {t} (field {number}) at byte {at}"
                ))
            }
        };
        Ok((number, value))
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> std::result::Result<&'a str, String> {
    std::str::from_utf8(b).map_err(|e| format!("{what} is not valid UTF-8 ({e})"))
}

fn expect_bytes<'a>(v: Value<'a>, what: &str) -> std::result::Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!(
            "{what} has the wrong wire type (expected length-delimited)"
        )),
    }
}

fn expect_varint(v: Value<'_>, what: &str) -> std::result::Result<u64, String> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(format!("{what} has the wrong wire type (expected varint)")),
    }
}

fn parse_piece(buf: &[u8], index: usize) -> std::result::Result<Piece, String> {
    let mut w = Wire::new(buf);
    let mut piece = None;
    let mut score = 0.0f32;
    let mut kind = PieceType::Normal;
    while !w.at_end() {
        let (n, v) = w.field()?;
        match n {
            1 => piece = Some(utf8(expect_bytes(v, "piece text")?, "piece text")?.to_string()),
            2 => match v {
                Value::Fixed32(x) => score = f32::from_bits(x),
                _ => return Err("piece score has the wrong wire type (expected float)".into()),
            },
            3 => {
                let t = expect_varint(v, "piece type")?;
                kind = PieceType::from_proto(t).ok_or_else(|| format!("unknown piece type {t}"))?;
            }
            _ => {}
        }
    }
    let piece = piece.unwrap_or_default();
    if piece.is_empty() {
        return Err(format!("piece {index} is empty"));
    }
    if piece.len() > MAX_PIECE_BYTES {
        return Err(format!(
            "piece {index} is {} bytes long, over the limit of {MAX_PIECE_BYTES}",
            piece.len()
        ));
    }
    if !score.is_finite() {
        return Err(format!(
            "piece {index} ({piece:?}) has a non-finite score {score}"
        ));
    }
    Ok(Piece { piece, score, kind })
}

fn parse_trainer(buf: &[u8], t: &mut TrainerSpec) -> std::result::Result<(), String> {
    let mut w = Wire::new(buf);
    while !w.at_end() {
        let (n, v) = w.field()?;
        match n {
            3 => t.model_type = expect_varint(v, "trainer_spec.model_type")?,
            24 => {
                t.treat_whitespace_as_suffix = expect_varint(v, "treat_whitespace_as_suffix")? != 0
            }
            35 => t.byte_fallback = expect_varint(v, "trainer_spec.byte_fallback")? != 0,
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(buf: &[u8], s: &mut NormalizerSpec) -> std::result::Result<(), String> {
    let mut w = Wire::new(buf);
    while !w.at_end() {
        let (n, v) = w.field()?;
        match n {
            1 => s.name = utf8(expect_bytes(v, "normalizer name")?, "normalizer name")?.to_string(),
            2 => s.precompiled_charsmap = expect_bytes(v, "precompiled_charsmap")?.to_vec(),
            3 => s.add_dummy_prefix = expect_varint(v, "add_dummy_prefix")? != 0,
            4 => s.remove_extra_whitespaces = expect_varint(v, "remove_extra_whitespaces")? != 0,
            5 => s.escape_whitespaces = expect_varint(v, "escape_whitespaces")? != 0,
            _ => {}
        }
    }
    Ok(())
}

fn parse_model_inner(bytes: &[u8]) -> std::result::Result<ModelProto, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let mut m = ModelProto::default();
    let mut w = Wire::new(bytes);
    while !w.at_end() {
        let (n, v) = w.field()?;
        match n {
            1 => {
                let b = expect_bytes(v, "pieces entry")?;
                let index = m.pieces.len();
                m.pieces
                    .push(parse_piece(b, index).map_err(|e| format!("piece {index}: {e}"))?);
            }
            2 => parse_trainer(expect_bytes(v, "trainer_spec")?, &mut m.trainer)
                .map_err(|e| format!("trainer_spec: {e}"))?,
            3 => parse_normalizer(expect_bytes(v, "normalizer_spec")?, &mut m.normalizer)
                .map_err(|e| format!("normalizer_spec: {e}"))?,
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err("no pieces (not a SentencePiece model?)".into());
    }
    if m.pieces.len() > u32::MAX as usize / 2 {
        return Err(format!("{} pieces is too many", m.pieces.len()));
    }
    Ok(m)
}

impl ModelProto {
    /// Parses a `ModelProto` from bytes; `path` names the source in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        parse_model_inner(bytes).map_err(|e| bad(path, e))
    }

    /// Reads and parses a model file (at most [`MAX_MODEL_BYTES`]).
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut bytes = Vec::new();
        f.take(MAX_MODEL_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(bad(
                path,
                format!("larger than {} MiB, refused", MAX_MODEL_BYTES >> 20),
            ));
        }
        Self::parse(&bytes, path)
    }
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!(
        "{}: bad SentencePiece model: {msg}",
        path.display()
    ))
}

// ---------------------------------------------------------------------------------------------
// Precompiled charsmap (darts-clone double array)
// ---------------------------------------------------------------------------------------------

/// `sentencepiece`'s normaliser keeps at most this many prefix matches per position.
const MAX_TRIE_RESULTS: usize = 32;

#[derive(Debug, Clone)]
struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    fn parse(blob: &[u8]) -> std::result::Result<Option<Self>, String> {
        if blob.is_empty() {
            return Ok(None);
        }
        if blob.len() <= 4 {
            return Err("precompiled_charsmap is broken (shorter than its header)".into());
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if trie_size > blob.len() - 4 {
            return Err(format!(
                "precompiled_charsmap: trie of {trie_size} bytes exceeds the {}-byte blob",
                blob.len()
            ));
        }
        let trie = &blob[4..4 + trie_size];
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>();
        if units.is_empty() {
            return Err("precompiled_charsmap: empty trie".into());
        }
        Ok(Some(CharsMap {
            units,
            normalized: blob[4 + trie_size..].to_vec(),
        }))
    }

    /// The longest rule matching a prefix of `input` (among the first
    /// [`MAX_TRIE_RESULTS`] matches, like `sentencepiece`): (bytes consumed, replacement).
    fn longest_prefix(&self, input: &[u8]) -> std::result::Result<Option<(usize, &[u8])>, String> {
        let corrupt = || "precompiled_charsmap: corrupt trie (index out of range)".to_string();
        let unit = |id: usize| self.units.get(id).copied().ok_or_else(corrupt);
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut id = offset(unit(0)?);
        let mut best: Option<(usize, u32)> = None;
        let mut results = 0usize;
        for (i, &b) in input.iter().take(MAX_CHARSMAP_DEPTH).enumerate() {
            id ^= b as usize;
            let u = unit(id)?;
            if u & (0x8000_0000 | 0xff) != b as u32 {
                break;
            }
            id ^= offset(u);
            if (u >> 8) & 1 == 1 {
                if results < MAX_TRIE_RESULTS {
                    let value = unit(id)? & 0x7fff_ffff;
                    best = Some((i + 1, value));
                }
                results += 1;
            }
        }
        let Some((len, value)) = best else {
            return Ok(None);
        };
        let start = value as usize;
        let tail = self.normalized.get(start..).ok_or_else(|| {
            format!("precompiled_charsmap: replacement offset {start} out of range")
        })?;
        let end = tail.iter().position(|&c| c == 0).ok_or_else(|| {
            format!("precompiled_charsmap: replacement at {start} is not NUL-terminated")
        })?;
        Ok(Some((len, &tail[..end])))
    }
}

// ---------------------------------------------------------------------------------------------
// The encoder
// ---------------------------------------------------------------------------------------------

/// Piece ids sorted by their text, to find every piece that is a prefix of some text in
/// O(depth · log n) (what `sentencepiece`'s double-array trie gives), without a trie's memory.
#[derive(Debug, Clone, Default)]
struct PrefixIndex {
    /// (piece bytes, id), sorted by bytes.
    keys: Vec<(Box<[u8]>, u32)>,
}

impl PrefixIndex {
    fn new(mut keys: Vec<(Box<[u8]>, u32)>) -> Self {
        keys.sort();
        PrefixIndex { keys }
    }

    /// Calls `f(length, id)` for every key that is a prefix of `text`, shortest first.
    fn prefixes(&self, text: &[u8], mut f: impl FnMut(usize, u32)) {
        let (mut lo, mut hi) = (0, self.keys.len());
        for (d, &b) in text.iter().enumerate() {
            // Keys in lo..hi share text[..d]; the one equal to it (if any) sorts first.
            if lo < hi && self.keys[lo].0.len() == d {
                lo += 1;
            }
            let range = &self.keys[lo..hi];
            let a = range.partition_point(|(k, _)| k.get(d).is_some_and(|&c| c < b));
            let e = range.partition_point(|(k, _)| k.get(d).is_some_and(|&c| c <= b));
            hi = lo + e;
            lo += a;
            if lo >= hi {
                return;
            }
            if self.keys[lo].0.len() == d + 1 {
                f(d + 1, self.keys[lo].1);
            }
        }
    }

    /// The longest key that is a prefix of `text`, as its length.
    fn longest(&self, text: &[u8]) -> Option<usize> {
        let mut best = None;
        self.prefixes(text, |n, _| best = Some(n));
        best
    }
}

/// One piece of an encoding: its text (normalised, `▁` for spaces; a run of unknown
/// characters is one piece) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPiece {
    /// The piece's text as `sentencepiece`'s `encode(out_type=str)` gives it.
    pub piece: String,
    /// Its id (the unknown id for unknown text, byte ids under byte fallback).
    pub id: u32,
}

/// A SentencePiece Unigram model ready to encode, equal to `sentencepiece.SentencePieceProcessor`.
#[derive(Clone)]
pub struct SentencePiece {
    path: PathBuf,
    pieces: Vec<Piece>,
    normalizer: NormalizerSpec,
    charsmap: Option<CharsMap>,
    treat_whitespace_as_suffix: bool,
    byte_fallback: bool,
    unk_id: u32,
    /// Normal, user-defined and unused pieces → id.
    search: HashMap<String, u32>,
    /// The same, for prefix search (the Viterbi lattice).
    search_index: PrefixIndex,
    /// Control, unknown and byte pieces → id (checked first by `piece_to_id`).
    reserved: HashMap<String, u32>,
    /// User-defined symbols, matched before normalisation.
    user_defined: PrefixIndex,
    min_score: f32,
    max_score: f32,
}

impl std::fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePiece")
            .field("path", &self.path)
            .field("pieces", &self.pieces.len())
            .field("normalizer", &self.normalizer.name)
            .field("unk_id", &self.unk_id)
            .field("byte_fallback", &self.byte_fallback)
            .finish_non_exhaustive()
    }
}

const SPACE_SYMBOL: &str = "\u{2581}";
const UNK_PENALTY: f32 = 10.0;

impl SentencePiece {
    /// Reads `path` (a `spiece.model`) and checks it the way `sentencepiece` does on load.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_proto(ModelProto::read(path)?, path)
    }

    /// Builds the encoder from a parsed model; `path` names the source in errors.
    pub fn from_proto(m: ModelProto, path: &Path) -> Result<Self> {
        let err = |msg: String| bad(path, msg);
        match m.trainer.model_type {
            1 => {}
            2 => return Err(err("a BPE model; only Unigram models are supported".into())),
            3 => return Err(err("a WORD model; only Unigram models are supported".into())),
            4 => return Err(err("a CHAR model; only Unigram models are supported".into())),
            t => return Err(err(format!("unknown model type {t}"))),
        }
        let charsmap = CharsMap::parse(&m.normalizer.precompiled_charsmap).map_err(err)?;
        let mut search = HashMap::new();
        let mut reserved = HashMap::new();
        let mut user_defined = Vec::new();
        let mut unk_id = None;
        let mut bytes_found = [false; 256];
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
        for (i, p) in m.pieces.iter().enumerate() {
            let id = i as u32;
            let normal = matches!(
                p.kind,
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused
            );
            let map = if normal { &mut search } else { &mut reserved };
            if map.insert(p.piece.clone(), id).is_some() {
                return Err(err(format!("piece {:?} is defined twice", p.piece)));
            }
            match p.kind {
                PieceType::Normal => {
                    min_score = min_score.min(p.score);
                    max_score = max_score.max(p.score);
                }
                PieceType::UserDefined => {
                    user_defined.push((p.piece.as_bytes().into(), id));
                }
                PieceType::Unknown => {
                    if unk_id.is_some() {
                        return Err(err("more than one unknown piece".into()));
                    }
                    unk_id = Some(id);
                }
                PieceType::Byte => {
                    if !m.trainer.byte_fallback {
                        return Err(err(format!(
                            "byte piece {:?} although byte_fallback is off",
                            p.piece
                        )));
                    }
                    let b = piece_to_byte(&p.piece)
                        .ok_or_else(|| err(format!("invalid byte piece {:?}", p.piece)))?;
                    bytes_found[b as usize] = true;
                }
                PieceType::Control | PieceType::Unused => {}
            }
        }
        let unk_id = unk_id.ok_or_else(|| err("no unknown piece (<unk>) is defined".into()))?;
        if m.trainer.byte_fallback && bytes_found.iter().any(|&f| !f) {
            return Err(err(
                "byte_fallback is on but the 256 byte pieces are not all there".into(),
            ));
        }
        if search.is_empty() {
            return Err(err("no normal pieces".into()));
        }
        let search_index = PrefixIndex::new(
            search
                .iter()
                .map(|(k, &id)| (k.as_bytes().into(), id))
                .collect(),
        );
        Ok(SentencePiece {
            path: path.to_path_buf(),
            pieces: m.pieces,
            normalizer: m.normalizer,
            charsmap,
            treat_whitespace_as_suffix: m.trainer.treat_whitespace_as_suffix,
            byte_fallback: m.trainer.byte_fallback,
            unk_id,
            search,
            search_index,
            reserved,
            user_defined: PrefixIndex::new(user_defined),
            min_score,
            max_score,
        })
    }

    /// The model file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Every piece in id order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }
    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }
    /// Whether there are no pieces (never, for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
    /// The unknown piece's id.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }
    /// The normaliser settings.
    pub fn normalizer(&self) -> &NormalizerSpec {
        &self.normalizer
    }
    /// Whether unknown characters become byte pieces.
    pub fn byte_fallback(&self) -> bool {
        self.byte_fallback
    }
    /// Turns the dummy `▁` prefix on or off (transformers' `legacy=False` turns it off).
    pub fn set_add_dummy_prefix(&mut self, on: bool) {
        self.normalizer.add_dummy_prefix = on;
    }
    /// A piece's text, or `None` past the vocabulary.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.piece.as_str())
    }
    /// A piece's type, or `None` past the vocabulary.
    pub fn piece_type(&self, id: u32) -> Option<PieceType> {
        self.pieces.get(id as usize).map(|p| p.kind)
    }
    /// `sentencepiece`'s `PieceToId`: control/unknown/byte pieces first, then the others, else
    /// the unknown id.
    pub fn piece_to_id(&self, piece: &str) -> u32 {
        self.reserved
            .get(piece)
            .or_else(|| self.search.get(piece))
            .copied()
            .unwrap_or(self.unk_id)
    }

    fn charsmap_err(&self, msg: String) -> Error {
        bad(&self.path, msg)
    }

    /// One step of `Normalizer::NormalizePrefix`: (replacement bytes, input bytes consumed).
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> Result<(&'a [u8], usize)> {
        // User-defined symbols are copied as they are (the longest that matches).
        if let Some(n) = self.user_defined.longest(input) {
            return Ok((&input[..n], n));
        }
        if let Some(cm) = &self.charsmap {
            if let Some((len, rep)) = cm.longest_prefix(input).map_err(|e| self.charsmap_err(e))? {
                return Ok((rep, len));
            }
        }
        match utf8_char_len(input) {
            Some(n) => Ok((&input[..n], n)),
            None => Ok(("\u{fffd}".as_bytes(), 1)),
        }
    }

    /// `sentencepiece`'s normaliser: the text the Viterbi search runs on (`▁` for spaces).
    pub fn normalize(&self, text: &str) -> Result<String> {
        let spec = &self.normalizer;
        let mut input = text.as_bytes();
        if spec.remove_extra_whitespaces {
            while !input.is_empty() {
                let (rep, n) = self.normalize_prefix(input)?;
                if rep != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return Ok(String::new());
        }
        let space: &[u8] = if spec.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        let mut out: Vec<u8> = Vec::with_capacity(input.len() + 3);
        if !self.treat_whitespace_as_suffix && spec.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = spec.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut rep, n) = self.normalize_prefix(input)?;
            while is_prev_space && rep.first() == Some(&b' ') {
                rep = &rep[1..];
            }
            if !rep.is_empty() {
                for &b in rep {
                    if spec.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = rep.last() == Some(&b' ');
            }
            input = &input[n..];
            if !spec.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if spec.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && spec.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        String::from_utf8(out).map_err(|_| {
            self.charsmap_err("precompiled_charsmap produces invalid UTF-8".to_string())
        })
    }

    /// `sentencepiece`'s `encode(text, out_type=str)` with the ids: normalise, Viterbi, merge
    /// runs of unknown characters (or spell them as bytes under byte fallback).
    pub fn encode(&self, text: &str) -> Result<Vec<EncodedPiece>> {
        let normalized = self.normalize(text)?;
        let mut out: Vec<EncodedPiece> = Vec::new();
        let mut prev_unk = false;
        for (piece, id) in self.viterbi(&normalized) {
            let is_unk = id == self.unk_id;
            if is_unk && self.byte_fallback {
                for b in piece.bytes() {
                    let p = format!("<0x{b:02X}>");
                    out.push(EncodedPiece {
                        id: self.piece_to_id(&p),
                        piece: p,
                    });
                }
            } else if is_unk && prev_unk {
                if let Some(last) = out.last_mut() {
                    last.piece.push_str(piece);
                }
            } else {
                out.push(EncodedPiece {
                    piece: piece.to_string(),
                    id,
                });
            }
            prev_unk = is_unk;
        }
        Ok(out)
    }

    /// `unigram::Model::EncodeOptimized`: the best segmentation of normalised text, with
    /// `sentencepiece`'s arithmetic (f32 sums; f64 for user-defined symbols) and tie breaking
    /// (the first candidate found wins).
    fn viterbi<'a>(&self, s: &'a str) -> Vec<(&'a str, u32)> {
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            score: f32,
            starts_at: Option<usize>,
        }
        let size = s.len();
        if size == 0 {
            return Vec::new();
        }
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            Best {
                id: self.unk_id,
                score: 0.0,
                starts_at: None
            };
            size + 1
        ];
        let bytes = s.as_bytes();
        let mut matches: Vec<(usize, u32)> = Vec::new();
        let mut start = 0;
        while start < size {
            let till_here = best[start].score;
            let mblen = utf8_char_len(&bytes[start..]).unwrap_or(1);
            let mut has_single = false;
            matches.clear();
            self.search_index
                .prefixes(&bytes[start..], |n, id| matches.push((n, id)));
            for &(length, id) in &matches {
                let end = start + length;
                let kind = self.pieces[id as usize].kind;
                if kind == PieceType::Unused {
                    continue;
                }
                let candidate: f64 = if kind == PieceType::UserDefined {
                    f64::from(length as f32 * self.max_score) - 0.1 + f64::from(till_here)
                } else {
                    f64::from(self.pieces[id as usize].score + till_here)
                };
                let target = &mut best[end];
                if target.starts_at.is_none() || candidate > f64::from(target.score) {
                    *target = Best {
                        id,
                        score: candidate as f32,
                        starts_at: Some(start),
                    };
                }
                if length == mblen {
                    has_single = true;
                }
            }
            if !has_single {
                let candidate = unk_score + till_here;
                let target = &mut best[start + mblen];
                if target.starts_at.is_none() || candidate > target.score {
                    *target = Best {
                        id: self.unk_id,
                        score: candidate,
                        starts_at: Some(start),
                    };
                }
            }
            start += mblen;
        }
        let mut out = Vec::new();
        let mut end = size;
        while end > 0 {
            let node = best[end];
            // Every position is reached (a one-character piece or <unk> always links it).
            let start = node.starts_at.unwrap_or(0);
            out.push((&s[start..end], node.id));
            end = start;
        }
        out.reverse();
        out
    }
}

/// Length of the UTF-8 character starting `b`, or `None` when it is malformed.
fn utf8_char_len(b: &[u8]) -> Option<usize> {
    let n = match *b.first()? {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    std::str::from_utf8(b.get(..n)?).ok().map(|_| n)
}

/// `<0xNN>` → NN.
fn piece_to_byte(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    // sentencepiece writes (and only accepts) two upper-case hex digits.
    if hex.len() != 2 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("test.model")
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field_bytes(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut v = Vec::new();
        field_bytes(1, text.as_bytes(), &mut v);
        varint(2 << 3 | 5, &mut v);
        v.extend_from_slice(&score.to_le_bytes());
        varint(3 << 3, &mut v);
        varint(kind, &mut v);
        v
    }

    /// A tiny model: <pad> </s> <unk>, ▁a, ▁ab, b, ▁, c, with no normaliser rule.
    fn tiny(extra: &[Vec<u8>]) -> Vec<u8> {
        let mut m = Vec::new();
        for pc in [
            piece("<pad>", 0.0, 3),
            piece("</s>", 0.0, 3),
            piece("<unk>", 0.0, 2),
            piece("\u{2581}a", -1.0, 1),
            piece("\u{2581}ab", -1.5, 1),
            piece("b", -2.0, 1),
            piece("\u{2581}", -3.0, 1),
            piece("c", -2.5, 1),
        ] {
            field_bytes(1, &pc, &mut m);
        }
        for e in extra {
            m.extend_from_slice(e);
        }
        m
    }

    fn err_of(bytes: &[u8]) -> String {
        match ModelProto::parse(bytes, p()).and_then(|m| SentencePiece::from_proto(m, p())) {
            Ok(_) => panic!("expected an error"),
            Err(e) => {
                let s = e.to_string();
                assert!(s.contains("test.model"), "{s}");
                s
            }
        }
    }

    #[test]
    fn tiny_model_encodes() {
        let sp =
            SentencePiece::from_proto(ModelProto::parse(&tiny(&[]), p()).unwrap(), p()).unwrap();
        assert_eq!(sp.len(), 8);
        assert_eq!(sp.unk_id(), 2);
        let enc = sp.encode("  ab   a  c").unwrap();
        let got: Vec<_> = enc.iter().map(|e| (e.piece.as_str(), e.id)).collect();
        assert_eq!(
            got,
            vec![
                ("\u{2581}ab", 4),
                ("\u{2581}a", 3),
                ("\u{2581}", 6),
                ("c", 7)
            ]
        );
        // Unknown characters in a row are one piece with the unknown id.
        let enc = sp.encode("a xyz").unwrap();
        let got: Vec<_> = enc.iter().map(|e| (e.piece.as_str(), e.id)).collect();
        assert_eq!(got, vec![("\u{2581}a", 3), ("\u{2581}", 6), ("xyz", 2)]);
        assert!(sp.encode("").unwrap().is_empty());
        assert!(sp.encode("   ").unwrap().is_empty());
        assert_eq!(sp.piece_to_id("</s>"), 1);
        assert_eq!(sp.piece_to_id("zzz"), 2);
    }

    #[test]
    fn empty_and_garbage_are_errors() {
        assert!(err_of(b"").contains("empty"));
        assert!(err_of(b"hello, world: not a protobuf").contains("bad SentencePiece model"));
        assert!(err_of(&[0xff; 64]).contains("varint"));
        // Valid protobuf with no pieces.
        let mut m = Vec::new();
        varint(99 << 3, &mut m);
        varint(5, &mut m);
        assert!(err_of(&m).contains("no pieces"));
    }

    #[test]
    fn truncations_never_panic() {
        let full = tiny(&[]);
        for n in 0..full.len() {
            let r =
                ModelProto::parse(&full[..n], p()).and_then(|m| SentencePiece::from_proto(m, p()));
            if let Err(e) = r {
                assert!(e.to_string().contains("test.model"));
            }
        }
        // Every single-byte corruption either loads or errors.
        for i in 0..full.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = full.clone();
                b[i] = v;
                if let Ok(sp) =
                    ModelProto::parse(&b, p()).and_then(|m| SentencePiece::from_proto(m, p()))
                {
                    let _ = sp.encode("a b c xyz");
                }
            }
        }
    }

    #[test]
    fn truncated_varint_and_lengths_past_the_end() {
        assert!(err_of(&[0x0a, 0x80]).contains("truncated varint"));
        // pieces field claiming 100 bytes with 2 left.
        assert!(err_of(&[0x0a, 100, 1, 2]).contains("runs past the end"));
        // Absurd length (2^63).
        let mut m = vec![0x0a];
        varint(1 << 63, &mut m);
        assert!(err_of(&m).contains("runs past the end"));
        // 11-byte varint.
        let mut m = vec![0x08];
        m.extend_from_slice(&[0xff; 10]);
        m.push(0x01);
        assert!(err_of(&m).contains("varint"));
        // Groups are refused.
        assert!(err_of(&[0x0b, 0x0c]).contains("wire type"));
        // Field number 0.
        assert!(err_of(&[0x02, 0x00]).contains("field number"));
    }

    #[test]
    fn semantic_errors() {
        // Duplicate piece.
        let mut extra = Vec::new();
        field_bytes(1, &piece("c", -1.0, 1), &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("defined twice"));
        // Two unknowns.
        let mut extra = Vec::new();
        field_bytes(1, &piece("<unk2>", 0.0, 2), &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("more than one unknown"));
        // Unknown type.
        let mut extra = Vec::new();
        field_bytes(1, &piece("q", 0.0, 9), &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("unknown piece type"));
        // Empty piece.
        let mut extra = Vec::new();
        field_bytes(1, &piece("", 0.0, 1), &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("empty"));
        // NaN score.
        let mut extra = Vec::new();
        field_bytes(1, &piece("q", f32::NAN, 1), &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("non-finite"));
        // Invalid UTF-8 piece.
        let mut bad_piece = Vec::new();
        field_bytes(1, &[0xff, 0xfe], &mut bad_piece);
        let mut extra = Vec::new();
        field_bytes(1, &bad_piece, &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("UTF-8"));
        // Byte piece without byte_fallback.
        let mut extra = Vec::new();
        field_bytes(1, &piece("<0x41>", 0.0, 6), &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("byte_fallback"));
        // No <unk>.
        let mut m = Vec::new();
        field_bytes(1, &piece("a", -1.0, 1), &mut m);
        assert!(err_of(&m).contains("no unknown piece"));
        // BPE model.
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer);
        let mut extra = Vec::new();
        field_bytes(2, &trainer, &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("BPE"));
        // byte_fallback without the 256 byte pieces.
        let mut trainer = Vec::new();
        varint(35 << 3, &mut trainer);
        varint(1, &mut trainer);
        let mut extra = Vec::new();
        field_bytes(2, &trainer, &mut extra);
        assert!(err_of(&tiny(&[extra])).contains("256 byte pieces"));
    }

    #[test]
    fn broken_charsmaps() {
        for blob in [
            vec![1u8, 0, 0],
            vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4],
            vec![0, 0, 0, 0, 1],
        ] {
            let mut norm = Vec::new();
            field_bytes(2, &blob, &mut norm);
            let mut extra = Vec::new();
            field_bytes(3, &norm, &mut extra);
            assert!(err_of(&tiny(&[extra])).contains("charsmap"));
        }
        // A trie whose root points out of range: an error at encode time, not a panic.
        let mut blob = 4u32.to_le_bytes().to_vec();
        blob.extend_from_slice(&(0xffff_fc00u32).to_le_bytes());
        blob.extend_from_slice(b"x\0");
        let mut norm = Vec::new();
        field_bytes(2, &blob, &mut norm);
        let mut extra = Vec::new();
        field_bytes(3, &norm, &mut extra);
        let m = ModelProto::parse(&tiny(&[extra]), p()).unwrap();
        let sp = SentencePiece::from_proto(m, p()).unwrap();
        let e = sp.encode("abc").unwrap_err().to_string();
        assert!(e.contains("corrupt trie"), "{e}");
    }

    #[test]
    fn whitespace_options() {
        let mut norm = Vec::new();
        varint(3 << 3, &mut norm);
        varint(0, &mut norm); // add_dummy_prefix off
        let mut extra = Vec::new();
        field_bytes(3, &norm, &mut extra);
        let sp = SentencePiece::from_proto(ModelProto::parse(&tiny(&[extra]), p()).unwrap(), p())
            .unwrap();
        assert_eq!(sp.normalize("  a  b ").unwrap(), "a\u{2581}b");
    }

    #[test]
    fn absurd_pieces_and_random_bytes() {
        let mut extra = Vec::new();
        field_bytes(
            1,
            &piece(&"x".repeat(MAX_PIECE_BYTES + 1), -1.0, 1),
            &mut extra,
        );
        assert!(err_of(&tiny(&[extra])).contains("over the limit"));
        // Random bytes, and random bytes after a valid prefix: errors or models, never panics.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let base = tiny(&[]);
        for round in 0..2000 {
            let n = (next() % 200) as usize;
            let mut b: Vec<u8> = if round % 2 == 0 {
                Vec::new()
            } else {
                base.clone()
            };
            b.extend((0..n).map(|_| next() as u8));
            if let Ok(sp) =
                ModelProto::parse(&b, p()).and_then(|m| SentencePiece::from_proto(m, p()))
            {
                let _ = sp.encode("a b c xyz");
            }
        }
    }

    #[test]
    fn byte_pieces() {
        assert_eq!(piece_to_byte("<0x41>"), Some(0x41));
        assert_eq!(piece_to_byte("<0xFF>"), Some(0xff));
        assert_eq!(piece_to_byte("<0xff>"), None);
        assert_eq!(piece_to_byte("<0x1>"), None);
        assert_eq!(piece_to_byte("<0x411>"), None);
        assert_eq!(piece_to_byte("0x41"), None);
    }
}
