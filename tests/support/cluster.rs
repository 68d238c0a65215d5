//! `gradebook up` with three grading instances on a throwaway PostgreSQL,
//! the cluster that rollouts and migrations are tried on under load.

use gradebook::mesh::api::RegistryApi;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::load::{Load, Report};
use super::up::{EVERY_PORT_ZERO, start_up};
use super::{PATIENCE, eventually};

/// The versions of the SERVING grading instances.
pub async fn serving_versions(registry: &RegistryApi) -> Vec<String> {
    let mut versions: Vec<String> = registry
        .list(Some("grading"), false)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.version)
        .collect();
    versions.sort();
    versions
}

/// One cluster at a time: two would not fit on two shared cores.
pub static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `gradebook up` with three grading instances on PostgreSQL, and what
/// the tests need of it.
pub struct Cluster {
    pub up: std::process::Child,
    pub dir: tempfile::TempDir,
    pub portal: String,
    pub registry: RegistryApi,
    pub token: String,
    pub students: Vec<String>,
    /// The version the build reports.
    pub built: String,
    pub database: String,
}

impl Cluster {
    /// Starts it on a new database; `None` when PostgreSQL is not
    /// installed (outside CI).
    pub async fn start() -> Option<Cluster> {
        let server = super::postgres::server()?;
        Some(Cluster::start_on(server.database().await).await)
    }

    /// Starts it on the PostgreSQL database at `database`.
    pub async fn start_on(database: String) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--scale", "grading=3", "--database-url", &database];
        args.extend(EVERY_PORT_ZERO);
        let (up, ready, _, _) = start_up(&args, dir.path());
        let portal = ready
            .trim_start_matches("Gradebook is ready: ")
            .trim_end_matches(" (Ctrl-C stops it)")
            .trim_end_matches("/students")
            .to_owned();
        let registry_address = super::up::children_running(up.id(), "registry")
            .first()
            .and_then(|pid| super::up::argument_of(*pid, "--listen"))
            .expect("the registry's address");
        let registry = RegistryApi::connect(
            &format!("http://{registry_address}"),
            &super::admin_tls(&dir.path().join("certs")),
        )
        .unwrap();
        eventually("three grading instances serve", PATIENCE, || async {
            (serving_versions(&registry).await.len() == 3).then_some(())
        })
        .await;
        let built = serving_versions(&registry).await[0].clone();
        let token = super::api_token(dir.path(), "admin");
        let page: serde_json::Value = super::signed_in_builder(&token)
            .build()
            .unwrap()
            .get(format!("{portal}/api/students"))
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
        Cluster {
            up,
            dir,
            portal,
            registry,
            token,
            students,
            built,
            database,
        }
    }

    /// Eight clients reading and writing through the portal.
    pub fn load(&self) -> Load {
        Load::start(&self.portal, &self.token, self.students.clone(), 8, 4)
    }

    /// Stops `load`; asserts nothing it sent failed (`during`: when) and
    /// every acknowledged write is stored once; returns what it saw.
    pub async fn no_failure(&self, load: Load, during: &str) -> Report {
        let report = load.stop().await;
        report.assert_none_failed(during);
        report.check_writes(&self.portal, &self.token).await;
        report
    }

    /// Waits until the SERVING grading instances run exactly `versions`.
    pub async fn serving(&self, versions: &[&str]) {
        eventually(
            &format!("grading serves {versions:?}"),
            PATIENCE,
            || async { (serving_versions(&self.registry).await == versions).then_some(()) },
        )
        .await;
    }

    /// Stops `up` with Ctrl-C; it exits 0 and removes its control socket.
    pub async fn stop(mut self) {
        kill(Pid::from_raw(self.up.id() as i32), Signal::SIGINT).unwrap();
        let up = &mut self.up;
        let status = eventually("up exits", PATIENCE, || {
            let status = up.try_wait().unwrap();
            async move { status }
        })
        .await;
        assert!(status.success(), "{status:?}");
        assert!(
            !self.dir.path().join("control.sock").exists(),
            "the control socket is removed"
        );
    }
}
