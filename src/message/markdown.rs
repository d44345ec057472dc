//! `--markdown`: a body written in Markdown (CommonMark with tables and strikethrough,
//! by pulldown-cmark) becomes the HTML part, and the Markdown source stays as the
//! plain-text part — which is what Markdown was made to read like.

use pulldown_cmark::{Options, Parser, html};

/// The HTML of `markdown`. Raw HTML in it passes through, as CommonMark says: the body
/// is the sender's own text, not someone else's input.
pub(crate) fn to_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, Parser::new_ext(markdown, options));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commonmark_with_tables() {
        let html = to_html("# Report\n\n| job | result |\n|---|---|\n| build | **ok** |\n");
        assert!(html.contains("<h1>Report</h1>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains("<td><strong>ok</strong></td>"), "{html}");
        assert!(to_html("![chart](out/chart.png)").contains(r#"<img src="out/chart.png""#));
    }
}
