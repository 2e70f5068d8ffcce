//! The catalog resources a description names (icon, description file, license file,
//! release notes) and the path rules shared by manifests and package directories.

use crate::margo::model::ApplicationMetadata;
use crate::margo::node::Node;

/// The four kinds of resource file a package may carry; the names are the `<kind>` of
/// `application/vnd.margo.app.<kind>.v1+<format>` and the slot names in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Icon,
    DescriptionFile,
    LicenseFile,
    ReleaseNotes,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Icon,
        ResourceKind::DescriptionFile,
        ResourceKind::LicenseFile,
        ResourceKind::ReleaseNotes,
    ];

    /// Slot name in `metadata.catalog.application` and `<kind>` in media types.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Icon => "icon",
            ResourceKind::DescriptionFile => "descriptionFile",
            ResourceKind::LicenseFile => "licenseFile",
            ResourceKind::ReleaseNotes => "releaseNotes",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One resource reference of the description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub kind: ResourceKind,
    /// As written in the description.
    pub reference: String,
}

impl ResourceRef {
    /// A URL is fetched by the consumer and is not part of the package.
    pub fn is_url(&self) -> bool {
        is_url(&self.reference)
    }
}

/// The resources named in `metadata.catalog.application`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRefs(pub Vec<ResourceRef>);

impl ResourceRefs {
    /// From a parsed (possibly invalid) description tree: lets the manifest cross-check
    /// run even when the description has other violations. Non-string values are skipped
    /// (the validator reports them).
    pub fn from_node(root: &Node) -> Self {
        let app = root.get_path(&["metadata", "catalog", "application"]);
        let refs = ResourceKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let s = app?.get(kind.as_str())?.as_str()?;
                Some(ResourceRef {
                    kind,
                    reference: s.to_owned(),
                })
            })
            .collect();
        Self(refs)
    }

    pub fn from_metadata(app: Option<&ApplicationMetadata>) -> Self {
        let Some(app) = app else {
            return Self::default();
        };
        let refs = [
            (ResourceKind::Icon, &app.icon),
            (ResourceKind::DescriptionFile, &app.description_file),
            (ResourceKind::LicenseFile, &app.license_file),
            (ResourceKind::ReleaseNotes, &app.release_notes),
        ]
        .into_iter()
        .filter_map(|(kind, r)| {
            r.as_ref().map(|s| ResourceRef {
                kind,
                reference: s.clone(),
            })
        })
        .collect();
        Self(refs)
    }

    /// The references that must be files inside the package.
    pub fn local(&self) -> impl Iterator<Item = &ResourceRef> {
        self.0.iter().filter(|r| !r.is_url())
    }
}

/// `scheme://…` with an RFC 3986 scheme. Windows drive letters (`C:\`) do not match
/// because of the `//`.
pub fn is_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    !rest.is_empty()
        && scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Why a path is not a safe relative path inside a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute")]
    Absolute,
    #[error("path has a `..` component")]
    ParentDir,
    #[error("path contains a backslash or NUL")]
    BadCharacter,
}

/// Normalises a package-relative path: drops `./` and empty components, refuses
/// absolute paths and `..`, so that `./resources/icon.png` and `resources/icon.png`
/// compare equal and no path can leave the package.
pub fn normalize_relative(path: &str) -> Result<String, PathProblem> {
    if path.contains(['\\', '\0']) {
        return Err(PathProblem::BadCharacter);
    }
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(PathProblem::ParentDir),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(PathProblem::Empty);
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_relative_table() {
        let cases = [
            ("margo.yaml", Ok("margo.yaml")),
            ("./resources/icon.png", Ok("resources/icon.png")),
            ("resources//./icon.png", Ok("resources/icon.png")),
            ("/etc/passwd", Err(PathProblem::Absolute)),
            ("../x", Err(PathProblem::ParentDir)),
            ("a/../../x", Err(PathProblem::ParentDir)),
            ("./", Err(PathProblem::Empty)),
            ("", Err(PathProblem::Empty)),
            ("a\\b", Err(PathProblem::BadCharacter)),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_relative(input),
                want.map(str::to_owned),
                "{input:?}"
            );
        }
    }

    #[test]
    fn is_url_table() {
        let cases = [
            ("https://example.com/icon.png", true),
            ("oci://registry/x", true),
            ("resources/icon.png", false),
            ("./a://b", false),
            ("C:\\x", false),
            ("https://", false),
        ];
        for (input, want) in cases {
            assert_eq!(is_url(input), want, "{input}");
        }
    }

    #[test]
    fn refs_from_metadata_keep_kinds() {
        let app = ApplicationMetadata {
            icon: Some("./i.png".into()),
            license_file: Some("https://x.org/l".into()),
            ..ApplicationMetadata::default()
        };
        let refs = ResourceRefs::from_metadata(Some(&app));
        assert_eq!(refs.0.len(), 2);
        let local: Vec<_> = refs.local().map(|r| r.kind).collect();
        assert_eq!(local, vec![ResourceKind::Icon]);
    }
}
