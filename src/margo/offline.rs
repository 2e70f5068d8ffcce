//! `margo-proxy validate PATH`: the admission engine, offline, for developers' CI.
//!
//! PATH may be a `margo.yaml`, a package directory (`margo.yaml` + resources), a
//! Compose archive (`.tar.gz`/`.tgz`) or an OCI image layout. The same checks as on
//! push run; what cannot be checked offline (the upstream) is read from disk instead.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::margo::admission::{
    self, AdmissionLimits, BlobError, Deviations, LayoutBlobs, RoutePolicy,
};
use crate::margo::compose::check_archive;
use crate::margo::manifest::{parse_manifest, Descriptor, Reference, RouteKind};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};
use crate::margo::resources::normalize_relative;
use crate::margo::validate::validate_description;

/// What PATH turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    Description,
    PackageDirectory,
    /// A margot project: `margo.yaml` is margot's build file, the description is
    /// `<directory>/app.yaml` (`margo/` unless the build file says otherwise).
    MargotProject,
    /// margot's build output `.dist/<version>/margo/`: `app.yaml` and `resources/`.
    MargotOutput,
    ComposeArchive,
    OciLayout,
}

impl InputKind {
    fn label(self) -> &'static str {
        match self {
            InputKind::Description => "application description",
            InputKind::PackageDirectory => "package directory",
            InputKind::MargotProject => {
                "margot project (description in the margo directory's app.yaml)"
            }
            InputKind::MargotOutput => "margot build output (app.yaml)",
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
    /// Violations: what a push would be refused for.
    pub report: Report,
    /// Tolerated deviations of the reference tooling: what a push would be warned about.
    #[serde(skip_serializing_if = "Report::is_empty")]
    pub warnings: Report,
}

impl Finding {
    fn new(subject: String, report: Report) -> Self {
        Self {
            subject,
            report,
            warnings: Report::new(),
        }
    }
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
    pub warnings: usize,
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

/// What `validate` checks against: the proxy's limits and a default route's
/// deviation handling, so that the answer is the one a push would get.
#[derive(Debug, Clone, Default)]
pub struct OfflineOptions {
    pub limits: AdmissionLimits,
    pub deviations: Deviations,
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
    let result = detect(path, opts).and_then(|kind| {
        let findings = match kind {
            InputKind::Description => vec![description_file(path, "margo.yaml", opts)?.0],
            InputKind::PackageDirectory => package_dir(path, "margo.yaml", opts)?,
            InputKind::MargotProject => {
                package_dir(&path.join(margot_directory(path, opts)), "app.yaml", opts)?
            }
            InputKind::MargotOutput => package_dir(path, "app.yaml", opts)?,
            InputKind::ComposeArchive => vec![archive_file(path, opts)?],
            InputKind::OciLayout => oci_layout(path, opts)?,
        };
        Ok((kind, findings))
    });
    match result {
        Ok((kind, findings)) => {
            let violations = findings.iter().map(|f| f.report.len()).sum();
            let warnings = findings.iter().map(|f| f.warnings.len()).sum();
            Outcome {
                path: shown,
                kind: Some(kind),
                findings,
                error: None,
                valid: violations == 0,
                violations,
                warnings,
            }
        }
        Err(e) => Outcome {
            path: shown,
            kind: None,
            findings: Vec::new(),
            error: Some(e.to_string()),
            valid: false,
            violations: 0,
            warnings: 0,
        },
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InputError + '_ {
    move |source| InputError::Io {
        path: path.to_owned(),
        source,
    }
}

fn detect(path: &Path, opts: &OfflineOptions) -> Result<InputKind, InputError> {
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
            if is_margot_build_file(&path.join("margo.yaml"), opts) {
                return Ok(InputKind::MargotProject);
            }
            return Ok(InputKind::PackageDirectory);
        }
        if path.join("app.yaml").is_file() {
            return Ok(InputKind::MargotOutput);
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
    let limits = &opts.limits.description;
    let bytes = read_capped(path, limits.yaml.max_bytes)?;
    let check = validate_description(&bytes, limits);
    Ok((
        Finding::new(subject.to_owned(), check.report.clone()),
        check,
    ))
}

/// margot's build file (`apiVersion`, `id`, `name`, `description`, `version`, component
/// blocks) rather than an Application Description, which has `kind`.
fn is_margot_build_file(path: &Path, opts: &OfflineOptions) -> bool {
    let Ok(bytes) = read_capped(path, opts.limits.description.yaml.max_bytes) else {
        return false;
    };
    let Ok(root) = crate::margo::yaml::parse(&bytes, &opts.limits.description.yaml) else {
        return false;
    };
    root.get("kind").is_none()
        && ["id", "name", "version"]
            .iter()
            .all(|k| root.get(k).is_some())
}

/// The margot project's description directory (`directory:` in the build file).
fn margot_directory(project: &Path, opts: &OfflineOptions) -> String {
    read_capped(
        &project.join("margo.yaml"),
        opts.limits.description.yaml.max_bytes,
    )
    .ok()
    .and_then(|b| crate::margo::yaml::parse(&b, &opts.limits.description.yaml).ok())
    .and_then(|root| root.get("directory")?.as_str().map(str::to_owned))
    .and_then(|d| normalize_relative(&d).ok())
    .unwrap_or_else(|| "margo".to_owned())
}

fn package_dir(
    dir: &Path,
    description: &str,
    opts: &OfflineOptions,
) -> Result<Vec<Finding>, InputError> {
    let (mut finding, check) = description_file(&dir.join(description), description, opts)?;
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

fn archive_file(path: &Path, opts: &OfflineOptions) -> Result<Finding, InputError> {
    let f = File::open(path).map_err(io_err(path))?;
    let check = check_archive(io::BufReader::new(f), &opts.limits.archive, None);
    let subject = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(Finding::new(subject, check.report))
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const MAX_INDEX_DEPTH: usize = 4;

/// A blob the layout lacks or holds wrong, as the violation `validate` reports
/// (a push would be refused for it too, with an OCI error instead).
fn blob_violation(e: &BlobError) -> Violation {
    let mut v = Violation::new(
        RuleId::BlobDigest,
        FieldPath::root(),
        "every blob a descriptor names, present in blobs/ with its digest and size",
    );
    v.message = format!("{} at $: {e} (in the layout)", RuleId::BlobDigest);
    v
}

/// Reads a blob named by a descriptor (at most `max` bytes), verifying digest and size.
fn read_blob(layout: &LayoutBlobs, d: &Descriptor, max: u64) -> Result<Vec<u8>, BlobError> {
    let bytes = layout.read(&d.digest, d.size.min(max))?;
    d.digest
        .verify(&bytes, Some(d.size))
        .map_err(|e| BlobError::Unavailable {
            digest: d.digest.clone(),
            reason: e.to_string(),
        })?;
    Ok(bytes)
}

fn oci_layout(dir: &Path, opts: &OfflineOptions) -> Result<Vec<Finding>, InputError> {
    let layout_err = |reason: String| InputError::Layout {
        path: dir.to_owned(),
        reason,
    };
    let max = opts.limits.max_manifest_bytes;
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
    // Admission is async (the proxy reads blobs over the network); here the blobs are
    // local files, so a single-threaded runtime drives the same code.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(io_err(dir))?;
    let walker = Walker {
        layout: LayoutBlobs::new(dir),
        opts,
        runtime,
    };
    let mut findings = Vec::new();
    for (i, d) in index.manifests.iter().enumerate() {
        let subject = format!("index.json manifests[{i}]");
        walker.manifest(d, &subject, None, 0, &mut findings);
    }
    if findings.is_empty() {
        return Err(layout_err("index.json lists no manifests".into()));
    }
    Ok(findings)
}

/// The artifact's own claim of what it is, standing in for the route a push would
/// meet: anything that is neither a component nor a chart is checked as a package,
/// which reports a wrong artifactType.
fn route_kind_of(bytes: &[u8], max: usize) -> RouteKind {
    use crate::margo::manifest::component::{COMPOSE_ARTIFACT_TYPE, HELM_CONFIG_MEDIA_TYPE};
    match parse_manifest(bytes, max) {
        Ok((m, _)) if m.artifact_type.as_deref() == Some(COMPOSE_ARTIFACT_TYPE) => {
            RouteKind::Component
        }
        Ok((m, _))
            if m.config
                .as_ref()
                .is_some_and(|c| c.media_type == HELM_CONFIG_MEDIA_TYPE) =>
        {
            RouteKind::Component
        }
        _ => RouteKind::App,
    }
}

struct Walker<'a> {
    layout: LayoutBlobs,
    opts: &'a OfflineOptions,
    runtime: tokio::runtime::Runtime,
}

impl Walker<'_> {
    fn manifest(
        &self,
        d: &Descriptor,
        subject: &str,
        inherited_tag: Option<&str>,
        depth: usize,
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
        let max = self.opts.limits.max_manifest_bytes;
        let bytes = match read_blob(&self.layout, d, max as u64) {
            Ok(b) => b,
            Err(e) => {
                let mut report = Report::new();
                report.push(blob_violation(&e));
                out.push(Finding::new(subject, report));
                return;
            }
        };
        if let Ok((m, _)) = parse_manifest(&bytes, max) {
            if m.is_index() {
                if depth >= MAX_INDEX_DEPTH {
                    let mut report = Report::new();
                    report.push(Violation::new(
                        RuleId::ManifestIndexNotAllowed,
                        FieldPath::root(),
                        format!("indexes nested at most {MAX_INDEX_DEPTH} deep"),
                    ));
                    out.push(Finding::new(subject, report));
                    return;
                }
                for (i, child) in m.manifests.iter().enumerate() {
                    let s = format!("{subject} manifests[{i}]");
                    self.manifest(child, &s, tag, depth + 1, out);
                }
                return;
            }
        }
        let route = RoutePolicy::default_for(route_kind_of(&bytes, max), self.opts.deviations);
        let decided = self.runtime.block_on(admission::admit(
            &bytes,
            &reference,
            &route,
            &self.layout,
            &self.opts.limits,
        ));
        out.push(match decided {
            Ok(decision) => Finding {
                subject,
                report: decision.report,
                warnings: decision.warnings,
            },
            Err(e) => {
                let mut report = Report::new();
                report.push(blob_violation(&e));
                Finding::new(subject, report)
            }
        });
    }
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
        } else {
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
        for w in f.warnings.violations() {
            s.push_str(&format!("  warn  {w}\n"));
        }
    }
    if o.violations == 0 {
        s.push_str("valid");
    } else {
        s.push_str(&format!("{} violation(s)", o.violations));
    }
    if o.warnings > 0 {
        s.push_str(&format!(", {} warning(s)", o.warnings));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
