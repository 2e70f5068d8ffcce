//! Real parts for integration tests: Debian's `docker-registry` (CNCF distribution) and the
//! `margo-proxy` binary, each on an ephemeral 127.0.0.1 port, each killed when dropped.
#![allow(dead_code)]

pub mod aws;

pub mod git;
pub mod staging;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Node loading `oidc-provider` is slower than the Go and Rust servers on a busy machine.
const IDP_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a server is started on fresh ports before the test fails.
const START_ATTEMPTS: usize = 5;

/// Ports this process handed out: never the same one twice, so two test threads can
/// never be given one port (the kernel may hand a just-released port out again).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port nothing listened on a moment ago, never handed out before in this process.
/// Another process may still take it before the server that is meant to bind it does:
/// servers are started with [`Proc::start`], which detects that and retries.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        if HANDED_OUT
            .lock()
            .map(|mut s| s.insert(port))
            .unwrap_or(true)
        {
            return port;
        }
    }
}

/// Who listens on a TCP port, from `/proc/net/tcp{,6}` and the child's descriptors.
#[derive(Debug, PartialEq, Eq)]
enum Listener {
    Nobody,
    Child,
    /// Another process listens there (alone, or beside the child with `SO_REUSEPORT`).
    Other,
}

/// Inodes of the sockets listening on `port` (any address), `None` without `/proc`.
fn listening_inodes(port: u16) -> Option<Vec<u64>> {
    let mut found = Vec::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *state == "0A" {
                if let Ok(i) = inode.parse() {
                    found.push(i);
                }
            }
        }
    }
    readable.then_some(found)
}

fn socket_inodes_of(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

fn listener_on(port: u16, child: &Child) -> Listener {
    let Some(inodes) = listening_inodes(port) else {
        // No /proc: all we can tell is that something answers.
        return if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            Listener::Child
        } else {
            Listener::Nobody
        };
    };
    if inodes.is_empty() {
        return Listener::Nobody;
    }
    let ours = socket_inodes_of(child.id());
    if inodes.iter().all(|i| ours.contains(i)) {
        Listener::Child
    } else {
        Listener::Other
    }
}

/// Why a start attempt failed in a way another port may cure.
struct PortTaken(String);

/// Waits until the child listens on every one of `ports`. `Err` when a port turned out
/// to be someone else's (the child is then killed); panics on any other failure.
fn wait_for_ports(
    ports: &[u16],
    child: &mut Child,
    log: &Mutex<Vec<String>>,
    what: &str,
) -> Result<(), PortTaken> {
    let deadline = Instant::now() + START_TIMEOUT;
    let lines = || log.lock().map(|l| l.clone()).unwrap_or_default();
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            // Give the log readers a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(100));
            let lines = lines();
            if lines.iter().any(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("address already in use") || l.contains("eaddrinuse")
            }) {
                return Err(PortTaken(format!("{what} exited: {status}")));
            }
            panic!(
                "{what} exited during start-up: {status}\n{}",
                lines.join("\n")
            );
        }
        let states: Vec<Listener> = ports.iter().map(|p| listener_on(*p, child)).collect();
        if let Some(i) = states.iter().position(|s| *s == Listener::Other) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PortTaken(format!(
                "another process listens on {}",
                ports[i]
            )));
        }
        if states.iter().all(|s| *s == Listener::Child) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "{what} did not listen on {ports:?} within {START_TIMEOUT:?}\n{}",
        lines().join("\n")
    );
}

/// A process that is killed when the test ends, whatever the outcome.
pub struct Proc {
    child: Child,
    /// Lines the process wrote to stderr (logs), for assertions.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts the server `make(ports)` builds, on `count` fresh ports, and waits until it
    /// listens on all of them. When another process took a port first (it binds between
    /// [`free_port`] and the server's own bind), starts again on new ports.
    pub fn start(
        what: &str,
        count: usize,
        mut make: impl FnMut(&[u16]) -> Command,
    ) -> (Proc, Vec<u16>) {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
            match Self::spawn(make(&ports), &ports, what) {
                Ok(p) => return (p, ports),
                Err(PortTaken(why)) => failures.push(why),
            }
        }
        panic!("{what}: no start in {START_ATTEMPTS} attempts: {failures:?}");
    }

    /// Starts `cmd` and waits until it listens on `port` (for servers other than ours).
    pub fn spawn_public(cmd: Command, port: u16, what: &str) -> Proc {
        match Self::spawn(cmd, &[port], what) {
            Ok(p) => p,
            Err(PortTaken(why)) => panic!("{what} could not take port {port}: {why}"),
        }
    }

    fn spawn(mut cmd: Command, ports: &[u16], what: &str) -> Result<Proc, PortTaken> {
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
        wait_for_ports(ports, &mut child, &log, what)?;
        Ok(Proc { child, log })
    }

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

    /// Sends a signal (`TERM`, `INT`...) with the shell's `kill` builtin (procps, with
    /// `/usr/bin/kill`, is not in every Debian image).
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{name} {}", self.pid()))
            .status()
            .expect("sh");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it runs on.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
    /// More top-level sections, e.g. `notifications:`.
    pub extra_yaml: Option<String>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
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
        let config_path = dir.path().join("config.yml");
        let (proc, ports) = Proc::start("docker-registry", 1, |ports| {
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{}\n{tls}{auth}",
                storage.display(),
                ports[0]
            );
            let config = format!("{config}{}", opts.extra_yaml.as_deref().unwrap_or_default());
            std::fs::write(&config_path, config).expect("write registry config");
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config_path);
            cmd
        });
        Registry {
            port: ports[0],
            proc,
            dir,
        }
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
        Self::start_inner(config, None)
    }

    /// [`Self::start`] with the admin port chosen by the caller (who had to tell
    /// another server about it first).
    pub fn start_on(config: &str, admin_port: u16) -> Proxy {
        let p = Self::start_inner(config, Some(admin_port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "admin listener {admin_port} never opened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    fn start_inner(config: &str, fixed_admin: Option<u16>) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("proxy.yaml");
        // The admin port is waited for only when the config has an admin listener.
        let count = if config.contains("{admin}") && fixed_admin.is_none() {
            2
        } else {
            1
        };
        let (proc, ports) = Proc::start("margo-proxy", count, |ports| {
            let admin = fixed_admin
                .or(ports.get(1).copied())
                .unwrap_or_else(free_port);
            let text = config
                .replace("{listen}", &format!("127.0.0.1:{}", ports[0]))
                .replace("{admin}", &format!("127.0.0.1:{admin}"))
                .replace("{proxy_url}", &format!("http://127.0.0.1:{}", ports[0]));
            std::fs::write(&config_path, text).expect("write proxy config");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
            cmd.arg("serve").arg("--config").arg(&config_path);
            cmd.env("RUST_LOG", "info");
            cmd
        });
        Proxy {
            port: ports[0],
            admin_port: fixed_admin.or(ports.get(1).copied()).unwrap_or(0),
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

/// The value of one series (name and labels, as exposed) on a proxy's `/metrics`; 0
/// when absent.
pub fn metric(p: &Proxy, series: &str) -> f64 {
    let text = http()
        .get(format!("{}/metrics", p.admin_url()))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
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

/// An RS256 access token from the test key (`tests/fixtures/auth/rsa_private.pem`, whose
/// public half configs pin as a static key), valid ten minutes: header `kid`, `iss`
/// `https://idp.test`, `aud`, and `sub` and `groups: [group]` both `group`.
pub fn mint_token(kid: &str, audience: &str, group: &str) -> String {
    let pem = std::fs::read(repo_root().join("tests/fixtures/auth/rsa_private.pem")).expect("key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "iss": "https://idp.test", "aud": audience, "sub": group,
        "exp": now + 600, "iat": now, "groups": [group],
    });
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// A real OpenID provider (`oidc-provider` via `tests/oidc/provider.mjs`) on 127.0.0.1.
pub struct Idp {
    pub info: serde_json::Value,
    child: Child,
}

impl Idp {
    /// Starts the provider, whose tokens are for `resource`. Node and the provider's
    /// packages are required: their absence FAILS the test (in CI or not), it never
    /// passes silently.
    pub fn start(resource: &str) -> Idp {
        let dir = repo_root().join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "{}/node_modules/oidc-provider is missing: run scripts/setup (npm ci in tests/oidc)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args(["--resource", resource])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` (scripts/setup installs it): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines.map_while(Result::ok) {}
        });
        // Dropping `idp` (also on a panic below) stops the provider.
        let mut idp = Idp {
            info: serde_json::Value::Null,
            child,
        };
        let first = rx.recv_timeout(IDP_START_TIMEOUT).unwrap_or_else(|e| {
            panic!("oidc provider did not start within {IDP_START_TIMEOUT:?}: {e}")
        });
        idp.info = serde_json::from_str(&first).expect("provider prints JSON first");
        idp
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

/// A throw-away `redis-server` (Debian's), no persistence; can be stopped and started
/// again on the same port to test what survives an outage.
pub struct Redis {
    pub port: u16,
    proc: Option<Proc>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let mut r = Redis { port, proc: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    pub fn restart(&mut self) {
        self.proc = None;
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        match Proc::spawn(cmd, &[self.port], "redis-server") {
            Ok(p) => self.proc = Some(p),
            Err(PortTaken(why)) => panic!("redis-server could not take port {}: {why}", self.port),
        }
    }
}
