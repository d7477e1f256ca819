//! `pairlens eval-grounding`: per-phrase grounding (pointing game, box mass, reverse direction)
//! on a mosaic JSONL, COCO or Flickr30k Entities, with pairlens or a first-order baseline;
//! resumable through an append-only results.csv guarded by run.json (method, settings, model,
//! data), so one output directory never mixes runs.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pairlens::attribution::{cosine, Settings, TowerSide};
use pairlens::grounding::baselines::{self, Method};
use pairlens::grounding::report::{read_csv, CSV_HEADER};
use pairlens::grounding::{
    align_items, box_mass, pointing_game, read_coco, read_flickr30k, read_jsonl, reverse_direction,
    union_weights, GroundingItem, PhraseResult, Skipped, Summary,
};
use pairlens::io::caption_tokenizer::CaptionTokenizer;
use pairlens::io::preprocess::Preprocessed;
use pairlens::{Device, ImageSide, NoProgress};
use serde_json::{json, Value};

use super::method::MethodArgs;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The mosaic JSONL of `pairlens mosaics` (--data).
    Jsonl,
    /// COCO captions + instances (--captions, --annotations, --images).
    Coco,
    /// Flickr30k Entities (--sentences, --annotations, --images [--ids]).
    Flickr30k,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
    /// Dataset format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// jsonl: the mosaic JSONL (`pairlens mosaics` data.jsonl); images are resolved beside it.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// coco: instances_*.json; flickr30k: the Annotations directory.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    /// coco: captions_*.json of the same split.
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// flickr30k: the Sentences directory.
    #[arg(long)]
    pub sentences: Option<PathBuf>,
    /// coco, flickr30k: the image directory (COCO file_name, Flickr30k <id>.jpg).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// flickr30k: file of image ids to read, one a line (e.g. the dataset's test.txt)
    /// [default: every Sentences/*.txt].
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// What makes a phrase's heatmap: `pairlens` (second-order interactions), `ig` (image-side
    /// integrated gradients of the score with the phrase's text as caption; no reverse
    /// direction) or `similarity` (cosine of projected layer-l token and patch states).
    #[arg(long, default_value = "pairlens")]
    pub method: Method,
    #[command(flatten)]
    pub settings: MethodArgs,
    /// Output directory: results.csv, run.json, summary.json, per_class.png.
    #[arg(long, default_value = "grounding-out")]
    pub out: PathBuf,
    /// Only the first K image-caption pairs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start over: discard an existing results.csv and run.json instead of resuming.
    #[arg(long)]
    pub force: bool,
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Check the flags of `args.format`, and describe the data for run.json.
fn data_flags(args: &Args) -> Result<Value> {
    let given = [
        ("--data", args.data.is_some()),
        ("--annotations", args.annotations.is_some()),
        ("--captions", args.captions.is_some()),
        ("--sentences", args.sentences.is_some()),
        ("--images", args.images.is_some()),
        ("--ids", args.ids.is_some()),
    ];
    let (name, needed, allowed): (&str, &[&str], &[&str]) = match args.format {
        Format::Jsonl => ("jsonl", &["--data"], &["--data"]),
        Format::Coco => (
            "coco",
            &["--annotations", "--captions", "--images"],
            &["--annotations", "--captions", "--images"],
        ),
        Format::Flickr30k => (
            "flickr30k",
            &["--sentences", "--annotations", "--images"],
            &["--sentences", "--annotations", "--images", "--ids"],
        ),
    };
    for (flag, on) in given {
        if on && !allowed.contains(&flag) {
            bail!(
                "{flag} does not apply to --format {name} (it takes {})",
                allowed.join(", ")
            );
        }
        if !on && needed.contains(&flag) {
            bail!("--format {name} needs {}", needed.join(", "));
        }
    }
    let p = |o: &Option<PathBuf>| o.as_deref().map(absolute);
    Ok(json!({
        "format": name, "data": p(&args.data), "annotations": p(&args.annotations),
        "captions": p(&args.captions), "sentences": p(&args.sentences),
        "images": p(&args.images), "ids": p(&args.ids),
    }))
}

/// The pairs to evaluate, with token spans from the model's tokenizer.
fn read_items(
    args: &Args,
    tokenizer: &CaptionTokenizer,
    skipped: &mut Skipped,
) -> Result<Vec<GroundingItem>> {
    let need = |o: &Option<PathBuf>| o.clone().expect("checked by data_flags");
    let items = match args.format {
        Format::Jsonl => {
            let data = need(&args.data);
            if !data.is_file() {
                bail!(
                    "{}: data file not found (expected a mosaic JSONL, e.g. from `pairlens mosaics`)",
                    data.display()
                );
            }
            read_jsonl(&data)?
        }
        Format::Coco => {
            let raw = read_coco(
                &need(&args.annotations),
                &need(&args.captions),
                &need(&args.images),
                skipped,
            )?;
            align_items(raw, tokenizer, skipped)?
        }
        Format::Flickr30k => {
            let (s, a, i) = (
                need(&args.sentences),
                need(&args.annotations),
                need(&args.images),
            );
            for (flag, dir) in [("--sentences", &s), ("--annotations", &a), ("--images", &i)] {
                if !dir.is_dir() {
                    bail!("{}: {flag} directory not found", dir.display());
                }
            }
            let raw = read_flickr30k(&s, &a, &i, args.ids.as_deref(), skipped)?;
            align_items(raw, tokenizer, skipped)?
        }
    };
    Ok(items)
}

/// The settings that change a method's numbers (recorded in run.json and summary.json).
fn method_settings(method: Method, s: &Settings) -> Value {
    match method {
        Method::Pairlens => json!({
            "text_layer": s.text_layer, "image_layer": s.image_layer, "steps": s.steps,
            "mode": s.mode, "text_reference_len": s.text_reference_len,
        }),
        Method::Ig => {
            json!({ "image_layer": s.image_layer, "steps": s.steps, "integrand": "cosine" })
        }
        Method::Similarity => json!({ "text_layer": s.text_layer, "image_layer": s.image_layer }),
    }
}

fn definitions(method: Method) -> Value {
    let heatmap = match method {
        Method::Pairlens => "the phrase span's rows of the second-order interaction matrix, summed, over the patches (CLS excluded)",
        Method::Ig => "image-side integrated gradients of cos(text, image) w.r.t. the image states entering the image layer, summed per patch, with the PHRASE'S TEXT alone as the caption (IG has no notion of a phrase); computed as the unit text embedding times the cosine-mode image side of the engine (same path points); the reverse direction is undefined (empty cells)",
        Method::Similarity => "cosine of every text token's and patch's states entering the chosen layers, each through its tower's final LayerNorm and projection; the phrase span's rows summed",
    };
    json!({
        "heatmap": heatmap,
        "score": "cosine of the whole caption's and the image's embeddings",
        "pointing_game": "hit if the centre of the heatmap's maximum patch (CLS excluded) lies inside one of the phrase's boxes",
        "box_mass": "sum of positive heatmap values weighted by each patch's area fraction inside the union of the boxes, over the sum of positive values",
        "reverse_hit": "token scores of the union of the boxes (patch-area weighted sum of the map's columns): the phrase's span has the strictly largest token-score sum among the caption's phrase spans",
        "span_share": "positive token scores on the span over positive token scores on all tokens (SOT, EOT included)",
        "ci95": "Wilson for rates, Student t for means",
    })
}

/// run.json: refuse to resume into a directory holding another method/settings/model/data.
fn guard_run(out: &Path, csv_path: &Path, run: &Value, force: bool) -> Result<()> {
    let run_path = out.join("run.json");
    if force {
        for p in [csv_path, run_path.as_path()] {
            if p.exists() {
                std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
    }
    let has_rows = std::fs::metadata(csv_path).is_ok_and(|m| m.len() > 0);
    if run_path.exists() {
        let old: Value = serde_json::from_slice(
            &std::fs::read(&run_path).with_context(|| format!("reading {}", run_path.display()))?,
        )
        .with_context(|| format!("{}: not JSON", run_path.display()))?;
        if &old != run {
            let keys = ["method", "settings", "model", "data"];
            let diff: Vec<String> = keys
                .iter()
                .filter(|k| old.get(**k) != run.get(**k))
                .map(|k| {
                    format!(
                        "{k}: there {} — now {}",
                        old.get(*k).unwrap_or(&Value::Null),
                        run[*k]
                    )
                })
                .collect();
            bail!(
                "{}: {} holds results of another run ({}); pass --force to start over, or use another --out",
                run_path.display(),
                out.display(),
                diff.join("; ")
            );
        }
        return Ok(());
    }
    if has_rows {
        bail!(
            "{}: results without a run.json (written by an older pairlens?) cannot be resumed safely; pass --force to start over, or use another --out",
            csv_path.display()
        );
    }
    std::fs::write(&run_path, serde_json::to_string_pretty(run)? + "\n")
        .with_context(|| format!("writing {}", run_path.display()))
}

/// What one image contributes, computed once for all its captions.
enum ImageWork {
    Pairlens(ImageSide),
    Ig(TowerSide),
    Similarity { tokens: Tensor, embedding: Tensor },
}

pub fn run(args: Args) -> Result<()> {
    let data = data_flags(&args)?;
    super::check_out_dir(&args.out, "--out")?;
    if args.limit == Some(0) {
        anyhow::bail!("--limit 0 explains nothing: give at least 1 (or leave it out for all)");
    }
    let ex = args.model.open()?;
    // A long run fails at start, not at its first image: the tokenizer and every weight now.
    let loading = || format!("loading {}", ex.source());
    let tokenizer = ex.tokenizer().with_context(loading)?;
    if tokenizer.as_clip().is_none() && args.format == Format::Jsonl {
        anyhow::bail!(
            "{}: the mosaic JSONL's token spans are the built-in CLIP tokenizer's; a SigLIP model \
             is evaluated on COCO or Flickr30k (--format coco|flickr30k), whose phrases are \
             tokenized by the model",
            ex.source()
        );
    }
    if !ex.model().vision.config.class_token() && args.method == Method::Similarity {
        anyhow::bail!(
            "{}: the similarity baseline projects every image token like the class token, and \
             this image tower has neither (SigLIP); use --method pairlens or ig",
            ex.source()
        );
    }
    ex.check_weights().with_context(loading)?;
    let model = ex.model();
    let settings = args.settings.settings(&ex)?;
    let patch = model.vision.config.patch_size;
    let method = args.method;
    let mut skipped = Skipped::new();
    let mut items = read_items(&args, tokenizer, &mut skipped)?;
    if let Some(k) = args.limit {
        items.truncate(k);
    }
    if items.is_empty() {
        let source = [&args.data, &args.captions, &args.sentences]
            .into_iter()
            .flatten()
            .next()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let skips: usize = skipped.values().sum();
        bail!(
            "{source}: no image-caption pairs with a phrase to explain{}",
            match skips {
                0 => String::new(),
                n => format!(" ({n} skipped: {skipped:?})"),
            }
        );
    }
    let model_id = match &args.model.model {
        Some(dir) => absolute(dir),
        None => format!("builtin:{}", pairlens::builtin::hash()),
    };
    let run_info = json!({
        "method": method, "settings": method_settings(method, &settings),
        "model": model_id, "data": data,
    });

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let csv_path = args.out.join("results.csv");
    guard_run(&args.out, &csv_path, &run_info, args.force)?;
    let done: HashSet<(String, usize)> = read_csv(&csv_path)?
        .into_iter()
        .map(|r| (r.item, r.phrase))
        .collect();
    let fresh = std::fs::metadata(&csv_path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut csv = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&csv_path)
        .with_context(|| format!("opening {}", csv_path.display()))?;
    if fresh {
        writeln!(csv, "{CSV_HEADER}").with_context(|| format!("writing {}", csv_path.display()))?;
    }

    let todo: Vec<_> = items
        .iter()
        .filter(|it| (0..it.phrases.len()).any(|p| !done.contains(&(it.id.clone(), p))))
        .collect();
    let already = items.len() - todo.len();
    let bar = ProgressBar::with_draw_target(Some(todo.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:32}] {pos}/{len} pairs {elapsed_precise} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{method}"));
    let started = Instant::now();
    let mut explained = 0usize;
    let mut cache: Option<(PathBuf, Preprocessed, ImageWork)> = None;
    for item in &todo {
        let path = &item.image_path;
        let at = || format!("{} ({})", item.origin, path.display());
        if cache.as_ref().is_none_or(|(p, _, _)| p != path) {
            if !path.exists() {
                bail!("{}: image file not found", at());
            }
            let decoded = args.image_limit.decode(path)?;
            let pre = ex
                .preprocess(&decoded)
                .with_context(|| format!("preprocessing {}", path.display()))?;
            let pixels = pre.pixels.to_device(ex.device())?;
            let work = match method {
                Method::Pairlens => ImageWork::Pairlens(ex.image(&pixels, &settings)?),
                Method::Ig => ImageWork::Ig(baselines::ig_image_side(model, &pixels, &settings)?),
                Method::Similarity => ImageWork::Similarity {
                    tokens: baselines::image_token_embeddings(
                        model,
                        &pixels,
                        settings.image_layer,
                    )?,
                    embedding: model.embed_image(&pixels)?,
                },
            };
            cache = Some((path.clone(), pre, work));
        }
        let (_, pre, work) = cache.as_ref().expect("just filled");
        let encoded = tokenizer.encode(&item.caption, false).with_context(at)?;
        let n = encoded.tokens.len();
        let spans: Vec<(usize, usize)> = item.phrases.iter().map(|p| p.span).collect();
        if let Some((k, &(a, b))) = spans.iter().enumerate().find(|(_, &(_, b))| b > n) {
            bail!("{}: phrase {k}: span [{a}, {b}] is out of range: the caption has {n} tokens (SOT = 0 … EOT = {})", at(), n - 1);
        }
        // Per method: the score, and per phrase (heatmap, token scores of a region).
        let explanation;
        let sim_map;
        let score = match work {
            ImageWork::Pairlens(image) => {
                let mut one =
                    ex.explain_encoded(image, std::slice::from_ref(&encoded), &mut NoProgress)?;
                explanation = Some(one.remove(0));
                sim_map = None;
                explanation.as_ref().expect("set").score
            }
            ImageWork::Ig(image) => {
                explanation = None;
                sim_map = None;
                cosine(
                    &baselines::text_embedding(model, &encoded)?,
                    &image.embedding.to_device(&Device::Cpu)?,
                )?
            }
            ImageWork::Similarity { tokens, embedding } => {
                explanation = None;
                sim_map = Some(baselines::similarity(
                    model,
                    &encoded,
                    settings.text_layer,
                    tokens,
                )?);
                let image = embedding.to_device(&Device::Cpu)?;
                cosine(&baselines::text_embedding(model, &encoded)?, &image)?
            }
        };
        explained += 1;
        let mut rows = String::new();
        for (k, phrase) in item.phrases.iter().enumerate() {
            if done.contains(&(item.id.clone(), k)) {
                continue;
            }
            let boxes: Vec<(f32, f32, f32, f32)> = phrase
                .boxes
                .iter()
                .map(|&b| pre.geometry.box_to_input(b))
                .collect();
            let grid = model.vision.config.grid();
            let weights = union_weights(grid, patch, &boxes)
                .with_context(|| format!("{}: phrase {k}", at()))?;
            let text = phrase
                .text
                .clone()
                .unwrap_or_else(|| encoded.tokens[phrase.span.0..phrase.span.1].join(" "));
            let (heat, tokens): (Vec<f32>, Option<Vec<f32>>) = match work {
                ImageWork::Pairlens(_) => {
                    let e = explanation.as_ref().expect("pairlens");
                    (
                        e.span_heatmap(phrase.span.0, phrase.span.1)?.patches,
                        Some(e.region_token_scores(&weights)?),
                    )
                }
                ImageWork::Ig(image) => {
                    let phrase_caption = tokenizer
                        .encode(&text, true)
                        .with_context(|| format!("{}: phrase {k} as a caption", at()))?;
                    let t = baselines::text_embedding(model, &phrase_caption)?;
                    let ig = baselines::ig_attributions(image, &t)?;
                    let first = usize::from(model.vision.config.class_token());
                    (ig[first..].to_vec(), None)
                }
                ImageWork::Similarity { .. } => {
                    let m = sim_map.as_ref().expect("similarity");
                    (
                        m.span_heatmap(phrase.span.0, phrase.span.1)?,
                        Some(m.region_token_scores(&weights)?),
                    )
                }
            };
            let rev = tokens
                .map(|t| reverse_direction(&t, &spans, k))
                .transpose()?;
            let row = PhraseResult {
                item: item.id.clone(),
                image: item.image.clone(),
                phrase: k,
                class: phrase.class.clone(),
                text,
                span: phrase.span,
                score,
                pointing_hit: pointing_game(&heat, grid, patch, &boxes)?,
                box_mass: box_mass(&heat, &weights)?,
                reverse_hit: rev.map(|r| r.hit),
                span_share: rev.and_then(|r| r.span_share),
                method: method.to_string(),
            };
            rows += &row.csv_row();
            rows.push('\n');
        }
        csv.write_all(rows.as_bytes())
            .and_then(|_| csv.flush())
            .with_context(|| format!("writing {}", csv_path.display()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    drop(csv);

    let all = read_csv(&csv_path)?;
    let summary = Summary::of(&all);
    let rate = if secs > 0.0 {
        explained as f64 / secs
    } else {
        0.0
    };
    let json = json!({
        "method": method,
        "settings": method_settings(method, &settings),
        "model": args.model.json_name(),
        "model_id": run_info["model"],
        "data": run_info["data"],
        "skipped_by_reader": skipped,
        "definitions": definitions(method),
        "this_run": { "pairs_explained": explained, "pairs_already_done": already, "seconds": secs,
                      "explanations_per_second": rate },
        "summary": summary,
    });
    let summary_path = args.out.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", summary_path.display()))?;
    let png = args.out.join("per_class.png");
    summary
        .bar_chart(method.name())
        .save(&png)
        .with_context(|| format!("writing {}", png.display()))?;
    for path in [&csv_path, &summary_path, &png] {
        super::wrote(path);
    }
    let mut text = format!("method: {method}\n");
    text += &summary.table();
    if method == Method::Ig {
        text += "(reverse direction: not defined for an image-side method)\n";
    }
    for (reason, count) in &skipped {
        text += &format!("skipped: {count} {reason}\n");
    }
    text += &format!(
        "\n{explained} image-caption pairs explained in {secs:.1} s ({rate:.2}/s), {already} already in {}\n",
        csv_path.display()
    );
    super::print(&text)
}
