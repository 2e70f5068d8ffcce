//! The application list: summaries of each repository's latest version, searched,
//! filtered and paginated.

use serde::Serialize;

use super::index::{Index, RepoEntry};
use crate::margo::model::{ProfileType, RequiredResources};
use crate::margo::resources::ResourceKind;

/// Applications per page unless `per_page` says otherwise.
pub const DEFAULT_PER_PAGE: usize = 20;
pub const MAX_PER_PAGE: usize = 100;
/// Longest accepted search text.
pub const MAX_QUERY_CHARS: usize = 200;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub q: Option<String>,
    pub organization: Option<String>,
    pub profile: Option<ProfileType>,
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("`profile` must be `helm` or `compose`")]
    Profile,
    #[error("`{0}` must be a positive integer")]
    NotANumber(&'static str),
    #[error("`{0}` is longer than {MAX_QUERY_CHARS} characters")]
    TooLong(&'static str),
}

impl Query {
    /// From a URL query string; unknown parameters are ignored (caches, cache-busters).
    pub fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut out = Query {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            ..Query::default()
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let text = |name: &'static str| -> Result<Option<String>, QueryError> {
                if v.chars().count() > MAX_QUERY_CHARS {
                    return Err(QueryError::TooLong(name));
                }
                let t = v.trim();
                Ok((!t.is_empty()).then(|| t.to_owned()))
            };
            match k.as_ref() {
                "q" => out.q = text("q")?,
                "organization" => out.organization = text("organization")?,
                "profile" => {
                    out.profile = match v.as_ref() {
                        "" => None,
                        "helm" => Some(ProfileType::Helm),
                        "compose" => Some(ProfileType::Compose),
                        _ => return Err(QueryError::Profile),
                    }
                }
                "page" => {
                    out.page = v
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or(QueryError::NotANumber("page"))?
                }
                "per_page" => {
                    out.per_page = v
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or(QueryError::NotANumber("per_page"))?
                        .min(MAX_PER_PAGE)
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// A link to a blob through the proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobLink {
    pub url: String,
    pub media_type: String,
    pub digest: String,
}

/// One application in the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub repository: String,
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tagline: Option<String>,
    pub organization: Vec<String>,
    pub tags: Vec<String>,
    pub versions: Vec<String>,
    pub latest_version: String,
    pub profiles: Vec<ProfileType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<BlobLink>,
    /// Per deployment profile id.
    pub required_resources: Vec<ProfileResources>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileResources {
    pub profile: String,
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    #[serde(flatten)]
    pub resources: RequiredResources,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub applications: Vec<Summary>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub pages: usize,
}

pub fn blob_url(repo: &str, digest: &str) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

pub fn summarize(repo: &str, entry: &RepoEntry) -> Option<Summary> {
    let latest = entry.latest()?;
    let d = &latest.description;
    let app = d.metadata.catalog.application.as_ref();
    let mut profiles: Vec<ProfileType> = Vec::new();
    for p in &d.deployment_profiles {
        if !profiles.contains(&p.profile_type) {
            profiles.push(p.profile_type);
        }
    }
    Some(Summary {
        repository: repo.to_owned(),
        id: d.id.clone(),
        name: d.metadata.name.clone(),
        description: d.metadata.description.clone(),
        tagline: app.and_then(|a| a.tagline.clone()),
        organization: d
            .metadata
            .catalog
            .organization
            .iter()
            .map(|o| o.name.clone())
            .collect(),
        tags: app.map(|a| a.tags.clone()).unwrap_or_default(),
        versions: entry.versions.iter().map(|v| v.tag.clone()).collect(),
        latest_version: latest.tag.clone(),
        profiles,
        icon: latest.resource(ResourceKind::Icon).map(|r| BlobLink {
            url: blob_url(repo, &r.digest),
            media_type: r.media_type.clone(),
            digest: r.digest.clone(),
        }),
        required_resources: d
            .deployment_profiles
            .iter()
            .map(|p| ProfileResources {
                profile: p.id.clone(),
                profile_type: p.profile_type,
                resources: p.required_resources.clone().unwrap_or_default(),
            })
            .collect(),
    })
}

fn matches(s: &Summary, q: &Query) -> bool {
    if let Some(p) = q.profile {
        if !s.profiles.contains(&p) {
            return false;
        }
    }
    if let Some(org) = &q.organization {
        if !s.organization.iter().any(|o| o.eq_ignore_ascii_case(org)) {
            return false;
        }
    }
    if let Some(text) = &q.q {
        let needle = text.to_lowercase();
        let hay = [
            Some(&s.repository),
            Some(&s.id),
            Some(&s.name),
            s.description.as_ref(),
            s.tagline.as_ref(),
        ];
        let hit = hay
            .into_iter()
            .flatten()
            .chain(s.organization.iter())
            .chain(s.tags.iter())
            .any(|h| h.to_lowercase().contains(&needle));
        if !hit {
            return false;
        }
    }
    true
}

/// Runs a query over the repositories `visible` admits.
pub fn list(index: &Index, q: &Query, visible: impl Fn(&str) -> bool) -> Page {
    let all: Vec<Summary> = index
        .repos
        .iter()
        .filter(|(name, _)| visible(name))
        .filter_map(|(name, e)| summarize(name, e))
        .filter(|s| matches(s, q))
        .collect();
    let total = all.len();
    let per_page = q.per_page.clamp(1, MAX_PER_PAGE);
    let pages = total.div_ceil(per_page).max(1);
    let start = q.page.saturating_sub(1).saturating_mul(per_page);
    Page {
        applications: all.into_iter().skip(start).take(per_page).collect(),
        total,
        page: q.page,
        per_page,
        pages,
    }
}

/// Every organization of the visible applications, for the filter drop-down.
pub fn organizations(index: &Index, visible: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = index
        .repos
        .iter()
        .filter(|(n, _)| visible(n))
        .filter_map(|(n, e)| summarize(n, e))
        .flat_map(|s| s.organization)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parse_table() {
        let q = Query::parse(Some(
            "q=line&organization=Northwind&profile=helm&page=2&per_page=500",
        ));
        assert_eq!(
            q,
            Ok(Query {
                q: Some("line".into()),
                organization: Some("Northwind".into()),
                profile: Some(ProfileType::Helm),
                page: 2,
                per_page: MAX_PER_PAGE,
            })
        );
        assert_eq!(Query::parse(Some("profile=k8s")), Err(QueryError::Profile));
        assert_eq!(
            Query::parse(Some("page=0")),
            Err(QueryError::NotANumber("page"))
        );
        assert_eq!(
            Query::parse(Some(&format!("q={}", "x".repeat(201)))),
            Err(QueryError::TooLong("q"))
        );
        assert_eq!(Query::parse(None).map(|q| q.page), Ok(1));
    }
}
