//! Checks that go beyond the shape of the file, each reported at the line it concerns.
//! Every check runs (all findings at once), and `serve` and `check-config` both come
//! through here: a config `check-config` accepts is one `serve` starts with.

use std::net::SocketAddr;

use serde_saphyr::Spanned;

use super::diagnostic::Diagnostic;
use super::locate::Locator;
use super::{parse_listen_addr, Config};

/// Errors refuse the config; warnings are printed by `check-config` and logged by `serve`.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

struct Checker<'a> {
    loc: &'a Locator,
    report: Report,
}

impl Checker<'_> {
    fn position(&self, path: &str) -> (usize, usize) {
        self.loc.find(path).unwrap_or((1, 1))
    }
    fn at_path(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.position(path);
        self.report
            .errors
            .push(Diagnostic::new(line, column, message));
    }
    fn at<T>(&mut self, span: &Spanned<T>, message: impl Into<String>) {
        self.report.errors.push(Diagnostic::new(
            span.referenced.line() as usize,
            span.referenced.column() as usize,
            message,
        ));
    }
    fn warn_path(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.position(path);
        self.report
            .warnings
            .push(Diagnostic::new(line, column, message));
    }
}

/// Two listeners collide when their ports are equal and one IP is the other or a
/// wildcard (`0.0.0.0:8080` takes `127.0.0.1:8080` too).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

pub fn check(c: &Config, loc: &Locator) -> Report {
    let mut k = Checker {
        loc,
        report: Report::default(),
    };
    if c.listeners.is_empty() {
        k.at_path("listeners", "at least one listener is required");
    }
    let mut bound: Vec<(String, SocketAddr)> = Vec::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        match parse_listen_addr(&l.value.address) {
            Ok(addr) => {
                if let Some((other, _)) = bound.iter().find(|(_, b)| overlaps(*b, addr)) {
                    k.at_path(
                        &format!("{path}.address"),
                        format!(
                            "listener {} collides with {other}: two listeners cannot share a port",
                            l.value.address
                        ),
                    );
                }
                bound.push((format!("listener {}", l.value.address), addr));
            }
            Err(m) => k.at_path(&format!("{path}.address"), m),
        }
        if let Some(tls) = &l.value.tls {
            for (key, f) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !f.is_file() {
                    k.at_path(
                        &format!("{path}.tls.{key}"),
                        format!("TLS {key} file {} does not exist", f.display()),
                    );
                }
            }
        }
    }
    if let Some(admin) = &c.admin {
        match parse_listen_addr(&admin.address) {
            Ok(addr) => {
                if let Some((other, _)) = bound.iter().find(|(_, b)| overlaps(*b, addr)) {
                    k.at_path(
                        "admin.address",
                        format!(
                            "admin address {} collides with {other}: the admin listener needs its own port",
                            admin.address
                        ),
                    );
                }
            }
            Err(m) => k.at_path("admin.address", m),
        }
    }
    if let Some(url) = &c.public_url {
        if let Err(m) = crate::upstream::url::parse_base(&url.value) {
            k.at(url, format!("public_url: {m}"));
        }
    }
    if c.upstreams.is_empty() {
        k.at_path("upstreams", "at least one upstream is required");
    }
    for (i, u) in c.upstreams.iter().enumerate() {
        let v = &u.value;
        let path = format!("upstreams[{i}]");
        if c.upstreams[..i].iter().any(|o| o.value.name == v.name) {
            k.at_path(
                &format!("{path}.name"),
                format!("upstream name `{}` is used twice", v.name),
            );
        }
        match &v.git {
            Some(git) => {
                if !v.url.is_empty() || v.credentials.is_some() {
                    k.at_path(
                        &format!("{path}.git"),
                        format!("upstream `{}`: a Git upstream has no url or credentials (they go under git:)", v.name),
                    );
                }
                if let Err(m) = git.validate() {
                    k.at_path(
                        &format!("{path}.git"),
                        format!("upstream `{}`: {m}", v.name),
                    );
                }
                if git.remote.starts_with("http://") {
                    k.warn_path(
                        &format!("{path}.git.remote"),
                        format!("upstream `{}`: git.remote is plain http: anyone on the path can change what is served (labs only)", v.name),
                    );
                }
                if git.webhook_secret().ok().flatten().is_some() && c.admin.is_none() {
                    k.at_path(
                        &format!("{path}.git"),
                        "git webhooks are received on the admin listener; set admin.address",
                    );
                }
            }
            None => {
                if let Err(m) = crate::upstream::url::parse_base(&v.url) {
                    k.at_path(
                        &format!("{path}.url"),
                        format!("upstream `{}`: {m}", v.name),
                    );
                }
            }
        }
        if let Some(ca) = &v.tls.ca_file {
            if let Err(m) = crate::upstream::tls::load_ca(ca) {
                k.at_path(&format!("{path}.tls.ca_file"), m);
            }
        }
        if !v.tls.verify {
            k.warn_path(
                &format!("{path}.tls.verify"),
                format!(
                    "upstream `{}`: tls.verify is false: its certificate is not checked, anyone on the path can impersonate it (labs only)",
                    v.name
                ),
            );
        }
        if let Some(ecr) = v.credentials.as_ref().and_then(|c| c.ecr.as_ref()) {
            let cred = v.credentials.as_ref();
            if cred.is_some_and(|c| {
                c.username.is_some()
                    || c.password.is_some()
                    || c.password_env.is_some()
                    || c.password_file.is_some()
            }) {
                k.at_path(
                    &format!("{path}.credentials"),
                    "credentials: ecr replaces username and password; set one or the other",
                );
            }
            for (key, m) in ecr.problems() {
                k.at_path(
                    &format!("{path}.credentials.ecr.{key}"),
                    format!("upstream `{}` credentials.ecr.{key}: {m}", v.name),
                );
            }
        } else if let Some(cred) = &v.credentials {
            if cred.username.is_none() {
                k.at_path(
                    &format!("{path}.credentials"),
                    "credentials: set username (with one of password, password_env, password_file), or ecr",
                );
            }
            let n = [
                cred.password.is_some(),
                cred.password_env.is_some(),
                cred.password_file.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                k.at_path(
                    &format!("{path}.credentials"),
                    "credentials: set exactly one of password, password_env, password_file",
                );
            } else if let Err(m) = cred.resolve_password() {
                let key = if cred.password_env.is_some() {
                    "password_env"
                } else {
                    "password_file"
                };
                k.at_path(
                    &format!("{path}.credentials.{key}"),
                    format!("upstream `{}` credentials: {m}", v.name),
                );
            }
        }
    }
    let known = || {
        c.upstreams
            .iter()
            .map(|u| format!("`{}`", u.value.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, r) in c.routes.iter().enumerate() {
        let v = &r.value;
        let path = format!("routes[{i}]");
        if let Err(m) = crate::upstream::routing::compile_pattern(&v.pattern) {
            k.at_path(
                &format!("{path}.match"),
                format!("route `{}`: {m}", v.pattern),
            );
        }
        if c.upstream(&v.upstream.value).is_none() {
            k.at(
                &v.upstream,
                format!(
                    "route `{}` names unknown upstream `{}` (known: {})",
                    v.pattern,
                    v.upstream.value,
                    known()
                ),
            );
        }
        if let Some(rw) = &v.rewrite {
            if !rw.prefix.is_empty() && !rw.prefix.ends_with('/') {
                k.at_path(
                    &format!("{path}.rewrite.prefix"),
                    "rewrite.prefix must end with `/`",
                );
            }
            if !rw.strip.is_empty() && !rw.strip.ends_with('/') {
                k.at_path(
                    &format!("{path}.rewrite.strip"),
                    "rewrite.strip must end with `/`",
                );
            }
        }
        for (j, t) in v.extra_tags.iter().enumerate() {
            if !crate::oci::path::valid_tag(t) {
                k.at_path(
                    &format!("{path}.extra_tags[{j}]"),
                    format!("extra_tags: `{t}` is not a valid tag"),
                );
            }
        }
    }
    if let Err(e) = c.cache.validate() {
        k.at_path("cache", format!("cache: {e}"));
    }
    if c.server.threads == 0 {
        k.at_path("server.threads", "server.threads must be at least 1");
    }
    let labels = c.metrics.repository_labels.len();
    if labels > crate::metrics::MAX_REPOSITORY_LABELS {
        k.at_path(
            "metrics.repository_labels",
            format!(
                "metrics.repository_labels has {labels} entries; at most {} are allowed",
                crate::metrics::MAX_REPOSITORY_LABELS
            ),
        );
    }
    if let Some(policy) = &c.policy {
        for (i, dir) in policy.directories.iter().enumerate() {
            if !dir.is_dir() {
                k.at_path(
                    &format!("policy.directories[{i}]"),
                    format!(
                        "policy directory {} does not exist (leave the policy section out to run without policies)",
                        dir.display()
                    ),
                );
            }
        }
    }
    if let Some(bus) = &c.bus {
        if let Err(m) = bus.validate() {
            k.at_path("bus", m);
        }
    }
    if let Some(events) = &c.events {
        if let Err(m) = events.resolve_token() {
            k.at_path("events", m);
        }
        if c.admin.is_none() {
            k.at_path(
                "events",
                "events: upstream notifications are received on the admin listener; set admin.address",
            );
        }
    }
    // A zero header timeout would refuse every request; a head cap below 1 KiB refuses
    // ordinary ones, and above Pingora's own 1 MiB it would never apply.
    if c.timeouts.downstream_header.is_zero() {
        k.at_path(
            "timeouts.downstream_header",
            "timeouts.downstream_header must be more than 0s",
        );
    }
    let head = c.limits.max_request_header_bytes;
    if !(1 << 10..1 << 20).contains(&head) {
        k.at_path(
            "limits.max_request_header_bytes",
            format!("limits.max_request_header_bytes must be between 1KiB and 1MiB (below Pingora's own cap), not {head}"),
        );
    }
    k.report
}

#[cfg(test)]
mod tests {
    use super::super::*;

    const OK: &str = r#"
listeners:
  - address: 127.0.0.1:8080
admin:
  address: 127.0.0.1:9091
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
    fn ecr_credentials_and_blob_redirects_are_checked() {
        let with = |creds: &str| {
            OK.replace(
                "url: http://127.0.0.1:5000\n",
                &format!("url: http://127.0.0.1:5000\n    credentials: {creds}\n    blob_redirects: follow\n"),
            )
        };
        let c = Config::parse(&with(
            "{ecr: {region: eu-west-1, registry_id: \"123456789012\"}}",
        ))
        .unwrap();
        let u = &c.upstreams[0].value;
        assert_eq!(
            u.blob_redirects,
            crate::upstream::redirect::BlobRedirects::Follow
        );
        let ecr = u.credentials.as_ref().and_then(|c| c.ecr.as_ref()).unwrap();
        assert_eq!(ecr.refresh_margin, Duration::from_secs(3600));
        for (creds, key) in [
            (
                "{username: u, password: p, ecr: {region: eu-west-1}}",
                "credentials",
            ),
            ("{ecr: {region: Europe}}", "credentials.ecr.region"),
            (
                "{ecr: {region: eu-west-1, endpoint: \"ftp://x\"}}",
                "credentials.ecr.endpoint",
            ),
            (
                "{ecr: {region: eu-west-1, refresh_margin: 13h}}",
                "credentials.ecr.refresh_margin",
            ),
            ("{ecr: {region: eu-west-1, profile: x}}", "profile"),
            ("{password: p}", "credentials"),
        ] {
            let e = Config::parse(&with(creds)).unwrap_err().to_string();
            assert!(e.contains(key), "{creds}: {e}");
        }
        let bad = with("{ecr: {region: eu-west-1}}").replace("follow", "chase");
        assert!(Config::parse(&bad).is_err());
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let bad = OK.replace("kind: app", "kind: app\n    kinde: app");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("kinde"), "{e}");
        assert!(e.starts_with("<config>:13:5: unknown field `kinde`"), "{e}");
    }

    #[test]
    fn unknown_upstream_names_the_line() {
        let bad = OK.replace("upstream: main\n    kind", "upstream: nope\n    kind");
        let e = Config::parse(&bad).unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!(d.line, 11, "{e}");
        assert!(
            d.message.contains("nope") && d.message.contains("(known: `main`)"),
            "{e}"
        );
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
        let no_admin = ok.replace("admin:\n  address: 127.0.0.1:9091\n", "");
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
