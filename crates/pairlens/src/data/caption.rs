//! The caption grammar of the mosaics, and the word-level tokenizer it is written for.
//!
//! Captions are lowercase words separated by single spaces, with no punctuation, so the
//! built-in model's word-level tokenizer ([`word_level_tokenizer_json`]) gives exactly one
//! token per word after the start token: word `w` of a caption is token `w + 1` (SOT = 0), and
//! every [`Phrase::span`] is in those token indices.
//!
//! ```text
//! caption := [prefix] clause ("and" clause)*
//! clause  := np | np relation np          (the relation is true of the boxes)
//! np      := "a"/"an" noun | count nouns  (a count phrase names all items of one class)
//! ```

use serde::Serialize;

use super::rng::Rng;

/// Singular and plural forms of each class's names (synonyms), label order. "T-shirt" is
/// written "t shirt" so the word-level tokenizer needs no hyphen.
pub const CLASS_NOUNS: [&[(&str, &str)]; 10] = [
    &[("t shirt", "t shirts"), ("tee", "tees"), ("top", "tops")],
    &[
        ("pair of trousers", "pairs of trousers"),
        ("pair of pants", "pairs of pants"),
    ],
    &[
        ("pullover", "pullovers"),
        ("sweater", "sweaters"),
        ("jumper", "jumpers"),
    ],
    &[("dress", "dresses")],
    &[("coat", "coats"), ("jacket", "jackets")],
    &[("sandal", "sandals")],
    &[("shirt", "shirts"), ("blouse", "blouses")],
    &[
        ("sneaker", "sneakers"),
        ("trainer", "trainers"),
        ("running shoe", "running shoes"),
    ],
    &[
        ("bag", "bags"),
        ("handbag", "handbags"),
        ("purse", "purses"),
    ],
    &[("ankle boot", "ankle boots"), ("boot", "boots")],
];

/// Count words for 2..=10 items of one class; more than ten are "many".
const COUNTS: [&str; 9] = [
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];

const PREFIXES: [&str; 3] = ["a photo of", "a picture of", "an image of"];

/// Chance that a caption starts with one of [`PREFIXES`].
const PREFIX_PROB: f32 = 0.4;
/// Chance that two neighbouring phrases are joined by a relation (when one is clear).
const RELATION_PROB: f32 = 0.75;
/// A relation is only said when box centres are this many pixels apart along its axis, so it
/// is visibly true, not just true by a pixel.
const RELATION_MARGIN: u32 = 4;

/// Special tokens of the word-level tokenizer, ids 0..4 in this order.
const PAD: &str = "<pad>";
const UNK: &str = "<unk>";
const SOT: &str = "<|startoftext|>";
const EOT: &str = "<|endoftext|>";

/// A spatial relation between two object phrases, judged on box centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// Every subject box centre has a smaller x than every object box centre.
    LeftOf,
    /// Every subject box centre has a larger x than every object box centre.
    RightOf,
    /// Every subject box centre has a smaller y (is higher) than every object box centre.
    Above,
    /// Every subject box centre has a larger y (is lower) than every object box centre.
    Below,
    /// Left of or right of, and every subject box overlaps every object box in y (side by side).
    NextTo,
}

impl RelationKind {
    /// Every kind, in declaration order.
    const ALL: [RelationKind; 5] = [
        RelationKind::LeftOf,
        RelationKind::RightOf,
        RelationKind::Above,
        RelationKind::Below,
        RelationKind::NextTo,
    ];

    /// The ways the grammar says it.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            RelationKind::LeftOf => &["left of", "to the left of"],
            RelationKind::RightOf => &["right of", "to the right of"],
            RelationKind::Above => &["above", "over"],
            RelationKind::Below => &["below", "under", "beneath"],
            RelationKind::NextTo => &["next to", "beside"],
        }
    }

    /// Whether the relation is true of the boxes (`[x0, y0, x1, y1]`, exclusive end).
    pub fn holds(self, subject: &[[u32; 4]], object: &[[u32; 4]]) -> bool {
        self.holds_with_margin(subject, object, 0)
    }

    /// As [`Self::holds`], with centres at least `margin` pixels apart along the axis.
    fn holds_with_margin(self, subject: &[[u32; 4]], object: &[[u32; 4]], margin: u32) -> bool {
        if subject.is_empty() || object.is_empty() {
            return false;
        }
        // Doubled centres keep the comparison in integers.
        let m = 2 * margin as i64;
        let all = |f: &dyn Fn(&[u32; 4], &[u32; 4]) -> bool| {
            subject.iter().all(|a| object.iter().all(|b| f(a, b)))
        };
        let cx = |b: &[u32; 4]| b[0] as i64 + b[2] as i64;
        let cy = |b: &[u32; 4]| b[1] as i64 + b[3] as i64;
        let before = |a: i64, b: i64| b - a > 0 && b - a >= m;
        match self {
            RelationKind::LeftOf => all(&|a, b| before(cx(a), cx(b))),
            RelationKind::RightOf => all(&|a, b| before(cx(b), cx(a))),
            RelationKind::Above => all(&|a, b| before(cy(a), cy(b))),
            RelationKind::Below => all(&|a, b| before(cy(b), cy(a))),
            RelationKind::NextTo => {
                (RelationKind::LeftOf.holds_with_margin(subject, object, margin)
                    || RelationKind::RightOf.holds_with_margin(subject, object, margin))
                    && all(&|a, b| a[1] < b[3] && b[1] < a[3])
            }
        }
    }
}

/// One object phrase of a caption: the words that name some items, and their boxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phrase {
    /// Token indices `[start, end)` of the whole noun phrase ("two sneakers", "a bag") under the
    /// word-level tokenizer: word `w` of the caption is token `w + 1` (SOT = 0).
    pub span: [usize; 2],
    /// Token indices of the noun alone, without its article or count ("sneakers").
    pub noun: [usize; 2],
    /// The phrase's words, e.g. "two running shoes".
    pub text: String,
    /// Fashion-MNIST label of the items named.
    pub class: u8,
    /// Boxes of every item the phrase refers to (several for a count phrase), `[x0, y0, x1, y1]`.
    pub boxes: Vec<[u32; 4]>,
    /// Indices into the mosaic's items, parallel to `boxes`.
    pub items: Vec<usize>,
}

/// A relation the caption states: `phrases[subject] kind phrases[object]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Relation {
    /// What the caption says of the two phrases.
    pub kind: RelationKind,
    /// Index into the caption's phrases of the phrase the relation is stated of.
    pub subject: usize,
    /// Index into the caption's phrases of the phrase it is stated relative to.
    pub object: usize,
}

/// A caption with its phrases and stated relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    pub(crate) caption: String,
    pub(crate) phrases: Vec<Phrase>,
    pub(crate) relations: Vec<Relation>,
}

/// Whether a caption with these phrases and relations is true of a canvas holding `items`
/// (`(class, bbox)`): the same classes with the same counts (captions name every item), and
/// every stated relation holds between the boxes of those classes. A caption is true of the
/// mosaic it was written for, and of any other with the same content where its relations
/// hold — those pairs are not negatives in contrastive training.
pub(crate) fn caption_fits(
    phrases: &[Phrase],
    relations: &[Relation],
    items: &[(u8, [u32; 4])],
) -> bool {
    let boxes_of = |class: u8| -> Vec<[u32; 4]> {
        items
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, b)| *b)
            .collect()
    };
    let named: usize = phrases.iter().map(|p| p.boxes.len()).sum();
    named == items.len()
        && phrases
            .iter()
            .all(|p| boxes_of(p.class).len() == p.boxes.len())
        && relations.iter().all(|r| {
            let (s, o) = (&phrases[r.subject], &phrases[r.object]);
            r.kind.holds(&boxes_of(s.class), &boxes_of(o.class))
        })
}

/// Word for `n ≥ 2` items of one class.
pub fn count_word(n: usize) -> &'static str {
    COUNTS.get(n.wrapping_sub(2)).copied().unwrap_or("many")
}

/// Describe items given as `(class, bbox)` in canvas order. Items of one class form one
/// phrase (a count phrase when several); phrases come in random order, joined by "and" or by a
/// relation that holds with [`RELATION_MARGIN`].
pub(crate) fn describe(items: &[(u8, [u32; 4])], rng: &mut Rng) -> Described {
    // Group by class, in order of first appearance (no hash maps: keeps it deterministic).
    let mut groups: Vec<(u8, Vec<usize>)> = Vec::new();
    for (i, &(class, _)) in items.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == class) {
            Some(g) => g.1.push(i),
            None => groups.push((class, vec![i])),
        }
    }
    rng.shuffle(&mut groups);

    let mut words: Vec<&str> = Vec::new();
    if rng.chance(PREFIX_PROB) {
        words.extend(rng.pick(&PREFIXES).split(' '));
    }
    let mut phrases = Vec::with_capacity(groups.len());
    let mut relations = Vec::new();
    let boxes_of = |g: &(u8, Vec<usize>)| g.1.iter().map(|&i| items[i].1).collect::<Vec<_>>();
    let mut g = 0;
    while g < groups.len() {
        if g > 0 {
            words.push("and");
        }
        push_phrase(
            &mut words,
            &mut phrases,
            &groups[g],
            boxes_of(&groups[g]),
            rng,
        );
        if g + 1 < groups.len() {
            let (a, b) = (boxes_of(&groups[g]), boxes_of(&groups[g + 1]));
            let usable: Vec<RelationKind> = RelationKind::ALL
                .into_iter()
                .filter(|k| k.holds_with_margin(&a, &b, RELATION_MARGIN))
                .collect();
            if !usable.is_empty() && rng.chance(RELATION_PROB) {
                let kind = *rng.pick(&usable);
                words.extend(rng.pick(kind.words()).split(' '));
                push_phrase(&mut words, &mut phrases, &groups[g + 1], b, rng);
                relations.push(Relation {
                    kind,
                    subject: phrases.len() - 2,
                    object: phrases.len() - 1,
                });
                g += 2;
                continue;
            }
        }
        g += 1;
    }
    Described {
        caption: words.join(" "),
        phrases,
        relations,
    }
}

fn push_phrase(
    words: &mut Vec<&'static str>,
    phrases: &mut Vec<Phrase>,
    group: &(u8, Vec<usize>),
    boxes: Vec<[u32; 4]>,
    rng: &mut Rng,
) {
    let (class, members) = group;
    let (singular, plural) = *rng.pick(CLASS_NOUNS[*class as usize]);
    let start = words.len();
    let noun = if members.len() == 1 {
        words.push(if singular.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        });
        singular
    } else {
        words.push(count_word(members.len()));
        plural
    };
    let noun_start = words.len();
    words.extend(noun.split(' '));
    phrases.push(Phrase {
        span: [start + 1, words.len() + 1],
        noun: [noun_start + 1, words.len() + 1],
        text: words[start..].join(" "),
        class: *class,
        boxes,
        items: members.clone(),
    });
}

/// Longest caption, in words, for mosaics of up to `max_items` items: a 3-word prefix, at most
/// 4 words per phrase ("two pairs of trousers") and 4 per connector ("to the left of").
pub fn max_caption_words(max_items: usize) -> usize {
    3 + 4 * max_items + 4 * max_items.saturating_sub(1)
}

/// Every word the grammar can produce, lowercase, sorted, without duplicates.
pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<&str> = vec!["a", "an", "and", "many"];
    words.extend(COUNTS);
    for p in PREFIXES {
        words.extend(p.split(' '));
    }
    for nouns in CLASS_NOUNS {
        for (s, p) in nouns {
            words.extend(s.split(' ').chain(p.split(' ')));
        }
    }
    for k in RelationKind::ALL {
        for w in k.words() {
            words.extend(w.split(' '));
        }
    }
    let mut out: Vec<String> = words.into_iter().map(str::to_string).collect();
    out.sort();
    out.dedup();
    out
}

/// A Hugging Face tokenizer.json for the built-in model: WordLevel over `<pad>`, `<unk>`,
/// `<|startoftext|>`, `<|endoftext|>` (ids 0–3) then `vocab` in order (duplicates and
/// specials skipped), a lowercase normalizer, the whitespace pre-tokenizer and a template
/// adding SOT/EOT — one token per caption word. Pads with `<pad>` (id 0).
pub fn word_level_tokenizer_json(vocab: &[String]) -> String {
    use serde_json::json;
    let specials = [PAD, UNK, SOT, EOT];
    let mut map = serde_json::Map::new();
    for w in specials
        .iter()
        .copied()
        .chain(vocab.iter().map(String::as_str))
    {
        if !map.contains_key(w) {
            let id = map.len();
            map.insert(w.to_string(), json!(id));
        }
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": PAD},
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": SOT, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": EOT, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": SOT, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": EOT, "type_id": 0}}],
            "special_tokens": {
                SOT: {"id": SOT, "ids": [2], "tokens": [SOT]},
                EOT: {"id": EOT, "ids": [3], "tokens": [EOT]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": map, "unk_token": UNK}
    });
    serde_json::to_string(&tok).expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEFT: [u32; 4] = [0, 20, 28, 48];
    const RIGHT: [u32; 4] = [36, 20, 64, 48];
    const TOP: [u32; 4] = [36, 0, 64, 28];

    /// The caption `describe` writes for `items` under `seed`.
    fn caption(items: &[(u8, [u32; 4])], seed: u64) -> Described {
        describe(items, &mut Rng::for_index(seed, 0))
    }

    #[test]
    fn a_caption_fits_its_own_items_in_any_wording() {
        let items = [(4, LEFT), (8, RIGHT)];
        for seed in 0..50 {
            let d = caption(&items, seed);
            assert!(
                caption_fits(&d.phrases, &d.relations, &items),
                "{}",
                d.caption
            );
            // The same content with the boxes listed in the other order.
            assert!(caption_fits(
                &d.phrases,
                &d.relations,
                &[items[1], items[0]]
            ));
        }
    }

    #[test]
    fn a_caption_does_not_fit_other_items_or_counts() {
        let d = caption(&[(4, LEFT)], 0);
        assert!(caption_fits(&d.phrases, &d.relations, &[(4, RIGHT)]));
        assert!(!caption_fits(&d.phrases, &d.relations, &[(6, LEFT)]));
        assert!(!caption_fits(
            &d.phrases,
            &d.relations,
            &[(4, LEFT), (4, RIGHT)]
        ));
        assert!(!caption_fits(
            &d.phrases,
            &d.relations,
            &[(4, LEFT), (8, RIGHT)]
        ));
        let two = caption(&[(4, LEFT), (4, RIGHT)], 0);
        assert!(!caption_fits(&two.phrases, &two.relations, &[(4, LEFT)]));
    }

    #[test]
    fn a_stated_relation_must_hold() {
        let items = [(4, LEFT), (8, RIGHT)];
        let swapped = [(4, RIGHT), (8, LEFT)];
        let (mut with, mut without) = (0, 0);
        for seed in 0..50 {
            let d = caption(&items, seed);
            // "next to" is true either way round; "left of" / "right of" flip.
            let directed = d.relations.iter().any(|r| r.kind != RelationKind::NextTo);
            with += directed as usize;
            without += d.relations.is_empty() as usize;
            let fits = caption_fits(&d.phrases, &d.relations, &swapped);
            assert_eq!(fits, !directed, "{}", d.caption);
        }
        assert!(with > 0 && without > 0);
        // "above" is judged on the other axis: a coat above a bag stays true side by side.
        let d = (0..50)
            .map(|s| caption(&[(4, TOP), (8, LEFT)], s))
            .find(|d| d.relations.iter().any(|r| r.kind == RelationKind::Above))
            .expect("some seed says `above`");
        assert!(!caption_fits(
            &d.phrases,
            &d.relations,
            &[(4, LEFT), (8, RIGHT)]
        ));
    }
}
