//! Image↔caption retrieval over test mosaics: each mosaic's own caption is its positive, the
//! other `count − 1` captions (or images) are the candidates.

use std::time::Instant;

use serde::Serialize;

use super::{cosine_matrix, embed_captions, embed_gray_images, outranks};
use crate::data::MosaicGenerator;
use crate::io::checkpoint::LoadedModel;
use crate::progress::Progress;
use crate::{Error, Result};

/// 0-based rank of each query's positive in a square similarity matrix `sim` (`n × n`,
/// row-major). Queries are rows when `by_rows`, else columns; the positive of query `i` is
/// entry `(i, i)`. The rank counts every other candidate scoring at least as high (ties, and
/// NaNs, count against the model), so a constant matrix ranks every positive last.
pub fn positive_ranks(sim: &[f32], n: usize, by_rows: bool) -> Result<Vec<usize>> {
    if sim.len() != n * n {
        return Err(Error::InvalidArgument(format!(
            "similarity matrix has {} entries, expected {n}×{n}",
            sim.len()
        )));
    }
    let at = |q: usize, c: usize| {
        if by_rows {
            sim[q * n + c]
        } else {
            sim[c * n + q]
        }
    };
    Ok((0..n)
        .map(|q| {
            let pos = at(q, q);
            (0..n)
                .filter(|&c| c != q && outranks(at(q, c), pos))
                .count()
        })
        .collect())
}

/// Fraction of ranks below `k` (recall at `k`); 0 for no queries.
pub fn recall_at(ranks: &[usize], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

/// Recall at 1 and 5 of one direction, plus its median 1-based rank.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recall {
    /// Fraction of queries whose positive ranks first.
    pub r1: f64,
    /// Fraction of queries whose positive ranks in the top 5.
    pub r5: f64,
    /// Median 1-based rank of the positives (1 is best; 0 for no queries).
    pub median_rank: f64,
}

impl Recall {
    /// Recall and median rank of 0-based ranks as [`positive_ranks`] returns them.
    pub(crate) fn from_ranks(ranks: &[usize]) -> Self {
        let mut sorted: Vec<usize> = ranks.to_vec();
        sorted.sort_unstable();
        let m = sorted.len();
        let median_rank = match m {
            0 => 0.0,
            _ if m % 2 == 1 => sorted[m / 2] as f64 + 1.0,
            _ => (sorted[m / 2 - 1] + sorted[m / 2]) as f64 / 2.0 + 1.0,
        };
        Recall {
            r1: recall_at(ranks, 1),
            r5: recall_at(ranks, 5),
            median_rank,
        }
    }
}

/// Both directions over one `count × count` image × caption similarity matrix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetrievalMetrics {
    /// Number of image–caption pairs (queries per direction).
    pub count: usize,
    /// Rows (images) as queries, captions as candidates.
    pub image_to_text: Recall,
    /// Columns (captions) as queries, images as candidates.
    pub text_to_image: Recall,
    /// What a random ranking scores: R@k = min(k, count)/count, median rank (count+1)/2.
    pub chance: Recall,
}

/// Metrics of `sim` (`n × n`, row `i` = image `i`, column `j` = caption `j`, pairs on the
/// diagonal).
pub fn retrieval_metrics(sim: &[f32], n: usize) -> Result<RetrievalMetrics> {
    let i2t = positive_ranks(sim, n, true)?;
    let t2i = positive_ranks(sim, n, false)?;
    let nf = n.max(1) as f64;
    Ok(RetrievalMetrics {
        count: n,
        image_to_text: Recall::from_ranks(&i2t),
        text_to_image: Recall::from_ranks(&t2i),
        chance: Recall {
            r1: 1.0f64.min(nf) / nf,
            r5: 5.0f64.min(nf) / nf,
            median_rank: (nf + 1.0) / 2.0,
        },
    })
}

/// Retrieval over mosaics `0..count` of a test-split generator, with timing.
#[derive(Clone, Debug, Serialize)]
pub struct RetrievalReport {
    /// Seed of the mosaic generator.
    pub seed: u64,
    /// Recall both ways (flattened into the report's JSON).
    #[serde(flatten)]
    pub metrics: RetrievalMetrics,
    /// Mosaics whose caption is word for word another mosaic's too ("a bag"): their text
    /// embeddings tie, so with ties counted against the model they cannot reach R@1
    /// image→text, and only one of each group can text→image. An upper bound to keep in mind.
    pub shared_captions: usize,
    /// Wall time of drawing, preprocessing and embedding everything, and scoring.
    pub seconds: f64,
    /// Mosaics (each with its caption) per second.
    pub items_per_s: f64,
}

/// Embed mosaics `0..count` of `generator` and their captions with `loaded`, and score
/// retrieval both ways. The generator should hold the test split (its canvas is what the
/// preprocessing receives, as a grayscale PNG of the mosaic would be).
pub fn evaluate_retrieval(
    loaded: &LoadedModel,
    generator: &MosaicGenerator,
    count: usize,
    batch: usize,
    progress: &mut dyn Progress,
) -> Result<RetrievalReport> {
    if count == 0 {
        return Err(Error::InvalidArgument(
            "retrieval needs at least 1 mosaic".into(),
        ));
    }
    let started = Instant::now();
    let captions: Vec<String> = (0..count as u64)
        .map(|i| generator.mosaic(i).caption)
        .collect();
    progress.start("captions", count as u64);
    let txt = embed_captions(loaded, &captions, batch, progress)?;
    progress.start("mosaics", count as u64);
    let side = generator.config().canvas;
    let img = embed_gray_images(
        loaded,
        count,
        side,
        batch,
        |i| Ok(generator.mosaic(i as u64).pixels),
        progress,
    )?;
    let mut sorted: Vec<&String> = captions.iter().collect();
    sorted.sort();
    let shared_captions = (0..count)
        .filter(|&i| {
            (i > 0 && sorted[i - 1] == sorted[i]) || (i + 1 < count && sorted[i + 1] == sorted[i])
        })
        .count();
    let sim = cosine_matrix(&img, &txt)?;
    let metrics = retrieval_metrics(&sim, count)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RetrievalReport {
        seed: generator.seed(),
        metrics,
        shared_captions,
        seconds,
        items_per_s: count as f64 / seconds.max(1e-9),
    })
}
