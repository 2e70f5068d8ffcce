//! Where a YAML syntax error really started, and a one-line hint for the usual causes.
//!
//! A parser reports where it gave up, which for an unclosed `[` is often a line later
//! ("illegal placement of ':'" at the next key). Developers fix errors faster when told
//! where the construct was opened, so the source is scanned lexically (quotes, comments,
//! flow brackets, indentation) up to the failure point. The scan is linear and bounded
//! by the input, which the parser's size budget already capped.

use crate::margo::report::Location;

/// What the scan found out about a syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Where the offending construct started (an unclosed bracket, a tab, the first of
    /// two equal keys).
    pub opened: Option<Location>,
    pub hint: &'static str,
}

const UNCLOSED: &str =
    "a flow collection opened here is never closed: close it, or quote the value";
const TAB: &str = "YAML indentation must be spaces; a tab indents this line";
const DUPLICATE: &str = "a key appears twice in the same mapping; YAML keys must be unique";

/// Diagnoses the error the parser reported at `at` with `message`.
pub fn diagnose(text: &str, at: Option<Location>, message: &str) -> Option<Diagnosis> {
    let lower = message.to_ascii_lowercase();
    if lower.contains("duplicate") {
        return Some(Diagnosis {
            opened: at.and_then(|l| first_of_duplicate(text, l)),
            hint: DUPLICATE,
        });
    }
    let stop_line = at.map_or(u64::MAX, |l| l.line);
    if let Some(opened) = unclosed_flow(text, at) {
        return Some(Diagnosis {
            opened: Some(opened),
            hint: UNCLOSED,
        });
    }
    // Parsers report a tab at the end of the scalar before it, so look one line on.
    if let Some(tab) = tab_indent(text, stop_line.saturating_add(1)) {
        return Some(Diagnosis {
            opened: Some(tab),
            hint: TAB,
        });
    }
    None
}

/// The first line up to `stop_line` whose indentation holds a tab.
fn tab_indent(text: &str, stop_line: u64) -> Option<Location> {
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if n > stop_line {
            break;
        }
        let indent: String = line
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        let rest = &line[indent.len()..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(col) = indent.chars().position(|c| c == '\t') {
            return Some(Location {
                line: n,
                column: col as u64 + 1,
            });
        }
    }
    None
}

/// The innermost flow bracket still open at `at` (or at the end, without a position).
fn unclosed_flow(text: &str, at: Option<Location>) -> Option<Location> {
    let mut stack: Vec<(char, Location)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if at.is_some_and(|l| n > l.line) {
            break;
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (j, c) in line.chars().enumerate() {
            let col = j as u64 + 1;
            if at.is_some_and(|l| n == l.line && col >= l.column) {
                break;
            }
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if prev == ' ' || prev == '\t' || j == 0 => break,
                    '\'' | '"' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':') || j == 0 => {
                        quote = Some(c)
                    }
                    '[' | '{' => stack.push((
                        c,
                        Location {
                            line: n,
                            column: col,
                        },
                    )),
                    ']' | '}' => {
                        stack.pop();
                    }
                    _ => {}
                },
            }
            prev = c;
        }
    }
    stack.last().map(|(_, l)| *l)
}

/// For a duplicate key reported at `at`, the earlier line with the same key at the same
/// indentation.
fn first_of_duplicate(text: &str, at: Location) -> Option<Location> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
    let (indent, key) = key_of(line)?;
    lines
        .iter()
        .take(usize::try_from(at.line).ok()?.saturating_sub(1))
        .enumerate()
        .rev()
        .find(|(_, l)| key_of(l) == Some((indent, key)))
        .map(|(i, _)| Location {
            line: i as u64 + 1,
            column: indent as u64 + 1,
        })
}

/// `(indent, key)` of a `key: …` line (a `- ` list marker counts as indentation).
fn key_of(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    let mut indent = line.len() - trimmed.len();
    let trimmed = match trimmed.strip_prefix("- ") {
        Some(t) => {
            indent += 2;
            t.trim_start_matches(' ')
        }
        None => trimmed,
    };
    let (key, _) = trimmed.split_once(':')?;
    (!key.is_empty() && !key.contains(['[', '{', '#', '"', '\'']))
        .then_some((indent, key.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(line: u64, column: u64) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn finds_the_unclosed_bracket_ignoring_quotes_and_comments() {
        let text = "a: 1\nb: \"[not\" # [nor this\nc: [x, {y: 1}, 'z]'\nd: 2\n";
        assert_eq!(unclosed_flow(text, loc(4, 2)), loc(3, 4));
        assert_eq!(unclosed_flow("a: [1, 2]\nb: 3\n", None), None);
    }

    #[test]
    fn finds_tabs_in_indentation_only() {
        assert_eq!(tab_indent("a:\n  b: 1\n\tc: 2\n", 99), loc(3, 1));
        assert_eq!(tab_indent("a: \"x\ty\"\n", 99), None);
    }

    #[test]
    fn finds_the_first_of_two_keys() {
        let text = "metadata:\n  name: a\n  version: 1\n  name: b\n";
        assert_eq!(
            first_of_duplicate(text, Location { line: 4, column: 3 }),
            loc(2, 3)
        );
    }
}
