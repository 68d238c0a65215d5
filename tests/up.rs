//! `gradebook up`: the whole gradebook from one command, supervised: it
//! starts the four daemons, prints the portal's URL when ready, restarts a
//! daemon killed with SIGKILL, and stops everything on Ctrl-C.

mod support;

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::up::{EVERY_PORT_ZERO, argument_of, children_running, start_up};
use support::{PATIENCE, binary, eventually};

#[tokio::test]
async fn up_starts_supervises_and_stops_the_whole_gradebook() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 everywhere: `up` binds the sockets itself and says where the
    // portal is.
    let (mut up, ready, sign_in, more) = start_up(&EVERY_PORT_ZERO, dir.path());
    let portal = ready
        .strip_prefix("Gradebook is ready: ")
        .and_then(|rest| rest.strip_suffix("/students (Ctrl-C stops it)"))
        .unwrap_or_else(|| panic!("the ready line names the portal: {ready}"))
        .to_owned();
    assert!(portal.starts_with("http://127.0.0.1:"), "{portal}");
    assert!(!portal.ends_with(":0"), "the real port: {portal}");

    // `up` made the mesh's authority and a certificate per daemon and for
    // the tools, with private keys readable by their owner only.
    let certs = dir.path().join("certs");
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&certs), 0o700);
    for name in ["ca", "registry", "log", "grading", "portal", "admin"] {
        assert_eq!(
            mode(&certs.join(format!("{name}.key"))),
            0o600,
            "{name}.key"
        );
        assert!(certs.join(format!("{name}.crt")).exists(), "{name}.crt");
    }

    // A first admin was made, its password shown once; a token signs in.
    assert!(
        sign_in.starts_with("Sign in as admin with the password "),
        "{sign_in}"
    );
    // The ports moved, so `up` says where the tools should point; they do.
    let hint = more
        .recv_timeout(Duration::from_secs(5))
        .expect("a line for the tools");
    let exports = exports_of(&hint);
    let services = Command::new(binary())
        .arg("services")
        .envs(exports.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(
        services.status.success() && String::from_utf8_lossy(&services.stdout).contains("portal"),
        "{hint}: {}",
        String::from_utf8_lossy(&services.stderr)
    );
    let http = support::signed_in_builder(&support::api_token(dir.path(), "admin"))
        .build()
        .unwrap();
    let students: serde_json::Value = http
        .get(format!("{portal}/api/students"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        students["students"].as_array().unwrap().len() >= 5,
        "demo data: {students}"
    );

    // A crashed daemon is restarted by the supervisor.
    let grading = children_running(up.id(), "grading");
    assert_eq!(grading.len(), 1, "one grading child");
    kill(Pid::from_raw(grading[0] as i32), Signal::SIGKILL).unwrap();
    let killed = grading[0];
    let pid = up.id();
    let restarted = eventually("grading is restarted", PATIENCE, || async move {
        children_running(pid, "grading")
            .into_iter()
            .find(|p| *p != killed)
    })
    .await;
    assert_ne!(restarted, killed);
    eventually("the portal serves again", PATIENCE, || {
        let url = format!("{portal}/api/students");
        let http = http.clone();
        async move { (http.get(&url).send().await.ok()?.status() == 200).then_some(()) }
    })
    .await;

    // Ctrl-C stops everything, gracefully.
    let children: Vec<u32> = ["registry", "log", "grading", "portal"]
        .iter()
        .flat_map(|name| children_running(up.id(), name))
        .collect();
    assert_eq!(children.len(), 4);
    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = eventually("up exits", PATIENCE, || {
        let status = up.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
    for child in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .unwrap_or_default()
                    .contains(") Z"),
            "child {child} still running"
        );
    }
    // Every daemon's records of its own shutdown were kept: nobody failed
    // to flush, and the log store holds the registry's and its own last
    // words (the log service stops last, and ships its own records straight
    // into its store).
    let stderr = std::fs::read_to_string(dir.path().join("up.stderr")).unwrap();
    assert!(!stderr.contains("could not flush"), "{stderr}");
    // A planned stop is not reported as trouble: the daemons that outlive
    // the registry (the log service) do not warn that it went away.
    let stopping = stderr.find("SIGINT received").expect("up says it stops");
    assert!(
        !stderr[stopping..].contains(" WARN "),
        "{}",
        &stderr[stopping..]
    );
    let store = gradebook::log::store::LogStore::open(
        &dir.path().join("log"),
        gradebook::log::store::Retention::default(),
    )
    .unwrap();
    for service in ["portal", "grading", "registry", "log"] {
        let filter = gradebook::model::log::LogFilter {
            service: Some(service.to_owned()),
            contains: Some("stopped".to_owned()),
            ..Default::default()
        };
        assert!(
            !store.query(&filter, None, 10).records.is_empty(),
            "{service}'s last record is stored"
        );
    }
}

#[tokio::test]
async fn scaled_up_survives_the_kill_of_a_registry_node_without_a_failed_request() {
    let Some(server) = support::postgres::server() else {
        return;
    };
    let database = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut up, ready, _, _) = start_up(
        &[
            "--scale",
            "registry=3",
            "--scale",
            "grading=3",
            "--scale",
            "log=2",
            "--scale",
            "portal=2",
            "--database-url",
            &database,
        ]
        .iter()
        .chain(EVERY_PORT_ZERO.iter())
        .copied()
        .collect::<Vec<_>>(),
        dir.path(),
    );
    let portals: Vec<String> = ready
        .trim_start_matches("Gradebook is ready: ")
        .trim_end_matches(" (Ctrl-C stops it)")
        .split(' ')
        .map(|url| url.trim_end_matches("/students").to_owned())
        .collect();
    assert_eq!(portals.len(), 2, "two portals: {ready}");
    let pid = up.id();
    for (name, count) in [("registry", 3), ("log", 2), ("grading", 3), ("portal", 2)] {
        assert_eq!(children_running(pid, name).len(), count, "{name} instances");
    }
    let registries = children_running(pid, "registry");
    let registry_urls: Vec<String> = registries
        .iter()
        .map(|pid| format!("http://{}", argument_of(*pid, "--listen").unwrap()))
        .collect();
    let registry_api = gradebook::mesh::api::RegistryApi::connect(
        &registry_urls.join(","),
        &support::admin_tls(&dir.path().join("certs")),
    )
    .unwrap();
    let registry = registries[0];
    eventually(
        "every instance is registered and healthy",
        PATIENCE,
        || async {
            let healthy = registry_api.list(None, false).await.ok()?;
            (healthy.len() == 3 + 2 + 3 + 2).then_some(())
        },
    )
    .await;

    let token = support::api_token(dir.path(), "admin");
    let http = support::signed_in_builder(&token).build().unwrap();
    let page: serde_json::Value = http
        .get(format!("{}/api/students", portals[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let students: Vec<String> = page["students"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(students.len() >= 5, "demo data seeded once: {page}");
    assert!(students.len() <= 6, "demo data seeded once: {page}");
    // Half the clients on each portal.
    let loads = [
        support::load::Load::start(&portals[0], &token, students.clone(), 4, 4),
        support::load::Load::start(&portals[1], &token, students.clone(), 4, 4),
    ];
    for load in &loads {
        load.run_for(100).await;
    }
    kill(Pid::from_raw(registry as i32), Signal::SIGKILL).unwrap();
    let restarted = eventually("the registry is restarted", PATIENCE, || async {
        children_running(pid, "registry")
            .into_iter()
            .find(|p| *p != registry)
    })
    .await;
    assert_ne!(restarted, registry);
    // The restarted node catches up by anti-entropy; what its earlier
    // life owned has registered again elsewhere, and its own earlier
    // record goes after a grace.
    eventually(
        "every instance is listed once again",
        Duration::from_secs(40),
        || async {
            let healthy = registry_api.list(None, false).await.ok()?;
            (healthy.len() == 3 + 2 + 3 + 2).then_some(())
        },
    )
    .await;
    for load in &loads {
        load.run_for(100).await;
    }
    let [first, second] = loads;
    let mut report = first.stop().await;
    let other = second.stop().await;
    report.answers.extend(other.answers);
    report.acknowledged.extend(other.acknowledged);
    report.sent.extend(other.sent);
    report.assert_none_failed("across the kill of a registry node");
    report.check_writes(&portals[0], &token).await;

    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let status = eventually("up exits", PATIENCE, || {
        let status = up.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
}

/// Whether process `pid` still runs (a zombie or a reaped process does not).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| !cmdline.is_empty())
}

#[tokio::test]
async fn the_children_end_with_up_even_when_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, _, _, _) = start_up(&EVERY_PORT_ZERO, dir.path());
    let children: Vec<u32> = ["registry", "log", "grading", "portal"]
        .iter()
        .flat_map(|name| children_running(up.id(), name))
        .collect();
    assert_eq!(children.len(), 4, "{children:?}");
    // SIGKILL: up cannot stop anything itself.
    up.kill().unwrap();
    up.wait().unwrap();
    eventually("every child has ended", PATIENCE, || {
        let left: Vec<u32> = children.iter().copied().filter(|p| alive(*p)).collect();
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

#[test]
fn up_fails_at_once_when_a_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = Command::new(binary())
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args([
            "--registry-listen",
            "127.0.0.1:0",
            "--log-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--grading-listen",
            &address,
            "--portal-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&address) && stderr.contains("cannot listen"),
        "{stderr}"
    );
    // It did not wait for anything: no daemon was started.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ready"));
}

/// The tools' settings `up` prints when ports move, as `(name, value)`.
fn exports_of(hint: &str) -> Vec<(String, String)> {
    hint.strip_prefix("For the tools: export ")
        .unwrap_or_else(|| panic!("{hint}"))
        .split(' ')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Certificates rotate while the mesh runs: with a 45 s lifetime, `up`
/// renews each after two thirds of it and every daemon loads its new one on
/// its own. Past the first certificates' expiry, new connections to every
/// daemon (which would fail their handshake on an expired certificate)
/// still verify, and every instance is still SERVING.
#[tokio::test]
async fn certificates_rotate_before_they_expire_without_a_restart() {
    use gradebook::mesh::tls::authority::validity;
    const NAMES: [&str; 5] = ["registry", "log", "grading", "portal", "admin"];
    let dir = tempfile::tempdir().unwrap();
    let mut args = EVERY_PORT_ZERO.to_vec();
    args.extend(["--cert-lifetime", "45s"]);
    let (mut up, _ready, _sign_in, more) = start_up(&args, dir.path());
    let exports = exports_of(&more.recv_timeout(Duration::from_secs(5)).unwrap());
    let certs = dir.path().join("certs");
    let expiry = |name: &str| validity(&certs.join(format!("{name}.crt"))).unwrap().1;
    let first: Vec<i64> = NAMES.iter().map(|name| expiry(name)).collect();

    // Until the first certificates have expired (the wait is for the clock,
    // so it allows for their whole lifetime).
    let last_expiry = *first.iter().max().unwrap();
    eventually(
        "the first certificates expire",
        Duration::from_secs(90),
        || async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            (now > last_expiry + 1).then_some(())
        },
    )
    .await;
    for (name, first) in NAMES.iter().zip(&first) {
        assert!(expiry(name) > *first, "{name}'s certificate was renewed");
    }

    // New connections: the tools' own (with the renewed admin
    // certificate) to the registry, and from there to every daemon, each
    // required to prove its identity.
    let tool = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .envs(exports.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };
    let listed = tool(&["services", "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        assert_eq!(row["health"], "SERVING", "{row}");
        let (service, address) = (
            row["service"].as_str().unwrap(),
            row["address"].as_str().unwrap(),
        );
        let checked = tool(&["health-check", address, "--identity", service]);
        assert!(
            checked.status.success(),
            "{service} at {address}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let stderr = std::fs::read_to_string(dir.path().join("up.stderr")).unwrap();
    assert!(
        stderr.matches("loaded a renewed certificate").count() >= 4,
        "every daemon loaded its renewed certificate: {stderr}"
    );

    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = eventually("up exits", PATIENCE, || {
        let status = up.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
}
