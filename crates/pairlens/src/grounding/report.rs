//! Per-phrase rows (results.csv), their summary per class and overall with 95 % intervals
//! (summary.json, a text table) and a bar chart.

use std::collections::BTreeMap;
use std::path::Path;

use image::{Rgb, RgbImage};

use super::metrics::{mean_ci, wilson};
use crate::render::font::{draw_text, text_width};
use crate::{Error, Result};

/// One phrase's numbers: a row of results.csv. Undefined values (no positive mass; the reverse
/// direction of an image-side method) are `None` and written as empty cells.
#[derive(Clone, Debug, PartialEq)]
pub struct PhraseResult {
    /// The (image, caption) pair's key ([`super::GroundingItem::id`]).
    pub item: String,
    /// The image as the dataset names it.
    pub image: String,
    /// 0-based index of the phrase in its caption.
    pub phrase: usize,
    /// The phrase's class label.
    pub class: String,
    /// The phrase's words, when the dataset gives them.
    pub text: String,
    /// The phrase's half-open token range, SOT = 0.
    pub span: (usize, usize),
    /// Cosine of the caption and image embeddings.
    pub score: f32,
    /// Pointing game ([`super::pointing_game`]) on the phrase's heatmap.
    pub pointing_hit: bool,
    /// Box mass ([`super::box_mass`]) of the phrase's heatmap.
    pub box_mass: Option<f32>,
    /// Reverse-direction hit ([`super::Reverse::hit`]); `None` for an image-side method.
    pub reverse_hit: Option<bool>,
    /// Reverse-direction span share ([`super::Reverse::span_share`]).
    pub span_share: Option<f32>,
    /// `pairlens`, `ig` or `similarity`.
    pub method: String,
}

/// The header line of results.csv: the [`PhraseResult`] fields in order, the span as
/// `span_start,span_end`.
pub const CSV_HEADER: &str = "item,image,phrase,class,text,span_start,span_end,score,pointing_hit,box_mass,reverse_hit,span_share,method";
const FIELDS: usize = 13;

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Split one CSV line (quotes as written by [`PhraseResult::csv_row`]).
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

impl PhraseResult {
    /// The row as a results.csv line (no newline), columns as in [`CSV_HEADER`]: floats with 6
    /// decimals, flags as 0/1, `None` as an empty cell, text fields quoted when needed.
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f32>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{:.6},{},{},{},{},{}",
            quote(&self.item),
            quote(&self.image),
            self.phrase,
            quote(&self.class),
            quote(&self.text),
            self.span.0,
            self.span.1,
            self.score,
            self.pointing_hit as u8,
            opt(self.box_mass),
            self.reverse_hit
                .map(|h| (h as u8).to_string())
                .unwrap_or_default(),
            opt(self.span_share),
            quote(&self.method),
        )
    }

    fn parse(line: &str) -> std::result::Result<Self, String> {
        let f = split_csv(line);
        if f.len() != FIELDS {
            return Err(format!("{} fields, expected {FIELDS}", f.len()));
        }
        let num = |i: usize| {
            f[i].parse::<usize>()
                .map_err(|_| format!("field {}: {:?} is not an integer", i + 1, f[i]))
        };
        let float = |i: usize| {
            f[i].parse::<f32>()
                .map_err(|_| format!("field {}: {:?} is not a number", i + 1, f[i]))
        };
        let opt = |i: usize| {
            if f[i].is_empty() {
                Ok(None)
            } else {
                float(i).map(Some)
            }
        };
        let flag = |i: usize| match f[i].as_str() {
            "0" => Ok(false),
            "1" => Ok(true),
            v => Err(format!("field {}: {v:?} is not 0 or 1", i + 1)),
        };
        Ok(PhraseResult {
            item: f[0].clone(),
            image: f[1].clone(),
            phrase: num(2)?,
            class: f[3].clone(),
            text: f[4].clone(),
            span: (num(5)?, num(6)?),
            score: float(7)?,
            pointing_hit: flag(8)?,
            box_mass: opt(9)?,
            reverse_hit: if f[10].is_empty() {
                None
            } else {
                Some(flag(10)?)
            },
            span_share: opt(11)?,
            method: f[12].clone(),
        })
    }
}

/// Read results.csv (header checked); a missing file is no rows.
pub fn read_csv(path: &Path) -> Result<Vec<PhraseResult>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let bad = |msg: String| Error::Dataset {
        path: path.to_path_buf(),
        msg,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        None => return Ok(Vec::new()),
        Some((_, h)) if h.trim() == CSV_HEADER => {}
        Some((_, h)) => {
            return Err(bad(format!(
                "line 1: header {h:?}, expected {CSV_HEADER:?}"
            )))
        }
    }
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(k, l)| PhraseResult::parse(l).map_err(|m| bad(format!("line {}: {m}", k + 1))))
        .collect()
}

/// Hit rate with a Wilson interval.
#[derive(Clone, Copy, Debug, serde::Serialize, PartialEq)]
pub struct Rate {
    /// Rows where the flag is true.
    pub hits: usize,
    /// Rows where the flag is defined.
    pub n: usize,
    /// `hits / n`; NaN when `n = 0`.
    pub rate: f64,
    /// 95 % Wilson interval `(lo, hi)`; NaN when `n = 0`.
    pub ci95: (f64, f64),
}

impl Rate {
    /// Over the defined flags; with none, rate and interval are NaN (null in JSON).
    fn of(flags: impl Iterator<Item = Option<bool>>) -> Self {
        let (mut hits, mut n) = (0, 0);
        for f in flags.flatten() {
            n += 1;
            hits += f as usize;
        }
        Rate {
            hits,
            n,
            rate: if n > 0 {
                hits as f64 / n as f64
            } else {
                f64::NAN
            },
            ci95: if n > 0 {
                wilson(hits, n)
            } else {
                (f64::NAN, f64::NAN)
            },
        }
    }
}

/// Mean with a Student-t interval, over the rows where the value is defined.
#[derive(Clone, Copy, Debug, serde::Serialize, PartialEq)]
pub struct Mean {
    /// Rows where the value is defined.
    pub n: usize,
    /// Mean of those values; NaN when `n = 0`.
    pub mean: f64,
    /// 95 % Student-t interval `(lo, hi)`; NaN when `n < 2`.
    pub ci95: (f64, f64),
}

impl Mean {
    fn of(values: impl Iterator<Item = Option<f32>>) -> Self {
        let v: Vec<f64> = values.flatten().map(|x| x as f64).collect();
        let (mean, lo, hi) = mean_ci(&v);
        Mean {
            n: v.len(),
            mean,
            ci95: (lo, hi),
        }
    }
}

/// The four metrics over a set of phrases (one class, or all).
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Group {
    /// Number of phrases (rows).
    pub phrases: usize,
    /// Pointing-game hit rate.
    pub pointing_game: Rate,
    /// Mean box mass, over phrases whose heatmap has positive mass.
    pub box_mass: Mean,
    /// Reverse-direction hit rate, over phrases where it is defined.
    pub reverse_hit: Rate,
    /// Mean span share, over phrases where it is defined.
    pub span_share: Mean,
}

impl Group {
    fn of(rows: &[&PhraseResult]) -> Self {
        Group {
            phrases: rows.len(),
            pointing_game: Rate::of(rows.iter().map(|r| Some(r.pointing_hit))),
            box_mass: Mean::of(rows.iter().map(|r| r.box_mass)),
            reverse_hit: Rate::of(rows.iter().map(|r| r.reverse_hit)),
            span_share: Mean::of(rows.iter().map(|r| r.span_share)),
        }
    }
}

/// Summary of results.csv rows, as written to summary.json.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Summary {
    /// Distinct images among the rows.
    pub images: usize,
    /// All rows together.
    pub overall: Group,
    /// Rows per class, classes sorted by name.
    pub per_class: BTreeMap<String, Group>,
}

impl Summary {
    /// Summarise `rows`, overall and per class.
    pub fn of(rows: &[PhraseResult]) -> Self {
        let mut by_class: BTreeMap<String, Vec<&PhraseResult>> = BTreeMap::new();
        for r in rows {
            by_class.entry(r.class.clone()).or_default().push(r);
        }
        let images = rows
            .iter()
            .map(|r| r.image.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len();
        let all: Vec<&PhraseResult> = rows.iter().collect();
        Summary {
            images,
            overall: Group::of(&all),
            per_class: by_class
                .into_iter()
                .map(|(c, r)| (c, Group::of(&r)))
                .collect(),
        }
    }

    /// A fixed-width table: one line per class, then the overall line.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<14} {:>6}  {:<21}  {:<21}  {:<21}  {:<21}\n",
            "class",
            "n",
            "pointing [95% CI]",
            "box mass [95% CI]",
            "reverse hit [95% CI]",
            "span share [95% CI]"
        );
        let cell = |v: f64, (lo, hi): (f64, f64)| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.3} [{lo:.3}, {hi:.3}]")
            }
        };
        let line = |name: &str, g: &Group| {
            format!(
                "{:<14} {:>6}  {:<21}  {:<21}  {:<21}  {:<21}\n",
                name,
                g.phrases,
                cell(g.pointing_game.rate, g.pointing_game.ci95),
                cell(g.box_mass.mean, g.box_mass.ci95),
                cell(g.reverse_hit.rate, g.reverse_hit.ci95),
                cell(g.span_share.mean, g.span_share.ci95)
            )
        };
        for (c, g) in &self.per_class {
            s += &line(c, g);
        }
        s += &line("ALL", &self.overall);
        s
    }

    /// Grouped bars per class (and ALL): pointing game, box mass, reverse hit, each with its
    /// 95 % interval as a whisker; the y axis is 0..1; the title names `method`. Undefined
    /// values (the reverse direction of `ig`) get no bar.
    pub fn bar_chart(&self, method: &str) -> RgbImage {
        const METRICS: [(&str, [u8; 3]); 3] = [
            ("pointing", [52, 101, 164]),
            ("box mass", [230, 145, 56]),
            ("reverse hit", [78, 154, 6]),
        ];
        let mut groups: Vec<(&str, &Group)> = self
            .per_class
            .iter()
            .map(|(c, g)| (c.as_str(), g))
            .collect();
        groups.push(("ALL", &self.overall));
        let (bar, gap, left, top, plot_h, bottom) = (14u32, 18u32, 48u32, 40u32, 240u32, 90u32);
        let group_w = 3 * bar + gap;
        let width = (left + groups.len() as u32 * group_w + 20).max(420);
        let height = top + plot_h + bottom;
        let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
        let y_of = |v: f64| top as i64 + ((1.0 - v.clamp(0.0, 1.0)) * plot_h as f64).round() as i64;
        let rect = |img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]| {
            for y in y0.max(0)..y1.min(img.height() as i64) {
                for x in x0.max(0)..x1.min(img.width() as i64) {
                    img.put_pixel(x as u32, y as u32, Rgb(c));
                }
            }
        };
        // Axes and grid lines at 0, 0.25, …, 1.
        for k in 0..=4 {
            let v = k as f64 / 4.0;
            let y = y_of(v);
            rect(
                &mut img,
                left as i64,
                y,
                width as i64 - 10,
                y + 1,
                [220, 220, 220],
            );
            draw_text(&mut img, 4, y - 4, &format!("{v:.2}"), 1, [0, 0, 0]);
        }
        rect(
            &mut img,
            left as i64 - 1,
            top as i64,
            left as i64,
            (top + plot_h) as i64 + 1,
            [0, 0, 0],
        );
        for (g, (name, group)) in groups.iter().enumerate() {
            let gx = left as i64 + 8 + g as i64 * group_w as i64;
            let values = [
                (group.pointing_game.rate, group.pointing_game.ci95),
                (group.box_mass.mean, group.box_mass.ci95),
                (group.reverse_hit.rate, group.reverse_hit.ci95),
            ];
            for (m, (v, (lo, hi))) in values.iter().enumerate() {
                let x = gx + m as i64 * bar as i64;
                if v.is_finite() {
                    rect(
                        &mut img,
                        x,
                        y_of(*v),
                        x + bar as i64 - 2,
                        y_of(0.0),
                        METRICS[m].1,
                    );
                }
                if lo.is_finite() && hi.is_finite() {
                    let cx = x + bar as i64 / 2 - 1;
                    rect(&mut img, cx, y_of(*hi), cx + 1, y_of(*lo) + 1, [0, 0, 0]);
                    rect(
                        &mut img,
                        cx - 3,
                        y_of(*hi),
                        cx + 4,
                        y_of(*hi) + 1,
                        [0, 0, 0],
                    );
                    rect(
                        &mut img,
                        cx - 3,
                        y_of(*lo),
                        cx + 4,
                        y_of(*lo) + 1,
                        [0, 0, 0],
                    );
                }
            }
            // Class names run down at 45°-ish: one character per step so long names fit.
            for (k, ch) in name.chars().take(10).enumerate() {
                draw_text(
                    &mut img,
                    gx + k as i64 * 3,
                    (top + plot_h) as i64 + 6 + k as i64 * 7,
                    &ch.to_string(),
                    1,
                    [0, 0, 0],
                );
            }
        }
        let title = format!(
            "{method}: grounding per class ({} phrases, {} images), 95% CI",
            self.overall.phrases, self.images
        );
        draw_text(&mut img, left as i64, 8, &title, 1, [0, 0, 0]);
        let mut x = left as i64;
        for (name, c) in METRICS {
            let name = if name == "reverse hit" && self.overall.reverse_hit.n == 0 {
                "reverse hit (undefined)"
            } else {
                name
            };
            rect(&mut img, x, 22, x + 10, 32, c);
            draw_text(&mut img, x + 14, 23, name, 1, [0, 0, 0]);
            x += 14 + text_width(name, 1) as i64 + 16;
        }
        img
    }
}
