//! Self-contained HTML pages (the search results, the saliency masks): text escaping, pictures
//! inlined as PNG `data:` URIs, and the page frame with its title and common style.

use anyhow::Result;
use base64::Engine;
use image::RgbImage;

/// `text` with `&`, `<`, `>` and `"` escaped.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `image` as a PNG `data:` URI.
pub fn png_data_uri(image: &RgbImage) -> Result<String> {
    let mut png = std::io::Cursor::new(Vec::new());
    image.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png.into_inner())))
}

/// A page: 16 px margin, the escaped `title` as a 20 px heading 12 px above `body`, with the
/// page's own `style` rules after the common ones.
pub fn page(title: &str, style: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>amfmn: {title}</title>
<style>
body {{ margin: 0; padding: 16px; font: 13px sans-serif; background: #fff; }}
h1 {{ font-size: 16px; margin: 0 0 12px 0; height: 20px; overflow: hidden; }}
{style}</style></head>
<body><h1>{title}</h1>
{body}</body></html>
"#
    )
}
