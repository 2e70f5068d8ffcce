//! Base URLs of upstreams and of the proxy itself: scheme, host and port, nothing else.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl BaseUrl {
    /// `host[:port]`, with the port left out when it is the scheme's default (that is how
    /// clients and registries write it in `Host` and in URLs).
    pub fn authority(&self) -> String {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

pub fn parse_base(s: &str) -> Result<BaseUrl, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    let scheme = match u.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(format!("scheme `{other}` is not http or https")),
    };
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("`{s}` has no host")),
    };
    if u.path() != "/" && !u.path().is_empty() {
        return Err(format!("`{s}` must not have a path"));
    }
    if u.query().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "`{s}` must not carry a query or credentials (use `credentials:`)"
        ));
    }
    let port = u
        .port_or_known_default()
        .ok_or_else(|| format!("`{s}` has no port"))?;
    Ok(BaseUrl { scheme, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let b = parse_base("https://ghcr.io").unwrap();
        assert_eq!((b.port, b.authority()), (443, "ghcr.io".to_string()));
        let b = parse_base("http://127.0.0.1:5000/").unwrap();
        assert_eq!(b.to_string(), "http://127.0.0.1:5000");
        let b = parse_base("http://[::1]:5000").unwrap();
        assert_eq!(b.authority(), "[::1]:5000");
    }

    #[test]
    fn refuses_paths_and_credentials() {
        assert!(parse_base("http://h/v2").is_err());
        assert!(parse_base("http://u:p@h").is_err());
        assert!(parse_base("unix:/x").is_err());
    }
}
