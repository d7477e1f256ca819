//! Seeded captioned mosaics: 1–4 Fashion-MNIST items pasted into disjoint cells of a random
//! grid on a square grayscale canvas, each with its tight box, described by [`super::caption`].
//!
//! Mosaic `i` of seed `s` is a pure function of `(data, config, s, i)`: each draws from its own
//! `Rng::for_index` stream, so mosaics can be made in any order or in parallel.

use serde::Serialize;

use super::caption::{self, Phrase, Relation};
use super::idx::{FashionMnist, PIXELS, SIDE};
use super::rng::Rng;
use crate::{Error, Result};

/// How mosaics are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct MosaicConfig {
    /// Side of the square canvas in pixels.
    pub canvas: usize,
    /// Items per mosaic, uniform in `min_items..=max_items` (after `single_item_prob`).
    pub min_items: usize,
    /// Upper bound of the item count (inclusive); at most `(canvas / min_size)²`, the grid
    /// cells that can hold an item of `min_size`.
    pub max_items: usize,
    /// Extra chance of a one-item mosaic, drawn before the uniform count. Training raises it
    /// so lone items ("a photo of a coat") are common; 0 leaves the draw (and so every test
    /// mosaic of a seed) exactly as without it.
    pub single_item_prob: f32,
    /// Side of a pasted item in pixels (28 = native), uniform in `min_size..=max_size` but never
    /// more than its grid cell. Resampled with a box (area) filter.
    pub min_size: usize,
    /// Upper bound of the item side in pixels (inclusive).
    pub max_size: usize,
    /// Fraction of mosaics on a noisy background instead of black.
    pub noisy_fraction: f32,
    /// Noisy backgrounds are uniform in `0..=a`, with `a` uniform in `1..=noise_max` per mosaic.
    pub noise_max: u8,
    /// Chance that an item repeats the class of an earlier item of its mosaic (so captions
    /// get count phrases like "two sneakers"); otherwise classes are uniform.
    pub repeat_prob: f32,
    /// Relative draw weights of the classes for fresh (non-repeat) items, to shift the
    /// distribution (e.g. rare classes); `None` = uniform, the draw of every test mosaic.
    /// Repeats copy an earlier item's class, so each class keeps its share among all items.
    pub class_weights: Option<[f32; 10]>,
    /// Classes that only ever appear as a lone item (one-item mosaics), never in a scene with
    /// others: the model sees them named but never has to find them among other items.
    pub lone_classes: Vec<u8>,
}

impl Default for MosaicConfig {
    /// 64×64 canvas, 1–4 items of 28–56 px (×1–2), half the backgrounds noisy.
    fn default() -> Self {
        MosaicConfig {
            canvas: 64,
            min_items: 1,
            max_items: 4,
            single_item_prob: 0.0,
            min_size: 28,
            max_size: 56,
            noisy_fraction: 0.5,
            noise_max: 48,
            repeat_prob: 0.25,
            class_weights: None,
            lone_classes: Vec::new(),
        }
    }
}

impl MosaicConfig {
    /// Rows/columns a grid may have: cells must hold an item of `min_size`.
    fn max_grid(&self) -> usize {
        self.canvas / self.min_size.max(1)
    }

    /// Errors on an empty size or count range, a canvas outside `min_size..=32768`, more items
    /// than cells, a probability outside `[0, 1]`, a negative or non-finite class weight, or a
    /// lone class that is not a Fashion-MNIST class.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("mosaic config: {m}")));
        if self.min_size == 0 || self.max_size < self.min_size {
            return bad(format!(
                "item sizes {}..={} are empty",
                self.min_size, self.max_size
            ));
        }
        if self.canvas < self.min_size || self.canvas > 1 << 15 {
            return bad(format!(
                "canvas {} must be between min_size {} and 32768",
                self.canvas, self.min_size
            ));
        }
        if self.min_items == 0 || self.max_items < self.min_items {
            return bad(format!(
                "item counts {}..={} must be non-empty and start at 1 or more",
                self.min_items, self.max_items
            ));
        }
        let cells = self.max_grid() * self.max_grid();
        if self.max_items > cells {
            return bad(format!(
                "a {0}×{0} canvas holds at most {cells} items of {1}×{1} pixels, not {2}",
                self.canvas, self.min_size, self.max_items
            ));
        }
        for (name, p) in [
            ("noisy_fraction", self.noisy_fraction),
            ("repeat_prob", self.repeat_prob),
            ("single_item_prob", self.single_item_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} is not a probability"));
            }
        }
        if let Some(w) = &self.class_weights {
            if let Some((c, v)) = w
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return bad(format!(
                    "class weight {v} of class {c} is not a finite number >= 0"
                ));
            }
        }
        if let Some(c) = self.lone_classes.iter().find(|&&c| c >= 10) {
            return bad(format!(
                "lone class {c} is not a Fashion-MNIST class (0..10)"
            ));
        }
        Ok(())
    }
}

/// One pasted Fashion-MNIST item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Fashion-MNIST label.
    pub class: u8,
    /// Tight box of the item's non-zero pixels on the canvas: `[x0, y0, x1, y1]`, exclusive
    /// end. Boxes of one mosaic never overlap (items sit in disjoint grid cells).
    pub bbox: [u32; 4],
    /// Index of the image in the split it came from.
    pub source_index: usize,
}

/// A generated mosaic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mosaic {
    /// Index within its seed's sequence.
    pub index: u64,
    /// Side of the canvas.
    pub canvas: usize,
    /// `canvas × canvas` grayscale pixels, row-major (see [`Mosaic::to_rgb`]).
    pub pixels: Vec<u8>,
    /// The pasted items, in the order they were placed.
    pub items: Vec<Item>,
    /// Lowercase words separated by single spaces, no punctuation.
    pub caption: String,
    /// Object phrases in caption order; spans are word-level token indices (SOT = 0).
    pub phrases: Vec<Phrase>,
    /// Spatial relations the caption states, all true of the boxes.
    pub relations: Vec<Relation>,
}

impl Mosaic {
    /// Grayscale replicated to interleaved RGB.
    pub fn to_rgb(&self) -> Vec<u8> {
        self.pixels.iter().flat_map(|&v| [v, v, v]).collect()
    }
}

/// Draws mosaics from one split of Fashion-MNIST (train mosaics only ever contain train images,
/// test mosaics test images: the generator holds one split).
#[derive(Debug, Clone)]
pub struct MosaicGenerator {
    data: FashionMnist,
    config: MosaicConfig,
    seed: u64,
    by_class: [Vec<u32>; 10],
    /// Classes with at least one image (and a positive weight, when weighted).
    classes: Vec<u8>,
    /// Those of `classes` that may share a mosaic with other items (not lone).
    scene_classes: Vec<u8>,
}

impl MosaicGenerator {
    /// The generator of `seed` over `data`.
    ///
    /// # Panics
    /// On an invalid config or empty data; [`Self::try_new`] returns those as errors.
    pub fn new(data: FashionMnist, config: MosaicConfig, seed: u64) -> Self {
        Self::try_new(data, config, seed).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The generator of `seed` over `data`, or an error for an invalid config, empty data,
    /// mismatched image and label counts, a label outside 0..10, or no class left to draw.
    pub fn try_new(data: FashionMnist, config: MosaicConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        if data.is_empty() || data.images.len() != data.labels.len() {
            return Err(Error::InvalidArgument(format!(
                "mosaics need a non-empty dataset with one label per image ({} images, {} labels)",
                data.images.len(),
                data.labels.len()
            )));
        }
        if let Some(l) = data.labels.iter().find(|&&l| l >= 10) {
            return Err(Error::InvalidArgument(format!(
                "label {l} is not a Fashion-MNIST class"
            )));
        }
        let by_class = data.indices_by_class();
        let weight = |c: u8| config.class_weights.map_or(1.0, |w| w[c as usize]);
        let classes: Vec<u8> = (0..10u8)
            .filter(|&c| !by_class[c as usize].is_empty() && weight(c) > 0.0)
            .collect();
        let scene_classes: Vec<u8> = classes
            .iter()
            .copied()
            .filter(|c| !config.lone_classes.contains(c))
            .collect();
        if classes.is_empty() || (config.max_items > 1 && scene_classes.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "mosaic config: no class with images{} is left to draw{}",
                if config.class_weights.is_some() {
                    " and a positive weight"
                } else {
                    ""
                },
                if classes.is_empty() {
                    ""
                } else {
                    " for multi-item mosaics (all are lone)"
                }
            )));
        }
        Ok(MosaicGenerator {
            data,
            config,
            seed,
            by_class,
            classes,
            scene_classes,
        })
    }

    /// How mosaics are drawn.
    pub fn config(&self) -> &MosaicConfig {
        &self.config
    }
    /// The seed that fixes every mosaic.
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }
    /// The split the items are drawn from.
    pub fn data(&self) -> &FashionMnist {
        &self.data
    }

    /// Mosaic number `index` of this seed.
    pub fn mosaic(&self, index: u64) -> Mosaic {
        let cfg = &self.config;
        let c = cfg.canvas;
        let mut rng = Rng::for_index(self.seed, index);
        let n = if cfg.single_item_prob > 0.0 && rng.chance(cfg.single_item_prob) {
            1
        } else {
            rng.range(cfg.min_items, cfg.max_items)
        };

        // A grid with room for n items and not much more (so items stay large), n random cells.
        let g = cfg.max_grid();
        let all: Vec<(usize, usize)> = (1..=g)
            .flat_map(|r| (1..=g).map(move |k| (r, k)))
            .filter(|&(r, k)| r * k >= n)
            .collect();
        let snug: Vec<(usize, usize)> = all
            .iter()
            .copied()
            .filter(|&(r, k)| r * k <= (2 * n).max(4))
            .collect();
        let (rows, cols) = *rng.pick(if snug.is_empty() { &all } else { &snug });
        let mut cells: Vec<usize> = (0..rows * cols).collect();
        rng.shuffle(&mut cells);

        let mut pixels = vec![0u8; c * c];
        let mut items: Vec<Item> = Vec::with_capacity(n);
        for &cell in &cells[..n] {
            let class = if !items.is_empty() && rng.chance(cfg.repeat_prob) {
                rng.pick(&items).class
            } else {
                self.fresh_class(&mut rng, n == 1)
            };
            let pool = &self.by_class[class as usize];
            let source_index = pool[rng.below(pool.len())] as usize;

            let (r, k) = (cell / cols, cell % cols);
            let (cx0, cx1) = (k * c / cols, (k + 1) * c / cols);
            let (cy0, cy1) = (r * c / rows, (r + 1) * c / rows);
            let hi = cfg.max_size.min(cx1 - cx0).min(cy1 - cy0);
            let side = rng.range(cfg.min_size.min(hi), hi);
            let x = cx0 + rng.below(cx1 - cx0 - side + 1);
            let y = cy0 + rng.below(cy1 - cy0 - side + 1);

            let glyph = resize_box(&self.data.images[source_index], side);
            let [gx0, gy0, gx1, gy1] = tight_box(&glyph, side).unwrap_or([0, 0, side, side]);
            for gy in gy0..gy1 {
                let row = &glyph[gy * side..(gy + 1) * side];
                let out = &mut pixels[(y + gy) * c..(y + gy + 1) * c];
                out[x + gx0..x + gx1].copy_from_slice(&row[gx0..gx1]);
            }
            items.push(Item {
                class,
                bbox: [x + gx0, y + gy0, x + gx1, y + gy1].map(|v| v as u32),
                source_index,
            });
        }

        if cfg.noise_max > 0 && rng.chance(cfg.noisy_fraction) {
            let amp = rng.range(1, cfg.noise_max as usize);
            for p in pixels.iter_mut() {
                let noise = rng.below(amp + 1) as u8;
                *p = (*p).max(noise);
            }
        }

        let boxes: Vec<(u8, [u32; 4])> = items.iter().map(|i| (i.class, i.bbox)).collect();
        let d = caption::describe(&boxes, &mut rng);
        Mosaic {
            index,
            canvas: c,
            pixels,
            items,
            caption: d.caption,
            phrases: d.phrases,
            relations: d.relations,
        }
    }
}

impl MosaicGenerator {
    /// The class of a fresh item: uniform over the drawable classes (one `pick`, so the
    /// default config draws exactly as before the weights existed), or by `class_weights`
    /// with one 24-bit uniform draw; lone classes only when the mosaic has one item.
    fn fresh_class(&self, rng: &mut Rng, alone: bool) -> u8 {
        let pool = if alone || self.config.lone_classes.is_empty() {
            &self.classes
        } else {
            &self.scene_classes
        };
        let Some(w) = &self.config.class_weights else {
            return *rng.pick(pool);
        };
        let total: f64 = pool.iter().map(|&c| w[c as usize] as f64).sum();
        let u = (rng.next_u64() >> 40) as f64 / (1u64 << 24) as f64 * total;
        let mut acc = 0.0;
        for &c in pool {
            acc += w[c as usize] as f64;
            if u < acc {
                return c;
            }
        }
        pool[pool.len() - 1]
    }
}

/// Resample a 28×28 image to `side`×`side` with a box filter: each output pixel averages the
/// source area it covers (exact weights), so zero background stays exactly zero.
pub fn resize_box(src: &[u8; PIXELS], side: usize) -> Vec<u8> {
    if side == SIDE {
        return src.to_vec();
    }
    let w = box_weights(SIDE, side);
    let mut tmp = vec![0f32; SIDE * side];
    for y in 0..SIDE {
        for (ox, taps) in w.iter().enumerate() {
            tmp[y * side + ox] = taps
                .iter()
                .map(|&(i, wt)| src[y * SIDE + i] as f32 * wt)
                .sum();
        }
    }
    let mut out = vec![0u8; side * side];
    for (oy, taps) in w.iter().enumerate() {
        for ox in 0..side {
            let v: f32 = taps.iter().map(|&(i, wt)| tmp[i * side + ox] * wt).sum();
            out[oy * side + ox] = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Per output index, the source indices it covers and their normalised overlap weights.
fn box_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    // In units where source pixel i spans [i*n_out, (i+1)*n_out), output j spans
    // [j*n_in, (j+1)*n_in): the overlaps are integers.
    (0..n_out)
        .map(|j| {
            let (lo, hi) = (j * n_in, (j + 1) * n_in);
            (lo / n_out..hi.div_ceil(n_out))
                .filter_map(|i| {
                    let overlap = hi.min((i + 1) * n_out) as i64 - lo.max(i * n_out) as i64;
                    (overlap > 0).then(|| (i, overlap as f32 / n_in as f32))
                })
                .collect()
        })
        .collect()
}

/// `[x0, y0, x1, y1]` of the non-zero pixels of a `side`×`side` image; `None` if all zero.
pub fn tight_box(img: &[u8], side: usize) -> Option<[usize; 4]> {
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for (i, &v) in img.iter().enumerate() {
        if v > 0 {
            let (x, y) = (i % side, i / side);
            b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
        }
    }
    (b[0] != usize::MAX).then_some(b)
}
