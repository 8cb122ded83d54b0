//! A small self-contained HTML page of search results: thumbnails (inline PNG) in rank order
//! with rank, score and file name.

use std::path::Path;

use anyhow::Result;

use crate::data::image_file::load_rgb;
use crate::data::transforms::resize_bilinear;
use crate::fsutil::owned::Outputs;
use crate::html;

/// Side of the square thumbnails in pixels.
pub const THUMBNAIL: u32 = 160;

/// One result to show.
pub struct Hit<'a> {
    pub rank: usize,
    pub score: f32,
    pub path: &'a Path,
}

/// A thumbnail of the image as a `data:` URI, or `None` when it cannot be read.
fn thumbnail(path: &Path) -> Option<String> {
    let image = load_rgb(path).ok()?;
    html::png_data_uri(&resize_bilinear(&image, THUMBNAIL, THUMBNAIL)).ok()
}

/// Writes the page: `title` (the query) above a grid of the hits in rank order, four per row.
pub fn write_page(outputs: &mut Outputs, path: &Path, title: &str, hits: &[Hit]) -> Result<()> {
    let mut cells = String::new();
    for hit in hits {
        let name = hit.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let image = match thumbnail(hit.path) {
            Some(uri) => {
                format!(
                    "<img src=\"{uri}\" width=\"{THUMBNAIL}\" height=\"{THUMBNAIL}\" alt=\"{}\">",
                    html::escape(&name)
                )
            }
            None => format!("<div class=\"missing\">cannot read {}</div>", html::escape(&name)),
        };
        cells.push_str(&format!(
            "<figure>{image}<figcaption>#{} &middot; {:.4}<br>{}</figcaption></figure>\n",
            hit.rank,
            hit.score,
            html::escape(&name)
        ));
    }
    let (cell, cell_h, thumb) = (THUMBNAIL + 20, THUMBNAIL + 40, THUMBNAIL);
    let style = format!(
        "main {{ display: grid; grid-template-columns: repeat(4, {cell}px); gap: 0; }}
figure {{ margin: 0; width: {cell}px; height: {cell_h}px; }}
img, .missing {{ display: block; width: {thumb}px; height: {thumb}px; margin: 0 auto; }}
.missing {{ background: #eee; color: #900; }}
figcaption {{ text-align: center; height: 34px; overflow: hidden; }}
"
    );
    let page = html::page(title, &style, &format!("<main>\n{cells}</main>"));
    outputs.write(path, page.as_bytes())
}
