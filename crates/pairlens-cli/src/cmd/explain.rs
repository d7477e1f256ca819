//! `pairlens explain`: second-order token × patch interactions for one image and one or more
//! captions, with span and box queries, a safetensors dump, PNG pictures and a JSON summary.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use pairlens::attribution::SpanHeatmap;
use pairlens::attribution::{export, Explanation, Settings};
use pairlens::io::image::DecodedImage;
use pairlens::io::preprocess::Geometry;
use pairlens::render;
use pairlens::Explainer;

use super::method::MethodArgs;
use super::progress::DelayedBar;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    #[command(flatten)]
    pub image_limit: super::ImageLimit,
    /// Image file (JPEG, PNG, WebP).
    #[arg(long)]
    pub image: PathBuf,
    /// Caption to explain; repeat for several captions (the image side is computed once).
    #[arg(long = "caption", required = true, value_parser = super::utf8_text())]
    pub captions: Vec<String>,
    #[command(flatten)]
    pub method: MethodArgs,
    /// Token span I:J (half-open, indices of the printed tokens, SOT = 0): its patch heatmap.
    #[arg(long = "span", value_parser = parse_span)]
    pub spans: Vec<(usize, usize)>,
    /// Image box X0,Y0,X1,Y1 in pixels of the original image: every token's interaction with it.
    #[arg(long = "box", value_parser = parse_box, allow_hyphen_values = true)]
    pub boxes: Vec<[f32; 4]>,
    /// Write the interactions and scalars to this safetensors file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write heatmap overlays (whole caption, each span) and token strips (each box) here.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Write a self-contained HTML report (pictures inlined, no network requests) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Cut captions longer than the context instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

fn parse_span(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("span {s:?}: expected I:J, e.g. 1:3"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("span {s:?}: {v:?} is not a token index"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a >= b {
        return Err(format!(
            "span {s:?}: expected I < J (half-open range of tokens)"
        ));
    }
    Ok((a, b))
}

fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|_| format!("box {s:?}: {v:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [_, _, _, _] if !v.iter().all(|c| c.is_finite()) => {
            Err(format!("box {s:?}: coordinates must be finite numbers"))
        }
        [x0, y0, x1, y1] if x0 < x1 && y0 < y1 => Ok([*x0, *y0, *x1, *y1]),
        [_, _, _, _] => Err(format!("box {s:?}: expected X0 < X1 and Y0 < Y1")),
        _ => Err(format!("box {s:?}: expected four numbers X0,Y0,X1,Y1")),
    }
}

/// Refuse to replace a file the user already has, unless `--force`; a directory is never
/// replaced.
fn check_writable(path: &Path, force: bool) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a directory: give a file name", path.display());
    }
    if path.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    super::check_ancestors(path)
}

struct Query {
    span_heatmaps: Vec<SpanHeatmap>,
    box_scores: Vec<Vec<f32>>,
    whole: SpanHeatmap,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    if args.captions.iter().any(|c| c.trim().is_empty()) {
        bail!("empty caption: every --caption needs some text");
    }
    // Every output path is checked before the work starts.
    if let Some(out) = &args.out {
        check_writable(out, args.force)?;
    }
    let png_files = png_names(&args);
    if let Some(dir) = &args.png {
        super::check_out_dir(dir, "--png")?;
        for f in &png_files {
            check_writable(&dir.join(f), args.force)?;
        }
    }
    if let Some(html) = &args.html {
        check_writable(html, args.force)?;
    }

    let ex = args.model.open()?;
    let settings = args.method.settings(&ex)?;
    let load_s = started.elapsed().as_secs_f64();
    let decoded = args.image_limit.decode(&args.image)?;
    ex.preprocess_config()
        .check_image(&decoded)
        .with_context(|| format!("preprocessing {}", args.image.display()))?;
    let mut bar = DelayedBar::new();
    let explained = ex.explain_image(&decoded, &args.captions, args.truncate, &settings, &mut bar);
    let explained = super::truncate_hint(explained)?;
    drop(bar);
    let pre = explained.input;
    let explanations = explained.explanations;
    let unknown_words = args
        .captions
        .iter()
        .map(|c| args.model.unknown_words(&ex, c))
        .collect::<Result<Vec<_>>>()?;
    let queries = explanations
        .iter()
        .map(|e| query(e, &args, &pre.geometry))
        .collect::<Result<Vec<_>>>()?;

    if let Some(out) = &args.out {
        let mut meta = HashMap::new();
        meta.insert("model".into(), args.model.json_name());
        meta.insert("image".into(), args.image.display().to_string());
        meta.insert("captions".into(), serde_json::to_string(&args.captions)?);
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        export::save(&explanations, out, meta)?;
        super::wrote(out);
    }
    let report = Report {
        args: &args,
        ex: &ex,
        settings: &settings,
        decoded: &decoded,
        geometry: &pre.geometry,
        explanations: &explanations,
        queries: &queries,
        unknown_words: &unknown_words,
    };
    if let Some(dir) = &args.png {
        report.pngs(dir, &png_files)?;
    }
    let timings = serde_json::json!({
        "load_s": load_s, "image_side_s": explained.image.seconds(),
        "text_side_s": explained.text_seconds, "total_s": started.elapsed().as_secs_f64(),
    });
    if let Some(path) = &args.html {
        report.html(path, &timings)?;
        super::wrote(path);
    }
    let text = match args.json {
        true => serde_json::to_string(&report.json(timings))? + "\n",
        false => report.text(&timings)?,
    };
    super::print(&text)
}

/// Everything the outputs show, computed.
struct Report<'a> {
    args: &'a Args,
    ex: &'a Explainer,
    settings: &'a Settings,
    decoded: &'a DecodedImage,
    geometry: &'a Geometry,
    explanations: &'a [Explanation],
    queries: &'a [Query],
    /// Per caption, the words the model reads as `<unk>`.
    unknown_words: &'a [Vec<String>],
}

fn query(e: &Explanation, args: &Args, geometry: &Geometry) -> Result<Query> {
    let whole = e.span_heatmap(0, e.tokens.len())?;
    let span_heatmaps = args
        .spans
        .iter()
        .map(|&(a, b)| e.span_heatmap(a, b))
        .collect::<pairlens::Result<Vec<_>>>()?;
    let box_scores = args
        .boxes
        .iter()
        .map(|&b| e.box_scores(geometry, b))
        .collect::<pairlens::Result<Vec<_>>>()?;
    Ok(Query {
        span_heatmaps,
        box_scores,
        whole,
    })
}

/// `--png` file names, in the order [`Report::pngs`] draws them. Captions and boxes count from
/// 1, as the HTML report and the text output number them; spans are named by their tokens.
fn png_names(args: &Args) -> Vec<String> {
    let mut names = Vec::new();
    for c in 1..=args.captions.len() {
        names.push(format!("caption{c}.png"));
        for (a, b) in &args.spans {
            names.push(format!("caption{c}_span{a}-{b}.png"));
        }
        for k in 1..=args.boxes.len() {
            names.push(format!("caption{c}_box{k}.png"));
        }
    }
    names
}

impl Report<'_> {
    /// `--png`: heatmap overlays and token strips, under `names` (see [`png_names`]).
    fn pngs(&self, dir: &Path, names: &[String]) -> Result<()> {
        let (args, geometry) = (self.args, self.geometry);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let original = rgb_image(self.decoded)?;
        let to_input = |x: f32, y: f32| geometry.to_input(x, y);
        let mut names = names.iter();
        for (e, q) in self.explanations.iter().zip(self.queries) {
            let mut save = |img: RgbImage| -> Result<()> {
                let path = dir.join(names.next().expect("one name per picture"));
                img.save(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                super::wrote(&path);
                Ok(())
            };
            let title = |what: &str| {
                format!(
                    "{what}\nscore {:.3}  {}  layers {}/{}  N = {}",
                    e.score, e.mode, e.text_layer, e.image_layer, e.steps
                )
            };
            save(render::heatmap_overlay(
                &original,
                &to_input,
                geometry.input,
                e.grid,
                &q.whole.patches,
                None,
                &title("whole caption"),
            ))?;
            for ((a, b), hm) in args.spans.iter().zip(&q.span_heatmaps) {
                let words = e.tokens[*a..*b].join(" ");
                save(render::heatmap_overlay(
                    &original,
                    &to_input,
                    geometry.input,
                    e.grid,
                    &hm.patches,
                    None,
                    &title(&format!("\"{words}\"")),
                ))?;
            }
            for (k, (bx, scores)) in args.boxes.iter().zip(&q.box_scores).enumerate() {
                let t = format!(
                    "box {}: ({}, {}) - ({}, {}) px\neach token's interaction with the box \
                     (score {:.3})",
                    k + 1,
                    bx[0],
                    bx[1],
                    bx[2],
                    bx[3],
                    e.score
                );
                let thumbnail = render::box_thumbnail(&original, *bx);
                save(render::token_strip(
                    &e.tokens,
                    scores,
                    &t,
                    720,
                    Some(&thumbnail),
                ))?;
            }
        }
        Ok(())
    }
}

fn rgb_image(decoded: &DecodedImage) -> Result<RgbImage> {
    let (w, h) = (decoded.width as u32, decoded.height as u32);
    RgbImage::from_raw(w, h, decoded.to_rgb()).context("decoded image buffer")
}

fn grid_rows(values: &[f32], grid: (usize, usize)) -> Vec<Vec<f32>> {
    values.chunks(grid.1).map(|r| r.to_vec()).collect()
}

impl Report<'_> {
    /// `--json`: one object with every number.
    fn json(&self, timings: serde_json::Value) -> serde_json::Value {
        let (args, ex, settings, geometry) = (self.args, self.ex, self.settings, self.geometry);
        let (explanations, queries) = (self.explanations, self.queries);
        let captions: Vec<_> = explanations
        .iter()
        .zip(queries)
        .zip(args.captions.iter().zip(self.unknown_words))
        .map(|((e, q), (caption, unknown_words))| {
            let token_totals = e.interactions.sum(1).and_then(|t| t.to_vec1::<f32>()).unwrap_or_default();
            serde_json::json!({
                "caption": caption,
                "tokens": e.tokens,
                "unknown_words": unknown_words,
                "score": e.score,
                "sum": e.total().unwrap_or(f32::NAN),
                "reference_terms": e.reference_terms,
                "exclip_terms": e.exclip_terms,
                "residual": e.residual,
                "token_totals": token_totals,
                "heatmap": grid_rows(&q.whole.patches, e.grid),
                "cls": q.whole.cls,
                "spans": args.spans.iter().zip(&q.span_heatmaps).map(|((a, b), h)| serde_json::json!({
                    "span": [a, b], "tokens": e.tokens[*a..*b], "cls": h.cls, "heatmap": grid_rows(&h.patches, e.grid),
                })).collect::<Vec<_>>(),
                "boxes": args.boxes.iter().zip(&q.box_scores).map(|(b, s)| serde_json::json!({
                    "box": b, "token_scores": s,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
        serde_json::json!({
            "model": args.model.json_name(),
            "format": ex.format().to_string(),
            "image": args.image,
            "image_size": [geometry.original.0, geometry.original.1],
            "preprocessing": {
                "resized": [geometry.resized().0, geometry.resized().1],
                "cropped": geometry.crops(),
                "crop_offset": [geometry.crop_offset().0, geometry.crop_offset().1],
                "input": [geometry.input.0, geometry.input.1],
                "visible": geometry.visible(),
            },
            "settings": {
                "text_layer": settings.text_layer, "image_layer": settings.image_layer,
                "steps": settings.steps, "mode": settings.mode,
                "text_reference_len": settings.text_reference_len,
                "text_reference_ids": explanations.first().map(|e| e.text_reference.clone()),
                "image_reference": settings.image_reference.describe(),
                "class_token": ex.model().vision.config.class_token(),
                "grid": [ex.model().vision.config.grid().0, ex.model().vision.config.grid().1],
            },
            "captions": captions,
            "timings": timings,
        })
    }

    /// The text summary on stdout.
    fn text(&self, timings: &serde_json::Value) -> Result<String> {
        let (args, ex, settings, geometry) = (self.args, self.ex, self.settings, self.geometry);
        let (explanations, queries) = (self.explanations, self.queries);
        let mut s = String::new();
        let (gh, gw) = ex.model().vision.config.grid();
        writeln!(s, "model: {} ({})", args.model.name(), ex.format())?;
        writeln!(
            s,
            "image: {} ({}×{} px → input {}×{}, {gh}×{gw} patches)",
            args.image.display(),
            geometry.original.0,
            geometry.original.1,
            geometry.input.0,
            geometry.input.1
        )?;
        if geometry.crops() {
            let ((rw, rh), (cx, cy)) = (geometry.resized(), geometry.crop_offset());
            let [x0, y0, x1, y1] = geometry.visible();
            writeln!(
                s,
                "  centre-cropped: resized to {rw}×{rh}, then {}×{} cut at ({cx}, {cy}); the model \
                 sees x {x0:.1}–{x1:.1}, y {y0:.1}–{y1:.1} px of the original",
                geometry.input.0, geometry.input.1
            )?;
        }
        writeln!(
            s,
            "text layer {}, image layer {}, N = {}, mode {}",
            settings.text_layer, settings.image_layer, settings.steps, settings.mode
        )?;
        for (k, ((e, q), caption)) in explanations
            .iter()
            .zip(queries)
            .zip(&args.captions)
            .enumerate()
        {
            let r = e.reference_terms;
            // Numbered as in the --png file names and the HTML report.
            writeln!(s, "\ncaption {}: {caption:?}", k + 1)?;
            writeln!(s, "  score (cosine)          {:+.6}", e.score)?;
            writeln!(s, "  sum of interactions     {:+.6}", e.total()?)?;
            writeln!(
                s,
                "  f(x)·g(r_y)             {:+.6}",
                r.text_vs_image_reference
            )?;
            writeln!(
                s,
                "  f(r_x)·g(y)             {:+.6}",
                r.text_reference_vs_image
            )?;
            writeln!(
                s,
                "  f(r_x)·g(r_y)           {:+.6}",
                r.reference_vs_reference
            )?;
            writeln!(
                s,
                "  residual                {:+.6}  (score − Σ − f·g(r) − f(r)·g + f(r)·g(r))",
                e.residual
            )?;
            writeln!(
                s,
                "  {:>3}  {:<16} {:>11} {:>11}  strongest patch (row, col)",
                "#", "token", "total", "CLS"
            )?;
            let m = e.matrix()?;
            let first = usize::from(e.class_token);
            for (i, (tok, row)) in e.tokens.iter().zip(&m).enumerate() {
                let total: f32 = row.iter().sum();
                let cls = match e.class_token {
                    true => format!("{:>+11.4e}", row[0]),
                    false => format!("{:>11}", "-"),
                };
                let (best, v) = row[first..]
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .map(|(k, v)| (k, *v))
                    .unwrap_or((0, 0.0));
                writeln!(
                    s,
                    "  {i:>3}  {:<16} {total:>+11.4e} {cls}  ({}, {}) {v:+.3e}",
                    tok,
                    best / gw,
                    best % gw
                )?;
            }
            for ((a, b), h) in args.spans.iter().zip(&q.span_heatmaps) {
                writeln!(
                    s,
                    "  span {a}:{b} {:?}: heatmap over {gh}×{gw} patches{}",
                    e.tokens[*a..*b].join(" "),
                    h.cls
                        .map(|c| format!(" (CLS {c:+.3e})"))
                        .unwrap_or_default()
                )?;
                for row in h.patches.chunks(gw) {
                    let cells: Vec<String> = row.iter().map(|v| format!("{v:+.2e}")).collect();
                    writeln!(s, "    {}", cells.join(" "))?;
                }
            }
            for (bx, scores) in args.boxes.iter().zip(&q.box_scores) {
                writeln!(s, "  box {bx:?}: token scores")?;
                for (tok, v) in e.tokens.iter().zip(scores) {
                    writeln!(s, "    {tok:<16} {v:+.4e}")?;
                }
            }
        }
        writeln!(
            s,
            "\ntime: load {:.2} s, image side {:.2} s, text side {:.2} s, total {:.2} s",
            timings["load_s"].as_f64().unwrap_or(0.0),
            timings["image_side_s"].as_f64().unwrap_or(0.0),
            timings["text_side_s"].as_f64().unwrap_or(0.0),
            timings["total_s"].as_f64().unwrap_or(0.0)
        )?;
        Ok(s)
    }

    /// `--html`: the report of [`pairlens::render::html`], written once all the work is done.
    fn html(&self, path: &Path, timings: &serde_json::Value) -> Result<()> {
        let (args, geometry) = (self.args, self.geometry);
        let (explanations, queries) = (self.explanations, self.queries);
        use render::html::{report, BoxReport, CaptionReport, ReportInput, SpanReport};
        let original = rgb_image(self.decoded)?;
        let to_input = |x: f32, y: f32| geometry.to_input(x, y);
        let model = args.model.name();
        let image_name = args.image.display().to_string();
        let captions = explanations
            .iter()
            .zip(queries)
            .zip(&args.captions)
            .map(|((e, q), caption)| CaptionReport {
                caption,
                explanation: e,
                spans: args
                    .spans
                    .iter()
                    .zip(&q.span_heatmaps)
                    .map(|(&(start, end), heatmap)| SpanReport {
                        start,
                        end,
                        heatmap,
                    })
                    .collect(),
                boxes: args
                    .boxes
                    .iter()
                    .zip(&q.box_scores)
                    .map(|(&bbox, s)| BoxReport {
                        bbox,
                        token_scores: s,
                    })
                    .collect(),
            })
            .collect();
        let secs = |k: &str| timings[k].as_f64().unwrap_or(0.0);
        let input = ReportInput {
            title: "pairlens explain",
            model: &model,
            image_name: &image_name,
            original: &original,
            to_input: &to_input,
            input_size: geometry.input,
            captions,
            timings: vec![
                ("load".into(), secs("load_s")),
                ("image side".into(), secs("image_side_s")),
                ("text side".into(), secs("text_side_s")),
                ("total".into(), secs("total_s")),
            ],
        };
        let html = report(&input)
            .with_context(|| format!("building the HTML report {}", path.display()))?;
        std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
    }
}
