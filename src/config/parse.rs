//! From YAML text to the typed [`Config`], with errors an operator can act on: the line
//! and column, what was expected in words, and the errors of every top-level section
//! rather than only the first one serde stops at.

use serde::{de, Deserializer};

use super::diagnostic::Diagnostic;
use super::Config;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_anchors: 64,
            max_aliases: 1_000,
            max_events: 200_000,
        },
    }
}

/// The typed config, or the first error serde met.
pub(super) fn typed(text: &str) -> Result<Config, Diagnostic> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| diagnostic(&e))
}

fn diagnostic(e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e
        .location()
        .map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
    Diagnostic::new(line, column, friendly(&e.without_snippet().to_string()))
}

/// serde's wording, minus the position (it is in the prefix) and Rust type names.
fn friendly(message: &str) -> String {
    let mut m = message.trim().to_owned();
    if let Some(cut) = m.rfind(" at line ") {
        if m[cut + 9..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == ',')
        {
            m.truncate(cut);
        }
    }
    for (rust, words) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(rust, words);
    }
    match m.as_str() {
        "invalid boolean" => "expected true or false".into(),
        "expected sequence start" => "expected a list (`- item` lines or `[a, b]`)".into(),
        "expected mapping start" => "expected a mapping (`key: value` lines or `{k: v}`)".into(),
        _ => m,
    }
}

/// `first`, plus the first error of every other top-level section, in line order. Each
/// section is parsed alone (with the required sections stubbed after it, so that its
/// line numbers stay those of the file); what a stub or a missing section causes is not
/// reported twice.
pub(super) fn all_errors(text: &str, first: Diagnostic) -> Vec<Diagnostic> {
    let mut out = vec![first];
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && !matches!(c, '#' | '-' | '%' | '.'))
        })
        .map(|(i, _)| i)
        .collect();
    if text.contains('&') || text.contains('*') && text.contains(": *") {
        // Anchors and aliases may span sections: parsed alone, a section would report
        // aliases it cannot resolve.
        return out;
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        let (first_line, last_line) = (start + 1, end);
        if out
            .iter()
            .any(|d| (first_line..=last_line).contains(&d.line))
        {
            continue;
        }
        let key = lines[start].split(':').next().unwrap_or("").trim();
        let mut doc = "\n".repeat(start);
        doc.extend(lines[start..end].iter().copied());
        if !doc.ends_with('\n') {
            doc.push('\n');
        }
        for required in ["listeners", "upstreams"] {
            if key != required {
                doc.push_str(required);
                doc.push_str(": []\n");
            }
        }
        if let Err(e) = serde_saphyr::from_str_with_options::<Config>(&doc, options()) {
            let d = diagnostic(&e);
            if (first_line..=last_line).contains(&d.line) {
                out.push(d);
            }
        }
    }
    out.sort_by_key(|d| (d.line, d.column));
    out.dedup();
    out
}

/// `server.threads`, with the words an operator needs when it is not a number.
pub(super) fn threads<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number of threads")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("too many threads"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom("expected a whole number of threads"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            Err(E::custom(format!(
                "expected a whole number of threads, got `{}`",
                v.chars().take(40).collect::<String>()
            )))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<usize, E> {
            Err(E::custom(format!(
                "expected a whole number of threads, got `{v}`"
            )))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
            Ok(_) => Vec::new(),
        }
    }

    const BASE: &str = "listeners:\n  - address: 127.0.0.1:8080\nupstreams:\n  - name: main\n    url: http://127.0.0.1:5000\n";

    #[test]
    fn type_errors_say_what_was_expected() {
        let e = errors(&format!("{BASE}server:\n  threads: two\n"));
        assert_eq!(
            e,
            ["<config>:7:12: expected a whole number of threads, got `two`"],
            "{e:?}"
        );
        let e = errors(&format!("{BASE}server:\n  work_stealing: maybe\n"));
        assert_eq!(e, ["<config>:7:18: expected true or false"], "{e:?}");
        let e = errors("listeners: 3\nupstreams: []\n");
        assert!(e[0].starts_with("<config>:1:12: expected a list"), "{e:?}");
    }

    #[test]
    fn runtime_defaults_to_per_thread_and_takes_shared() {
        let c = Config::parse(BASE).expect("parses");
        assert_eq!(c.server.runtime, RuntimeMode::PerThread);
        let c = Config::parse(&format!("{BASE}server:\n  runtime: shared\n")).expect("parses");
        assert_eq!(c.server.runtime, RuntimeMode::Shared);
        assert!(c.server.express);
        let c = Config::parse(&format!("{BASE}server:\n  express: false\n")).expect("parses");
        assert!(!c.server.express);
        let e = errors(&format!("{BASE}server:\n  runtime: fibers\n"));
        assert!(
            e.len() == 1 && e[0].contains("per_thread") && e[0].contains("shared"),
            "{e:?}"
        );
    }

    #[test]
    fn every_section_reports_its_error() {
        let text = format!(
            "{BASE}server:\n  threads: two\nlog:\n  formt: json\ncache:\n  tag_ttl: soon\n"
        );
        let e = errors(&text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("<config>:7:"), "{e:?}");
        assert!(
            e[1].starts_with("<config>:9:") && e[1].contains("formt"),
            "{e:?}"
        );
        assert!(e[2].starts_with("<config>:11:"), "{e:?}");
    }

    #[test]
    fn missing_sections_are_reported_once() {
        let e = errors("listeners:\n  - address: 127.0.0.1:8080\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("upstreams"), "{e:?}");
    }
}
