//! `pairlens compare-grounding`: two `eval-grounding` outputs (e.g. before and after
//! fine-tuning) side by side per class: a markdown table with the 95 % intervals and the
//! differences, marking those whose intervals do not overlap, and a paired bar chart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use pairlens::render::font::{draw_text, text_width};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// eval-grounding output directory of the first model (its summary.json is read).
    #[arg(long)]
    pub before: PathBuf,
    /// eval-grounding output directory of the second model.
    #[arg(long)]
    pub after: PathBuf,
    #[arg(long, default_value = "before")]
    pub label_before: String,
    #[arg(long, default_value = "after")]
    pub label_after: String,
    /// Output directory: comparison.md, comparison.json, comparison.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing comparison in --out.
    #[arg(long)]
    pub force: bool,
}

/// A value with its 95 % interval; NaN when undefined (null in summary.json).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Est {
    pub v: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Est {
    const NONE: Est = Est {
        v: f64::NAN,
        lo: f64::NAN,
        hi: f64::NAN,
    };

    fn defined(&self) -> bool {
        self.v.is_finite()
    }

    /// Both intervals known and disjoint.
    fn separated(&self, other: &Est) -> bool {
        [self.lo, self.hi, other.lo, other.hi]
            .iter()
            .all(|x| x.is_finite())
            && (other.lo > self.hi || other.hi < self.lo)
    }
}

/// One class (or ALL) of one summary.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub n: u64,
    pub pointing: Est,
    pub box_mass: Est,
    pub reverse: Est,
}

/// What the comparison reads of a summary.json.
struct Side {
    dir: PathBuf,
    method: Option<String>,
    settings: Option<Value>,
    per_class: Vec<(String, Row)>,
    overall: Row,
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// `{"rate"|"mean": x, "ci95": [lo, hi]}`; a missing metric is undefined.
fn est(group: &Value, metric: &str, key: &str) -> Est {
    let m = &group[metric];
    if m.is_null() {
        return Est::NONE;
    }
    Est {
        v: num(&m[key]),
        lo: num(&m["ci95"][0]),
        hi: num(&m["ci95"][1]),
    }
}

fn row(group: &Value) -> std::result::Result<Row, String> {
    if !group.is_object() {
        return Err("is not an object".into());
    }
    let n = group["phrases"]
        .as_u64()
        .or_else(|| group["pointing_game"]["n"].as_u64())
        .ok_or("has no phrase count (`phrases`)")?;
    Ok(Row {
        n,
        pointing: est(group, "pointing_game", "rate"),
        box_mass: est(group, "box_mass", "mean"),
        reverse: est(group, "reverse_hit", "rate"),
    })
}

/// The summary of an eval-grounding output directory: summary.json's `summary` object (or the
/// file itself when it is the bare summary) with `overall` and `per_class`.
fn read_side(dir: &Path) -> Result<Side> {
    let path = if dir.is_dir() {
        dir.join("summary.json")
    } else {
        dir.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (pass an eval-grounding output directory)",
            path.display()
        )
    })?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let summary = if doc.get("summary").is_some() {
        &doc["summary"]
    } else {
        &doc
    };
    let bad = |m: String| anyhow::anyhow!("{}: {m}", path.display());
    let overall = row(&summary["overall"]).map_err(|m| bad(format!("`overall` {m}")))?;
    let classes = summary["per_class"].as_object().ok_or_else(|| {
        bad("no `per_class` object (is this an eval-grounding summary.json?)".into())
    })?;
    let per_class = classes
        .iter()
        .map(|(c, g)| {
            Ok((
                c.clone(),
                row(g).map_err(|m| bad(format!("class {c:?} {m}")))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Side {
        dir: dir.to_path_buf(),
        method: doc["method"].as_str().map(str::to_string),
        settings: doc.get("settings").cloned(),
        per_class,
        overall,
    })
}

fn cell(e: &Est) -> String {
    if e.defined() {
        format!("{:.3} [{:.3}, {:.3}]", e.v, e.lo, e.hi)
    } else {
        "–".into()
    }
}

/// Δ with a mark when the two intervals are disjoint.
fn delta(b: &Est, a: &Est) -> String {
    if !(b.defined() && a.defined()) {
        return "–".into();
    }
    let d = a.v - b.v;
    let s = format!("{d:+.3}");
    if b.separated(a) {
        format!("**{s}** {}", if d > 0.0 { "▲" } else { "▼" })
    } else {
        s
    }
}

/// The per-class pairs in class order, then ALL; a class missing on one side has n = 0 there.
fn pairs(b: &Side, a: &Side) -> Vec<(String, Option<Row>, Option<Row>)> {
    let names: BTreeSet<&String> = b
        .per_class
        .iter()
        .chain(&a.per_class)
        .map(|(c, _)| c)
        .collect();
    let find = |s: &Side, c: &str| s.per_class.iter().find(|(k, _)| k == c).map(|(_, r)| *r);
    let mut out: Vec<_> = names
        .into_iter()
        .map(|c| (c.clone(), find(b, c), find(a, c)))
        .collect();
    out.push(("ALL".into(), Some(b.overall), Some(a.overall)));
    out
}

fn markdown(b: &Side, a: &Side, lb: &str, la: &str) -> String {
    let mut s = format!(
        "Grounding per class, **{lb}** → **{la}** (95 % intervals: Wilson for rates, Student t for \
         means; **bold** Δ with ▲/▼ = the two intervals do not overlap).\n\n\
         - {lb}: `{}`\n- {la}: `{}`\n\n",
        b.dir.display(),
        a.dir.display()
    );
    s += "| class | n | pointing game | Δ | box mass | Δ | reverse hit | Δ |\n";
    s += "|---|---:|---|---:|---|---:|---|---:|\n";
    for (c, rb, ra) in pairs(b, a) {
        let none = Row {
            n: 0,
            pointing: Est::NONE,
            box_mass: Est::NONE,
            reverse: Est::NONE,
        };
        let (rb, ra) = (rb.unwrap_or(none), ra.unwrap_or(none));
        let name = if c == "ALL" { "**ALL**".to_string() } else { c };
        let pair = |x: &Est, y: &Est| format!("{} → {}", cell(x), cell(y));
        let n = if rb.n == ra.n {
            rb.n.to_string()
        } else {
            format!("{} / {}", rb.n, ra.n)
        };
        s += &format!(
            "| {name} | {n} | {} | {} | {} | {} | {} | {} |\n",
            pair(&rb.pointing, &ra.pointing),
            delta(&rb.pointing, &ra.pointing),
            pair(&rb.box_mass, &ra.box_mass),
            delta(&rb.box_mass, &ra.box_mass),
            pair(&rb.reverse, &ra.reverse),
            delta(&rb.reverse, &ra.reverse),
        );
    }
    if b.method != a.method || b.settings != a.settings {
        s += &format!(
            "\n**Note:** the two runs differ in method or settings ({lb}: {} {}; {la}: {} {}).\n",
            b.method.as_deref().unwrap_or("?"),
            b.settings.clone().unwrap_or(Value::Null),
            a.method.as_deref().unwrap_or("?"),
            a.settings.clone().unwrap_or(Value::Null),
        );
    }
    s
}

fn est_json(e: &Est) -> Value {
    let f = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    json!({"value": f(e.v), "ci95": [f(e.lo), f(e.hi)]})
}

fn to_json(b: &Side, a: &Side, lb: &str, la: &str) -> Value {
    let rows: Vec<Value> = pairs(b, a)
        .into_iter()
        .map(|(c, rb, ra)| {
            let side = |r: &Option<Row>| {
                r.map(|r| {
                    json!({"n": r.n, "pointing_game": est_json(&r.pointing),
                           "box_mass": est_json(&r.box_mass), "reverse_hit": est_json(&r.reverse)})
                })
            };
            let d = |f: fn(&Row) -> Est| match (rb, ra) {
                (Some(x), Some(y)) if f(&x).defined() && f(&y).defined() => {
                    json!({"delta": f(&y).v - f(&x).v, "intervals_disjoint": f(&x).separated(&f(&y))})
                }
                _ => Value::Null,
            };
            json!({"class": c, "before": side(&rb), "after": side(&ra),
                   "pointing_game": d(|r| r.pointing), "box_mass": d(|r| r.box_mass),
                   "reverse_hit": d(|r| r.reverse)})
        })
        .collect();
    json!({"before": {"label": lb, "dir": b.dir, "method": b.method, "settings": b.settings},
           "after": {"label": la, "dir": a.dir, "method": a.method, "settings": a.settings},
           "rows": rows})
}

fn rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
    for y in y0.max(0)..y1.min(img.height() as i64) {
        for x in x0.max(0)..x1.min(img.width() as i64) {
            img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }
}

/// Two panels (pointing game, box mass), each with a pair of bars per class (before light,
/// after dark) and their 95 % whiskers; `*` over a pair whose intervals are disjoint.
fn chart(b: &Side, a: &Side, lb: &str, la: &str) -> RgbImage {
    const BEFORE: [u8; 3] = [160, 190, 225];
    const AFTER: [u8; 3] = [32, 74, 135];
    let rows = pairs(b, a);
    let (bar, gap, left, top, panel_h, label_h) = (12i64, 16i64, 48i64, 44i64, 160i64, 76i64);
    let group_w = 2 * bar + gap;
    let title = format!("grounding per class: {lb} vs {la} (95% CI)");
    let note = "* = intervals disjoint";
    let legend = [lb, la, note]
        .iter()
        .map(|t| text_width(t, 1) as i64 + 30)
        .sum::<i64>();
    let width = (left + rows.len() as i64 * group_w + 20)
        .max(left + legend.max(text_width(&title, 1) as i64) + 10);
    let panel_total = 22 + panel_h + label_h;
    let height = top + 2 * panel_total;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb([255, 255, 255]));
    draw_text(&mut img, left, 6, &title, 1, [0, 0, 0]);
    let mut x = left;
    for (name, c) in [(lb, BEFORE), (la, AFTER)] {
        rect(&mut img, x, 22, x + 10, 32, c);
        draw_text(&mut img, x + 14, 23, name, 1, [0, 0, 0]);
        x += 14 + text_width(name, 1) as i64 + 16;
    }
    draw_text(&mut img, x, 23, note, 1, [200, 0, 0]);
    type Metric = fn(&Row) -> Est;
    let panels: [(&str, Metric); 2] = [
        ("pointing game", |r| r.pointing),
        ("box mass", |r| r.box_mass),
    ];
    for (p, (name, metric)) in panels.iter().enumerate() {
        let ptop = top + p as i64 * panel_total + 22;
        draw_text(&mut img, left, ptop - 16, name, 1, [0, 0, 0]);
        let y_of = |v: f64| ptop + ((1.0 - v.clamp(0.0, 1.0)) * panel_h as f64).round() as i64;
        for k in 0..=4 {
            let v = k as f64 / 4.0;
            let y = y_of(v);
            rect(&mut img, left, y, width - 10, y + 1, [220, 220, 220]);
            draw_text(&mut img, 4, y - 4, &format!("{v:.2}"), 1, [0, 0, 0]);
        }
        rect(
            &mut img,
            left - 1,
            ptop,
            left,
            ptop + panel_h + 1,
            [0, 0, 0],
        );
        for (g, (class, rb, ra)) in rows.iter().enumerate() {
            let gx = left + 8 + g as i64 * group_w;
            let ests = [rb.map(|r| metric(&r)), ra.map(|r| metric(&r))];
            for (m, (e, colour)) in ests.iter().zip([BEFORE, AFTER]).enumerate() {
                let Some(e) = e.filter(|e| e.defined()) else {
                    continue;
                };
                let x = gx + m as i64 * bar;
                rect(&mut img, x, y_of(e.v), x + bar - 2, y_of(0.0), colour);
                if e.lo.is_finite() && e.hi.is_finite() {
                    let cx = x + bar / 2 - 1;
                    let ink = [0, 0, 0];
                    rect(&mut img, cx, y_of(e.hi), cx + 1, y_of(e.lo) + 1, ink);
                    rect(&mut img, cx - 3, y_of(e.hi), cx + 4, y_of(e.hi) + 1, ink);
                    rect(&mut img, cx - 3, y_of(e.lo), cx + 4, y_of(e.lo) + 1, ink);
                }
            }
            if let [Some(x), Some(y)] = ests {
                if x.separated(&y) {
                    let top_v = x.hi.max(y.hi);
                    draw_text(
                        &mut img,
                        gx + bar - 4,
                        y_of(top_v) - 10,
                        "*",
                        1,
                        [200, 0, 0],
                    );
                }
            }
            for (k, ch) in class.chars().take(10).enumerate() {
                draw_text(
                    &mut img,
                    gx + k as i64 * 3,
                    ptop + panel_h + 6 + k as i64 * 7,
                    &ch.to_string(),
                    1,
                    [0, 0, 0],
                );
            }
        }
    }
    img
}

pub fn run(args: Args) -> Result<()> {
    let before = read_side(&args.before)?;
    let after = read_side(&args.after)?;
    let files = ["comparison.md", "comparison.json", "comparison.png"].map(|f| args.out.join(f));
    if !args.force {
        if let Some(f) = files.iter().find(|f| f.exists()) {
            bail!("{}: exists; pass --force to overwrite it", f.display());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (lb, la) = (&args.label_before, &args.label_after);
    let md = markdown(&before, &after, lb, la);
    std::fs::write(&files[0], &md).with_context(|| format!("writing {}", files[0].display()))?;
    let js = serde_json::to_string_pretty(&to_json(&before, &after, lb, la))? + "\n";
    std::fs::write(&files[1], js).with_context(|| format!("writing {}", files[1].display()))?;
    chart(&before, &after, lb, la)
        .save(&files[2])
        .with_context(|| format!("writing {}", files[2].display()))?;
    for f in &files {
        super::wrote(f);
    }
    super::print(&md)
}
