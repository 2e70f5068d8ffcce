//! Checks that the Grafana dashboard only queries metrics the proxy exports.
//!
//! A dashboard panel querying a renamed metric silently shows "No data";
//! this module lets a test catch that. It extracts series names from every
//! `expr` in the dashboard JSON with a small PromQL scanner (skipping
//! strings, label matchers, ranges, grouping clauses, functions, keywords and
//! Grafana variables), then resolves each series to a family of an
//! exposition: `x_bucket` belongs to `x` only if `x` is a histogram, and
//! `x_sum`/`x_count` only if `x` is a histogram or summary, so a counter that
//! happens to end in `_count` is never mangled.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::MetricKind;

/// The dashboard file could not be read as JSON.
#[derive(Debug, Error)]
pub enum DashboardError {
    /// Not JSON.
    #[error("dashboard is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON without a single `expr`: almost certainly the wrong file.
    #[error("dashboard contains no PromQL expr field")]
    NoQueries,
}

/// Every `expr` string anywhere in the dashboard (panels, nested rows, library panels).
pub fn dashboard_exprs(dashboard_json: &str) -> Result<Vec<String>, DashboardError> {
    let value: serde_json::Value = serde_json::from_str(dashboard_json)?;
    let mut out = Vec::new();
    collect_exprs(&value, &mut out);
    if out.is_empty() {
        return Err(DashboardError::NoQueries);
    }
    Ok(out)
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(child, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// Series names (as written, suffixes included) queried by all `expr` fields.
pub fn dashboard_series(dashboard_json: &str) -> Result<BTreeSet<String>, DashboardError> {
    Ok(dashboard_exprs(dashboard_json)?
        .iter()
        .flat_map(|e| expr_series(e))
        .collect())
}

/// Metric family names the dashboard needs, suffixes stripped by
/// [`strip_series_suffix`] (for use without an exposition to resolve against).
pub fn dashboard_metric_names(dashboard_json: &str) -> Result<BTreeSet<String>, DashboardError> {
    Ok(dashboard_series(dashboard_json)?
        .iter()
        .map(|s| strip_series_suffix(s).to_owned())
        .collect())
}

/// Strips one trailing `_bucket`, `_sum` or `_count`. Only correct when the
/// series is known to come from a histogram or summary; prefer
/// [`resolve_family`] when the exported types are at hand.
pub fn strip_series_suffix(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix).filter(|base| !base.is_empty()))
        .unwrap_or(series)
}

/// The exported family a queried series belongs to, if any.
pub fn resolve_family<'a>(
    series: &'a str,
    families: &BTreeMap<String, MetricKind>,
) -> Option<&'a str> {
    if families.contains_key(series) {
        return Some(series);
    }
    let suffixes: [(&str, &[MetricKind]); 3] = [
        ("_bucket", &[MetricKind::Histogram]),
        ("_sum", &[MetricKind::Histogram, MetricKind::Summary]),
        ("_count", &[MetricKind::Histogram, MetricKind::Summary]),
    ];
    suffixes.iter().find_map(|(suffix, kinds)| {
        let base = series.strip_suffix(suffix)?;
        families
            .get(base)
            .filter(|k| kinds.contains(k))
            .map(|_| base)
    })
}

/// Families declared by `# TYPE` lines of a text exposition (what `/metrics` serves).
pub fn exposition_families(exposition: &str) -> BTreeMap<String, MetricKind> {
    exposition
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            let name = words.next()?;
            let kind = MetricKind::parse(words.next()?)?;
            Some((name.to_owned(), kind))
        })
        .collect()
}

/// Queried series that no family of `families` provides; empty means the
/// dashboard is fully backed.
pub fn missing_series(
    dashboard_json: &str,
    families: &BTreeMap<String, MetricKind>,
) -> Result<Vec<String>, DashboardError> {
    Ok(dashboard_series(dashboard_json)?
        .into_iter()
        .filter(|s| resolve_family(s, families).is_none())
        .collect())
}

/// [`missing_series`] against a scraped `/metrics` body: the integration
/// test's one call.
pub fn missing_from_exposition(
    dashboard_json: &str,
    exposition: &str,
) -> Result<Vec<String>, DashboardError> {
    missing_series(dashboard_json, &exposition_families(exposition))
}

/// One label matcher of a selector: `metric{label op "value"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub metric: String,
    pub label: String,
    pub op: String,
    pub value: String,
}

/// Every `name{label op "value", ...}` matcher in one expression.
pub fn expr_matchers(expr: &str) -> Vec<Matcher> {
    let re = regex::Regex::new(r#"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}"#).ok();
    let one =
        regex::Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)""#).ok();
    let (Some(re), Some(one)) = (re, one) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in re.captures_iter(expr) {
        for m in one.captures_iter(&c[2]) {
            out.push(Matcher {
                metric: c[1].to_owned(),
                label: m[1].to_owned(),
                op: m[2].to_owned(),
                value: m[3].replace("\\\\", "\\"),
            });
        }
    }
    out
}

/// Matchers that can never select a series: a value (or, for a regex, every literal
/// of a plain `a|b|c` alternation, else the whole regex) that `allowed` says the code
/// never emits for that label. Grafana variables (`$job`) are left alone.
pub fn impossible_matchers(
    dashboard_json: &str,
    allowed: impl Fn(&str, &str) -> Option<Vec<&'static str>>,
) -> Result<Vec<String>, DashboardError> {
    let mut bad = Vec::new();
    for expr in dashboard_exprs(dashboard_json)? {
        for m in expr_matchers(&expr) {
            if m.value.contains('$') {
                continue;
            }
            let family = strip_series_suffix(&m.metric);
            let Some(values) = allowed(family, &m.label) else {
                continue;
            };
            let ok = match m.op.as_str() {
                "=" | "!=" => values.contains(&m.value.as_str()),
                _ => {
                    let literals: Option<Vec<&str>> = m
                        .value
                        .split('|')
                        .map(|v| {
                            v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                                .then_some(v)
                        })
                        .collect();
                    match literals {
                        Some(l) => l.iter().all(|v| values.contains(v)),
                        None => regex::Regex::new(&format!("^(?:{})$", m.value))
                            .map(|re| values.iter().any(|v| re.is_match(v)))
                            .unwrap_or(false),
                    }
                }
            };
            if !ok {
                bad.push(format!(
                    "{}{{{}{}\"{}\"}}: the code emits only {:?}",
                    m.metric, m.label, m.op, m.value, values
                ));
            }
        }
    }
    Ok(bad)
}

/// PromQL words that are never metric names.
const KEYWORDS: [&str; 30] = [
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "start",
    "end",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "atan2",
];

/// Keywords followed by a parenthesised list of label names, not metrics.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Series names referenced by one PromQL expression.
pub fn expr_series(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(&chars, i, '{', '}'),
            '[' => i = skip_group(&chars, i, '[', ']'),
            '#' => {
                while chars.get(i).is_some_and(|&c| c != '\n') {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i, '{', '}');
                } else {
                    while chars.get(i).is_some_and(|&c| is_ident_char(c)) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // Numbers and durations: 0.95, 1e3, 0x1f, 5m, 1h30m.
                while chars
                    .get(i)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while chars.get(i).is_some_and(|&c| is_ident_char(c)) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while chars.get(j).is_some_and(|c| c.is_whitespace()) {
                    j += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if chars.get(j) == Some(&'(') {
                        i = skip_group(&chars, j, '(', ')');
                    }
                } else if chars.get(j) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
                    // Function or aggregation call, or an operator keyword.
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the closing quote (or the end), honouring backslash escapes.
fn skip_string(chars: &[char], start: usize) -> usize {
    let Some(&quote) = chars.get(start) else {
        return start + 1;
    };
    let mut i = start + 1;
    while let Some(&c) = chars.get(i) {
        if c == '\\' && quote != '`' {
            i += 2;
        } else if c == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    i
}

/// Index just past the matching closer (or the end), skipping strings inside.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&c) = chars.get(i) {
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scanner_skips_everything_but_series() {
        let e = r#"histogram_quantile(0.99, sum by (le, operation) (rate(margo_proxy_request_duration_seconds_bucket{operation=~"manifest_.*", job="a,b}"}[$__rate_interval])))"#;
        assert_eq!(
            expr_series(e),
            set(&["margo_proxy_request_duration_seconds_bucket"])
        );

        let e = "sum(rate(a_total[5m] offset 1h)) / ignoring(code) group_left sum without (x) (rate(b_total[1m])) > bool 0.5 and on(instance) up";
        assert_eq!(expr_series(e), set(&["a_total", "b_total", "up"]));

        let e = "sum(rate(x_sum[${__range}])) / sum(rate(x_count[$interval])) # trailing comment mentions y_total";
        assert_eq!(expr_series(e), set(&["x_count", "x_sum"]));

        let e = r#"label_replace(topk(5, foo:recorded:rate5m), "dst", "$1", "src", "(.*)") * 1e3 + Inf"#;
        assert_eq!(expr_series(e), set(&["foo:recorded:rate5m"]));

        assert!(expr_series(r#"vector(1) + time() - count(up{a="b"} == 1)"#).contains("up"));
        assert!(expr_series("42").is_empty());
    }

    #[test]
    fn suffix_resolution_respects_metric_types() {
        let mut families = BTreeMap::new();
        families.insert("lat_seconds".to_owned(), MetricKind::Histogram);
        families.insert("jobs_count".to_owned(), MetricKind::Gauge);
        families.insert("q".to_owned(), MetricKind::Summary);
        families.insert("hits_total".to_owned(), MetricKind::Counter);
        families.insert("hits".to_owned(), MetricKind::Counter);

        assert_eq!(
            resolve_family("lat_seconds_bucket", &families),
            Some("lat_seconds")
        );
        assert_eq!(
            resolve_family("lat_seconds_sum", &families),
            Some("lat_seconds")
        );
        assert_eq!(
            resolve_family("lat_seconds_count", &families),
            Some("lat_seconds")
        );
        assert_eq!(resolve_family("jobs_count", &families), Some("jobs_count"));
        assert_eq!(resolve_family("jobs", &families), None);
        assert_eq!(resolve_family("q_sum", &families), Some("q"));
        assert_eq!(
            resolve_family("q_bucket", &families),
            None,
            "summaries have no buckets"
        );
        assert_eq!(resolve_family("hits_total", &families), Some("hits_total"));
        assert_eq!(
            resolve_family("hits_count", &families),
            None,
            "counters have no _count"
        );
        assert_eq!(strip_series_suffix("lat_seconds_bucket"), "lat_seconds");
        assert_eq!(strip_series_suffix("hits_total"), "hits_total");
        assert_eq!(strip_series_suffix("_count"), "_count");
    }

    #[test]
    fn exprs_are_found_in_nested_rows() {
        let json = r#"{"panels":[{"type":"row","panels":[{"targets":[{"expr":"a_total"}]}]},
            {"targets":[{"expr":"rate(b_bucket[1m])","legendFormat":"x"}]}],
            "templating":{"list":[{"query":"label_values(c, x)"}]}}"#;
        assert_eq!(
            dashboard_series(json).expect("json"),
            set(&["a_total", "b_bucket"])
        );
        assert_eq!(
            dashboard_metric_names(json).expect("json"),
            set(&["a_total", "b"])
        );
        assert!(matches!(
            dashboard_series("{}"),
            Err(DashboardError::NoQueries)
        ));
        assert!(matches!(
            dashboard_series("nope"),
            Err(DashboardError::Json(_))
        ));
    }

    #[test]
    fn matchers_are_held_to_the_emitted_values() {
        let allowed = |family: &str, label: &str| {
            (family == "a_total" && label == "decision").then(|| vec!["accept", "reject"])
        };
        let dash = |e: &str| format!(r#"{{"panels":[{{"targets":[{{"expr":{e:?}}}]}}]}}"#);
        let ok = dash(
            r#"sum(rate(a_total{job=~"$job", decision="reject", rule!="x"}[1m])) + a_total{decision=~"acc.*"} + a_total{decision=~"accept|reject"}"#,
        );
        assert_eq!(
            impossible_matchers(&ok, allowed).expect("json"),
            Vec::<String>::new()
        );
        let bad = dash(
            r#"rate(a_total{decision="deny"}[1m]) + a_total{decision=~"accept|deny"} + a_total{decision=~"d.*"}"#,
        );
        assert_eq!(impossible_matchers(&bad, allowed).expect("json").len(), 3);
    }

    #[test]
    fn exposition_types_are_parsed() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n# TYPE b histogram\nb_bucket{le=\"+Inf\"} 0\n# TYPE weird nonsense\n";
        let f = exposition_families(text);
        assert_eq!(f.get("a_total"), Some(&MetricKind::Counter));
        assert_eq!(f.get("b"), Some(&MetricKind::Histogram));
        assert_eq!(f.len(), 2);
        let dash = r#"{"panels":[{"targets":[{"expr":"rate(b_count[1m]) + a_total + c"}]}]}"#;
        assert_eq!(
            missing_from_exposition(dash, text).expect("json"),
            vec!["c".to_owned()]
        );
    }
}
