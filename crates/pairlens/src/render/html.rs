//! One explanation report as a single self-contained HTML file: every picture is inlined as a
//! `data:` URI and the CSS is inline, so the file can be mailed or opened offline and makes no
//! network requests. Shared by `pairlens explain --html` and (later) `pairlens serve`.

use std::fmt::Write as _;
use std::io::Cursor;

use image::{ImageFormat, RgbImage};

use super::colormap::{diverging, symmetric_limit};
use super::font::ink_for;
use super::heatmap::{heatmap_overlay, ToInput};
use super::thumbnail::{box_thumbnail, display_copy};
use crate::attribution::SpanHeatmap;
use crate::attribution::{Explanation, Mode};
use crate::{Error, Result};

/// Everything one report shows. Queries arrive already computed (the caller validated them
/// against the image geometry), so the report only lays them out.
pub struct ReportInput<'a> {
    /// Shown as the page title and heading.
    pub title: &'a str,
    /// The model, as the user named it (path or "built-in …").
    pub model: &'a str,
    /// The image, as the user named it.
    pub image_name: &'a str,
    /// The decoded original image (overlays are drawn over it, not over the resized crop).
    pub original: &'a RgbImage,
    /// Original-image pixels → network-input pixels.
    pub to_input: ToInput<'a>,
    /// Network input (w, h) in pixels.
    pub input_size: (usize, usize),
    /// One section per caption, in this order.
    pub captions: Vec<CaptionReport<'a>>,
    /// Named durations in seconds, printed in order ("load", "image side", …).
    pub timings: Vec<(String, f64)>,
}

/// One caption's explanation and the queries asked of it.
pub struct CaptionReport<'a> {
    /// The caption as the user wrote it (shown escaped).
    pub caption: &'a str,
    /// Its explanation against the report's image.
    pub explanation: &'a Explanation,
    /// Token spans to show a heatmap of, in this order.
    pub spans: Vec<SpanReport<'a>>,
    /// Image boxes to show the token scores of, in this order.
    pub boxes: Vec<BoxReport<'a>>,
}

/// A token span `start..end` (indices of [`Explanation::tokens`]) and its heatmap.
pub struct SpanReport<'a> {
    /// Index of the span's first token.
    pub start: usize,
    /// Index one past the span's last token.
    pub end: usize,
    /// The span's heatmap, as [`Explanation::span_heatmap`] computes it.
    pub heatmap: &'a SpanHeatmap,
}

/// A box `[x0, y0, x1, y1]` in original-image pixels and every token's interaction with it.
pub struct BoxReport<'a> {
    /// `[x0, y0, x1, y1]` in original-image pixels.
    pub bbox: [f32; 4],
    /// Every token's interaction with the box, as [`Explanation::box_scores`] computes it.
    pub token_scores: &'a [f32],
}

/// The report as one HTML document. Errors only on inconsistent input (a span out of range,
/// scores that do not match the tokens, an empty image), never on the user's text: captions,
/// tokens and names are escaped.
pub fn report(input: &ReportInput) -> Result<String> {
    let (ow, oh) = input.original.dimensions();
    if ow == 0 || oh == 0 {
        return Err(Error::InvalidArgument(format!(
            "HTML report: the image {} is empty",
            input.image_name
        )));
    }
    let mut h = String::with_capacity(1 << 16);
    let title = escape(input.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">model <code>{}</code> · image <code>{}</code> ({ow}×{oh} px, network input {}×{} px)</p>",
        escape(input.model),
        escape(input.image_name),
        input.input_size.0,
        input.input_size.1
    );
    h.push_str(HOW_TO_READ);
    let original_uri = png_data_uri(&display_copy(input.original, 320))?;
    for (k, c) in input.captions.iter().enumerate() {
        caption_section(&mut h, input, c, k, &original_uri)?;
    }
    if !input.timings.is_empty() {
        let parts: Vec<String> = input
            .timings
            .iter()
            .map(|(name, s)| format!("{} {s:.2} s", escape(name)))
            .collect();
        let _ = writeln!(h, "<p class=\"meta\">time: {}</p>", parts.join(" · "));
    }
    h.push_str("<footer>made by pairlens</footer>\n</main>\n</body>\n</html>\n");
    Ok(h)
}

fn caption_section(
    h: &mut String,
    input: &ReportInput,
    c: &CaptionReport,
    k: usize,
    original_uri: &str,
) -> Result<()> {
    let e = c.explanation;
    let n = e.tokens.len();
    let patches = e.grid.0 * e.grid.1;
    let rows = e.matrix()?;
    let first = usize::from(e.class_token);
    if rows.len() != n || rows.iter().any(|r| r.len() != first + patches) {
        return Err(Error::InvalidArgument(format!(
            "HTML report: caption {:?}: interactions do not match {n} tokens × ({first} + {patches}) image tokens",
            c.caption
        )));
    }
    let totals: Vec<f32> = rows.iter().map(|r| r.iter().sum()).collect();
    let cls: Vec<f32> = rows.iter().map(|r| r[..first].iter().sum()).collect();
    let cls_note = |v: Option<f32>| match v {
        Some(v) => format!(" (CLS {v:+.3e})"),
        None => String::new(),
    };
    let whole = e.span_heatmap(0, n)?;
    let overlay = |values: &[f32], what: &str| -> Result<String> {
        let title = format!("{what}\nscore {:.3}", e.score);
        png_data_uri(&heatmap_overlay(
            input.original,
            input.to_input,
            input.input_size,
            e.grid,
            values,
            None,
            &title,
        ))
    };

    let _ = writeln!(
        h,
        "<section class=\"caption\">\n<h2>caption {}: “{}”</h2>",
        k + 1,
        escape(c.caption)
    );
    // Tokens coloured by their total interaction (CLS column included), with a colour bar.
    let _ =
        writeln!(h, "<h3>tokens, coloured by their total interaction Σ<sub>t</sub> A[s, t]</h3>\n<div class=\"row\">");
    let tips: Vec<String> = (0..n)
        .map(|i| match e.class_token {
            true => format!(
                "#{i} total {:+.4e} · with CLS {:+.4e} · with patches {:+.4e}",
                totals[i],
                cls[i],
                totals[i] - cls[i]
            ),
            false => format!("#{i} total {:+.4e}", totals[i]),
        })
        .collect();
    token_strip(h, &e.tokens, &totals, &tips);
    colour_bar(h, symmetric_limit(&totals));
    h.push_str("</div>\n");

    // The original next to the whole caption's heatmap; the overlay PNG carries its own bar.
    let _ = writeln!(
        h,
        "<div class=\"figs\">\n<figure><img class=\"photo\" src=\"{original_uri}\" alt=\"original image\">\
         <figcaption>original image</figcaption></figure>"
    );
    let _ = writeln!(
        h,
        "<figure><img src=\"{}\" alt=\"heatmap of the whole caption\"><figcaption>whole caption: Σ<sub>s</sub> A[s, patch]\
         {}</figcaption></figure>\n</div>",
        overlay(&whole.patches, "whole caption")?,
        cls_note(whole.cls)
    );

    numbers(h, e, &totals);

    for s in &c.spans {
        if s.start >= s.end || s.end > n || s.heatmap.patches.len() != patches {
            return Err(Error::InvalidArgument(format!(
                "HTML report: span {}:{} does not fit caption {:?} ({n} tokens, {patches} patches)",
                s.start, s.end, c.caption
            )));
        }
        let words = e.tokens[s.start..s.end].join(" ");
        let _ = writeln!(
            h,
            "<h3>span {}:{} “{}”</h3>\n<div class=\"figs\"><figure><img src=\"{}\" alt=\"heatmap of span {}:{}\">\
             <figcaption>Σ<sub>s∈span</sub> A[s, patch]{}</figcaption></figure></div>",
            s.start,
            s.end,
            escape(&words),
            overlay(&s.heatmap.patches, &format!("\"{words}\""))?,
            s.start,
            s.end,
            cls_note(s.heatmap.cls)
        );
    }

    for (j, b) in c.boxes.iter().enumerate() {
        if b.token_scores.len() != n {
            return Err(Error::InvalidArgument(format!(
                "HTML report: box {:?}: {} token scores for {n} tokens",
                b.bbox,
                b.token_scores.len()
            )));
        }
        let [x0, y0, x1, y1] = b.bbox;
        let _ = writeln!(
            h,
            "<h3>box {} ({x0}, {y0}) – ({x1}, {y1}) px: each token's interaction with it</h3>\n<div class=\"row\">\
             <img class=\"thumb\" src=\"{}\" alt=\"box {} on the image\">",
            j + 1,
            png_data_uri(&box_thumbnail(input.original, b.bbox))?,
            j + 1
        );
        let tips: Vec<String> = b
            .token_scores
            .iter()
            .enumerate()
            .map(|(i, v)| format!("#{i} with the box {v:+.4e}"))
            .collect();
        token_strip(h, &e.tokens, b.token_scores, &tips);
        colour_bar(h, symmetric_limit(b.token_scores));
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n");
    Ok(())
}

fn numbers(h: &mut String, e: &Explanation, totals: &[f32]) {
    let r = e.reference_terms;
    let x = e.exclip_terms;
    let sum: f32 = totals.iter().sum();
    let mode = match e.mode {
        Mode::Exclip => "exclip",
        Mode::Cosine => "cosine",
    };
    let row = |name: &str, v: f32, note: &str| {
        format!("<tr><th>{name}</th><td class=\"num\">{v:+.6}</td><td class=\"note\">{note}</td></tr>\n")
    };
    h.push_str("<div class=\"tables\">\n<table>\n<caption>conservation</caption>\n");
    h.push_str(&row("score", e.score, "cosine of the two embeddings"));
    h.push_str(&row("Σ A", sum, "all token × image-token interactions"));
    h.push_str(&row(
        "f(x)·g(r<sub>y</sub>)",
        r.text_vs_image_reference,
        "caption vs image reference",
    ));
    h.push_str(&row(
        "f(r<sub>x</sub>)·g(y)",
        r.text_reference_vs_image,
        "text reference vs image",
    ));
    h.push_str(&row(
        "f(r<sub>x</sub>)·g(r<sub>y</sub>)",
        r.reference_vs_reference,
        "reference vs reference",
    ));
    h.push_str(&row(
        "residual",
        e.residual,
        "score − Σ A − f·g(r) − f(r)·g + f(r)·g(r)",
    ));
    h.push_str("</table>\n<table>\n<caption>exclip's lhs terms (cosines)</caption>\n");
    h.push_str(&row("cos(f(x), g(y))", x.score, "score"));
    h.push_str(&row(
        "cos(f(x), g(r<sub>y</sub>))",
        x.text_vs_image_reference,
        "txt_ref_sim",
    ));
    h.push_str(&row(
        "cos(f(r<sub>x</sub>), g(y))",
        x.text_reference_vs_image,
        "img_ref_sim",
    ));
    h.push_str(&row(
        "cos(f(r<sub>x</sub>), g(r<sub>y</sub>))",
        x.reference_vs_reference,
        "ref_ref_sim",
    ));
    h.push_str("</table>\n<table>\n<caption>settings</caption>\n");
    let _ = write!(
        h,
        "<tr><th>text layer</th><td class=\"num\">{}</td></tr>\n<tr><th>image layer</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>N (path points)</th><td class=\"num\">{}</td></tr>\n<tr><th>mode</th><td class=\"num\">{mode}</td></tr>\n\
         <tr><th>patch grid</th><td class=\"num\">{}×{}</td></tr>\n</table>\n</div>\n",
        e.text_layer, e.image_layer, e.steps, e.grid.0, e.grid.1
    );
}

/// Tokens as coloured chips, each value printed small underneath and in a tooltip.
fn token_strip(h: &mut String, tokens: &[String], values: &[f32], tips: &[String]) {
    let limit = symmetric_limit(values);
    h.push_str("<div class=\"strip\">");
    for ((tok, &v), tip) in tokens.iter().zip(values).zip(tips) {
        let bg = diverging(v, limit);
        let ink = ink_for(bg);
        let _ = write!(
            h,
            "<span class=\"tok\" title=\"{}\"><span class=\"chip\" style=\"background:{};color:{}\">{}</span>\
             <span class=\"val\">{v:+.1e}</span></span>",
            escape(&format!("{tok} — {tip}")),
            css(bg),
            css(ink),
            escape(tok)
        );
    }
    h.push_str("</div>\n");
}

/// Vertical bar from +limit (top, red) through 0 to −limit (bottom, blue).
fn colour_bar(h: &mut String, limit: f32) {
    let stops: Vec<String> = (0..=8)
        .map(|i| {
            let t = i as f32 / 8.0;
            format!(
                "{} {:.1}%",
                css(diverging(limit * (1.0 - 2.0 * t), limit)),
                t * 100.0
            )
        })
        .collect();
    let _ = write!(
        h,
        "<div class=\"cbar\" title=\"colour scale: red positive, blue negative, symmetric range ±{limit:.3e}\">\
         <div class=\"grad\" style=\"background:linear-gradient(to bottom, {})\"></div>\
         <div class=\"ticks\"><span>{:+.2e}</span><span>0</span><span>{:+.2e}</span></div></div>",
        stops.join(", "),
        limit,
        -limit
    );
}

fn css(c: [u8; 3]) -> String {
    format!("rgb({},{},{})", c[0], c[1], c[2])
}

fn png_data_uri(img: &RgbImage) -> Result<String> {
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png).map_err(|e| {
        Error::InvalidArgument(format!("HTML report: encoding a picture as PNG: {e}"))
    })?;
    Ok(format!("data:image/png;base64,{}", base64(bytes.get_ref())))
}

/// Standard base64 with padding (RFC 4648): a dozen lines instead of a dependency.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escape text for HTML element content and double- or single-quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HOW_TO_READ: &str = "<details open class=\"how\"><summary>How to read this</summary>\n\
<p><b>A[s, t]</b> is the second-order interaction of caption token <i>s</i> with image token <i>t</i>: \
how much that pair of features, together, contributes to the similarity score (integrated Jacobians of \
both towers along a path from a reference input — a caption of filler tokens and a mean-colour image — to \
the real one). Red is positive (the pair makes caption and image more similar), blue negative; every colour \
scale is symmetric around zero and has its own bar next to it, so compare colours within one picture and \
read the numbers to compare across pictures.</p>\n\
<p>The interactions add up to the score: <b>score = Σ A + f(x)·g(r<sub>y</sub>) + f(r<sub>x</sub>)·g(y) \
− f(r<sub>x</sub>)·g(r<sub>y</sub>) + residual</b>; the residual shrinks as N (path points) grows \
(exactly so in <i>cosine</i> mode). A heatmap shows, for every patch, the sum of A over the chosen tokens; \
a box strip shows, for every token, the sum of A over the patches in the box. Image token 0 is <b>CLS</b>, \
the image's global token: it has no place in the picture, so its share is printed as a number beside each \
heatmap instead of being drawn. Hover over a token for its exact values.</p>\n</details>\n";

const CSS: &str = "
:root{--fg:#1d1d1f;--muted:#6e6e73;--line:#e3e3e8;--bg:#fafafa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:0 0 12px}
h3{font-size:14px;font-weight:600;color:var(--muted);margin:20px 0 8px;text-transform:none}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eee;padding:1px 4px;border-radius:4px;word-break:break-all}
.meta{color:var(--muted);font-size:13px;margin:4px 0 14px}
.how{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 16px;margin-bottom:20px;font-size:14px}
.how summary{font-weight:600;cursor:pointer}
.how p{margin:8px 0}
section.caption{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 20px;margin:18px 0}
.row{display:flex;align-items:center;gap:16px}
.strip{display:flex;flex-wrap:wrap;gap:6px 4px;align-items:flex-start;flex:0 1 820px;min-width:0}
.tok{display:inline-flex;flex-direction:column;align-items:center}
.chip{padding:3px 7px;border-radius:5px;border:1px solid rgba(0,0,0,.12);font:14px ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre}
.val{font:10px ui-monospace,SFMono-Regular,Menlo,monospace;color:var(--muted);margin-top:2px}
.cbar{display:flex;align-items:stretch;gap:4px;height:84px;flex:none}
.cbar .grad{width:14px;border:1px solid rgba(0,0,0,.2);border-radius:3px}
.cbar .ticks{display:flex;flex-direction:column;justify-content:space-between;font:10px ui-monospace,monospace;color:var(--muted)}
.figs{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-end;margin-top:14px}
figure{margin:0}
figure img{display:block;max-width:100%;image-rendering:pixelated;border:1px solid var(--line)}
img.photo{height:256px;width:auto}
img.thumb{flex:none;width:auto;max-height:160px;image-rendering:pixelated;border:1px solid var(--line)}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
.tables{display:flex;gap:22px;flex-wrap:wrap;margin-top:16px}
table{border-collapse:collapse;font-size:13px}
table caption{text-align:left;font-weight:600;color:var(--muted);padding-bottom:4px}
th{text-align:left;font-weight:500;padding:2px 12px 2px 0;white-space:nowrap}
td.num{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;text-align:right;padding:2px 10px 2px 0}
td.note{color:var(--muted);font-size:12px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{ExclipTerms, ReferenceTerms};
    use candle_core::{Device, Tensor};
    use image::Rgb;

    fn explanation() -> Explanation {
        // 4 tokens × (1 CLS + 2×2 patches).
        let values: Vec<f32> = (0..20).map(|i| (i as f32 - 9.5) * 1e-3).collect();
        Explanation {
            tokens: vec![
                "<start_of_text>".into(),
                "<script>".into(),
                "a&b".into(),
                "<end_of_text>".into(),
            ],
            interactions: Tensor::from_vec(values, (4, 5), &Device::Cpu).unwrap(),
            class_token: true,
            text_reference: vec![49406, 0, 49407],
            image_reference: "zeros".into(),
            grid: (2, 2),
            patch_size: 16,
            score: 0.271828,
            reference_terms: ReferenceTerms {
                text_vs_image_reference: 0.125,
                text_reference_vs_image: -0.0625,
                reference_vs_reference: 0.03125,
            },
            exclip_terms: ExclipTerms {
                score: 0.271828,
                text_vs_image_reference: 0.111111,
                text_reference_vs_image: 0.222222,
                reference_vs_reference: 0.333333,
            },
            residual: 0.000321,
            mode: Mode::Cosine,
            text_layer: 1,
            image_layer: 2,
            steps: 7,
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn report_escapes_text_inlines_images_and_prints_numbers() {
        let e = explanation();
        let span = e.span_heatmap(1, 3).unwrap();
        let scores = vec![0.5, -0.25, 0.0, 1.0];
        let original = RgbImage::from_fn(8, 6, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 100]));
        let id = |x: f32, y: f32| (x, y);
        let input = ReportInput {
            title: "pairlens <b>report</b>",
            model: "models/\"quoted\"",
            image_name: "img<1>.png",
            original: &original,
            to_input: &id,
            input_size: (8, 6),
            captions: vec![CaptionReport {
                caption: "a dog <script>alert('x')</script> & a cat",
                explanation: &e,
                spans: vec![SpanReport {
                    start: 1,
                    end: 3,
                    heatmap: &span,
                }],
                boxes: vec![BoxReport {
                    bbox: [1.0, 1.0, 5.0, 4.0],
                    token_scores: &scores,
                }],
            }],
            timings: vec![("total".into(), 1.5)],
        };
        let html = report(&input).unwrap();
        // No user text reaches the page unescaped.
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; a cat"));
        assert!(
            html.contains("a&amp;b")
                && html.contains("img&lt;1&gt;.png")
                && html.contains("&quot;quoted&quot;")
        );
        assert!(!html.contains("<b>report</b>"));
        // Every image is inlined; nothing is fetched.
        let srcs: Vec<&str> = html.split("src=\"").skip(1).collect();
        assert_eq!(
            srcs.len(),
            4,
            "original, whole caption, span, box thumbnail"
        );
        assert!(srcs.iter().all(|s| s.starts_with("data:image/png;base64,")));
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("url("));
        // The numbers.
        let sum: f32 = (0..20).map(|i| (i as f32 - 9.5) * 1e-3).sum();
        for n in [
            0.271828f32,
            0.125,
            -0.0625,
            0.03125,
            0.000321,
            0.111111,
            0.222222,
            0.333333,
            sum,
        ] {
            assert!(html.contains(&format!("{n:+.6}")), "missing {n:+.6}");
        }
        assert!(html.contains(">cosine<") && html.contains(">7<") && html.contains("1.50 s"));
        // One colour bar per strip (caption and box).
        assert_eq!(html.matches("class=\"cbar\"").count(), 2);
    }

    #[test]
    fn report_rejects_a_span_out_of_range() {
        let e = explanation();
        let span = e.span_heatmap(1, 3).unwrap();
        let original = RgbImage::new(4, 4);
        let id = |x: f32, y: f32| (x, y);
        let input = ReportInput {
            title: "t",
            model: "m",
            image_name: "i",
            original: &original,
            to_input: &id,
            input_size: (4, 4),
            captions: vec![CaptionReport {
                caption: "c",
                explanation: &e,
                spans: vec![SpanReport {
                    start: 2,
                    end: 9,
                    heatmap: &span,
                }],
                boxes: vec![],
            }],
            timings: vec![],
        };
        assert!(report(&input).unwrap_err().to_string().contains("span 2:9"));
    }
}
