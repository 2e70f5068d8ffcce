//! AWS parts for the integration tests: PyPI `moto`'s server (ECR's
//! `GetAuthorizationToken` and S3) with its request recorder on, Debian's docker-registry
//! storing into moto's S3 behind htpasswd for the user moto's ECR token decodes to, and a
//! margo-proxy with its own AWS environment.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{free_port, repo_root, Proc};

/// The S3 bucket the registry stores into.
pub const BUCKET: &str = "margo-registry";
pub const REGION: &str = "us-east-1";
/// The keys docker-registry signs its S3 calls with (moto accepts any).
pub const S3_KEY: &str = "AKIDREGISTRY";
pub const S3_SECRET: &str = "registrysecret";

/// moto's server on a fresh 127.0.0.1 port, recording every request it serves.
pub struct Moto {
    pub port: u16,
    pub proc: Proc,
    recording: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().expect("tempdir");
        let recording = dir.path().join("requests.jsonl");
        let server = repo_root().join(".venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is required (scripts/setup installs moto[server])",
            server.display()
        );
        let rec = recording.clone();
        let (proc, ports) = Proc::start("moto_server", 1, |ports| {
            let mut cmd = Command::new(&server);
            cmd.args(["-H", "127.0.0.1", "-p", &ports[0].to_string()])
                .env("MOTO_ENABLE_RECORDING", "True")
                .env("MOTO_RECORDER_FILEPATH", &rec);
            cmd
        });
        Moto {
            port: ports[0],
            proc,
            recording,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request moto served so far: `{"method","url","headers":{...},"body"}`.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.recording)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `GetAuthorizationToken` calls signed with `access_key`.
    pub fn token_calls(&self, access_key: &str) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| {
                header(r, "x-amz-target").as_deref()
                    == Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
                    && header(r, "authorization")
                        .is_some_and(|a| a.contains(&format!("Credential={access_key}/")))
            })
            .collect()
    }

    /// Waits (up to 2 s: the recorder writes after answering) for `want` token calls.
    pub fn wait_token_calls(&self, access_key: &str, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = self.token_calls(access_key).len();
            if n >= want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A recorded request's header, by case-insensitive name.
pub fn header(r: &serde_json::Value, name: &str) -> Option<String> {
    r["headers"].as_object()?.iter().find_map(|(k, v)| {
        k.eq_ignore_ascii_case(name)
            .then(|| v.as_str().unwrap_or_default().to_owned())
    })
}

/// The password moto's ECR token decodes to (`AWS:<password>`), asked from moto itself.
pub fn moto_ecr_password(moto: &Moto) -> String {
    use base64::Engine as _;
    let c = super::http();
    let r = c
        .post(format!("{}/", moto.url()))
        .header("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
        .header("Content-Type", "application/x-amz-json-1.1")
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/{REGION}/ecr/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body("{}")
        .send()
        .expect("moto answers");
    assert!(
        r.status().is_success(),
        "moto GetAuthorizationToken: {}",
        r.status()
    );
    let v: serde_json::Value = r.json().expect("json");
    let token = v["authorizationData"][0]["authorizationToken"]
        .as_str()
        .expect("a token");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .expect("base64");
    let text = String::from_utf8(decoded).expect("text");
    let (user, password) = text.split_once(':').expect("user:password");
    assert_eq!(user, "AWS");
    password.to_owned()
}

/// docker-registry on moto's S3 (redirects on), behind htpasswd for `AWS:<password>`.
pub struct S3Registry {
    pub port: u16,
    pub proc: Proc,
    pub password: String,
    _dir: tempfile::TempDir,
}

impl S3Registry {
    pub fn start(moto: &Moto) -> S3Registry {
        let c = super::http();
        let r = c
            .put(format!("{}/{BUCKET}", moto.url()))
            .send()
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        let password = moto_ecr_password(moto);
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbn", "AWS", &password])
            .output()
            .expect("htpasswd (apache2-utils) is required");
        std::fs::write(&htpasswd, out.stdout).expect("write htpasswd");
        let config_path = dir.path().join("config.yml");
        let moto_url = moto.url();
        let (proc, ports) = Proc::start("docker-registry (s3)", 1, |ports| {
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  s3:\n    accesskey: {S3_KEY}\n    secretkey: {S3_SECRET}\n    region: {REGION}\n    regionendpoint: {moto_url}\n    forcepathstyle: true\n    bucket: {BUCKET}\n    secure: false\n    v4auth: true\n  delete:\n    enabled: true\n  redirect:\n    disable: false\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{}\nauth:\n  htpasswd:\n    realm: ecr-like\n    path: {}\n",
                ports[0],
                htpasswd.display()
            );
            std::fs::write(&config_path, config).expect("write registry config");
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config_path);
            // aws-sdk-go refuses to start with a CA bundle and its own transport.
            cmd.env_remove("AWS_CA_BUNDLE");
            cmd
        });
        S3Registry {
            port: ports[0],
            proc,
            password,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One moto and one S3-backed registry, shared by the tests of a file that run at the
/// same time; stopped when the last of them ends.
pub struct Shared {
    pub moto: Moto,
    pub registry: S3Registry,
}

static SHARED: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

pub fn shared() -> Arc<Shared> {
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = slot.upgrade() {
        return s;
    }
    let moto = Moto::start();
    let registry = S3Registry::start(&moto);
    let s = Arc::new(Shared { moto, registry });
    *slot = Arc::downgrade(&s);
    s
}

/// margo-proxy with `config` (`{listen}`, `{admin}` replaced) and a clean AWS
/// environment: these keys, no profile, files, container or instance metadata.
pub struct AwsProxy {
    pub port: u16,
    pub admin_port: u16,
    pub proc: Proc,
    _dir: tempfile::TempDir,
}

impl AwsProxy {
    pub fn start(config: &str, access_key: &str) -> AwsProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("proxy.yaml");
        let home = dir.path().to_owned();
        let (proc, ports) = Proc::start("margo-proxy", 2, |ports| {
            let text = config
                .replace("{listen}", &format!("127.0.0.1:{}", ports[0]))
                .replace("{admin}", &format!("127.0.0.1:{}", ports[1]));
            std::fs::write(&config_path, text).expect("write proxy config");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
            cmd.arg("serve").arg("--config").arg(&config_path);
            for (k, _) in std::env::vars() {
                if k.starts_with("AWS_") {
                    cmd.env_remove(k);
                }
            }
            cmd.env("RUST_LOG", "info")
                .env("HOME", &home)
                .env("AWS_ACCESS_KEY_ID", access_key)
                .env("AWS_SECRET_ACCESS_KEY", "proxysecret")
                .env("AWS_SESSION_TOKEN", "proxysession")
                .env("AWS_EC2_METADATA_DISABLED", "true");
            cmd
        });
        AwsProxy {
            port: ports[0],
            admin_port: ports[1],
            proc,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The value of the metrics series `series` (exact text before the value), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = super::http()
            .get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .send()
            .and_then(|r| r.text())
            .expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// A 127.0.0.1 port nothing listens on (an AWS endpoint that is down).
pub fn dead_port() -> u16 {
    free_port()
}
