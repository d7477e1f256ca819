//! The caption tokenizer of whichever model family is loaded: CLIP's BPE (start and end tokens,
//! a causal text tower that stops at the end token) or SigLIP's SentencePiece (an end token, then
//! padding that the bidirectional text tower reads to the last position).

use super::siglip_tokenizer::SiglipTokenizer;
use super::tokenizer::{ClipTokenizer, Encoded};
use crate::{Error, Result};

/// A model's caption tokenizer.
#[derive(Clone, Debug)]
pub enum CaptionTokenizer {
    /// CLIP (transformers `tokenizer.json`, open_clip's BPE); boxed, being large.
    Clip(Box<ClipTokenizer>),
    /// SigLIP (`spiece.model`).
    Siglip(SiglipTokenizer),
}

impl From<ClipTokenizer> for CaptionTokenizer {
    fn from(t: ClipTokenizer) -> Self {
        CaptionTokenizer::Clip(Box::new(t))
    }
}

impl From<SiglipTokenizer> for CaptionTokenizer {
    fn from(t: SiglipTokenizer) -> Self {
        CaptionTokenizer::Siglip(t)
    }
}

impl CaptionTokenizer {
    /// The caption's ids padded to the context length; an error names a caption that is empty,
    /// or too long unless `truncate`.
    pub fn encode(&self, caption: &str, truncate: bool) -> Result<Encoded> {
        match self {
            CaptionTokenizer::Clip(t) => t.encode(caption, truncate),
            CaptionTokenizer::Siglip(t) => t.encode(caption, truncate),
        }
    }

    /// The text reference: CLIP's `[SOT, filler × filler_len, EOT, pad…]`; SigLIP's padding
    /// everywhere (it has no start token, and an end token would carry meaning of its own), so
    /// `filler_len` does not apply.
    pub fn reference(&self, filler_len: usize) -> Encoded {
        match self {
            CaptionTokenizer::Clip(t) => t.reference(filler_len),
            CaptionTokenizer::Siglip(t) => t.reference(),
        }
    }

    /// The words of `caption` the vocabulary does not hold, in order, each once.
    pub fn unknown_words(&self, caption: &str) -> Result<Vec<String>> {
        match self {
            CaptionTokenizer::Clip(t) => t.unknown_words(caption),
            CaptionTokenizer::Siglip(t) => t.unknown_words(caption),
        }
    }

    /// Every token as a display string, in id order.
    pub fn vocabulary(&self) -> Vec<String> {
        match self {
            CaptionTokenizer::Clip(t) => t.vocabulary(),
            CaptionTokenizer::Siglip(t) => t.vocabulary(),
        }
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match self {
            CaptionTokenizer::Clip(t) => t.vocab_size(),
            CaptionTokenizer::Siglip(t) => t.vocab_size(),
        }
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        match self {
            CaptionTokenizer::Clip(t) => t.pad_id(),
            CaptionTokenizer::Siglip(t) => t.pad_id(),
        }
    }

    /// Display strings for every position of `encoded` the text tower attributes: CLIP's up to
    /// the end token (`encoded.tokens`), SigLIP's to the end of the padded sequence.
    pub fn row_tokens(&self, encoded: &Encoded) -> Vec<String> {
        match self {
            CaptionTokenizer::Clip(_) => encoded.tokens.clone(),
            CaptionTokenizer::Siglip(t) => {
                let rest = encoded.ids[encoded.tokens.len()..].iter();
                let tail = rest.map(|&id| t.token_str(id));
                encoded.tokens.iter().cloned().chain(tail).collect()
            }
        }
    }

    /// The caption's content ids, without start, end or padding tokens; empty when nothing is
    /// left after cleaning (grounding aligns a phrase by tokenizing a caption's pieces apart).
    pub fn content_ids(&self, caption: &str) -> Result<Vec<u32>> {
        match self {
            CaptionTokenizer::Clip(t) => t.content_ids(caption),
            CaptionTokenizer::Siglip(t) => match t.encode(caption, true) {
                // Every id up to the end token.
                Ok(e) => Ok(e.ids[..e.len.saturating_sub(1)].to_vec()),
                Err(Error::Caption { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }

    /// The row of the first content token: 1 after CLIP's start token, 0 for SigLIP.
    pub fn first_content_row(&self) -> usize {
        match self {
            CaptionTokenizer::Clip(_) => 1,
            CaptionTokenizer::Siglip(_) => 0,
        }
    }

    /// Tokens the tokenizer adds around a caption's content (CLIP: start and end; SigLIP: end).
    pub fn added_tokens(&self) -> usize {
        self.first_content_row() + 1
    }

    /// The context length ids are padded to.
    pub fn context_length(&self) -> usize {
        match self {
            CaptionTokenizer::Clip(t) => t.context_length(),
            CaptionTokenizer::Siglip(t) => t.context_length(),
        }
    }

    /// The CLIP tokenizer, for the parts of pairlens that read CLIP's token strings (the
    /// mosaics' token spans, training).
    pub fn as_clip(&self) -> Option<&ClipTokenizer> {
        match self {
            CaptionTokenizer::Clip(t) => Some(t.as_ref()),
            CaptionTokenizer::Siglip(_) => None,
        }
    }
}
