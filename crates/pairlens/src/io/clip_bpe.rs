//! CLIP's byte-level BPE for the bundled vocabulary, from tables derived at build time.
//!
//! `tokenizers` builds a BPE from the JSON vocabulary by owning every token string twice and
//! formatting every merged token to look it up: for CLIP's 49k tokens, 40-60 ms of every
//! `explain` on an open_clip checkpoint without its own tokenizer.json. `build.rs` turns the
//! bundled file into id triples (left, right, merged) and the few tokens no merge produces; from
//! those the merge table takes ~3 ms. A word is merged the way open_clip's
//! `SimpleTokenizer.bpe` does: the lowest-ranked adjacent pair, every occurrence left to right,
//! until none applies. `tests/tokenizer_parity.rs` checks the ids against open_clip, a unit test
//! in `tokenizer.rs` the ids and every token's text against `tokenizers`.

use std::collections::HashMap;

/// The bundled CLIP vocabulary's byte-level BPE: merge table and token texts by id.
pub(crate) struct ClipBpe {
    /// `(left, right)` → `(rank, merged)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The two parts of each merged token, by id.
    parts: Vec<Option<(u32, u32)>>,
    /// The tokens no merge produces (byte symbols, with and without the end-of-word suffix;
    /// specials), by id.
    base: HashMap<u32, String>,
    /// The id of each byte's symbol.
    byte: [u32; 256],
    /// The id of each byte's symbol with the end-of-word suffix.
    byte_end: [u32; 256],
    /// Vocabulary size; every id is below it.
    size: usize,
}

impl ClipBpe {
    /// From `merges` (little-endian u32 triples: left, right, merged, in rank order), the
    /// `base` tokens, the vocabulary `size`, the end-of-word `suffix` and the byte-level
    /// alphabet `byte_chars` (byte → symbol). `None` if an id is out of range or a byte's symbol
    /// is not a base token.
    pub fn from_tables(
        merges: &[u8],
        base: HashMap<u32, String>,
        size: usize,
        suffix: &str,
        byte_chars: &[char; 256],
    ) -> Option<ClipBpe> {
        let ids: Vec<u32> = merges
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let mut table = HashMap::with_capacity(ids.len() / 3);
        let mut parts = vec![None; size];
        for (rank, t) in ids.chunks_exact(3).enumerate() {
            let (a, b, m) = (t[0], t[1], t[2]);
            if [a, b, m].iter().any(|&i| i as usize >= size) {
                return None;
            }
            table.insert((a, b), (rank as u32, m));
            parts[m as usize] = Some((a, b));
        }
        let by_text: HashMap<&str, u32> = base.iter().map(|(&i, t)| (t.as_str(), i)).collect();
        let (mut byte, mut byte_end) = ([0u32; 256], [0u32; 256]);
        for (b, c) in byte_chars.iter().enumerate() {
            byte[b] = *by_text.get(c.encode_utf8(&mut [0; 4]) as &str)?;
            byte_end[b] = *by_text.get(format!("{c}{suffix}").as_str())?;
        }
        Some(ClipBpe {
            merges: table,
            parts,
            base,
            byte,
            byte_end,
            size,
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
                    && self
                        .merges
                        .get(&(ids[i], ids[i + 1]))
                        .is_some_and(|&(r, _)| r == rank);
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
    pub fn token(&self, id: u32) -> Option<String> {
        if let Some(t) = self.base.get(&id) {
            return Some(t.clone());
        }
        let (a, b) = (*self.parts.get(id as usize)?)?;
        Some(self.token(a)? + &self.token(b)?)
    }

    /// The id of a token no merge produces (a special, a byte symbol).
    pub fn base_id(&self, token: &str) -> Option<u32> {
        self.base
            .iter()
            .find(|(_, t)| t.as_str() == token)
            .map(|(&i, _)| i)
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.size
    }
}
