//! `X-Forwarded-For/Proto/Host`: what the upstream is told about who really asked. One
//! function for the streamed Pingora path and the proxy's own calls, so the two cannot
//! drift (one of them once overwrote `X-Forwarded-For` instead of chaining it).

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};

use crate::oci::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// The client side of one request, borrowed from it: nothing is formatted until a
/// request really goes upstream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Forwarded<'a> {
    /// The `X-Forwarded-For` the client sent (set by proxies in front of this one).
    pub previous_for: Option<&'a HeaderValue>,
    /// The address the client connected from.
    pub client_ip: Option<IpAddr>,
    /// The client reached the proxy over TLS.
    pub tls: bool,
    /// The `Host` the client used.
    pub host: Option<&'a HeaderValue>,
}

impl Forwarded<'_> {
    /// The headers to set upstream (replacing any of the same name): `X-Forwarded-For`
    /// appends the client's address to the chain it arrived with.
    pub fn headers(&self) -> Vec<(&'static HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(3);
        if let Some(ip) = self.client_ip {
            let chain = match self.previous_for.and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.trim().is_empty() => format!("{}, {ip}", prev.trim()),
                _ => ip.to_string(),
            };
            // An address and a visible-ASCII chain always make a valid header value;
            // should the chain not be one, the bare address still is.
            let value =
                HeaderValue::from_str(&chain).or_else(|_| HeaderValue::from_str(&ip.to_string()));
            if let Ok(v) = value {
                out.push((&X_FORWARDED_FOR, v));
            }
        } else if let Some(prev) = self.previous_for {
            out.push((&X_FORWARDED_FOR, prev.clone()));
        }
        out.push((
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if self.tls { "https" } else { "http" }),
        ));
        if let Some(h) = self.host {
            out.push((&X_FORWARDED_HOST, h.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(h: &'a [(&'static HeaderName, HeaderValue)], n: &HeaderName) -> Option<&'a str> {
        h.iter()
            .find(|(k, _)| *k == n)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn for_is_chained_not_overwritten() {
        let prev = HeaderValue::from_static("203.0.113.7, 10.0.0.1");
        let host = HeaderValue::from_static("registry.example");
        let f = Forwarded {
            previous_for: Some(&prev),
            client_ip: Some("192.0.2.1".parse().unwrap()),
            tls: true,
            host: Some(&host),
        };
        let h = f.headers();
        assert_eq!(
            get(&h, &X_FORWARDED_FOR),
            Some("203.0.113.7, 10.0.0.1, 192.0.2.1")
        );
        assert_eq!(get(&h, &X_FORWARDED_PROTO), Some("https"));
        assert_eq!(get(&h, &X_FORWARDED_HOST), Some("registry.example"));
    }

    #[test]
    fn first_hop_and_missing_parts() {
        let f = Forwarded {
            client_ip: Some("::1".parse().unwrap()),
            ..Forwarded::default()
        };
        let h = f.headers();
        assert_eq!(get(&h, &X_FORWARDED_FOR), Some("::1"));
        assert_eq!(get(&h, &X_FORWARDED_PROTO), Some("http"));
        assert_eq!(get(&h, &X_FORWARDED_HOST), None);
        let empty = HeaderValue::from_static(" ");
        let f = Forwarded {
            previous_for: Some(&empty),
            client_ip: Some("192.0.2.9".parse().unwrap()),
            ..Forwarded::default()
        };
        assert_eq!(get(&f.headers(), &X_FORWARDED_FOR), Some("192.0.2.9"));
    }
}
