//! Real parts for integration tests: Debian's `docker-registry` (CNCF distribution) and the
//! `margo-proxy` binary, each on an ephemeral 127.0.0.1 port, each killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within {START_TIMEOUT:?}");
}

/// A process that is killed when the test ends, whatever the outcome.
pub struct Proc {
    child: Child,
    /// Lines the process wrote to stderr (logs), for assertions.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` and waits until it listens on `port` (for servers other than ours).
    pub fn spawn_public(cmd: Command, port: u16, what: &str) -> Proc {
        Self::spawn(cmd, port, what)
    }

    fn spawn(mut cmd: Command, port: u16, what: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let outputs: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for out in outputs {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("MARGO_TEST_VERBOSE").is_some() {
                        eprintln!("[proc] {line}");
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        wait_for_port(port, &mut child, what);
        Proc { child, log }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away `docker-registry` (distribution 2.8).
pub struct Registry {
    pub port: u16,
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct RegistryOptions {
    /// `user:password` pairs for an htpasswd-protected registry.
    pub htpasswd: Option<(String, String)>,
    /// Serve HTTPS with the test certificate in `tests/fixtures/tls`.
    pub tls: bool,
    /// A raw `auth:` section (e.g. `auth: token` pointing at a test issuer); wins over
    /// `htpasswd`.
    pub auth_yaml: Option<String>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        let mut auth = String::new();
        if let Some((user, pass)) = &opts.htpasswd {
            let file = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils) is required");
            std::fs::write(&file, out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                file.display()
            );
        }
        if let Some(yaml) = &opts.auth_yaml {
            auth = yaml.clone();
        }
        let tls = if opts.tls {
            let f = repo_root().join("tests/fixtures/tls");
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                f.join("server.crt").display(),
                f.join("server.key").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config_path);
        let proc = Proc::spawn(cmd, port, "docker-registry");
        Registry { port, proc, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits (up to 2 s) until the registry logged at least `want` matching requests;
    /// returns how many it logged. Logs arrive asynchronously after the response.
    pub fn wait_for_requests(&self, method: &str, fragment: &str, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = self.requests_matching(method, fragment);
            if n >= want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Requests the registry answered with `status`, from its access log (written after
    /// the response: waits up to 2 s for `want` of them).
    pub fn answered(&self, method: &str, fragment: &str, status: u16, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let n = self
                .proc
                .log_lines()
                .iter()
                .filter(|l| {
                    l.contains(&format!("\"{method} {fragment}"))
                        && l.contains(&format!(" HTTP/1.1\" {status} "))
                })
                .count();
            if n >= want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Requests the registry logged for a path fragment (its own access log).
    pub fn requests_matching(&self, method: &str, fragment: &str) -> usize {
        self.proc
            .log_lines()
            .iter()
            .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(fragment))
            .count()
    }
}

/// A running `margo-proxy serve --config`.
pub struct Proxy {
    pub port: u16,
    pub admin_port: u16,
    pub proc: Proc,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy with `config` (YAML), where `{listen}` and `{admin}` are replaced
    /// by fresh ports.
    pub fn start(config: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = free_port();
        let text = config
            .replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace("{admin}", &format!("127.0.0.1:{admin_port}"))
            .replace("{proxy_url}", &format!("http://127.0.0.1:{port}"));
        let config_path = dir.path().join("proxy.yaml");
        std::fs::write(&config_path, text).expect("write proxy config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
        cmd.arg("serve").arg("--config").arg(&config_path);
        cmd.env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd, port, "margo-proxy");
        Proxy {
            port,
            admin_port,
            proc,
            config_path,
            _dir: dir,
        }
    }

    /// The simplest proxy: everything to `upstream`.
    pub fn in_front_of(upstream: &str) -> Proxy {
        Self::start(&format!(
            "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: main\n    url: {upstream}\nserver:\n  threads: 2\n"
        ))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }
}

pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub const EMPTY_CONFIG: &str = "{}";
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// Pushes a blob with a monolithic POST+PUT, returns its digest.
pub fn push_blob(c: &reqwest::blocking::Client, base: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("POST upload");
    assert_eq!(
        r.status(),
        202,
        "upload start: {}",
        r.text().unwrap_or_default()
    );
    let loc = location(base, &r);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .expect("PUT upload");
    assert_eq!(
        r.status(),
        201,
        "upload complete: {}",
        r.text().unwrap_or_default()
    );
    digest
}

/// Absolute URL from a `Location` header (relative ones are resolved against `base`).
pub fn location(base: &str, r: &reqwest::blocking::Response) -> String {
    let loc = r
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ascii Location")
        .to_owned();
    if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc
    }
}

/// An OCI image manifest over `layers` (digest, size, media type) with the empty config.
pub fn image_manifest(layers: &[(String, usize, &str)], artifact_type: Option<&str>) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s, mt)| serde_json::json!({"mediaType": mt, "digest": d, "size": s}))
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2},
        "layers": layers,
    });
    if let Some(at) = artifact_type {
        m["artifactType"] = serde_json::Value::String(at.to_owned());
    }
    serde_json::to_vec(&m).expect("json")
}

pub fn put_manifest(
    c: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> reqwest::blocking::Response {
    c.put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_vec())
        .send()
        .expect("PUT manifest")
}

pub fn tool_available(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A real OpenID provider (`oidc-provider` via `tests/oidc/provider.mjs`) on 127.0.0.1.
pub struct Idp {
    pub info: serde_json::Value,
    child: Child,
}

impl Idp {
    /// `None` (with a message) when Node's dependencies are not installed, except in CI,
    /// where that is a failure.
    pub fn start(resource: &str) -> Option<Idp> {
        let dir = repo_root().join("tests/oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "tests/oidc/node_modules missing in CI (scripts/setup installs it)"
            );
            eprintln!("SKIPPED: tests/oidc/node_modules missing (scripts/setup installs it)");
            return None;
        }
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args(["--resource", resource])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines.map_while(Result::ok) {}
        });
        let first = rx
            .recv_timeout(START_TIMEOUT)
            .expect("oidc provider did not start in time");
        Some(Idp {
            info: serde_json::from_str(&first).expect("provider prints JSON first"),
            child,
        })
    }

    pub fn get(&self, key: &str) -> String {
        self.info[key].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
