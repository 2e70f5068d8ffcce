//! `margo-proxy validate PATH`: the admission engine, offline, for developers' CI.
//!
//! PATH may be a `margo.yaml`, a package directory (`margo.yaml` + resources), a
//! Compose archive (`.tar.gz`/`.tgz`) or an OCI image layout. The same checks as on
//! push run; what cannot be checked offline (the upstream) is read from disk instead.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::margo::compose::{check_archive, ArchiveLimits};
use crate::margo::digest::{parse as parse_digest, verify_blob};
use crate::margo::manifest::package::check_package_description;
use crate::margo::manifest::{
    check_manifest, parse_manifest, Descriptor, ManifestClass, ManifestOptions, NextStep,
    Reference, RouteKind,
};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};
use crate::margo::resources::normalize_relative;
use crate::margo::validate::{validate_description, DescriptionLimits};

/// What PATH turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    Description,
    PackageDirectory,
    ComposeArchive,
    OciLayout,
}

impl InputKind {
    fn label(self) -> &'static str {
        match self {
            InputKind::Description => "application description",
            InputKind::PackageDirectory => "package directory",
            InputKind::ComposeArchive => "compose archive",
            InputKind::OciLayout => "OCI image layout",
        }
    }
}

/// Why PATH could not be checked at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a margo.yaml, a package directory, a .tar.gz/.tgz compose archive or an OCI image layout")]
    Unrecognised(PathBuf),
    #[error("{path}: broken OCI image layout: {reason}")]
    Layout { path: PathBuf, reason: String },
}

/// The checks of one thing inside PATH (a description, a manifest, an archive).
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked, e.g. `margo.yaml` or `index.json manifests[0] (tag 1.0.0)`.
    pub subject: String,
    pub report: Report,
}

/// The outcome of `validate PATH`.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<InputKind>,
    pub findings: Vec<Finding>,
    /// Set when the input was unusable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub valid: bool,
    pub violations: usize,
}

impl Outcome {
    /// 0 valid, 1 violations, 2 unusable input.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            2
        } else if self.violations > 0 {
            1
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct OfflineOptions {
    pub description: DescriptionLimits,
    pub manifest: ManifestOptions,
    pub archive: ArchiveLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}

/// Validates PATH. Never panics; I/O trouble becomes exit code 2.
pub fn validate_path(path: &Path, opts: &OfflineOptions) -> Outcome {
    let shown = path.display().to_string();
    let result = detect(path).and_then(|kind| {
        let findings = match kind {
            InputKind::Description => vec![description_file(path, "margo.yaml", opts)?.0],
            InputKind::PackageDirectory => package_dir(path, opts)?,
            InputKind::ComposeArchive => vec![archive_file(path, None, opts)?],
            InputKind::OciLayout => oci_layout(path, opts)?,
        };
        Ok((kind, findings))
    });
    match result {
        Ok((kind, findings)) => {
            let violations = findings.iter().map(|f| f.report.len()).sum();
            Outcome {
                path: shown,
                kind: Some(kind),
                findings,
                error: None,
                valid: violations == 0,
                violations,
            }
        }
        Err(e) => Outcome {
            path: shown,
            kind: None,
            findings: Vec::new(),
            error: Some(e.to_string()),
            valid: false,
            violations: 0,
        },
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InputError + '_ {
    move |source| InputError::Io {
        path: path.to_owned(),
        source,
    }
}

fn detect(path: &Path) -> Result<InputKind, InputError> {
    if path == Path::new("-") {
        // Standard input: a margo.yaml piped in.
        return Ok(InputKind::Description);
    }
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        if path.join("oci-layout").is_file() {
            return Ok(InputKind::OciLayout);
        }
        if path.join("margo.yaml").is_file() {
            return Ok(InputKind::PackageDirectory);
        }
        return Err(InputError::Unrecognised(path.to_owned()));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Ok(InputKind::ComposeArchive)
    } else {
        Ok(InputKind::Description)
    }
}

/// Reads at most `max + 1` bytes: enough for the validator to see "too large" without
/// reading a huge file.
fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, InputError> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        io::stdin()
            .lock()
            .take(max as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io_err(path))?;
        return Ok(buf);
    }
    let f = File::open(path).map_err(io_err(path))?;
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    Ok(buf)
}

fn description_file(
    path: &Path,
    subject: &str,
    opts: &OfflineOptions,
) -> Result<(Finding, crate::margo::validate::DescriptionCheck), InputError> {
    let bytes = read_capped(path, opts.description.yaml.max_bytes)?;
    let check = validate_description(&bytes, &opts.description);
    Ok((
        Finding {
            subject: subject.to_owned(),
            report: check.report.clone(),
        },
        check,
    ))
}

fn package_dir(dir: &Path, opts: &OfflineOptions) -> Result<Vec<Finding>, InputError> {
    let (mut finding, check) = description_file(&dir.join("margo.yaml"), "margo.yaml", opts)?;
    let root = dir.canonicalize().map_err(io_err(dir))?;
    let app = FieldPath::root()
        .key("metadata")
        .key("catalog")
        .key("application");
    for r in check.resources().local() {
        let at = app.key(r.kind.as_str());
        let value = serde_json::Value::String(r.reference.clone());
        let rel = match normalize_relative(&r.reference) {
            Ok(rel) => rel,
            Err(e) => {
                finding.report.push(
                    Violation::new(
                        RuleId::PackageResourcePath,
                        at,
                        format!("a URL or a safe relative path inside the package ({e})"),
                    )
                    .with_value(value),
                );
                continue;
            }
        };
        match root.join(&rel).canonicalize() {
            Ok(p) if !p.starts_with(&root) => finding.report.push(
                Violation::new(
                    RuleId::PackageResourcePath,
                    at,
                    "a file inside the package directory (it resolves outside through a symlink)",
                )
                .with_value(value),
            ),
            Ok(p) if p.is_file() => {}
            _ => finding.report.push(
                Violation::new(
                    RuleId::PackageResourceMissing,
                    at,
                    format!("a file {rel:?} in the package directory"),
                )
                .with_value(value),
            ),
        }
    }
    Ok(vec![finding])
}

fn archive_file(
    path: &Path,
    expected: Option<(&str, u64)>,
    opts: &OfflineOptions,
) -> Result<Finding, InputError> {
    let f = File::open(path).map_err(io_err(path))?;
    let check = check_archive(io::BufReader::new(f), &opts.archive, expected);
    Ok(Finding {
        subject: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string()),
        report: check.report,
    })
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const MAX_INDEX_DEPTH: usize = 4;

fn blob_path(layout: &Path, digest: &str) -> Option<PathBuf> {
    let d = parse_digest(digest).ok()?;
    let alg = digest.split_once(':')?.0;
    Some(layout.join("blobs").join(alg).join(d.encoded()))
}

/// Why a blob of the layout could not be used.
#[derive(Debug, thiserror::Error)]
enum BlobError {
    #[error("blob {digest} in the layout: {reason}")]
    Unusable { digest: String, reason: String },
}

impl BlobError {
    fn to_violation(&self) -> Violation {
        let mut v = Violation::new(
            RuleId::BlobDigest,
            FieldPath::root(),
            "every blob a descriptor names, present in blobs/ with its digest and size",
        );
        v.message = format!("{} at $: {self}", RuleId::BlobDigest);
        v
    }
}

/// Reads a blob named by a descriptor, verifying digest and size.
fn read_blob(layout: &Path, d: &Descriptor, max: usize) -> Result<Vec<u8>, BlobError> {
    let unusable = |reason: String| BlobError::Unusable {
        digest: d.digest.clone(),
        reason,
    };
    let p = blob_path(layout, &d.digest).ok_or_else(|| unusable("bad digest".into()))?;
    let bytes = read_capped(&p, max).map_err(|e| unusable(e.to_string()))?;
    verify_blob(&bytes, &d.digest, Some(d.size)).map_err(|e| unusable(e.to_string()))?;
    Ok(bytes)
}

fn oci_layout(dir: &Path, opts: &OfflineOptions) -> Result<Vec<Finding>, InputError> {
    let layout_err = |reason: String| InputError::Layout {
        path: dir.to_owned(),
        reason,
    };
    let max = opts.manifest.max_manifest_bytes;
    let oci_layout = read_capped(&dir.join("oci-layout"), 4096)?;
    let v: serde_json::Value = serde_json::from_slice(&oci_layout)
        .map_err(|e| layout_err(format!("oci-layout is not JSON ({e})")))?;
    if v.get("imageLayoutVersion")
        .and_then(|x| x.as_str())
        .is_none()
    {
        return Err(layout_err("oci-layout has no imageLayoutVersion".into()));
    }
    let index = read_capped(&dir.join("index.json"), max)?;
    let (index, problems) =
        parse_manifest(&index, max).map_err(|e| layout_err(format!("index.json: {e}")))?;
    if !problems.is_empty() {
        return Err(layout_err(format!(
            "index.json: {}",
            problems
                .violations()
                .iter()
                .map(|v| v.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let mut findings = Vec::new();
    for (i, d) in index.manifests.iter().enumerate() {
        let subject = format!("index.json manifests[{i}]");
        walk_manifest(dir, d, &subject, None, 0, opts, &mut findings);
    }
    if findings.is_empty() {
        return Err(layout_err("index.json lists no manifests".into()));
    }
    Ok(findings)
}

fn walk_manifest(
    dir: &Path,
    d: &Descriptor,
    subject: &str,
    inherited_tag: Option<&str>,
    depth: usize,
    opts: &OfflineOptions,
    out: &mut Vec<Finding>,
) {
    let tag = d
        .annotations
        .get(REF_NAME)
        .map(String::as_str)
        .or(inherited_tag);
    let reference = match tag {
        Some(t) => Reference::Tag(t.to_owned()),
        None => Reference::Digest(d.digest.clone()),
    };
    let subject = match tag {
        Some(t) => format!("{subject} ({}, tag {t})", d.digest),
        None => format!("{subject} ({})", d.digest),
    };
    let mut report = Report::new();
    let bytes = match read_blob(dir, d, opts.manifest.max_manifest_bytes) {
        Ok(b) => b,
        Err(e) => {
            report.push(e.to_violation());
            out.push(Finding { subject, report });
            return;
        }
    };
    // The route is what the artifact claims to be; anything else is checked as a
    // package, which reports the wrong artifactType.
    let route = match parse_manifest(&bytes, opts.manifest.max_manifest_bytes) {
        Ok((m, _)) if m.is_index() => {
            if depth >= MAX_INDEX_DEPTH {
                report.push(Violation::new(
                    RuleId::ManifestIndexNotAllowed,
                    FieldPath::root(),
                    format!("indexes nested at most {MAX_INDEX_DEPTH} deep"),
                ));
                out.push(Finding { subject, report });
                return;
            }
            for (i, child) in m.manifests.iter().enumerate() {
                let s = format!("{subject} manifests[{i}]");
                walk_manifest(dir, child, &s, tag, depth + 1, opts, out);
            }
            return;
        }
        Ok((m, _)) => match m.artifact_type.as_deref() {
            Some(crate::margo::manifest::component::COMPOSE_ARTIFACT_TYPE) => RouteKind::Component,
            _ if m.config.as_ref().is_some_and(|c| {
                c.media_type == crate::margo::manifest::component::HELM_CONFIG_MEDIA_TYPE
            }) =>
            {
                RouteKind::Component
            }
            _ => RouteKind::App,
        },
        Err(_) => RouteKind::App,
    };
    let check = check_manifest(&bytes, route, &reference, &opts.manifest);
    report.extend(check.report);
    match (check.next, check.manifest, check.class) {
        (NextStep::Description(layer), Some(manifest), ManifestClass::MargoPackage) => {
            match read_blob(dir, &layer, opts.description.yaml.max_bytes) {
                Ok(blob) => {
                    let pc = check_package_description(
                        &manifest,
                        &layer,
                        &blob,
                        &reference,
                        &opts.manifest,
                        &opts.description,
                    );
                    report.extend(pc.report);
                }
                Err(e) => report.push(e.to_violation()),
            }
        }
        (NextStep::ComposeArchive(layer), _, _) => {
            let found = blob_path(dir, &layer.digest)
                .ok_or_else(|| "bad digest".to_owned())
                .and_then(|p| {
                    archive_file(&p, Some((&layer.digest, layer.size)), opts)
                        .map_err(|e| e.to_string())
                });
            match found {
                Ok(f) => report.extend(f.report),
                Err(reason) => report.push(
                    BlobError::Unusable {
                        digest: layer.digest.clone(),
                        reason,
                    }
                    .to_violation(),
                ),
            }
        }
        _ => {}
    }
    out.push(Finding { subject, report });
}

/// Renders an outcome for people or machines.
pub fn render(outcome: &Outcome, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(outcome)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot render: {e}\"}}")),
        OutputFormat::Human => render_human(outcome),
    }
}

fn render_human(o: &Outcome) -> String {
    let mut s = String::new();
    if let Some(e) = &o.error {
        s.push_str(&format!("error: {e}\n"));
        return s;
    }
    let kind = o.kind.map(InputKind::label).unwrap_or("input");
    s.push_str(&format!("{} ({kind})\n", o.path));
    for f in &o.findings {
        if f.report.is_empty() {
            s.push_str(&format!("  ok    {}\n", f.subject));
            continue;
        }
        s.push_str(&format!(
            "  FAIL  {}: {} violation(s)\n",
            f.subject,
            f.report.len()
        ));
        for v in f.report.violations() {
            s.push_str(&format!("        {v}\n"));
        }
        if f.report.omitted() > 0 {
            s.push_str(&format!("        … and {} more\n", f.report.omitted()));
        }
    }
    if o.violations == 0 {
        s.push_str("valid\n");
    } else {
        s.push_str(&format!("{} violation(s)\n", o.violations));
    }
    s
}

#[cfg(test)]
mod tests;
