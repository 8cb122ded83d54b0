//! A small self-contained HTML page of search results: thumbnails (inline PNG) in rank order
//! with rank, score and file name.

use std::path::Path;

use anyhow::Result;
use base64::Engine;

use crate::data::image_file::load_rgb;
use crate::data::transforms::resize_bilinear;
use crate::fsutil::owned::Outputs;

/// Side of the square thumbnails in pixels.
pub const THUMBNAIL: u32 = 160;

/// One result to show.
pub struct Hit<'a> {
    pub rank: usize,
    pub score: f32,
    pub path: &'a Path,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A thumbnail of the image as a `data:` URI, or `None` when it cannot be read.
fn thumbnail(path: &Path) -> Option<String> {
    let image = load_rgb(path).ok()?;
    let small = resize_bilinear(&image, THUMBNAIL, THUMBNAIL);
    let mut png = std::io::Cursor::new(Vec::new());
    small.write_to(&mut png, image::ImageFormat::Png).ok()?;
    Some(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png.into_inner())))
}

/// Writes the page: `title` (the query) above a grid of the hits in rank order, four per row.
pub fn write_page(outputs: &mut Outputs, path: &Path, title: &str, hits: &[Hit]) -> Result<()> {
    let mut cells = String::new();
    for hit in hits {
        let name = hit.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let image = match thumbnail(hit.path) {
            Some(uri) => {
                format!("<img src=\"{uri}\" width=\"{THUMBNAIL}\" height=\"{THUMBNAIL}\" alt=\"{}\">", escape(&name))
            }
            None => format!("<div class=\"missing\">cannot read {}</div>", escape(&name)),
        };
        cells.push_str(&format!(
            "<figure>{image}<figcaption>#{} &middot; {:.4}<br>{}</figcaption></figure>\n",
            hit.rank,
            hit.score,
            escape(&name)
        ));
    }
    let page = format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>amfmn: {title}</title>
<style>
body {{ margin: 0; padding: 16px; font: 13px sans-serif; background: #fff; }}
h1 {{ font-size: 16px; margin: 0 0 12px 0; height: 20px; overflow: hidden; }}
main {{ display: grid; grid-template-columns: repeat(4, {cell}px); gap: 0; }}
figure {{ margin: 0; width: {cell}px; height: {cell_h}px; }}
img, .missing {{ display: block; width: {thumb}px; height: {thumb}px; margin: 0 auto; }}
.missing {{ background: #eee; color: #900; }}
figcaption {{ text-align: center; height: 34px; overflow: hidden; }}
</style></head>
<body><h1>{title}</h1><main>
{cells}</main></body></html>
"#,
        title = escape(title),
        cell = THUMBNAIL + 20,
        cell_h = THUMBNAIL + 40,
        thumb = THUMBNAIL,
    );
    outputs.write(path, page.as_bytes())
}
