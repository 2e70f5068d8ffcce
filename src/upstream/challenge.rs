//! Parsing `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as registries send them, and
//! the distribution token scopes they name
//! (<https://distribution.github.io/distribution/spec/auth/scope/>).

use std::collections::HashMap;

/// Longest `WWW-Authenticate` value read; registries send a few hundred bytes.
const MAX_HEADER: usize = 8 * 1024;
/// Most scopes taken from one challenge.
const MAX_SCOPES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// The upstream answered `/v2/` without asking for credentials.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One parsed challenge: its scheme and parameters (keys lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Parsed {
    /// The scopes a Bearer challenge names (`scope="a b"`, space-separated), skipping
    /// any that do not parse.
    pub fn scopes(&self) -> Vec<TokenScope> {
        self.params
            .get("scope")
            .map(|s| {
                s.split_ascii_whitespace()
                    .filter_map(TokenScope::parse)
                    .take(MAX_SCOPES)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `error="insufficient_scope"` (RFC 6750 §3.1).
    pub fn is_insufficient_scope(&self) -> bool {
        self.params
            .get("error")
            .is_some_and(|e| e.eq_ignore_ascii_case("insufficient_scope"))
    }
}

/// Reads the challenge we answer from one header value: Bearer when offered (it is
/// what token-protected registries mean; Harbor may list Basic beside it), else Basic.
/// `None` when there is nothing usable.
pub fn parse(header: &str) -> Option<Challenge> {
    let all = parse_all(header);
    let bearer = all.iter().find_map(|c| {
        if !c.scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let realm = c.params.get("realm").filter(|r| !r.is_empty())?;
        Some(Challenge::Bearer {
            realm: realm.clone(),
            service: c.params.get("service").filter(|s| !s.is_empty()).cloned(),
        })
    });
    bearer.or_else(|| {
        all.iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
            .then_some(Challenge::Basic)
    })
}

/// Every challenge of one header value: `Basic realm="r", Bearer realm="x",scope="y"`
/// holds two. A new challenge starts at a token that is not followed by `=`.
pub fn parse_all(header: &str) -> Vec<Parsed> {
    if header.len() > MAX_HEADER {
        return Vec::new();
    }
    let mut out: Vec<Parsed> = Vec::new();
    let mut chars = header.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut token = String::new();
        while let Some(c) = chars.peek() {
            if *c == '=' || *c == ',' || c.is_whitespace() {
                break;
            }
            token.push(*c);
            chars.next();
        }
        if token.is_empty() {
            if chars.next().is_none() {
                break;
            }
            continue;
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            out.push(Parsed {
                scheme: token,
                params: HashMap::new(),
            });
            continue;
        }
        chars.next();
        // `token68` values end in `=` padding: `Negotiate abc==`; skip them.
        if chars.peek().is_some_and(|c| *c == '=' || *c == ',') || chars.peek().is_none() {
            while chars.peek() == Some(&'=') {
                chars.next();
            }
            continue;
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        if let Some(current) = out.last_mut() {
            current
                .params
                .insert(token.to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    out
}

/// `k="v", k2=v2` of one challenge, with quoted strings that may hold commas and
/// escaped quotes.
pub fn params(s: &str) -> HashMap<String, String> {
    parse_all(&format!("x {s}"))
        .into_iter()
        .next()
        .map(|p| p.params)
        .unwrap_or_default()
}

/// A distribution token scope, `type[(class)]:name:action[,action…]`: `repository:a/b:pull,push`,
/// `repository(plugin):samalba/my-plugin:pull`, `registry:catalog:*`. The name may hold a
/// `host:port/` prefix, so the type ends at the first `:` and the actions follow the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    pub resource_type: String,
    pub class: Option<String>,
    pub name: String,
    pub actions: Vec<String>,
}

impl TokenScope {
    /// `None` for anything outside the grammar (and for absurd lengths).
    pub fn parse(s: &str) -> Option<TokenScope> {
        if s.is_empty() || s.len() > 1024 {
            return None;
        }
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let (resource_type, class) = match kind.split_once('(') {
            Some((t, c)) => (t, Some(c.strip_suffix(')')?)),
            None => (kind, None),
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !word(resource_type) || !class.is_none_or(word) || name.is_empty() {
            return None;
        }
        if name.bytes().any(|b| b.is_ascii_whitespace() || b == b'"') {
            return None;
        }
        let actions: Vec<String> = actions.split(',').map(str::to_owned).collect();
        if actions
            .iter()
            .any(|a| a.is_empty() || !(a == "*" || word(a)))
        {
            return None;
        }
        Some(TokenScope {
            resource_type: resource_type.to_owned(),
            class: class.map(str::to_owned),
            name: name.to_owned(),
            actions,
        })
    }
}

impl std::fmt::Display for TokenScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(c) = &self.class {
            write!(f, "({c})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer() {
        let c = parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a,b:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
    }

    #[test]
    fn parses_basic_and_refuses_others() {
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse("Negotiate"), None);
        assert_eq!(parse("Negotiate abc=="), None);
        assert_eq!(parse("Bearer service=x"), None);
        assert_eq!(parse(r#"Bearer realm="""#), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(&"Bearer realm=x,".repeat(2000)), None);
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let p = params(r#"a="x,y", b=plain, c="q\"q""#);
        assert_eq!(p["a"], "x,y");
        assert_eq!(p["b"], "plain");
        assert_eq!(p["c"], "q\"q");
    }

    #[test]
    fn several_challenges_in_one_header_prefer_bearer() {
        // Harbor answers a request that carried credentials with Basic; a value may
        // list several schemes (RFC 9110 §11.6.1).
        let h = r#"Basic realm="harbor", Bearer realm="https://harbor.example/service/token",service="harbor-registry",scope="repository:library/redis:pull""#;
        assert_eq!(
            parse(h),
            Some(Challenge::Bearer {
                realm: "https://harbor.example/service/token".into(),
                service: Some("harbor-registry".into()),
            })
        );
        let all = parse_all(h);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].params["realm"], "harbor");
        assert_eq!(
            all[1].scopes(),
            vec![TokenScope::parse("repository:library/redis:pull").unwrap()]
        );
        // Unquoted values and odd spacing (RFC 9110 allows `token` values and BWS).
        let all =
            parse_all("Bearer realm = https://r.example/t , service=reg ,error=insufficient_scope");
        assert_eq!(all[0].params["realm"], "https://r.example/t");
        assert_eq!(all[0].params["service"], "reg");
        assert!(all[0].is_insufficient_scope());
    }

    #[test]
    fn scopes_with_classes_ports_and_several_actions() {
        let h = r#"Bearer realm="r",scope="repository(plugin):samalba/my-plugin:pull,push repository:localhost:5000/a/b:pull,push,delete registry:catalog:*""#;
        let scopes = parse_all(h)[0].scopes();
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[0].resource_type, "repository");
        assert_eq!(scopes[0].class.as_deref(), Some("plugin"));
        assert_eq!(scopes[0].name, "samalba/my-plugin");
        assert_eq!(scopes[0].actions, ["pull", "push"]);
        assert_eq!(scopes[1].name, "localhost:5000/a/b");
        assert_eq!(scopes[1].actions, ["pull", "push", "delete"]);
        assert_eq!(scopes[2].actions, ["*"]);
        for (s, text) in scopes.iter().zip([
            "repository(plugin):samalba/my-plugin:pull,push",
            "repository:localhost:5000/a/b:pull,push,delete",
            "registry:catalog:*",
        ]) {
            assert_eq!(s.to_string(), text);
        }
        for bad in [
            "",
            "repository",
            "repository:a",
            "repository::pull",
            "repository(plugin:a:pull",
            "repository(pl ugin):a:pull",
            "repository:a:pull,,push",
            "repository:a:pu\"ll",
            ":a:pull",
        ] {
            assert_eq!(TokenScope::parse(bad), None, "{bad}");
        }
    }
}
