//! `pairlens eval-grounding`: per-phrase grounding of the explanations on a mosaic JSONL
//! (pointing game, box mass, reverse direction), resumable through an append-only results.csv.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pairlens::attribution::side::NoProgress;
use pairlens::attribution::{image_side, text_side, Explanation};
use pairlens::grounding::report::{read_csv, CSV_HEADER};

use super::method::MethodArgs;
use pairlens::grounding::{
    box_mass, pointing_game, read_jsonl, reverse_direction, union_weights, PhraseResult, Summary,
};
use pairlens::io::image::decode_file;
use pairlens::io::preprocess::preprocess;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory [default: the built-in Fashion-MNIST model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Mosaic JSONL (`pairlens mosaics` data.jsonl); images are resolved beside it.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub method: MethodArgs,
    /// Output directory: results.csv, summary.json, per_class.png.
    #[arg(long, default_value = "grounding-out")]
    pub out: PathBuf,
    /// Only the first K images of the JSONL.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Start over: discard an existing results.csv instead of resuming from it.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<()> {
    if !args.data.is_file() {
        bail!(
            "{}: data file not found (expected a mosaic JSONL, e.g. from `pairlens mosaics`)",
            args.data.display()
        );
    }
    let mut items = read_jsonl(&args.data)?;
    if let Some(k) = args.limit {
        items.truncate(k);
    }
    let loaded = super::load_model(args.model.as_deref())?;
    let model = &loaded.model;
    let settings = args.method.settings(model)?;
    let reference = loaded.tokenizer.reference(settings.text_reference_len);
    let patch = model.config.vision.patch_size;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let csv_path = args.out.join("results.csv");
    if args.force && csv_path.exists() {
        std::fs::remove_file(&csv_path)
            .with_context(|| format!("removing {}", csv_path.display()))?;
    }
    let done: HashSet<(String, usize)> = read_csv(&csv_path)?
        .into_iter()
        .map(|r| (r.image, r.phrase))
        .collect();
    let fresh = !csv_path.exists()
        || std::fs::metadata(&csv_path)
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
        .filter(|it| (0..it.phrases.len()).any(|p| !done.contains(&(it.image.clone(), p))))
        .collect();
    let skipped = items.len() - todo.len();
    let bar = ProgressBar::with_draw_target(Some(todo.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:32}] {pos}/{len} images {elapsed_precise} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("grounding");
    let started = Instant::now();
    let mut explained = 0usize;
    for item in &todo {
        let path = item.image_path(&args.data);
        let at = || {
            format!(
                "{} line {} ({})",
                args.data.display(),
                item.line,
                path.display()
            )
        };
        if !path.exists() {
            bail!("{}: image file not found", at());
        }
        let decoded = decode_file(&path)?;
        let pre = preprocess(&decoded, &loaded.preprocess)
            .with_context(|| format!("preprocessing {}", path.display()))?;
        let encoded = loaded
            .tokenizer
            .encode(&item.caption, false)
            .with_context(at)?;
        let n = encoded.tokens.len();
        let spans: Vec<(usize, usize)> = item.phrases.iter().map(|p| p.span).collect();
        if let Some((k, &(a, b))) = spans.iter().enumerate().find(|(_, &(_, b))| b > n) {
            bail!("{}: phrase {k}: span [{a}, {b}] is out of range: the caption has {n} tokens (SOT = 0 … EOT = {})", at(), n - 1);
        }
        let image = image_side(model, &pre.pixels, &settings, &mut NoProgress)?;
        let text = text_side(model, &encoded, &reference, &settings, &mut NoProgress)?;
        let e = Explanation::combine(&text, &image, encoded.tokens.clone(), model, &settings)?;
        explained += 1;
        let mut rows = String::new();
        for (k, phrase) in item.phrases.iter().enumerate() {
            if done.contains(&(item.image.clone(), k)) {
                continue;
            }
            let boxes: Vec<(f32, f32, f32, f32)> = phrase
                .boxes
                .iter()
                .map(|b| {
                    let (x0, y0) = pre.geometry.to_input(b[0], b[1]);
                    let (x1, y1) = pre.geometry.to_input(b[2], b[3]);
                    (x0, y0, x1, y1)
                })
                .collect();
            let heat = e.span_heatmap(phrase.span.0, phrase.span.1)?;
            let weights = union_weights(e.grid, patch, &boxes)
                .with_context(|| format!("{}: phrase {k}", at()))?;
            let tokens = e.region_token_scores(&weights)?;
            let rev = reverse_direction(&tokens, &spans, k)?;
            let row = PhraseResult {
                image: item.image.clone(),
                phrase: k,
                class: phrase.class.clone(),
                span: phrase.span,
                score: e.score,
                pointing_hit: pointing_game(&heat.patches, e.grid, patch, &boxes)?,
                box_mass: box_mass(&heat.patches, &weights)?,
                reverse_hit: rev.hit,
                span_share: rev.span_share,
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
    let json = serde_json::json!({
        "data": args.data,
        "model": loaded.dir,
        "settings": {
            "text_layer": settings.text_layer, "image_layer": settings.image_layer,
            "steps": settings.steps, "mode": settings.mode,
        },
        "definitions": {
            "pointing_game": "hit if the centre of the span heatmap's maximum patch (CLS excluded) lies inside one of the phrase's boxes",
            "box_mass": "sum of positive heatmap values weighted by each patch's area fraction inside the union of the boxes, over the sum of positive values",
            "reverse_hit": "region_token_scores over the union of the boxes: the phrase's span has the strictly largest token-score sum among the caption's phrase spans",
            "span_share": "positive token scores on the span over positive token scores on all tokens (SOT, EOT included)",
            "ci95": "Wilson for rates, Student t for means",
        },
        "this_run": { "images_explained": explained, "images_skipped": skipped, "seconds": secs,
                      "explanations_per_second": if secs > 0.0 { explained as f64 / secs } else { 0.0 } },
        "summary": summary,
    });
    let summary_path = args.out.join("summary.json");
    std::fs::write(&summary_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", summary_path.display()))?;
    let png = args.out.join("per_class.png");
    summary
        .bar_chart()
        .save(&png)
        .with_context(|| format!("writing {}", png.display()))?;
    let mut text = summary.table();
    text += &format!(
        "\n{explained} images explained in {secs:.1} s ({:.2}/s), {skipped} already in {}\n",
        if secs > 0.0 {
            explained as f64 / secs
        } else {
            0.0
        },
        csv_path.display()
    );
    super::print(&text)
}
