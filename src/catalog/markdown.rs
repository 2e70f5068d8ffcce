//! Markdown from packages (release notes, description files) to HTML that is safe to
//! put in a page.
//!
//! Why `pulldown-cmark` and not an HTML sanitiser such as `ammonia`: instead of
//! producing HTML and cleaning it afterwards, the untrusted parts never become markup.
//! Raw HTML blocks and inline HTML are turned into text (so they are escaped by the
//! renderer), link destinations keep only `http`, `https`, `mailto` and relative
//! forms, and images become plain links (no remote loads; the page's CSP would block
//! them anyway). What is left is markup pulldown-cmark itself writes, with every text
//! and attribute escaped.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// Largest Markdown input rendered; longer text is cut (release notes are short).
pub const MAX_MARKDOWN_BYTES: usize = 256 * 1024;

fn safe_url(url: &str) -> bool {
    let u = url.trim();
    let lower = u.to_ascii_lowercase();
    match lower.split_once(':') {
        // A colon before any `/`, `?` or `#` is a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            matches!(scheme, "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Renders untrusted Markdown to HTML safe to embed.
pub fn render(markdown: &str) -> String {
    let mut end = markdown.len().min(MAX_MARKDOWN_BYTES);
    while !markdown.is_char_boundary(end) {
        end -= 1;
    }
    let src = &markdown[..end];
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let events = Parser::new_ext(src, opts).map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let dest_url = if safe_url(&dest_url) {
                dest_url
            } else {
                CowStr::Borrowed("#")
            };
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            })
        }
        Event::Start(Tag::Image { .. }) => Event::Text(CowStr::Borrowed("[image: ")),
        Event::End(TagEnd::Image) => Event::Text(CowStr::Borrowed("]")),
        other => other,
    });
    let mut out = String::with_capacity(src.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_escaped() {
        let cases = [
            "<script>alert(1)</script>",
            "hello <img src=x onerror=alert(1)> world",
            "<div onclick=\"x()\">block</div>\n\ntext",
            "<iframe src=javascript:alert(1)></iframe>",
        ];
        for md in cases {
            let html = render(md);
            assert!(!html.contains("<script"), "{md} -> {html}");
            assert!(!html.contains("<img"), "{md} -> {html}");
            assert!(!html.contains("<div"), "{md} -> {html}");
            assert!(!html.contains("<iframe"), "{md} -> {html}");
            assert!(html.contains("&lt;"), "{md} -> {html}");
        }
    }

    #[test]
    fn dangerous_links_are_neutralised() {
        let html =
            render("[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1)) [z](data:text/html,hi)");
        assert!(!html.to_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        let ok = render("[a](https://example.com/x?y=1) [b](notes.md) [c](mailto:a@b.c)");
        assert!(ok.contains("href=\"https://example.com/x?y=1\""), "{ok}");
        assert!(ok.contains("href=\"notes.md\""), "{ok}");
        assert!(ok.contains("href=\"mailto:a@b.c\""), "{ok}");
    }

    #[test]
    fn images_become_text_and_markup_renders() {
        let html = render("# Title\n\n- one\n- **two**\n\n![logo](https://evil.example/x.png)");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<strong>two</strong>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("[image: logo]"), "{html}");
    }

    #[test]
    fn attribute_breakout_in_link_title_is_escaped() {
        let html = render(r#"[a](https://x.example "t\" onmouseover=\"alert(1)")"#);
        assert!(!html.contains("\" onmouseover"), "{html}");
    }

    #[test]
    fn long_input_is_cut_on_a_char_boundary() {
        let md = "é".repeat(MAX_MARKDOWN_BYTES);
        let html = render(&md);
        assert!(html.len() <= MAX_MARKDOWN_BYTES + 16);
    }
}
