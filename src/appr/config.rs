//! `appr:` in the config file.

use serde::Deserialize;

/// The CNCF App Registry API (`/cnr/...`), served from the OCI upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprConfig {
    /// Off by default: it is another API face on the registry listener.
    pub enabled: bool,
    /// Repository prefix the packages live under: package `ns/pkg` is the repository
    /// `<prefix>/ns/pkg`, routed (and admitted) like any other repository.
    pub prefix: String,
    /// Largest package tarball accepted on push or built for a pull (compressed), and
    /// the largest its files may add up to once unpacked.
    #[serde(with = "crate::config::size")]
    pub max_package_bytes: u64,
}

impl Default for ApprConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: "appr".to_owned(),
            max_package_bytes: 16 << 20,
        }
    }
}

impl ApprConfig {
    /// The repository of package `ns/pkg`.
    pub fn repository(&self, namespace: &str, name: &str) -> String {
        format!("{}/{namespace}/{name}", self.prefix.trim_matches('/'))
    }

    /// The package a repository holds, when it is one (`<prefix>/ns/pkg`, exactly).
    pub fn package_of<'a>(&self, repo: &'a str) -> Option<&'a str> {
        let rest = repo
            .strip_prefix(self.prefix.trim_matches('/'))?
            .strip_prefix('/')?;
        let (ns, name) = rest.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        let c = ApprConfig {
            prefix: "cnr/".into(),
            ..ApprConfig::default()
        };
        assert_eq!(c.repository("ns", "p"), "cnr/ns/p");
        assert_eq!(c.package_of("cnr/ns/p"), Some("ns/p"));
        assert_eq!(c.package_of("cnr/ns"), None);
        assert_eq!(c.package_of("cnr/ns/p/q"), None);
        assert_eq!(c.package_of("cnrx/ns/p"), None);
        assert_eq!(c.package_of("other/ns/p"), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let r: Result<ApprConfig, _> = serde_saphyr::from_str("enabled: true\nprefx: a\n");
        assert!(r.is_err());
        let ok: ApprConfig =
            serde_saphyr::from_str("enabled: true\nprefix: apps\nmax_package_bytes: 1MiB\n")
                .unwrap_or_default();
        assert_eq!(ok.max_package_bytes, 1 << 20);
        assert_eq!(ok.prefix, "apps");
    }
}
