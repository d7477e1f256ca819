//! CLIP's byte-level BPE, read straight from the bundled vocabulary's merges.
//!
//! `tokenizers` builds a BPE by owning every token string twice (vocabulary and reverse map) and
//! formatting every merged token to look it up: for CLIP's 49k tokens, 40-60 ms of every
//! `explain` on an open_clip checkpoint without its own tokenizer.json. Here the vocabulary and
//! merges are read as borrowed strings of the (decompressed, process-lifetime) file, merges
//! become id pairs (~22 ms in all), and a word is merged the way open_clip's
//! `SimpleTokenizer.bpe` does: the lowest-ranked adjacent pair, every occurrence left to right,
//! until none applies. `tests/tokenizer_parity.rs` checks the ids against open_clip.

use std::borrow::Cow;
use std::collections::HashMap;

/// The model section of a byte-level BPE tokenizer.json with an end-of-word suffix.
pub(crate) struct ClipBpe {
    /// `(left, right)` → `(rank, merged)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token text by id; `None` for ids the vocabulary skips.
    tokens: Vec<Option<Cow<'static, str>>>,
    /// The id of each byte's symbol, and of the same symbol ending a word.
    byte: [u32; 256],
    byte_end: [u32; 256],
}

#[derive(serde::Deserialize)]
struct File<'a> {
    #[serde(borrow)]
    model: Model<'a>,
}

#[derive(serde::Deserialize)]
struct Model<'a> {
    #[serde(rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    vocab: HashMap<Cow<'a, str>, u32>,
    #[serde(borrow)]
    merges: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    #[serde(borrow)]
    end_of_word_suffix: Option<Cow<'a, str>>,
}

impl ClipBpe {
    /// From a tokenizer.json whose model is a BPE with merges as pairs and an end-of-word
    /// suffix, over the byte-level alphabet `byte_chars` (byte → symbol). `None` if the file is
    /// not of that kind or a merge names a token the vocabulary lacks.
    pub fn from_json(json: &'static [u8], byte_chars: &[char; 256]) -> Option<ClipBpe> {
        let file: File<'static> = serde_json::from_slice(json).ok()?;
        let m = file.model;
        let suffix = m.end_of_word_suffix.filter(|s| !s.is_empty())?;
        if m.kind != "BPE" {
            return None;
        }
        let size = m.vocab.values().copied().max()? as usize + 1;
        let mut tokens: Vec<Option<Cow<'static, str>>> = vec![None; size];
        for (t, &id) in &m.vocab {
            tokens[id as usize] = Some(t.clone());
        }
        let id = |t: &str| m.vocab.get(t).copied();
        let (mut byte, mut byte_end) = ([0u32; 256], [0u32; 256]);
        for (b, c) in byte_chars.iter().enumerate() {
            byte[b] = id(c.encode_utf8(&mut [0; 4]))?;
            byte_end[b] = id(&format!("{c}{suffix}"))?;
        }
        let mut merges = HashMap::with_capacity(m.merges.len());
        let mut joined = String::new();
        for (rank, (a, b)) in m.merges.iter().enumerate() {
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let pair = (id(a)?, id(b)?);
            merges.insert(pair, (rank as u32, id(&joined)?));
        }
        Some(ClipBpe {
            merges,
            tokens,
            byte,
            byte_end,
        })
    }

    /// Ids of one pre-tokenized word (its UTF-8 bytes).
    pub fn tokenize(&self, word: &[u8]) -> Vec<u32> {
        let Some((&last, rest)) = word.split_last() else {
            return Vec::new();
        };
        let mut ids: Vec<u32> = rest.iter().map(|&b| self.byte[b as usize]).collect();
        ids.push(self.byte_end[last as usize]);
        while ids.len() > 1 {
            let best = ids
                .windows(2)
                .filter_map(|p| self.merges.get(&(p[0], p[1])))
                .min_by_key(|&&(rank, _)| rank);
            let Some(&(rank, merged)) = best else {
                break;
            };
            let mut out = Vec::with_capacity(ids.len());
            let mut i = 0;
            while i < ids.len() {
                let hit = i + 1 < ids.len()
                    && self.merges.get(&(ids[i], ids[i + 1])).is_some_and(|&(r, _)| r == rank);
                if hit {
                    out.push(merged);
                    i += 2;
                } else {
                    out.push(ids[i]);
                    i += 1;
                }
            }
            ids = out;
        }
        ids
    }

    /// The token text of `id` (byte-level symbols, end-of-word suffix included).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize)?.as_deref()
    }

    /// Number of ids (the largest plus one).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
}
