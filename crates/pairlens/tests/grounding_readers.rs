//! The COCO and Flickr30k Entities readers on hand-written fixtures in the real file formats
//! (fixtures/grounding/{coco,flickr30k}), the category linker, and byte range → token span on
//! the built-in word-level tokenizer and the CLIP BPE tokenizer.

use std::path::{Path, PathBuf};

use candle_core::Device;
use pairlens::grounding::coco::{plural, Linker};
use pairlens::grounding::flickr30k::{parse_annotation, parse_sentence};
use pairlens::grounding::*;
use pairlens::io::caption_tokenizer::CaptionTokenizer;
use pairlens::io::siglip_tokenizer::SiglipTokenizer;
use pairlens::io::tokenizer::ClipTokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/grounding")
        .join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pairlens-readers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn builtin_tokenizer() -> CaptionTokenizer {
    pairlens::builtin::load(&Device::Cpu).unwrap().tokenizer
}

fn clip_bpe() -> CaptionTokenizer {
    ClipTokenizer::bundled_open_clip(77).unwrap().into()
}

/// SigLIP's SentencePiece tokenizer (the tiny fixture vocabulary) at SigLIP's context.
fn siglip_spm() -> CaptionTokenizer {
    let dir = fixture("../tokenizers/siglip-spm");
    SiglipTokenizer::from_dir(&dir, 64).unwrap().into()
}

fn coco(skipped: &mut Skipped) -> Vec<CaptionItem> {
    let d = fixture("coco");
    read_coco(
        &d.join("instances_tiny2017.json"),
        &d.join("captions_tiny2017.json"),
        &d.join("images"),
        skipped,
    )
    .unwrap()
}

#[test]
fn plural_and_linker() {
    assert_eq!(plural("dog"), "dogs");
    assert_eq!(plural("bus"), "buses");
    assert_eq!(plural("bench"), "benches");
    assert_eq!(plural("puppy"), "puppies");
    assert_eq!(plural("boy"), "boys");
    assert_eq!(plural("hot dog"), "hot dogs");
    let l = Linker::new();
    let cats = |s: &str| -> Vec<(String, &'static str)> {
        l.mentions(s)
            .into_iter()
            .map(|((a, b), c)| (s[a..b].to_string(), c))
            .collect()
    };
    let v = |pairs: &[(&str, &'static str)]| -> Vec<(String, &'static str)> {
        pairs.iter().map(|(a, c)| (a.to_string(), *c)).collect()
    };
    assert_eq!(
        cats("Two Women eat hot dogs; a dog waits by the TV-set."),
        v(&[
            ("Women", "person"),
            ("hot dogs", "hot dog"),
            ("dog", "dog"),
            ("TV-set", "tv")
        ])
    );
    assert_eq!(
        cats("a teddy bear and a bear"),
        v(&[("teddy bear", "teddy bear"), ("bear", "bear")])
    );
    // Whole words only; multi-word names need adjacent words.
    assert_eq!(cats("doggedly cat-like catalog"), v(&[("cat", "cat")]));
    assert_eq!(cats("a hot, dog"), v(&[("dog", "dog")]));
    assert_eq!(
        cats("the dining table's legs"),
        v(&[("dining table", "dining table")])
    );
    assert_eq!(
        cats("people with cellphones"),
        v(&[("people", "person"), ("cellphones", "cell phone")])
    );
}

#[test]
fn coco_linking_boxes_and_skips() {
    let mut skipped = Skipped::new();
    let items = coco(&mut skipped);
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    // Images in the instances file's order, captions in file order; 13 and 23 link nothing.
    assert_eq!(ids, ["11", "12", "21", "22"]);
    let it = &items[0];
    assert_eq!(it.image, "000000000139.jpg");
    assert!(it.image_path.ends_with("coco/images/000000000139.jpg"));
    assert!(it.origin.contains("captions_tiny2017.json") && it.origin.contains("caption id 11"));
    let p: Vec<(&str, &str, usize)> = it
        .phrases
        .iter()
        .map(|p| {
            (
                &it.caption[p.range.0..p.range.1],
                p.class.as_str(),
                p.boxes.len(),
            )
        })
        .collect();
    // Plural synonym → all person instances; "table" → dining table.
    assert_eq!(
        p,
        [
            ("men", "person", 2),
            ("table", "dining table", 1),
            ("dog", "dog", 1)
        ]
    );
    assert_eq!(it.phrases[0].range, (4, 7));
    // [x, y, w, h] → [x0, y0, x1, y1].
    assert_eq!(
        it.phrases[0].boxes,
        vec![[10.5, 4.0, 19.75, 30.0], [28.0, 6.0, 36.0, 30.0]]
    );
    // Multi-word category, any case.
    assert_eq!(items[1].phrases[0].range, (2, 14));
    assert_eq!(items[1].phrases[0].class, "dining table");
    // "teddy bear" is not a bear; "cellphone" is a cell phone; the zero-area phone box is dropped.
    let t = &items[2];
    assert_eq!(t.phrases.len(), 2);
    assert_eq!(
        (t.phrases[0].range, t.phrases[0].class.as_str()),
        ((2, 12), "teddy bear")
    );
    assert_eq!(
        (t.phrases[1].range, t.phrases[1].class.as_str()),
        ((23, 32), "cell phone")
    );
    assert_eq!(t.phrases[1].boxes, vec![[30.0, 12.0, 36.0, 24.0]]);
    // "bears": no bear in the image → not linked; "phone" still is.
    assert_eq!(items[3].phrases.len(), 1);
    assert_eq!(items[3].phrases[0].class, "cell phone");
    assert_eq!(skipped["captions with no linked category"], 2);
    assert_eq!(
        skipped["category mentions with no instance in the image"],
        2
    );
    assert_eq!(skipped["instance boxes with no area"], 1);
}

#[test]
fn char_ranges_to_token_spans_on_both_tokenizers() {
    for (name, tok) in [
        ("built-in word-level", builtin_tokenizer()),
        ("CLIP BPE", clip_bpe()),
    ] {
        let mut skipped = Skipped::new();
        let items = align_items(coco(&mut Skipped::new()), &tok, &mut skipped).unwrap();
        assert_eq!(items.len(), 4, "{name}");
        // SOT two men sit at a table with a dog . EOT
        let spans: Vec<(usize, usize)> = items[0].phrases.iter().map(|p| p.span).collect();
        assert_eq!(spans, [(2, 3), (6, 7), (9, 10)], "{name}");
        assert_eq!(items[0].phrases[1].text.as_deref(), Some("table"));
        // SOT a dining table in a room EOT
        assert_eq!(items[1].phrases[0].span, (2, 4), "{name}");
        // The spans select exactly the phrase's tokens.
        for it in &items {
            let enc = tok.encode(&it.caption, false).unwrap();
            for p in &it.phrases {
                let want = tok.content_ids(p.text.as_deref().unwrap()).unwrap();
                assert_eq!(
                    &enc.ids[p.span.0..p.span.1],
                    want.as_slice(),
                    "{name}: {:?}",
                    p.text
                );
            }
        }
        assert!(skipped.is_empty(), "{name}: {skipped:?}");
    }
    // SigLIP: no start token, so spans start at the first word's row; a word may be several
    // pieces. The spans still select exactly each phrase's pieces.
    let spm = siglip_spm();
    let items = align_items(coco(&mut Skipped::new()), &spm, &mut Skipped::new()).unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(token_span(&spm, "a dog", (2, 5)).unwrap(), Some((1, 2)));
    for it in &items {
        let enc = spm.encode(&it.caption, false).unwrap();
        for p in &it.phrases {
            let want = spm.content_ids(p.text.as_deref().unwrap()).unwrap();
            assert_eq!(
                &enc.ids[p.span.0..p.span.1],
                want.as_slice(),
                "{:?}",
                p.text
            );
        }
    }
    // BPE splits a word the word-level tokenizer keeps whole: the span covers all its pieces.
    let bpe = clip_bpe();
    let caption = "A zebraphone rings";
    let pieces = bpe.content_ids("zebraphone").unwrap().len();
    assert!(pieces > 1);
    assert_eq!(
        token_span(&bpe, caption, (2, 12)).unwrap(),
        Some((2, 2 + pieces))
    );
    assert_eq!(
        token_span(&builtin_tokenizer(), caption, (2, 12)).unwrap(),
        Some((2, 3))
    );
    // A range inside a word does not line up with the caption's tokens: skipped, not guessed.
    assert_eq!(token_span(&bpe, caption, (2, 7)).unwrap(), None);
    // Off a character boundary or out of range: an error.
    assert!(token_span(&bpe, "a café", (2, 6)).is_err(), "inside é");
    assert!(token_span(&bpe, "a dog", (2, 9)).is_err());
    // Captions over the context are skipped and counted.
    let long = CaptionItem {
        id: "1".into(),
        image: "x.jpg".into(),
        image_path: "x.jpg".into(),
        caption: "a dog ".repeat(40),
        phrases: vec![TextPhrase {
            range: (2, 5),
            class: "dog".into(),
            boxes: vec![[0.0, 0.0, 1.0, 1.0]],
        }],
        origin: "here".into(),
    };
    let mut skipped = Skipped::new();
    assert!(align_items(vec![long], &bpe, &mut skipped)
        .unwrap()
        .is_empty());
    assert_eq!(skipped["captions longer than the model's context"], 1);
}

#[test]
fn coco_bad_files_name_the_file_and_id() {
    let dir = temp_dir("coco");
    let d = fixture("coco");
    let (inst, caps, imgs) = (
        d.join("instances_tiny2017.json"),
        d.join("captions_tiny2017.json"),
        d.join("images"),
    );
    let err = |i: &Path, c: &Path| {
        read_coco(i, c, &imgs, &mut Skipped::new())
            .unwrap_err()
            .to_string()
    };
    let e = err(&dir.join("missing.json"), &caps);
    assert!(e.contains("missing.json"), "{e}");
    let bad = dir.join("instances_bad.json");
    std::fs::write(&bad, "{\"images\": [}").unwrap();
    let e = err(&bad, &caps);
    assert!(
        e.contains("instances_bad.json") && e.contains("instances"),
        "{e}"
    );
    let text = std::fs::read_to_string(&inst)
        .unwrap()
        .replace("\"category_id\": 18", "\"category_id\": 99");
    std::fs::write(&bad, text).unwrap();
    let e = err(&bad, &caps);
    assert!(
        e.contains("annotation id 1004") && e.contains("category_id 99"),
        "{e}"
    );
    let other = dir.join("captions_other.json");
    std::fs::write(
        &other,
        "{\"annotations\": [{\"image_id\": 5, \"id\": 1, \"caption\": \"a dog\"}]}",
    )
    .unwrap();
    let e = err(&inst, &other);
    assert!(
        e.contains("captions_other.json") && e.contains("same split"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flickr30k_sentence_and_annotation_parsing() {
    let (plain, ph) =
        parse_sentence("[/EN#18/people A man] in [/EN#19/clothing an orange hat] starring at [/EN#20/other something] .")
            .unwrap();
    assert_eq!(plain, "A man in an orange hat starring at something .");
    let got: Vec<(&str, &str, &str)> = ph
        .iter()
        .map(|p| {
            (
                &plain[p.range.0..p.range.1],
                p.chain.as_str(),
                p.types[0].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("A man", "18", "people"),
            ("an orange hat", "19", "clothing"),
            ("something", "20", "other")
        ]
    );
    let (_, ph) = parse_sentence("[/EN#23/people/other Two workers] wave").unwrap();
    assert_eq!(ph[0].types, ["people", "other"]);
    for (bad, what) in [
        ("[/EN#1/people A man", "not closed"),
        ("[EN#1/people A man]", "does not open"),
        ("a [/EN#1/people] b", "no words"),
        ("a [/EN#1 man]", "no type"),
    ] {
        let e = parse_sentence(bad).unwrap_err();
        assert!(e.contains(what), "{bad}: {e}");
    }
    let ann = parse_annotation(
        &std::fs::read_to_string(fixture("flickr30k/Annotations/1000092795.xml")).unwrap(),
    )
    .unwrap();
    // VOC 1-based inclusive → 0-based, exclusive end.
    assert_eq!(ann.boxes["18"], vec![[4.0, 3.0, 20.0, 34.0]]);
    // Two boxes for chain 23; the second object names chains 23 and 25.
    assert_eq!(ann.boxes["23"].len(), 2);
    assert_eq!(ann.boxes["25"], vec![[31.0, 7.0, 44.0, 32.0]]);
    assert!(ann.nobox.contains("20") && !ann.scene.contains("20"));
    assert!(ann.scene.contains("22") && !ann.nobox.contains("22"));
    let e = parse_annotation("<annotation>\n<object><name>1</name>\n<bndbox><xmin>3</xmin><ymin>x</ymin><xmax>4</xmax><ymax>5</ymax></bndbox></object></annotation>").unwrap_err();
    assert!(e.contains("line 3") && e.contains("<ymin>"), "{e}");
    let e = parse_annotation("<annotation>\n<object><name>1</name>\n</annotation>").unwrap_err();
    assert!(e.contains("line 3") && e.contains("</annotation>"), "{e}");
}

#[test]
fn flickr30k_reader_fixture() {
    let d = fixture("flickr30k");
    let mut skipped = Skipped::new();
    let items = read_flickr30k(
        &d.join("Sentences"),
        &d.join("Annotations"),
        &d.join("images"),
        None,
        &mut skipped,
    )
    .unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "1000092795#0",
            "1000092795#1",
            "1000092795#3",
            "1000092795#4",
            "2000000001#0"
        ]
    );
    let it = &items[0];
    assert_eq!(it.image, "1000092795.jpg");
    assert!(it.image_path.ends_with("flickr30k/images/1000092795.jpg"));
    assert!(
        it.origin.ends_with("1000092795.txt line 1"),
        "{}",
        it.origin
    );
    assert_eq!(it.phrases.len(), 2, "\"something\" has no box");
    assert_eq!(
        (it.phrases[1].range, it.phrases[1].class.as_str()),
        ((9, 22), "clothing")
    );
    assert_eq!(it.phrases[1].boxes, vec![[7.0, 2.0, 16.0, 10.0]]);
    // Multi-type phrase: the first type; multi-instance chain: all boxes.
    let w = &items[2];
    assert_eq!(
        &w.caption[w.phrases[0].range.0..w.phrases[0].range.1],
        "Two workers"
    );
    assert_eq!(w.phrases[0].class, "people");
    assert_eq!(
        w.phrases[0].boxes,
        vec![[21.0, 5.0, 30.0, 30.0], [31.0, 7.0, 44.0, 32.0]]
    );
    assert_eq!(skipped["phrases marked nobndbox (no box)"], 1);
    assert_eq!(skipped["phrases of the whole scene (no box)"], 2);
    assert_eq!(skipped["phrases not visual (chain 0)"], 1);
    assert_eq!(
        skipped["phrases whose chain has no object in the annotation"],
        1
    );
    assert_eq!(skipped["captions with no boxed phrase"], 1);
    // Token spans on both tokenizers: SOT a man in an orange hat … EOT
    for tok in [builtin_tokenizer(), clip_bpe()] {
        let al = align_items(items.clone(), &tok, &mut Skipped::new()).unwrap();
        assert_eq!(al[0].phrases[0].span, (1, 3));
        assert_eq!(al[0].phrases[1].span, (4, 7));
        assert_eq!(al[2].phrases[1].span, (5, 7), "their friend");
    }
    // --ids: only the listed images (".jpg" dropped, blank lines ignored).
    let only = read_flickr30k(
        &d.join("Sentences"),
        &d.join("Annotations"),
        &d.join("images"),
        Some(&d.join("ids.txt")),
        &mut Skipped::new(),
    )
    .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, "2000000001#0");
}

#[test]
fn flickr30k_bad_files_name_the_file_and_line() {
    let dir = temp_dir("flickr");
    let (s, a) = (dir.join("Sentences"), dir.join("Annotations"));
    std::fs::create_dir_all(&s).unwrap();
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(
        s.join("7.txt"),
        "[/EN#1/people A man] runs .\n[/EN#2/people A woman walks .\n",
    )
    .unwrap();
    std::fs::write(
        a.join("7.xml"),
        "<annotation><object><name>1</name><nobndbox>1</nobndbox></object></annotation>",
    )
    .unwrap();
    let read = || {
        read_flickr30k(&s, &a, &dir, None, &mut Skipped::new())
            .unwrap_err()
            .to_string()
    };
    let e = read();
    assert!(
        e.contains("7.txt") && e.contains("line 2") && e.contains("not closed"),
        "{e}"
    );
    std::fs::write(s.join("7.txt"), "[/EN#1/people A man] runs .\n").unwrap();
    std::fs::write(
        a.join("7.xml"),
        "<annotation>\n<object>\n<name>1</name>\n</objet>\n</annotation>",
    )
    .unwrap();
    let e = read();
    assert!(
        e.contains("7.xml") && e.contains("line 4") && e.contains("</objet>"),
        "{e}"
    );
    std::fs::remove_file(a.join("7.xml")).unwrap();
    let e = read();
    assert!(e.contains("7.xml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
