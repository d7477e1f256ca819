//! Fashion-MNIST mosaics on the committed sample (`fixtures/fashion_mnist_sample`, 20 items per
//! class per split, made by `make_sample.py` there): IDX reading and its errors, determinism,
//! boxes, relation truth, token spans under the word-level tokenizer, and the exporter.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pairlens::data::caption::{count_word, CLASS_NOUNS};
use pairlens::data::export::{image_name, jsonl_line};
use pairlens::data::idx::write_idx;
use pairlens::data::mosaic::{resize_box, tight_box};
use pairlens::data::{
    export, max_caption_words, vocabulary, word_level_tokenizer_json, FashionMnist, Mosaic,
    MosaicConfig, MosaicGenerator, RelationKind, Split, CLASS_KEYS,
};
use pairlens::io::tokenizer::{ClipTokenizer, TextCleaning};
use pairlens::Error;

fn sample_dir() -> PathBuf {
    support::fixtures().join("fashion_mnist_sample")
}

fn sample(split: Split) -> FashionMnist {
    FashionMnist::load(&sample_dir(), split).unwrap()
}

/// A fresh empty directory under cargo's per-target temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data_mosaics-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quiet() -> MosaicConfig {
    MosaicConfig {
        noisy_fraction: 0.0,
        ..MosaicConfig::default()
    }
}

#[test]
fn sample_loads_both_splits() {
    for split in [Split::Train, Split::Test] {
        let d = sample(split);
        assert_eq!(d.len(), 200);
        assert_eq!(d.images.len(), 200);
        for class in 0..10u8 {
            assert_eq!(d.labels.iter().filter(|&&l| l == class).count(), 20);
        }
    }
    // The splits are different images.
    let (a, b) = (sample(Split::Train), sample(Split::Test));
    let train: HashSet<&[u8; 784]> = a.images.iter().collect();
    assert!(b.images.iter().all(|i| !train.contains(i)));
}

fn expect_dataset_error(r: pairlens::Result<FashionMnist>, path: &Path, needle: &str) {
    match r {
        Err(e @ Error::Dataset { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
        other => panic!(
            "expected a dataset error for {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn idx_reader_errors_name_the_file() {
    let dir = temp_dir("idx-errors");
    let images: Vec<u8> = (0..3 * 784).map(|i| (i % 251) as u8).collect();
    let good_images = write_idx(&[3, 28, 28], &images);
    let good_labels = write_idx(&[3], &[0, 7, 9]);
    let img = dir.join("images");
    let lab = dir.join("labels");
    std::fs::write(&img, &good_images).unwrap();
    std::fs::write(&lab, &good_labels).unwrap();
    let d = FashionMnist::load_files(&img, &lab).unwrap();
    assert_eq!(d.labels, vec![0, 7, 9]);
    assert_eq!(&d.images[1][..], &images[784..2 * 784]);

    // Truncated body.
    std::fs::write(&img, &good_images[..good_images.len() - 5]).unwrap();
    expect_dataset_error(FashionMnist::load_files(&img, &lab), &img, "truncated");
    // Truncated header.
    std::fs::write(&img, &good_images[..10]).unwrap();
    expect_dataset_error(
        FashionMnist::load_files(&img, &lab),
        &img,
        "truncated IDX header",
    );
    // Trailing bytes.
    let mut long = good_images.clone();
    long.push(0);
    std::fs::write(&img, &long).unwrap();
    expect_dataset_error(FashionMnist::load_files(&img, &lab), &img, "trailing");
    // Bad magic: a labels file where images are expected.
    std::fs::write(&img, &good_labels).unwrap();
    expect_dataset_error(FashionMnist::load_files(&img, &lab), &img, "bad IDX magic");
    // Wrong image size.
    std::fs::write(&img, write_idx(&[3, 14, 56], &images)).unwrap();
    expect_dataset_error(FashionMnist::load_files(&img, &lab), &img, "expected 28×28");
    std::fs::write(&img, &good_images).unwrap();
    // Label count mismatch and a label out of range.
    std::fs::write(&lab, write_idx(&[2], &[0, 1])).unwrap();
    expect_dataset_error(
        FashionMnist::load_files(&img, &lab),
        &lab,
        "2 labels for 3 images",
    );
    std::fs::write(&lab, write_idx(&[3], &[0, 10, 1])).unwrap();
    expect_dataset_error(FashionMnist::load_files(&img, &lab), &lab, "label 10");

    // A truncated gzip stream.
    let gz = std::fs::read(sample_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(&lab, &gz[..gz.len() / 2]).unwrap();
    expect_dataset_error(FashionMnist::load_files(&img, &lab), &lab, "gunzip");

    // A directory without the files.
    let err = FashionMnist::load(&dir, Split::Train).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
}

#[test]
fn same_seed_and_index_give_identical_mosaics() {
    let data = sample(Split::Train);
    let a = MosaicGenerator::new(data.clone(), MosaicConfig::default(), 7);
    let b = MosaicGenerator::new(data.clone(), MosaicConfig::default(), 7);
    let forward: Vec<Mosaic> = (0..50).map(|i| a.mosaic(i)).collect();
    // Any call order, any generator instance.
    for i in (0..50).rev() {
        assert_eq!(b.mosaic(i), forward[i as usize]);
        assert_eq!(jsonl_line(&b.mosaic(i)), jsonl_line(&forward[i as usize]));
    }
    // Other indices and other seeds differ.
    let c = MosaicGenerator::new(data, MosaicConfig::default(), 8);
    let distinct: HashSet<&Vec<u8>> = forward.iter().map(|m| &m.pixels).collect();
    assert_eq!(distinct.len(), 50);
    let differ = (0..50)
        .filter(|&i| c.mosaic(i).pixels != forward[i as usize].pixels)
        .count();
    assert_eq!(differ, 50);
}

#[test]
fn box_filter_is_exact_at_integer_factors() {
    let data = sample(Split::Test);
    let src = &data.images[3];
    assert_eq!(resize_box(src, 28), src.to_vec());
    let big = resize_box(src, 56);
    for y in 0..56 {
        for x in 0..56 {
            assert_eq!(big[y * 56 + x], src[(y / 2) * 28 + x / 2]);
        }
    }
    // Zero stays zero, so boxes of the resized glyph are within the scaled source box.
    let [x0, y0, x1, y1] = tight_box(src, 28).unwrap();
    assert_eq!(tight_box(&big, 56), Some([2 * x0, 2 * y0, 2 * x1, 2 * y1]));
}

/// Every item is its resized source image inside its box, boxes are tight, inside the canvas
/// and disjoint, and (black backgrounds) nothing is drawn outside them.
fn check_boxes(gen: &MosaicGenerator, m: &Mosaic, black: bool) {
    let c = m.canvas;
    let cfg = gen.config();
    assert!(m.items.len() >= cfg.min_items && m.items.len() <= cfg.max_items);
    let mut covered = vec![false; c * c];
    for it in &m.items {
        let [x0, y0, x1, y1] = it.bbox.map(|v| v as usize);
        assert!(x0 < x1 && y0 < y1 && x1 <= c && y1 <= c, "{:?}", it.bbox);
        assert_eq!(gen.data().labels[it.source_index], it.class);
        // The glyph at the size that reproduces this box.
        let src = &gen.data().images[it.source_index];
        let found = (cfg.min_size.min(x1 - x0).min(y1 - y0)..=cfg.max_size.min(c))
            .filter_map(|side| {
                let g = resize_box(src, side);
                let [gx0, gy0, gx1, gy1] = tight_box(&g, side)?;
                (gx1 - gx0 == x1 - x0 && gy1 - gy0 == y1 - y0).then_some((g, side, gx0, gy0))
            })
            .find(|(g, side, gx0, gy0)| {
                (y0..y1).all(|y| {
                    (x0..x1).all(|x| {
                        let v = g[(y - y0 + gy0) * side + (x - x0 + gx0)];
                        let p = m.pixels[y * c + x];
                        if black {
                            p == v
                        } else {
                            p >= v
                        }
                    })
                })
            });
        assert!(
            found.is_some(),
            "mosaic {}: item {it:?} is not its source image",
            m.index
        );
        for y in y0..y1 {
            for x in x0..x1 {
                assert!(!covered[y * c + x], "mosaic {}: boxes overlap", m.index);
                covered[y * c + x] = true;
            }
        }
        if black {
            // Tight: every edge row/column has item pixels.
            let row = |y: usize| (x0..x1).any(|x| m.pixels[y * c + x] > 0);
            let col = |x: usize| (y0..y1).any(|y| m.pixels[y * c + x] > 0);
            assert!(
                row(y0) && row(y1 - 1) && col(x0) && col(x1 - 1),
                "{:?}",
                it.bbox
            );
        }
    }
    if black {
        for (i, &p) in m.pixels.iter().enumerate() {
            assert!(
                covered[i] || p == 0,
                "mosaic {}: pixel {i} outside boxes",
                m.index
            );
        }
    }
}

#[test]
fn boxes_hold_their_items() {
    let black = MosaicGenerator::new(sample(Split::Train), quiet(), 3);
    for i in 0..200 {
        check_boxes(&black, &black.mosaic(i), true);
    }
    let noisy_cfg = MosaicConfig {
        noisy_fraction: 1.0,
        ..MosaicConfig::default()
    };
    let noisy = MosaicGenerator::new(sample(Split::Test), noisy_cfg, 3);
    let mut saw_noise = false;
    for i in 0..100 {
        let m = noisy.mosaic(i);
        check_boxes(&noisy, &m, false);
        saw_noise |= m.pixels.iter().filter(|&&p| p > 0).count() > m.pixels.len() * 6 / 10;
    }
    assert!(saw_noise);
    // Another canvas size and item count.
    let big = MosaicConfig {
        canvas: 96,
        max_items: 9,
        noisy_fraction: 0.0,
        ..MosaicConfig::default()
    };
    let gen = MosaicGenerator::new(sample(Split::Train), big, 11);
    for i in 0..60 {
        check_boxes(&gen, &gen.mosaic(i), true);
    }
}

fn centre(b: &[u32; 4]) -> (f32, f32) {
    ((b[0] + b[2]) as f32 / 2.0, (b[1] + b[3]) as f32 / 2.0)
}

/// Relation truth from the boxes, written independently of the library.
fn truly(kind: RelationKind, a: &[[u32; 4]], b: &[[u32; 4]]) -> bool {
    let pairs = || a.iter().flat_map(|p| b.iter().map(move |q| (p, q)));
    let left = pairs().all(|(p, q)| centre(p).0 < centre(q).0);
    let right = pairs().all(|(p, q)| centre(p).0 > centre(q).0);
    match kind {
        RelationKind::LeftOf => left,
        RelationKind::RightOf => right,
        RelationKind::Above => pairs().all(|(p, q)| centre(p).1 < centre(q).1),
        RelationKind::Below => pairs().all(|(p, q)| centre(p).1 > centre(q).1),
        RelationKind::NextTo => (left || right) && pairs().all(|(p, q)| p[1] < q[3] && q[1] < p[3]),
    }
}

#[test]
fn relations_are_true_and_stated_between_their_phrases() {
    let gen = MosaicGenerator::new(sample(Split::Train), MosaicConfig::default(), 5);
    let mut kinds = HashSet::new();
    for i in 0..500 {
        let m = gen.mosaic(i);
        let words: Vec<&str> = m.caption.split(' ').collect();
        for r in &m.relations {
            let (s, o) = (&m.phrases[r.subject], &m.phrases[r.object]);
            assert!(
                truly(r.kind, &s.boxes, &o.boxes),
                "mosaic {i}: {:?} false in {:?}",
                r,
                m
            );
            assert!(r.kind.holds(&s.boxes, &o.boxes));
            // The words between the two phrases say this relation (token t = word t - 1).
            let between = words[s.span[1] - 1..o.span[0] - 1].join(" ");
            assert!(
                r.kind.words().contains(&between.as_str()),
                "{between:?} for {:?}",
                r.kind
            );
            kinds.insert(r.kind);
        }
    }
    assert_eq!(kinds.len(), 5, "every relation kind occurs: {kinds:?}");
}

#[test]
fn spans_match_the_word_level_tokenizer() {
    let dir = temp_dir("tokenizer");
    let vocab = vocabulary();
    assert!(vocab
        .iter()
        .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())));
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, word_level_tokenizer_json(&vocab)).unwrap();
    let ctx = max_caption_words(4) + 2;
    let tok = ClipTokenizer::from_file(&path, TextCleaning::None, ctx, None).unwrap();
    assert_eq!(tok.vocab_size(), vocab.len() + 4);
    assert_eq!((tok.pad_id(), tok.sot_id(), tok.eot_id()), (0, 2, 3));

    let gen = MosaicGenerator::new(sample(Split::Test), MosaicConfig::default(), 9);
    let mut counted = 0;
    for i in 0..500 {
        let m = gen.mosaic(i);
        let words: Vec<&str> = m.caption.split(' ').collect();
        assert!(
            words.iter().all(|w| vocab.iter().any(|v| v == w)),
            "{:?}",
            m.caption
        );
        let enc = tok.encode(&m.caption, false).unwrap();
        assert_eq!(enc.len, words.len() + 2, "{:?}", m.caption);
        assert!(
            !enc.ids[..enc.len].contains(&1),
            "unknown word in {:?}",
            m.caption
        );
        assert_eq!(&enc.tokens[1..enc.len - 1], &words[..]);

        let mut seen = vec![0; m.items.len()];
        for p in &m.phrases {
            let span = enc.tokens[p.span[0]..p.span[1]].join(" ");
            assert_eq!(span, p.text);
            let noun = enc.tokens[p.noun[0]..p.noun[1]].join(" ");
            let det = &enc.tokens[p.span[0]];
            assert_eq!(p.noun[0], p.span[0] + 1);
            assert_eq!(p.noun[1], p.span[1]);
            let forms = CLASS_NOUNS[p.class as usize];
            if p.boxes.len() == 1 {
                assert!(det == "a" || det == "an", "{det}");
                assert!(
                    forms.iter().any(|f| f.0 == noun),
                    "{noun} for class {}",
                    p.class
                );
            } else {
                assert_eq!(det, count_word(p.boxes.len()));
                assert!(
                    forms.iter().any(|f| f.1 == noun),
                    "{noun} for class {}",
                    p.class
                );
                counted += 1;
            }
            // Boxes are those of the phrase's items, all of its class, and of no other phrase.
            assert_eq!(p.boxes.len(), p.items.len());
            for (b, &it) in p.boxes.iter().zip(&p.items) {
                assert_eq!(m.items[it].bbox, *b);
                assert_eq!(m.items[it].class, p.class);
                seen[it] += 1;
            }
        }
        assert!(
            seen.iter().all(|&s| s == 1),
            "every item in exactly one phrase"
        );
        let classes: HashSet<u8> = m.items.iter().map(|i| i.class).collect();
        assert_eq!(classes.len(), m.phrases.len());
    }
    assert!(counted > 20, "count phrases occur ({counted})");
}

#[test]
fn export_writes_pngs_and_matching_jsonl() {
    let out = temp_dir("export").join("mosaics");
    let gen = MosaicGenerator::new(sample(Split::Test), MosaicConfig::default(), 1);
    export(&gen, 10..25, &out, false).unwrap();
    let text = std::fs::read_to_string(out.join("data.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 15);
    for (line, index) in lines.iter().zip(10u64..) {
        let m = gen.mosaic(index);
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["image"], image_name(index));
        assert_eq!(v["caption"], m.caption.as_str());
        let phrases = v["phrases"].as_array().unwrap();
        assert_eq!(phrases.len(), m.phrases.len());
        for (j, p) in phrases.iter().zip(&m.phrases) {
            assert_eq!(j["span"], serde_json::json!(p.span));
            assert_eq!(j["class"], CLASS_KEYS[p.class as usize]);
            assert_eq!(j["boxes"], serde_json::json!(p.boxes));
        }
        assert_eq!(v["items"].as_array().unwrap().len(), m.items.len());
        // The PNG decodes to the mosaic's pixels.
        let png = std::fs::read(out.join(image_name(index))).unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size().unwrap()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (m.canvas, m.canvas)
        );
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        assert_eq!(&buf[..info.buffer_size()], &m.pixels[..]);
    }
    // A non-empty directory is refused, naming it; force writes.
    let err = export(&gen, 0..2, &out, false).unwrap_err();
    assert!(
        err.to_string().contains(&out.display().to_string()),
        "{err}"
    );
    export(&gen, 0..2, &out, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("data.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[test]
fn bad_configs_are_errors() {
    let data = sample(Split::Train);
    for cfg in [
        MosaicConfig {
            max_items: 5,
            ..MosaicConfig::default()
        },
        MosaicConfig {
            min_items: 0,
            ..MosaicConfig::default()
        },
        MosaicConfig {
            min_size: 40,
            max_size: 30,
            ..MosaicConfig::default()
        },
        MosaicConfig {
            canvas: 20,
            ..MosaicConfig::default()
        },
        MosaicConfig {
            repeat_prob: 1.5,
            ..MosaicConfig::default()
        },
    ] {
        let err = MosaicGenerator::try_new(data.clone(), cfg, 0).unwrap_err();
        assert!(err.to_string().starts_with("mosaic config"), "{err}");
    }
    let empty = FashionMnist {
        images: vec![],
        labels: vec![],
    };
    assert!(MosaicGenerator::try_new(empty, MosaicConfig::default(), 0).is_err());
}

/// The real dataset (Debian `dataset-fashion-mnist`), when installed.
#[test]
#[ignore = "needs /usr/share/datasets/fashion-mnist"]
fn full_dataset() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let train = FashionMnist::load(dir, Split::Train).unwrap();
    let test = FashionMnist::load(dir, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    let gen = MosaicGenerator::new(test, quiet(), 1);
    for i in 0..300 {
        check_boxes(&gen, &gen.mosaic(i), true);
    }
}
