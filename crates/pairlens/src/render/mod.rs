//! Pictures of explanations: heatmaps over the original image and coloured token strips.
//! Diverging colours (red positive, blue negative) on a symmetric range, always with a colour bar,
//! so pictures of different explanations can be read the same way.

mod colormap;
pub mod font;
pub mod heatmap;
pub mod html;
mod strip;
pub mod thumbnail;

pub use heatmap::heatmap_overlay;
pub use strip::token_strip;
pub use thumbnail::box_thumbnail;
