//! The web catalog under `/catalog/`: server-rendered HTML, one small script and one
//! stylesheet served from here (no CDN, works offline).
//!
//! Every value from a `margo.yaml` goes through [`esc`]; Markdown through
//! [`super::markdown::render`]. The CSP has no `unsafe-inline`: the script is a file,
//! data reaches it through `data-*` attributes. With auth on, a page requested without
//! a valid token is the login page; the script gets a token from the token bridge,
//! keeps it in memory only and fetches the same pages with it (no cookies).

use std::fmt::Write as _;

use bytes::Bytes;

use super::api::{caller, components, Caller, Reply, Request, API_PREFIX};
use super::index::{Index, RepoEntry, VersionEntry};
use super::markdown;
use super::query::{self, Query};
use super::Catalog;
use crate::auth::Authenticator;
use crate::margo::model::{
    ApplicationDescription, DataType, ProfileType, RequiredResources, Schema, SchemaRules, Setting,
};
use crate::margo::resources::ResourceKind;

const SCRIPT: &str = include_str!("static/catalog.js");
const STYLE: &str = include_str!("static/catalog.css");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn qv(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn html_reply(status: u16, body: String, private: bool) -> Reply {
    Reply {
        status,
        headers: vec![
            (
                http::header::CONTENT_TYPE,
                "text/html; charset=utf-8".to_owned(),
            ),
            (http::header::CONTENT_SECURITY_POLICY, CSP.to_owned()),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (http::header::REFERRER_POLICY, "no-referrer".to_owned()),
            (
                http::header::CACHE_CONTROL,
                if private { "no-store" } else { "no-cache" }.to_owned(),
            ),
        ],
        body: Bytes::from(body.into_bytes()),
    }
}

fn asset(body: &'static str, media_type: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![
            (http::header::CONTENT_TYPE, media_type.to_owned()),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (http::header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// Page settings the script reads from `<body data-…>`.
struct Frame<'a> {
    auth: bool,
    token_path: Option<&'a str>,
}

fn layout(frame: &Frame<'_>, title: &str, main: &str) -> String {
    let mut s = String::with_capacity(main.len() + 1024);
    s.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(s, "<title>{} · Margo catalog</title>", esc(title));
    s.push_str("<link rel=\"stylesheet\" href=\"/catalog/static/catalog.css\">");
    s.push_str("<script src=\"/catalog/static/catalog.js\" defer></script></head>");
    let _ = write!(
        s,
        "<body data-auth=\"{}\" data-token-path=\"{}\">",
        if frame.auth { "on" } else { "off" },
        esc(frame.token_path.unwrap_or(""))
    );
    s.push_str("<header class=\"top\"><a class=\"brand\" href=\"/catalog/\" data-nav>Margo application catalog</a>");
    if frame.auth {
        s.push_str("<span id=\"who\" class=\"who\" aria-live=\"polite\"></span>");
    }
    s.push_str("</header><main id=\"main\">");
    s.push_str(main);
    s.push_str("</main></body></html>\n");
    s
}

fn login_main() -> String {
    "<section class=\"login\" aria-labelledby=\"login-title\">\
     <h1 id=\"login-title\">Sign in</h1>\
     <p>This registry needs a token. Sign in with your registry account; the token is kept in this page only.</p>\
     <form id=\"login\" autocomplete=\"on\">\
     <label for=\"login-user\">Username</label><input id=\"login-user\" name=\"username\" autocomplete=\"username\" required>\
     <label for=\"login-pass\">Password</label><input id=\"login-pass\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
     <button type=\"submit\">Sign in</button>\
     <p id=\"login-error\" class=\"error\" role=\"alert\"></p></form>\
     <noscript><p>Signing in needs JavaScript.</p></noscript></section>"
        .to_owned()
}

/// Answers `/catalog/...`.
pub async fn handle(catalog: &Catalog, auth: Option<&Authenticator>, req: &Request<'_>) -> Reply {
    if !matches!(*req.method, http::Method::GET | http::Method::HEAD) {
        return Reply::error(
            &crate::oci::OciError::new(crate::oci::OciErrorCode::Unsupported, "method not allowed")
                .with_status(405),
        );
    }
    match req.path {
        "/catalog/static/catalog.js" => return asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/catalog/static/catalog.css" => return asset(STYLE, "text/css; charset=utf-8"),
        _ => {}
    }
    let frame = Frame {
        auth: auth.is_some(),
        token_path: auth.and_then(|a| a.token_endpoint()).map(|b| b.path()),
    };
    let who = match caller(auth, req.headers).await {
        Ok(c) => c,
        Err(_) => return html_reply(200, layout(&frame, "Sign in", &login_main()), true),
    };
    let index = catalog.snapshot();
    let private = auth.is_some();
    if req.path == "/catalog" || req.path == "/catalog/" {
        let (title, main) = match Query::parse(req.query) {
            Ok(q) => ("Applications", list_main(&index, &q, &who, frame.auth)),
            Err(e) => (
                "Applications",
                format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
            ),
        };
        return html_reply(200, layout(&frame, title, &main), private);
    }
    if let Some(repo) = req.path.strip_prefix("/catalog/app/") {
        let version = url::form_urlencoded::parse(req.query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "version")
            .map(|(_, v)| v.into_owned());
        let found = who
            .may_pull(repo)
            .then(|| index.repos.get(repo))
            .flatten()
            .and_then(|r| {
                let v = match &version {
                    Some(t) => r.version(t),
                    None => r.latest(),
                }?;
                Some((r, v))
            });
        return match found {
            Some((r, v)) => {
                let main = app_main(r, v, frame.auth);
                html_reply(
                    200,
                    layout(&frame, &v.description.metadata.name, &main),
                    private,
                )
            }
            None => html_reply(
                404,
                layout(
                    &frame,
                    "Not found",
                    "<h1>Not found</h1><p>No such application in the catalog.</p>",
                ),
                private,
            ),
        };
    }
    html_reply(
        404,
        layout(&frame, "Not found", "<h1>Not found</h1>"),
        private,
    )
}

fn icon_img(repo: &str, v: &VersionEntry, auth: bool, class: &str) -> String {
    if v.icon.is_none() {
        return format!("<span class=\"{class} noicon\" aria-hidden=\"true\"></span>");
    }
    let url = format!(
        "{API_PREFIX}/{}/versions/{}/resources/icon",
        esc(repo),
        esc(&v.tag)
    );
    let alt = format!("{} icon", v.description.metadata.name);
    if auth {
        format!(
            "<img class=\"{class}\" data-src=\"{url}\" alt=\"{}\" width=\"64\" height=\"64\">",
            esc(&alt)
        )
    } else {
        format!(
            "<img class=\"{class}\" src=\"{url}\" alt=\"{}\" width=\"64\" height=\"64\">",
            esc(&alt)
        )
    }
}

fn list_main(index: &Index, q: &Query, who: &Caller, auth: bool) -> String {
    let page = query::list(index, q, |r| who.may_pull(r));
    let orgs = query::organizations(index, |r| who.may_pull(r));
    let mut s = String::new();
    s.push_str("<h1>Applications</h1>");
    s.push_str(
        "<form id=\"search\" class=\"search\" role=\"search\" action=\"/catalog/\" method=\"get\">",
    );
    let _ = write!(
        s,
        "<label for=\"q\">Search</label><input id=\"q\" name=\"q\" type=\"search\" value=\"{}\">",
        esc(q.q.as_deref().unwrap_or(""))
    );
    s.push_str("<label for=\"organization\">Organization</label><select id=\"organization\" name=\"organization\"><option value=\"\">any</option>");
    for o in &orgs {
        let sel = q
            .organization
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(o));
        let _ = write!(
            s,
            "<option value=\"{}\"{}>{}</option>",
            esc(o),
            if sel { " selected" } else { "" },
            esc(o)
        );
    }
    s.push_str(
        "</select><label for=\"profile\">Profile</label><select id=\"profile\" name=\"profile\">",
    );
    for (value, label) in [("", "any"), ("helm", "Helm"), ("compose", "Compose")] {
        let sel = q.profile.map(ProfileType::as_str).unwrap_or("") == value;
        let _ = write!(
            s,
            "<option value=\"{value}\"{}>{label}</option>",
            if sel { " selected" } else { "" }
        );
    }
    s.push_str("</select><button type=\"submit\">Filter</button></form>");
    let _ = write!(
        s,
        "<p class=\"count\" id=\"count\">{} application{}</p>",
        page.total,
        if page.total == 1 { "" } else { "s" }
    );
    s.push_str("<ul class=\"apps\" id=\"apps\">");
    for app in &page.applications {
        let Some(entry) = index.repos.get(&app.repository) else {
            continue;
        };
        let Some(latest) = entry.latest() else {
            continue;
        };
        let _ = write!(
            s,
            "<li class=\"app\" data-repository=\"{repo}\"><a href=\"/catalog/app/{repo}\" data-nav>{icon}<span class=\"app-text\"><span class=\"app-name\">{name}</span> <span class=\"app-version\">{ver}</span><span class=\"app-tagline\">{tagline}</span><span class=\"app-org\">{org} · {profiles}</span></span></a></li>",
            repo = esc(&app.repository),
            icon = icon_img(&app.repository, latest, auth, "icon"),
            name = esc(&app.name),
            ver = esc(&app.latest_version),
            tagline = esc(app.tagline.as_deref().or(app.description.as_deref()).unwrap_or("")),
            org = esc(&app.organization.join(", ")),
            profiles = app
                .profiles
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    s.push_str("</ul>");
    if page.pages > 1 {
        s.push_str("<nav class=\"pages\" aria-label=\"pages\">");
        for p in 1..=page.pages {
            let mut href = format!("/catalog/?page={p}");
            if let Some(x) = &q.q {
                let _ = write!(href, "&q={}", qv(x));
            }
            if let Some(x) = &q.organization {
                let _ = write!(href, "&organization={}", qv(x));
            }
            if let Some(x) = q.profile {
                let _ = write!(href, "&profile={}", x.as_str());
            }
            if p == page.page {
                let _ = write!(s, "<span aria-current=\"page\">{p}</span>");
            } else {
                let _ = write!(s, "<a href=\"{}\" data-nav>{p}</a>", esc(&href));
            }
        }
        s.push_str("</nav>");
    }
    s
}

fn resources_summary(r: &RequiredResources) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = &r.cpu {
        let arch: Vec<String> = cpu
            .architectures
            .iter()
            .map(|a| format!("{a:?}").to_lowercase())
            .collect();
        parts.push(format!(
            "{} CPU core{}{}",
            cpu.cores,
            if cpu.cores == 1.0 { "" } else { "s" },
            if arch.is_empty() {
                String::new()
            } else {
                format!(" ({})", arch.join(", "))
            }
        ));
    }
    if let Some(m) = &r.memory {
        parts.push(format!("{m} memory"));
    }
    if let Some(st) = &r.storage {
        parts.push(format!("{st} storage"));
    }
    for p in &r.peripherals {
        parts.push(format!("{:?}", p.peripheral_type).to_lowercase());
    }
    for i in &r.interfaces {
        parts.push(format!("{:?}", i.interface_type).to_lowercase());
    }
    if parts.is_empty() {
        "none stated".to_owned()
    } else {
        esc(&parts.join(", "))
    }
}

fn app_main(repo: &RepoEntry, v: &VersionEntry, auth: bool) -> String {
    let d = &v.description;
    let app = d.metadata.catalog.application.clone().unwrap_or_default();
    let mut s = String::new();
    let _ = write!(
        s,
        "<article class=\"app-page\" data-repository=\"{}\" data-version=\"{}\">",
        esc(&v.repository),
        esc(&v.tag)
    );
    let _ = write!(
        s,
        "<div class=\"app-head\">{}<div><h1 id=\"app-name\">{}</h1><p class=\"tagline\">{}</p><p class=\"org\">{}</p></div></div>",
        icon_img(&v.repository, v, auth, "icon-large"),
        esc(&d.metadata.name),
        esc(app.tagline.as_deref().unwrap_or("")),
        esc(&d
            .metadata
            .catalog
            .organization
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", "))
    );
    if let Some(desc) = &d.metadata.description {
        let _ = write!(
            s,
            "<p class=\"description\" id=\"description\">{}</p>",
            esc(desc)
        );
    }
    s.push_str("<nav class=\"versions\" aria-label=\"versions\"><h2>Versions</h2><ul>");
    for other in &repo.versions {
        if other.tag == v.tag {
            let _ = write!(
                s,
                "<li><strong aria-current=\"true\">{}</strong></li>",
                esc(&other.tag)
            );
        } else {
            let _ = write!(
                s,
                "<li><a href=\"/catalog/app/{}?version={}\" data-nav>{}</a></li>",
                esc(&v.repository),
                esc(&qv(&other.tag)),
                esc(&other.tag)
            );
        }
    }
    s.push_str("</ul></nav>");

    s.push_str("<section><h2>Details</h2><dl class=\"facts\">");
    let fact = |s: &mut String, k: &str, val: String| {
        let _ = write!(s, "<dt>{k}</dt><dd>{val}</dd>");
    };
    fact(
        &mut s,
        "Repository",
        format!("<code>{}</code>", esc(&v.repository)),
    );
    fact(
        &mut s,
        "Application id",
        format!("<code>{}</code>", esc(&d.id)),
    );
    fact(
        &mut s,
        "Manifest digest",
        format!(
            "<code id=\"manifest-digest\">{}</code>",
            esc(&v.manifest_digest.to_string())
        ),
    );
    fact(
        &mut s,
        "Description digest",
        format!("<code>{}</code>", esc(&v.description_digest)),
    );
    if let Some(site) = &app.site {
        let href = if site.starts_with("https://") || site.starts_with("http://") {
            esc(site)
        } else {
            "#".to_owned()
        };
        fact(
            &mut s,
            "Site",
            format!(
                "<a href=\"{href}\" rel=\"noopener noreferrer\">{}</a>",
                esc(site)
            ),
        );
    }
    if !app.tags.is_empty() {
        fact(&mut s, "Tags", esc(&app.tags.join(", ")));
    }
    let authors: Vec<String> = d
        .metadata
        .catalog
        .author
        .iter()
        .map(|a| {
            let n = a.name.clone().unwrap_or_default();
            match &a.email {
                Some(e) => format!("{n} <{e}>"),
                None => n,
            }
        })
        .collect();
    if !authors.is_empty() {
        fact(&mut s, "Authors", esc(&authors.join(", ")));
    }
    let licence = match (
        v.texts.get(&ResourceKind::LicenseFile),
        v.resource(ResourceKind::LicenseFile),
    ) {
        (Some(t), _) => format!("<pre class=\"licence\" id=\"licence\">{}</pre>", esc(t)),
        (None, Some(r)) => format!(
            "{} ({}, <code>{}</code>)",
            esc(r.title.as_deref().unwrap_or("licence file")),
            esc(&r.format),
            esc(&r.digest)
        ),
        (None, None) => app
            .license_file
            .as_deref()
            .map(esc)
            .unwrap_or_else(|| "not stated".into()),
    };
    fact(&mut s, "Licence", licence);
    if v.report.is_empty() {
        fact(&mut s, "Admission", "clean: no violation".into());
    } else {
        let mut list = String::from("<ul class=\"violations\">");
        for x in v.report.violations() {
            let _ = write!(list, "<li>{}</li>", esc(&x.message));
        }
        list.push_str("</ul>");
        fact(&mut s, "Admission (audit)", list);
    }
    s.push_str("</dl></section>");

    s.push_str("<section><h2>Deployment profiles and components</h2><table class=\"components\"><thead><tr><th scope=\"col\">Profile</th><th scope=\"col\">Type</th><th scope=\"col\">Component</th><th scope=\"col\">Repository</th><th scope=\"col\">Revision</th></tr></thead><tbody>");
    for c in components(v) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&c.profile),
            c.profile_type.as_str(),
            esc(&c.name),
            esc(c
                .repository
                .as_deref()
                .or(c.package_location.as_deref())
                .unwrap_or("")),
            esc(c.revision.as_deref().unwrap_or(""))
        );
    }
    s.push_str("</tbody></table><h3>Required resources</h3><ul class=\"resources\">");
    for p in &d.deployment_profiles {
        let _ = write!(
            s,
            "<li><strong>{}</strong> ({}): {}</li>",
            esc(&p.id),
            p.profile_type.as_str(),
            resources_summary(&p.required_resources.clone().unwrap_or_default())
        );
    }
    s.push_str("</ul></section>");

    if let Some(notes) = v.texts.get(&ResourceKind::ReleaseNotes) {
        let _ = write!(
            s,
            "<section class=\"markdown\" id=\"release-notes\"><h2>Release notes</h2>{}</section>",
            markdown::render(notes)
        );
    }
    if let Some(text) = v.texts.get(&ResourceKind::DescriptionFile) {
        let _ = write!(
            s,
            "<section class=\"markdown\" id=\"long-description\"><h2>About</h2>{}</section>",
            markdown::render(text)
        );
    }
    s.push_str(&config_form(v, d));
    s.push_str("</article>");
    s
}

fn schema_of<'a>(d: &'a ApplicationDescription, name: &str) -> Option<&'a Schema> {
    d.configuration
        .as_ref()?
        .schema
        .iter()
        .find(|s| s.name == name)
}

fn default_text(d: &ApplicationDescription, setting: &Setting) -> (String, Vec<String>) {
    use crate::margo::model::ParameterValue;
    let scalar = scalar_text;
    match d
        .parameters
        .get(&setting.parameter)
        .and_then(|p| p.value.as_ref())
    {
        None => (String::new(), Vec::new()),
        Some(ParameterValue::Boolean(b)) => (b.to_string(), vec![b.to_string()]),
        Some(ParameterValue::Integer(i)) => (i.to_string(), vec![i.to_string()]),
        Some(ParameterValue::Double(f)) => (f.to_string(), vec![f.to_string()]),
        Some(ParameterValue::String(s)) => (s.clone(), vec![s.clone()]),
        Some(ParameterValue::Array(a)) => {
            let items: Vec<String> = a.iter().map(scalar).collect();
            (items.join("\n"), items)
        }
    }
}

fn scalar_text(v: &crate::margo::model::ScalarValue) -> String {
    use crate::margo::model::ScalarValue;
    match v {
        ScalarValue::Boolean(b) => b.to_string(),
        ScalarValue::Integer(i) => i.to_string(),
        ScalarValue::Double(f) => f.to_string(),
        ScalarValue::String(s) => s.clone(),
    }
}

fn kind_attr(dt: DataType) -> &'static str {
    match dt.element() {
        DataType::Integer => "integer",
        DataType::Double => "double",
        DataType::Boolean => "boolean",
        _ => "string",
    }
}

/// The form from `configuration.sections`: constraints as attributes and hints, the
/// check itself on the server (`configuration:validate`).
fn config_form(v: &VersionEntry, d: &ApplicationDescription) -> String {
    let Some(cfg) = &d.configuration else {
        return String::new();
    };
    let action = format!(
        "{API_PREFIX}/{}/versions/{}/configuration:validate",
        v.repository, v.tag
    );
    let mut s = String::new();
    let _ = write!(
        s,
        "<section class=\"configure\"><h2>Configuration</h2><form id=\"config\" novalidate data-action=\"{}\">",
        esc(&action)
    );
    for (si, section) in cfg.sections.iter().enumerate() {
        let _ = write!(s, "<fieldset><legend>{}</legend>", esc(&section.name));
        for (i, setting) in section.settings.iter().enumerate() {
            let id = format!("f{si}-{i}");
            let Some(schema) = schema_of(d, &setting.schema) else {
                continue;
            };
            let (default, defaults) = default_text(d, setting);
            let mut hints: Vec<String> = vec![schema.data_type.as_str().to_owned()];
            let mut attrs = String::new();
            let required = match &schema.rules {
                SchemaRules::Text { allow_empty, .. }
                | SchemaRules::Boolean { allow_empty }
                | SchemaRules::Integer { allow_empty, .. }
                | SchemaRules::Double { allow_empty, .. }
                | SchemaRules::Select { allow_empty, .. } => *allow_empty != Some(true),
            };
            if required {
                hints.push("required".into());
                attrs.push_str(" aria-required=\"true\"");
            } else {
                hints.push("may be empty".into());
            }
            let multi = schema.data_type.is_array()
                || matches!(
                    schema.rules,
                    SchemaRules::Select {
                        multiselect: Some(true),
                        ..
                    }
                );
            let control = match &schema.rules {
                SchemaRules::Select { options, .. } => {
                    let mut c = format!(
                        "<select id=\"{id}\" name=\"{}\" data-kind=\"{}\"{}{attrs}>",
                        esc(&setting.parameter),
                        kind_attr(schema.data_type),
                        if multi {
                            " multiple data-multi=\"1\""
                        } else {
                            ""
                        },
                    );
                    if !multi {
                        c.push_str("<option value=\"\">(none)</option>");
                    }
                    for o in options {
                        let text = crate::catalog::configure::InputValue::to_env(&match o {
                            crate::margo::model::ScalarValue::Boolean(b) => {
                                crate::catalog::configure::InputValue::Bool(*b)
                            }
                            crate::margo::model::ScalarValue::Integer(n) => {
                                crate::catalog::configure::InputValue::Int(*n)
                            }
                            crate::margo::model::ScalarValue::Double(f) => {
                                crate::catalog::configure::InputValue::Double {
                                    value: *f,
                                    decimals: 0,
                                }
                            }
                            crate::margo::model::ScalarValue::String(t) => {
                                crate::catalog::configure::InputValue::String(t.clone())
                            }
                        });
                        let sel = defaults.contains(&text);
                        let _ = write!(
                            c,
                            "<option value=\"{}\"{}>{}</option>",
                            esc(&text),
                            if sel { " selected" } else { "" },
                            esc(&text)
                        );
                    }
                    c.push_str("</select>");
                    hints.push(if multi {
                        "choose any".into()
                    } else {
                        "choose one".into()
                    });
                    c
                }
                SchemaRules::Boolean { .. } if !multi => {
                    let mut c = format!(
                        "<select id=\"{id}\" name=\"{}\" data-kind=\"boolean\"{attrs}><option value=\"\">(none)</option>",
                        esc(&setting.parameter)
                    );
                    for b in ["true", "false"] {
                        let _ = write!(
                            c,
                            "<option value=\"{b}\"{}>{b}</option>",
                            if default == b { " selected" } else { "" }
                        );
                    }
                    c.push_str("</select>");
                    c
                }
                rules => {
                    match rules {
                        SchemaRules::Text {
                            min_length,
                            max_length,
                            regex_match,
                            ..
                        } => {
                            if let Some(m) = min_length {
                                let _ = write!(attrs, " minlength=\"{m}\"");
                                hints.push(format!("at least {m} characters"));
                            }
                            if let Some(m) = max_length {
                                let _ = write!(attrs, " maxlength=\"{m}\"");
                                hints.push(format!("at most {m} characters"));
                            }
                            if let Some(r) = regex_match {
                                hints.push(format!("must match {r}"));
                            }
                        }
                        SchemaRules::Integer {
                            min_value,
                            max_value,
                            ..
                        } => {
                            if let Some(m) = min_value {
                                let _ = write!(attrs, " min=\"{m}\"");
                                hints.push(format!("≥ {m}"));
                            }
                            if let Some(m) = max_value {
                                let _ = write!(attrs, " max=\"{m}\"");
                                hints.push(format!("≤ {m}"));
                            }
                        }
                        SchemaRules::Double {
                            min_value,
                            max_value,
                            min_precision,
                            max_precision,
                            ..
                        } => {
                            if let Some(m) = min_value {
                                hints.push(format!("≥ {m}"));
                            }
                            if let Some(m) = max_value {
                                hints.push(format!("≤ {m}"));
                            }
                            match (min_precision, max_precision) {
                                (Some(a), Some(b)) => {
                                    hints.push(format!("{a} to {b} decimal places"))
                                }
                                (Some(a), None) => {
                                    hints.push(format!("at least {a} decimal places"))
                                }
                                (None, Some(b)) => {
                                    hints.push(format!("at most {b} decimal places"))
                                }
                                _ => {}
                            }
                        }
                        _ => {}
                    }
                    if multi {
                        hints.push("one value per line".into());
                        format!(
                            "<textarea id=\"{id}\" name=\"{}\" data-kind=\"{}\" data-multi=\"1\" rows=\"3\"{attrs}>{}</textarea>",
                            esc(&setting.parameter),
                            kind_attr(schema.data_type),
                            esc(&default)
                        )
                    } else {
                        let input_type = match schema.data_type {
                            DataType::Integer => "number",
                            _ => "text",
                        };
                        format!(
                            "<input id=\"{id}\" name=\"{}\" type=\"{input_type}\" data-kind=\"{}\" value=\"{}\"{}{attrs}>",
                            esc(&setting.parameter),
                            kind_attr(schema.data_type),
                            esc(&default),
                            if schema.data_type == DataType::Double { " inputmode=\"decimal\"" } else { "" }
                        )
                    }
                }
            };
            let _ = write!(
                s,
                "<div class=\"field\" data-parameter=\"{p}\"><label for=\"{id}\">{name}</label>{control}<p class=\"hint\" id=\"{id}-hint\">{desc}{hints}{immutable}</p><p class=\"violation\" role=\"alert\" data-for=\"{p}\"></p></div>",
                p = esc(&setting.parameter),
                name = esc(&setting.name),
                desc = setting
                    .description
                    .as_deref()
                    .map(|x| format!("{} ", esc(x)))
                    .unwrap_or_default(),
                hints = esc(&format!("({})", hints.join("; "))),
                immutable = if setting.immutable == Some(true) { " Cannot be changed after installation." } else { "" },
            );
        }
        s.push_str("</fieldset>");
    }
    s.push_str("<button type=\"submit\">Check configuration</button>");
    s.push_str(
        "<p id=\"config-status\" class=\"status\" role=\"status\" aria-live=\"polite\"></p>",
    );
    s.push_str("<ul id=\"config-errors\" class=\"violations\"></ul>");
    s.push_str("<table id=\"resolved\" class=\"resolved\" hidden><caption>What each component receives</caption><thead><tr><th scope=\"col\">Profile</th><th scope=\"col\">Component</th><th scope=\"col\">Pointer</th><th scope=\"col\">Value</th></tr></thead><tbody></tbody></table>");
    s.push_str("</form></section>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_table() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn csp_forbids_inline() {
        assert!(!CSP.contains("unsafe-inline"));
        assert!(CSP.contains("script-src 'self'"));
        assert!(!SCRIPT.contains("eval("));
    }
}
