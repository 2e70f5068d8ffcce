//! Checks that go beyond the shape of the file, each reported at the line it concerns.

use serde_saphyr::Spanned;

use super::{parse_listen_addr, Config, ConfigError};

fn at<T>(span: &Spanned<T>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: "<config>".into(),
        line: span.referenced.line() as usize,
        column: span.referenced.column() as usize,
        message: message.into(),
    }
}

pub fn check(c: &Config) -> Result<(), ConfigError> {
    if c.listeners.is_empty() {
        return Err(ConfigError::Other(
            "at least one listener is required".into(),
        ));
    }
    for l in &c.listeners {
        parse_listen_addr(&l.value.address).map_err(|m| at(l, m))?;
        if let Some(tls) = &l.value.tls {
            for f in [&tls.cert, &tls.key] {
                if !f.is_file() {
                    return Err(at(l, format!("TLS file {} does not exist", f.display())));
                }
            }
        }
    }
    if let Some(admin) = &c.admin {
        parse_listen_addr(&admin.address).map_err(ConfigError::Other)?;
    }
    if let Some(url) = &c.public_url {
        crate::upstream::url::parse_base(&url.value)
            .map_err(|m| at(url, format!("public_url: {m}")))?;
    }
    if c.upstreams.is_empty() {
        return Err(ConfigError::Other(
            "at least one upstream is required".into(),
        ));
    }
    for (i, u) in c.upstreams.iter().enumerate() {
        let v = &u.value;
        if c.upstreams[..i].iter().any(|o| o.value.name == v.name) {
            return Err(at(u, format!("upstream name `{}` is used twice", v.name)));
        }
        crate::upstream::url::parse_base(&v.url)
            .map_err(|m| at(u, format!("upstream `{}`: {m}", v.name)))?;
        if let Some(ca) = &v.tls.ca_file {
            crate::upstream::tls::load_ca(ca).map_err(|m| at(u, m))?;
        }
        if let Some(cred) = &v.credentials {
            let n = [
                cred.password.is_some(),
                cred.password_env.is_some(),
                cred.password_file.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                return Err(at(
                    u,
                    "credentials: set exactly one of password, password_env, password_file",
                ));
            }
        }
    }
    for r in &c.routes {
        let v = &r.value;
        crate::upstream::routing::compile_pattern(&v.pattern)
            .map_err(|m| at(r, format!("route `{}`: {m}", v.pattern)))?;
        if c.upstream(&v.upstream.value).is_none() {
            return Err(at(
                &v.upstream,
                format!(
                    "route `{}` names unknown upstream `{}`",
                    v.pattern, v.upstream.value
                ),
            ));
        }
        if let Some(rw) = &v.rewrite {
            if !rw.prefix.is_empty() && !rw.prefix.ends_with('/') {
                return Err(at(r, "rewrite.prefix must end with `/`"));
            }
            if !rw.strip.is_empty() && !rw.strip.ends_with('/') {
                return Err(at(r, "rewrite.strip must end with `/`"));
            }
        }
        for t in &v.extra_tags {
            if !crate::oci::path::valid_tag(t) {
                return Err(at(r, format!("extra_tags: `{t}` is not a valid tag")));
            }
        }
    }
    c.cache
        .validate()
        .map_err(|e| ConfigError::Other(e.to_string()))?;
    if c.server.threads == 0 {
        return Err(ConfigError::Other(
            "server.threads must be at least 1".into(),
        ));
    }
    if let Some(bus) = &c.bus {
        bus.validate().map_err(ConfigError::Other)?;
    }
    if let Some(events) = &c.events {
        events.resolve_token().map_err(ConfigError::Other)?;
        if c.admin.is_none() {
            return Err(ConfigError::Other(
                "events: upstream notifications are received on the admin listener; set admin.address".into(),
            ));
        }
    }
    check_downstream(c)?;
    Ok(())
}

/// A zero header timeout would refuse every request; a head cap below 1 KiB refuses
/// ordinary ones, and above Pingora's own 1 MiB it would never apply.
fn check_downstream(c: &Config) -> Result<(), ConfigError> {
    if c.timeouts.downstream_header.is_zero() {
        return Err(ConfigError::Other(
            "timeouts.downstream_header must be more than 0s".into(),
        ));
    }
    let head = c.limits.max_request_header_bytes;
    if !(1 << 10..1 << 20).contains(&head) {
        return Err(ConfigError::Other(format!(
            "limits.max_request_header_bytes must be between 1KiB and 1MiB (below Pingora's own cap), not {head}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::*;

    const OK: &str = r#"
listeners:
  - address: 127.0.0.1:8080
admin:
  address: 127.0.0.1:9090
upstreams:
  - name: main
    url: http://127.0.0.1:5000
routes:
  - match: "apps/**"
    upstream: main
    kind: app
    rewrite: { strip: "apps/", prefix: "margo/apps/" }
  - match: "**"
    upstream: main
timeouts: { connect: 2s, read: 30s }
server: { threads: 2, shutdown_timeout: 5s }
"#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(OK).unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].value.kind, RouteKind::App);
        assert_eq!(c.timeouts.connect, Duration::from_secs(2));
        assert_eq!(c.timeouts.idle, Duration::from_secs(60));
        assert_eq!(c.server.threads, 2);
    }

    #[test]
    fn downstream_limits_are_checked() {
        let c = Config::parse(OK).unwrap();
        assert_eq!(c.timeouts.downstream_header, Duration::from_secs(10));
        assert_eq!(c.limits.max_request_header_bytes, 64 << 10);
        let zero = OK.replace("read: 30s }", "read: 30s, downstream_header: 0s }");
        let e = Config::parse(&zero).unwrap_err().to_string();
        assert!(e.contains("timeouts.downstream_header"), "{e}");
        let huge = format!("{OK}limits: {{ max_request_header_bytes: 2MiB }}\n");
        let e = Config::parse(&huge).unwrap_err().to_string();
        assert!(e.contains("limits.max_request_header_bytes"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let bad = OK.replace("kind: app", "kind: app\n    kinde: app");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("kinde"), "{e}");
        assert!(e.contains("line") || e.contains(":12:"), "{e}");
    }

    #[test]
    fn unknown_upstream_names_the_line() {
        let bad = OK.replace("upstream: main\n    kind", "upstream: nope\n    kind");
        match Config::parse(&bad).unwrap_err() {
            ConfigError::Invalid { line, message, .. } => {
                assert_eq!(line, 11, "{message}");
                assert!(message.contains("nope"));
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for (from, to) in [
            ("127.0.0.1:8080", "localhost"),
            ("http://127.0.0.1:5000", "ftp://x"),
            ("threads: 2", "threads: 0"),
            ("connect: 2s", "connect: soon"),
            ("prefix: \"margo/apps/\"", "prefix: \"margo\""),
        ] {
            let bad = OK.replace(from, to);
            assert!(Config::parse(&bad).is_err(), "{to}");
        }
    }

    #[test]
    fn bus_and_events_are_checked_like_everything_else() {
        let ok = format!(
            "{OK}bus:\n  url: redis://127.0.0.1:6379\n  secret: 0123456789abcdef0123456789abcdef\nevents:\n  token: 0123456789abcdef\n"
        );
        Config::parse(&ok).unwrap();
        let short = ok.replace("0123456789abcdef0123456789abcdef", "short");
        assert!(Config::parse(&short)
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
        let env = ok.replace(
            "secret: 0123456789abcdef0123456789abcdef",
            "secret_env: MARGO_TEST_UNSET_VAR",
        );
        assert!(Config::parse(&env)
            .unwrap_err()
            .to_string()
            .contains("MARGO_TEST_UNSET_VAR"));
        let no_admin = ok.replace("admin:\n  address: 127.0.0.1:9090\n", "");
        assert!(Config::parse(&no_admin)
            .unwrap_err()
            .to_string()
            .contains("admin"));
    }

    #[test]
    fn default_route_goes_to_first_upstream() {
        let c = Config::simple("http://127.0.0.1:5000", "127.0.0.1:8080", None).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].value.pattern, "**");
        assert_eq!(c.routes[0].value.upstream.value, "upstream");
    }
}
