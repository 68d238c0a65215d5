//! The integration harness: starts the real `gradebook` binary as separate
//! processes on loopback ports, waits for readiness by polling with a
//! deadline, kills them on drop, and polls eventually-true conditions.
//!
//! Daemons run with mutual TLS, as users run them: each test directory has
//! its own certificate authority (`DIR/certs`, made on first use), the
//! daemons find it through `GRADEBOOK_CERTS`, and the test's own clients
//! connect as the `admin` identity.

#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod postgres;
pub mod up;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use gradebook::mesh::Tls;
use gradebook::mesh::client::lazy_channel_to;
use gradebook::mesh::tls::Identity;
use gradebook::mesh::tls::authority;
use gradebook::pb::log::v1::log_service_client::LogServiceClient;
use gradebook::pb::registry::v1 as pb;
use gradebook::pb::registry::v1::registry_client::RegistryClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long anything in a test may take to become true.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The path of the real binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gradebook")
}

/// A free loopback port (bound, then released for the daemon to take).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` until it returns `Some`, or panics after `patience`.
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > patience {
            panic!("{what}: not true within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The certificate directory of a test directory, made (an authority and
/// a certificate for every daemon and for `admin`) on first use.
pub fn certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let identities: Vec<Identity> = ["registry", "log", "grading", "portal", "admin"]
        .iter()
        .map(|name| Identity::new(name).expect("a service name"))
        .collect();
    authority::ensure(
        &certs,
        &identities,
        authority::DEFAULT_CERT_LIFETIME,
        std::time::SystemTime::now(),
    )
    .expect("test certificates");
    certs
}

/// The `admin` identity's TLS, with the certificates in `certs`.
pub fn admin_tls(certs: &Path) -> Tls {
    Tls::load(certs, Identity::admin()).expect("the admin certificate")
}

/// TLS as `identity`, issued a certificate in `certs` on first use: for a
/// test that plays a service (registers it, writes its log records).
pub fn tls_as(certs: &Path, identity: &str) -> Tls {
    let identity = Identity::new(identity).expect("a service name");
    if !authority::cert_path(certs, identity.service()).exists() {
        authority::issue(certs, &identity, authority::DEFAULT_CERT_LIFETIME, &[])
            .expect("issue a test certificate");
    }
    Tls::load(certs, identity).expect("a test certificate")
}

/// A grpc.health.v1 server in the test process, serving mutual TLS with a
/// certificate of `service`: the stand-in for an instance of a service the
/// test registers. It answers SERVING until `reporter` says otherwise, and
/// stops when dropped.
pub struct HealthServer {
    pub address: String,
    pub reporter: tonic_health::server::HealthReporter,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    pub async fn start(certs: &Path, service: &str) -> HealthServer {
        use gradebook::mesh::tls::ClientAuth;
        use gradebook::mesh::tls::accept::{self, Accepting};
        let tls = tls_as(certs, service);
        let accepting = Accepting::new(&tls, ClientAuth::Required, false, None).expect("TLS");
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(accept::incoming(listener, accepting, 64))
                .await;
        });
        HealthServer {
            address,
            reporter,
            task,
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A daemon process that is killed when dropped.
pub struct Daemon {
    pub name: &'static str,
    pub port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub log_file: PathBuf,
    /// The certificates it (and the test's clients) use.
    pub certs: PathBuf,
}

impl Daemon {
    /// Starts `gradebook <args>` listening on `port`, logging to a file in `dir`.
    pub fn start(name: &'static str, port: u16, args: Vec<String>, dir: &Path) -> Daemon {
        Self::start_with_env(name, port, args, dir, Vec::new())
    }

    /// [`Daemon::start`] with these environment variables set too.
    pub fn start_with_env(
        name: &'static str,
        port: u16,
        args: Vec<String>,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> Daemon {
        let mut daemon = Daemon {
            name,
            port,
            args,
            env,
            child: None,
            log_file: dir.join(format!("{name}-{port}.stderr")),
            certs: certs(dir),
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .expect("log file");
        let child = Command::new(binary())
            .args(&self.args)
            .env("GRADEBOOK_LOG_LEVEL", "info,gradebook=debug")
            .env("GRADEBOOK_CERTS", &self.certs)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the gradebook binary");
        self.child = Some(child);
    }

    /// Starts the same command again (after a kill), on the same port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the daemon");
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to `patience`) for the exit status, letting
    /// the test's runtime run meanwhile (its client connections must see the
    /// server's GOAWAY for the drain to finish).
    pub async fn terminate(&mut self, patience: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > patience {
                let _ = child.kill();
                panic!("{} did not exit within {patience:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// How the test's clients connect to it: as `admin`.
    pub fn tls(&self) -> Tls {
        admin_tls(&self.certs)
    }

    /// A lazily connecting channel to the daemon, as `admin`.
    pub fn channel(&self) -> Channel {
        lazy_channel_to(&self.address(), self.name, &self.tls()).expect("an address")
    }

    /// A lazily connecting channel to the daemon, as `identity`.
    pub fn channel_as(&self, identity: &str) -> Channel {
        lazy_channel_to(&self.address(), self.name, &tls_as(&self.certs, identity))
            .expect("an address")
    }

    /// Its grpc.health.v1 status ("" service), if it answers.
    pub async fn health_status(&self) -> Option<i32> {
        health_status(self.channel()).await
    }

    /// Waits until its health service answers SERVING.
    pub async fn wait_serving(&self) {
        let name = self.name;
        let address = self.address();
        eventually(
            &format!("{name} at {address} is SERVING"),
            PATIENCE,
            || async { (self.health_status().await == Some(1)).then_some(()) },
        )
        .await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Leave SIGSTOPped processes killable.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill9();
        if std::thread::panicking() || std::env::var_os("GRADEBOOK_TEST_STDERR").is_some() {
            eprintln!("---- {} stderr ----\n{}", self.name, self.stderr());
        }
    }
}

/// The grpc.health.v1 status ("" service) of the server on `channel`, if it answers.
pub async fn health_status(channel: Channel) -> Option<i32> {
    let response = tokio::time::timeout(
        Duration::from_secs(1),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .ok()?
    .ok()?;
    Some(response.into_inner().status)
}

/// A test's mesh: a temporary directory and the daemons started in it.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    /// Environment variables every daemon of the mesh gets.
    env: Vec<(String, String)>,
}

impl Mesh {
    pub fn new() -> Mesh {
        Mesh {
            dir: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        }
    }

    /// A mesh whose daemons all get these environment variables.
    pub fn with_env(env: &[(&str, &str)]) -> Mesh {
        Mesh {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Mesh::new()
        }
    }

    /// Starts a daemon of this mesh (with its environment).
    fn start(&self, name: &'static str, port: u16, args: Vec<String>) -> Daemon {
        Daemon::start_with_env(name, port, args, self.dir.path(), self.env.clone())
    }

    /// Starts a registry with fast test-friendly eviction, plus `extra` flags.
    pub async fn registry(&self, extra: &[&str]) -> Daemon {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "registry".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = self.start("registry", port, args);
        daemon.wait_serving().await;
        daemon
    }

    /// Starts a group of `n` registry nodes, each given every node's
    /// address as `--peers`; waits until each serves.
    pub async fn registry_group(&self, n: usize, extra: &[&str]) -> Vec<Daemon> {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peers = ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let group: Vec<Daemon> = ports
            .into_iter()
            .map(|port| self.registry_peer(port, &peers, extra))
            .collect();
        for node in &group {
            node.wait_serving().await;
        }
        // A group that has formed: every node has caught up with a peer
        // (so no watch opened from here on gets a second snapshot).
        for node in &group {
            eventually(
                "the node has caught up with its peers",
                PATIENCE,
                || async { (catching_up(node).await == Some(false)).then_some(()) },
            )
            .await;
        }
        group
    }

    /// Starts a registry node on `port` in the group `peers` (comma-separated
    /// `host:port`), with `extra` flags; does not wait for it.
    pub fn registry_peer(&self, port: u16, peers: &str, extra: &[&str]) -> Daemon {
        let mut args: Vec<String> = vec![
            "registry".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--peers".into(),
            peers.to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start("registry", port, args)
    }

    /// Starts `gradebook <name>` on a free port, registered with
    /// `registry`, with `args` after the common flags; waits until SERVING.
    pub async fn member(&self, name: &'static str, registry: &Daemon, args: Vec<String>) -> Daemon {
        self.member_of(name, &[registry], args).await
    }

    /// Starts `gradebook <name>` on a free port, given every node of
    /// `registries` as `--registry`, with `args` after the common flags;
    /// waits until SERVING.
    pub async fn member_of(
        &self,
        name: &'static str,
        registries: &[&Daemon],
        args: Vec<String>,
    ) -> Daemon {
        let port = free_port();
        let urls: Vec<String> = registries.iter().map(|r| r.url()).collect();
        let mut all: Vec<String> = vec![
            name.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--registry".into(),
            urls.join(","),
        ];
        all.extend(args);
        let daemon = self.start(name, port, all);
        daemon.wait_serving().await;
        daemon
    }

    /// The `--data-dir` flag for a directory `data` in the test's directory,
    /// followed by `extra`.
    fn data_args(&self, data: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.dir.path().join(data).display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts a log daemon registered with `registry`, storing under `data`.
    pub async fn log(&self, registry: &Daemon, data: &str, extra: &[&str]) -> Daemon {
        self.member("log", registry, self.data_args(data, extra))
            .await
    }
}

/// A registry client on the daemon.
pub fn registry_client(registry: &Daemon) -> RegistryClient<Channel> {
    RegistryClient::new(registry.channel())
}

/// A registry client on the daemon, as `identity`.
pub fn registry_client_as(registry: &Daemon, identity: &str) -> RegistryClient<Channel> {
    RegistryClient::new(registry.channel_as(identity))
}

/// A log client on the daemon.
pub fn log_client(log: &Daemon) -> LogServiceClient<Channel> {
    LogServiceClient::new(log.channel())
}

/// A log client on the daemon, as `identity` (which may write its records).
pub fn log_client_as(log: &Daemon, identity: &str) -> LogServiceClient<Channel> {
    LogServiceClient::new(log.channel_as(identity))
}

/// The instances of `service` the registry lists (all healths).
pub async fn list(registry: &Daemon, service: &str) -> Vec<pb::Instance> {
    registry_client(registry)
        .list(pb::ListRequest {
            service: service.into(),
            include_unhealthy: true,
        })
        .await
        .map(|r| r.into_inner().instances)
        .unwrap_or_default()
}

/// Waits until the registry lists an instance of `service` with `health`.
pub async fn wait_health(
    registry: &Daemon,
    service: &str,
    health: pb::HealthStatus,
) -> pb::Instance {
    eventually(&format!("{service} is {health:?}"), PATIENCE, || async {
        list(registry, service)
            .await
            .into_iter()
            .find(|i| i.health == health as i32)
    })
    .await
}

/// A watch stream on `services`, with a helper to take the next message.
/// The id of the registry node `registry` (from a watch's snapshot).
/// Whether `registry` says it is still catching up with its peers (in
/// its `List` answer); `None` when it does not answer.
pub async fn catching_up(registry: &Daemon) -> Option<bool> {
    let listing = registry_client(registry)
        .list(pb::ListRequest::default())
        .await
        .ok()?
        .into_inner();
    Some(listing.catching_up)
}

pub async fn registry_node(registry: &Daemon) -> String {
    let mut watcher = Watcher::open(registry, &["registry"]).await;
    match watcher.next(PATIENCE).await {
        pb::watch_event::Event::Snapshot(s) => s.registry_node,
        other => panic!("{other:?}"),
    }
}

pub struct Watcher {
    pub stream: tonic::Streaming<pb::WatchEvent>,
}

impl Watcher {
    pub async fn open(registry: &Daemon, services: &[&str]) -> Watcher {
        let stream = registry_client(registry)
            .watch(pb::WatchRequest {
                services: services.iter().map(|s| s.to_string()).collect(),
            })
            .await
            .expect("open watch")
            .into_inner();
        Watcher { stream }
    }

    /// The next message, or a panic after `patience`.
    pub async fn next(&mut self, patience: Duration) -> pb::watch_event::Event {
        let message = tokio::time::timeout(patience, self.stream.message())
            .await
            .expect("a watch event in time")
            .expect("a healthy stream")
            .expect("an open stream");
        message.event.expect("an event")
    }

    pub async fn snapshot(&mut self) -> Vec<pb::Instance> {
        match self.next(PATIENCE).await {
            pb::watch_event::Event::Snapshot(s) => s.instances,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// The next change, skipping none.
    pub async fn change(&mut self, patience: Duration) -> (pb::ChangeKind, pb::Instance) {
        match self.next(patience).await {
            pb::watch_event::Event::Change(c) => (
                pb::ChangeKind::try_from(c.kind).expect("kind"),
                c.instance.expect("instance"),
            ),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    /// Skips changes until one matches; returns it and how long it took.
    pub async fn until(
        &mut self,
        patience: Duration,
        mut wanted: impl FnMut(pb::ChangeKind, &pb::Instance) -> bool,
    ) -> (pb::ChangeKind, pb::Instance, Duration) {
        let start = Instant::now();
        loop {
            let left = patience.saturating_sub(start.elapsed());
            let (kind, instance) = self.change(left).await;
            if wanted(kind, &instance) {
                return (kind, instance, start.elapsed());
            }
        }
    }
}

impl Mesh {
    /// Starts a grading daemon registered with `registry`, storing under `data`.
    pub async fn grading(&self, registry: &Daemon, data: &str, extra: &[&str]) -> Daemon {
        self.member("grading", registry, self.data_args(data, extra))
            .await
    }

    /// Starts a portal registered with `registry`, its accounts under the
    /// test's directory; waits until it serves.
    pub async fn portal(&self, registry: &Daemon, extra: &[&str]) -> Daemon {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.dir.path().join("portal").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.member("portal", registry, args).await
    }

    /// Adds a portal account (see [`add_user`]) in the test's directory;
    /// returns a personal API token for it.
    pub fn add_user(&self, name: &str, role: &str, password: &str) -> String {
        add_user(self.dir.path(), name, role, password);
        api_token(self.dir.path(), name)
    }

    /// Registry, log, grading (with demo data) and portal, with the portal ready.
    pub async fn gradebook(&self) -> Gradebook {
        let registry = self.registry(&[]).await;
        let log = self.log(&registry, "log", &[]).await;
        let grading = self.grading(&registry, "grading", &[]).await;
        let portal = self.portal(&registry, &[]).await;
        let token = self.add_user(TEST_USER, "admin", TEST_PASSWORD);
        let gradebook = Gradebook {
            registry,
            log,
            grading,
            portal,
            token,
        };
        gradebook.wait_ready().await;
        gradebook
    }
}

/// Adds a portal account with the real `gradebook users add`, the password
/// through standard input, in `data_dir` as `gradebook up` takes it.
pub fn add_user(data_dir: &Path, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut add = Command::new(binary())
        .args(["users", "add", name, "--role", role, "--password-stdin"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gradebook users add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes())
        .expect("write the password");
    let added = add.wait_with_output().expect("users add");
    assert!(
        added.status.success(),
        "users add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
}

/// A new personal API token for `name`, from the real `gradebook users token`.
pub fn api_token(data_dir: &Path, name: &str) -> String {
    let token = Command::new(binary())
        .args(["users", "token", name, "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("gradebook users token");
    assert!(
        token.status.success(),
        "users token: {}",
        String::from_utf8_lossy(&token.stderr)
    );
    String::from_utf8(token.stdout)
        .expect("a token")
        .trim()
        .to_owned()
}

/// The account the tests sign in as (an admin).
pub const TEST_USER: &str = "tester";
/// Its password.
pub const TEST_PASSWORD: &str = "correct horse battery";

/// The four daemons of a running gradebook, and a personal API token of
/// [`TEST_USER`].
pub struct Gradebook {
    pub registry: Daemon,
    pub log: Daemon,
    pub grading: Daemon,
    pub portal: Daemon,
    pub token: String,
}

/// An HTTP client builder that sends `token` as `Authorization: Bearer`.
pub fn signed_in_builder(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    reqwest::Client::builder().default_headers(headers)
}

impl Gradebook {
    /// An HTTP client signed in as [`TEST_USER`] (by API token).
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("an HTTP client")
    }

    /// A builder of such clients.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        signed_in_builder(&self.token)
    }

    /// The portal's base URL.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.portal.port)
    }

    /// Waits until the portal's /readyz answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.http());
        eventually("the portal is ready", PATIENCE, || {
            let url = url.clone();
            async move {
                let response = reqwest::get(&url).await.ok()?;
                (response.status() == 200).then_some(())
            }
        })
        .await;
    }
}

/// Runs `gradebook glomers ARGS --json`; returns its report.
pub fn glomers(args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(binary())
        .arg("glomers")
        .args(args)
        .arg("--json")
        .output()
        .expect("run gradebook glomers");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "a JSON report: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(
        output.status.success(),
        report["valid"] == true,
        "the exit status says the verdict"
    );
    report
}

/// GETs `https://127.0.0.1:PORT/metrics` with curl, as `identity` (with its
/// certificate) or anonymously; returns the status code and the body.
pub fn curl_metrics(certs: &Path, port: u16, identity: Option<&str>) -> (u16, String) {
    curl_get(certs, port, "/metrics", identity)
}

/// GETs `https://127.0.0.1:PORT{path}` with curl, as `identity` (with its
/// certificate) or anonymously; returns the status code and the body.
pub fn curl_get(certs: &Path, port: u16, path: &str, identity: Option<&str>) -> (u16, String) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(certs.join(authority::CA_CERT));
    if let Some(identity) = identity {
        curl.arg("--cert")
            .arg(authority::cert_path(certs, identity))
            .arg("--key")
            .arg(authority::key_path(certs, identity));
    }
    let output = curl
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs (it is installed with the tests' tools)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the sample `name{labels}` (labels exactly as encoded).
pub fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}
