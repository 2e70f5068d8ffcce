//! AWS credentials from the standard chain, in the SDKs' order, so a proxy on a laptop, in
//! ECS/EKS or on EC2 finds the same identity the AWS CLI would:
//!
//! 1. environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`), profile `AWS_PROFILE` (else `default`);
//! 3. the container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` on ECS, or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`,
//!    EKS Pod Identity);
//! 4. the EC2 instance metadata service, IMDSv2 only (session token first), unless
//!    `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it.
//!
//! The chain is walked each time an ECR token is fetched (every few hours), so rotated
//! keys and renewed role credentials are picked up without caching them here.

use std::time::Duration;

use serde::Deserialize;

/// Largest credentials file or metadata answer read.
const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Metadata endpoints are local: a missing one must not hold a token fetch for long.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
const ECS_HOST: &str = "http://169.254.170.2";
const IMDS_DEFAULT: &str = "http://169.254.169.254";

/// Keys for signing; the secret parts never appear in `Debug` output.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Which link of the chain gave them, for logs.
    pub source: &'static str,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// No link had credentials; says what each link found.
    #[error("no AWS credentials found ({0})")]
    NotFound(String),
    /// A link that is configured (its variables are set) failed: the chain stops there,
    /// as the SDKs do, instead of silently using another identity.
    #[error("AWS credentials from {source_name}: {message}")]
    Broken {
        source_name: &'static str,
        message: String,
    },
}

/// What the chain reads from its process: variables and files. Tests give their own.
pub trait Environment: Sync {
    fn var(&self, name: &str) -> Option<String>;
    fn read(&self, path: &str) -> Result<String, String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn read(&self, path: &str) -> Result<String, String> {
        let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
        if meta.len() > MAX_SOURCE_BYTES as u64 {
            return Err(format!("larger than {MAX_SOURCE_BYTES} bytes"));
        }
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// Walks the chain. `http` is used for the container and instance metadata endpoints.
pub async fn resolve(
    env: &dyn Environment,
    http: &reqwest::Client,
) -> Result<AwsCredentials, ChainError> {
    let mut tried = Vec::new();
    if let Some(c) = from_env(env)? {
        return Ok(c);
    }
    tried.push("environment: AWS_ACCESS_KEY_ID unset");
    if let Some(c) = from_shared_file(env)? {
        return Ok(c);
    }
    tried.push("shared credentials file: none or no such profile");
    if let Some(c) = from_container(env, http).await? {
        return Ok(c);
    }
    tried.push("container endpoint: not configured");
    match from_imds(env, http).await {
        Ok(Some(c)) => return Ok(c),
        Ok(None) => tried.push("instance metadata: disabled"),
        Err(e) => {
            return Err(ChainError::NotFound(format!(
                "{}; instance metadata: {e}",
                tried.join("; ")
            )))
        }
    }
    Err(ChainError::NotFound(tried.join("; ")))
}

fn from_env(env: &dyn Environment) -> Result<Option<AwsCredentials>, ChainError> {
    let (Some(id), secret) = (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        return Ok(None);
    };
    let secret = secret.ok_or_else(|| ChainError::Broken {
        source_name: "environment",
        message: "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
    })?;
    Ok(Some(AwsCredentials {
        access_key_id: id,
        secret_access_key: secret,
        session_token: env.var("AWS_SESSION_TOKEN"),
        source: "environment",
    }))
}

fn from_shared_file(env: &dyn Environment) -> Result<Option<AwsCredentials>, ChainError> {
    let explicit = env.var("AWS_SHARED_CREDENTIALS_FILE");
    let path = match (&explicit, env.var("HOME")) {
        (Some(p), _) => p.clone(),
        (None, Some(home)) => format!("{home}/.aws/credentials"),
        (None, None) => return Ok(None),
    };
    let profile = env.var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let text = match env.read(&path) {
        Ok(t) => t,
        // The default file may well be absent; a file named explicitly must be there.
        Err(_) if explicit.is_none() => return Ok(None),
        Err(e) => {
            return Err(ChainError::Broken {
                source_name: "shared credentials file",
                message: format!("{path}: {e}"),
            })
        }
    };
    let broken = |message: String| ChainError::Broken {
        source_name: "shared credentials file",
        message: format!("{path}: {message}"),
    };
    let Some(section) = profile_section(&text, &profile) else {
        if env.var("AWS_PROFILE").is_some() {
            return Err(broken(format!("no profile [{profile}]")));
        }
        return Ok(None);
    };
    let get = |k: &str| {
        section
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: get("aws_session_token"),
            source: "shared credentials file",
        })),
        _ => Err(broken(format!(
            "profile [{profile}] lacks aws_access_key_id or aws_secret_access_key"
        ))),
    }
}

/// The `key = value` pairs of `[profile]` in an INI-style credentials file.
fn profile_section(text: &str, profile: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<&str> = None;
    let mut found: Option<Vec<(String, String)>> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim());
            if current == Some(profile) && found.is_none() {
                found = Some(Vec::new());
            }
            continue;
        }
        if current != Some(profile) {
            continue;
        }
        if let (Some((k, v)), Some(f)) = (line.split_once('='), found.as_mut()) {
            f.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    found
}

/// The JSON both metadata endpoints answer with.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataCredentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    /// IMDS says `Success`; the container endpoint says nothing.
    #[serde(default)]
    code: Option<String>,
}

fn parse_metadata(body: &[u8], source: &'static str) -> Result<AwsCredentials, ChainError> {
    let m: MetadataCredentials = serde_json::from_slice(body).map_err(|e| ChainError::Broken {
        source_name: source,
        message: format!("answer is not credentials: {e}"),
    })?;
    if let Some(code) = m.code.filter(|c| c != "Success") {
        return Err(ChainError::Broken {
            source_name: source,
            message: format!("answered code {code:?}"),
        });
    }
    if m.access_key_id.is_empty() || m.secret_access_key.is_empty() {
        return Err(ChainError::Broken {
            source_name: source,
            message: "answer has empty keys".into(),
        });
    }
    Ok(AwsCredentials {
        access_key_id: m.access_key_id,
        secret_access_key: m.secret_access_key,
        session_token: m.token.filter(|t| !t.is_empty()),
        source,
    })
}

/// The container endpoint's URL, when configured. A full URI must be https or a local
/// address (loopback, or the ECS and EKS link-local agents), as the SDKs require: the
/// authorization token must not travel in clear to anywhere else.
fn container_url(env: &dyn Environment) -> Result<Option<String>, ChainError> {
    if let Some(rel) = env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        if !rel.starts_with('/') {
            return Err(ChainError::Broken {
                source_name: "container endpoint",
                message: "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must start with /".into(),
            });
        }
        return Ok(Some(format!("{ECS_HOST}{rel}")));
    }
    let Some(full) = env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
        return Ok(None);
    };
    let bad = |m: &str| ChainError::Broken {
        source_name: "container endpoint",
        message: format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {m}"),
    };
    let url = url::Url::parse(&full).map_err(|_| bad("is not a URL"))?;
    let local = match url.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback()
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
        }
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
        }
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(Some(full)),
        "http" if local => Ok(Some(full)),
        _ => Err(bad(
            "must be https, or http to a loopback or container-agent address",
        )),
    }
}

async fn from_container(
    env: &dyn Environment,
    http: &reqwest::Client,
) -> Result<Option<AwsCredentials>, ChainError> {
    const SOURCE: &str = "container endpoint";
    let Some(url) = container_url(env)? else {
        return Ok(None);
    };
    let broken = |message: String| ChainError::Broken {
        source_name: SOURCE,
        message,
    };
    let token = match env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(f) => Some(
            env.read(&f)
                .map_err(|e| broken(format!("{f}: {e}")))?
                .trim()
                .to_owned(),
        ),
        None => env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    };
    let mut req = http.get(&url).timeout(METADATA_TIMEOUT);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, t);
    }
    let body = read_small(req)
        .await
        .map_err(|e| broken(format!("{url}: {e}")))?;
    parse_metadata(&body, SOURCE).map(Some)
}

async fn from_imds(
    env: &dyn Environment,
    http: &reqwest::Client,
) -> Result<Option<AwsCredentials>, String> {
    if env
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(None);
    }
    let base = env
        .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| IMDS_DEFAULT.into());
    let base = base.trim_end_matches('/');
    let token = read_small(
        http.put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(METADATA_TIMEOUT),
    )
    .await
    .map_err(|e| format!("{base}: {e}"))?;
    let token = String::from_utf8(token).map_err(|_| "session token is not text".to_owned())?;
    let get = |path: String| {
        http.get(format!("{base}{path}"))
            .header("x-aws-ec2-metadata-token", token.trim())
            .timeout(METADATA_TIMEOUT)
    };
    let roles = read_small(get("/latest/meta-data/iam/security-credentials/".into())).await?;
    let roles = String::from_utf8_lossy(&roles);
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("no instance role attached")?;
    if !role
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        return Err("instance role name is not a role name".into());
    }
    let body = read_small(get(format!(
        "/latest/meta-data/iam/security-credentials/{role}"
    )))
    .await?;
    parse_metadata(&body, "instance metadata")
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A 2xx answer's body, bounded in size.
async fn read_small(req: reqwest::RequestBuilder) -> Result<Vec<u8>, String> {
    let mut resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + c.len() > MAX_SOURCE_BYTES {
            return Err("answer too large".into());
        }
        body.extend_from_slice(&c);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv {
        vars: HashMap<&'static str, &'static str>,
        files: HashMap<&'static str, &'static str>,
    }

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).map(|v| v.to_string())
        }
        fn read(&self, path: &str) -> Result<String, String> {
            self.files
                .get(path)
                .map(|v| v.to_string())
                .ok_or_else(|| "No such file or directory".into())
        }
    }

    fn env(
        vars: &[(&'static str, &'static str)],
        files: &[(&'static str, &'static str)],
    ) -> FakeEnv {
        FakeEnv {
            vars: vars.iter().copied().collect(),
            files: files.iter().copied().collect(),
        }
    }

    fn client() -> reqwest::Client {
        crate::install_crypto_provider();
        reqwest::Client::new()
    }

    #[tokio::test]
    async fn environment_comes_first() {
        let e = env(
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_SESSION_TOKEN", "envtoken"),
                ("HOME", "/home/u"),
            ],
            &[(
                "/home/u/.aws/credentials",
                "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n",
            )],
        );
        let c = resolve(&e, &client()).await.unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.secret_access_key, "envsecret");
        assert_eq!(c.session_token.as_deref(), Some("envtoken"));
        assert_eq!(c.source, "environment");
        assert!(!format!("{c:?}").contains("envsecret"));
        assert!(!format!("{c:?}").contains("envtoken"));
    }

    #[tokio::test]
    async fn half_set_environment_is_an_error_not_another_identity() {
        let e = env(&[("AWS_ACCESS_KEY_ID", "AKID")], &[]);
        let err = resolve(&e, &client()).await.unwrap_err();
        assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    const FILE: &str = "# comment\n[default]\naws_access_key_id=AKIDDEFAULT\naws_secret_access_key = defsecret\n\n[ci]\n; another\naws_access_key_id = AKIDCI\naws_secret_access_key = cisecret\naws_session_token = citoken\n";

    #[tokio::test]
    async fn shared_file_default_and_named_profiles() {
        let e = env(
            &[("HOME", "/home/u")],
            &[("/home/u/.aws/credentials", FILE)],
        );
        let c = resolve(&e, &client()).await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AKIDDEFAULT", "defsecret")
        );
        assert_eq!(c.session_token, None);
        assert_eq!(c.source, "shared credentials file");

        let e = env(
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
                ("AWS_PROFILE", "ci"),
            ],
            &[("/etc/creds", FILE)],
        );
        let c = resolve(&e, &client()).await.unwrap();
        assert_eq!(c.access_key_id, "AKIDCI");
        assert_eq!(c.session_token.as_deref(), Some("citoken"));

        // A named profile or file that is not there is an error, not a fall-through.
        let e = env(
            &[
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
                ("AWS_PROFILE", "prod"),
            ],
            &[("/etc/creds", FILE)],
        );
        assert!(resolve(&e, &client())
            .await
            .unwrap_err()
            .to_string()
            .contains("[prod]"));
        let e = env(&[("AWS_SHARED_CREDENTIALS_FILE", "/nope")], &[]);
        assert!(resolve(&e, &client())
            .await
            .unwrap_err()
            .to_string()
            .contains("/nope"));
        let e = env(
            &[("HOME", "/h")],
            &[("/h/.aws/credentials", "[default]\naws_access_key_id=A\n")],
        );
        assert!(resolve(&e, &client()).await.is_err());
    }

    #[tokio::test]
    async fn nothing_configured_says_what_was_tried() {
        let e = env(
            &[("AWS_EC2_METADATA_DISABLED", "true"), ("HOME", "/h")],
            &[],
        );
        let err = resolve(&e, &client()).await.unwrap_err();
        let ChainError::NotFound(m) = &err else {
            panic!("{err}")
        };
        assert!(
            m.contains("environment") && m.contains("instance metadata: disabled"),
            "{m}"
        );
    }

    #[test]
    fn container_full_uri_must_not_leak_its_token() {
        let ok = |u: &'static str| {
            container_url(&env(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", u)], &[]))
        };
        assert!(ok("http://127.0.0.1:9/creds").unwrap().is_some());
        assert!(ok("http://169.254.170.23/v1/credentials")
            .unwrap()
            .is_some());
        assert!(ok("https://creds.example/x").unwrap().is_some());
        assert!(ok("http://creds.example/x").is_err());
        assert!(ok("file:///etc/passwd").is_err());
        let rel = container_url(&env(
            &[(
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "/v2/credentials/x",
            )],
            &[],
        ));
        assert_eq!(
            rel.unwrap().as_deref(),
            Some("http://169.254.170.2/v2/credentials/x")
        );
    }

    /// A one-shot HTTP server on 127.0.0.1 answering each request with the next body;
    /// returns its base URL and the request heads it saw.
    async fn metadata_server(
        answers: Vec<&'static str>,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for body in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap();
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn container_endpoint_with_its_authorization_token() {
        let (base, seen) = metadata_server(vec![
            r#"{"AccessKeyId":"AKIDC","SecretAccessKey":"csecret","Token":"ctoken","Expiration":"2030-01-01T00:00:00Z"}"#,
        ])
        .await;
        let url: &'static str = Box::leak(format!("{base}/creds").into_boxed_str());
        let e = env(
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "podtoken"),
            ],
            &[],
        );
        let c = resolve(&e, &client()).await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("AKIDC", Some("ctoken"))
        );
        assert_eq!(c.source, "container endpoint");
        let heads = seen.lock().unwrap().join("\n").to_ascii_lowercase();
        assert!(
            heads.contains("get /creds") && heads.contains("authorization: podtoken"),
            "{heads}"
        );
    }

    #[tokio::test]
    async fn imds_v2_session_then_role_then_credentials() {
        let (base, seen) = metadata_server(vec![
            "sessiontoken",
            "margo-role\n",
            r#"{"Code":"Success","AccessKeyId":"AKIDI","SecretAccessKey":"isecret","Token":"itoken","Expiration":"2030-01-01T00:00:00Z"}"#,
        ])
        .await;
        let b: &'static str = Box::leak(base.into_boxed_str());
        let e = env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", b)], &[]);
        let c = resolve(&e, &client()).await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.source),
            ("AKIDI", "instance metadata")
        );
        let heads = seen.lock().unwrap().clone();
        assert!(heads[0].starts_with("PUT /latest/api/token"), "{heads:?}");
        assert!(heads[0]
            .to_ascii_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds: 21600"));
        assert!(heads[1].starts_with("GET /latest/meta-data/iam/security-credentials/ "));
        assert!(heads[2].starts_with("GET /latest/meta-data/iam/security-credentials/margo-role "));
        for h in &heads[1..] {
            assert!(
                h.to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token: sessiontoken"),
                "{h}"
            );
        }
    }
}
