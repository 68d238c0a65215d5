//! `gradebook up`: starts the whole gradebook (registry, log, grading,
//! portal) as child processes, in dependency order, `--scale`d to several
//! instances of a service if asked; supervises each child on its own task
//! (one child's restart backoff never delays another's); prints the
//! portal's URL once it is ready; and on Ctrl-C or SIGTERM stops them all
//! gracefully: portals, grading, the registry, and the log service last
//! (so that every daemon's records of its own shutdown are kept).
//!
//! Children end with `up` whatever ends it (a parent-death signal), and
//! every child's listening socket is bound here and passed down
//! ([`crate::cli::listen`]): the first instance of a service on its
//! `--*-listen` address, further ones on free ports of the same host. A
//! restarted child keeps its socket, so its address never changes.
//!
//! Unless `--insecure`, `up` is also the mesh's certificate authority: at
//! first start it creates one under `DATA_DIR/certs` and issues every
//! daemon and the tools (`admin`) a certificate; while running it renews
//! them before they expire, and the daemons load the renewed files.
//!
//! While it runs, `up` takes rollouts on a control socket
//! (`DATA_DIR/control.sock`, for `gradebook rollout`): the instances of a
//! service replaced by a new binary one at a time, or by a new set that
//! the traffic moves to at once (blue-green) or step by step (canary),
//! rolled back on their own when the new version fails.
//!
//! # Layout
//!
//! - [`children`]: one child: what it runs, and its supervisor task.
//! - [`fleet`]: every child, the tokens that stop or kill each.
//! - [`control`]: the control socket (`gradebook.supervisor.v1`).
//! - [`rollout`]: what every rollout strategy does: start, drain, wait, route.
//! - [`rolling`]: a rolling update carried out, around [`crate::rollout::rolling`].
//! - [`switch`]: blue-green switches and canary releases carried out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::health_check::wait_serving;
use crate::cli::http_get::HttpConnection;
use crate::cli::listen::{address_of, bind_for_child};
use crate::cli::up::children::ChildSpec;
use crate::cli::up::fleet::Fleet;
use crate::cli::{INSECURE_WARNING, parse_duration};
use crate::mesh::Tls;
use crate::mesh::backoff::Backoff;
use crate::mesh::config::{
    DEFAULT_GRADING_LISTEN, DEFAULT_LOG_LISTEN, DEFAULT_PORTAL_LISTEN, DEFAULT_REGISTRY_LISTEN,
};
use crate::mesh::shutdown::cancel_on_signal;
use crate::mesh::telemetry;
use crate::mesh::tls::Identity;
use crate::mesh::tls::renewal;
use crate::mesh::{Shutdown, config::url_of};

pub mod children;
pub mod control;
pub mod fleet;
pub mod rolling;
pub mod rollout;
pub mod switch;

/// `gradebook up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where every daemon keeps its data (`log/`, `grading/` below it).
    #[arg(long, env = "GRADEBOOK_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Create demo students and grades in an empty gradebook.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_data: bool,
    /// Where the registry listens.
    #[arg(long, default_value = DEFAULT_REGISTRY_LISTEN)]
    pub registry_listen: SocketAddr,
    /// Where the (first) log service instance listens.
    #[arg(long, default_value = DEFAULT_LOG_LISTEN)]
    pub log_listen: SocketAddr,
    /// Where the (first) grading service instance listens.
    #[arg(long, default_value = DEFAULT_GRADING_LISTEN)]
    pub grading_listen: SocketAddr,
    /// Where the (first) portal listens.
    #[arg(long, default_value = DEFAULT_PORTAL_LISTEN)]
    pub portal_listen: SocketAddr,
    /// Run several instances of a service, as `SERVICE=N` (log, grading,
    /// portal); repeat for several services. Grading above 1 needs `--database-url`.
    #[arg(long = "scale", value_name = "SERVICE=N", value_parser = parse_scale)]
    pub scale: Vec<Scale>,
    /// The grading database: PostgreSQL (`postgres://...`) shared by every
    /// grading instance; embedded SQLite under `--data-dir` when absent.
    #[arg(long, env = "GRADEBOOK_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Turn TLS off for every daemon (plaintext, for local debugging).
    #[arg(long, env = "GRADEBOOK_INSECURE")]
    pub insecure: bool,
    /// How long the certificates `up` issues are valid; each is renewed
    /// after two thirds of it, and the daemons load the new one on their own.
    #[arg(long, env = "GRADEBOOK_CERT_LIFETIME", value_parser = parse_duration, default_value = "24h")]
    pub cert_lifetime: Duration,
}

impl UpArgs {
    /// Where `up` keeps the mesh's certificates.
    pub fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }
}

/// How long a daemon may take to become SERVING at start.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// The daemons `up` runs, in the order they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The registry (always one, for now).
    Registry,
    /// The log service.
    Log,
    /// The grading service.
    Grading,
    /// The portal.
    Portal,
}

impl Kind {
    /// Every kind, in start order.
    pub const START_ORDER: [Kind; 4] = [Kind::Registry, Kind::Log, Kind::Grading, Kind::Portal];
    /// Every kind, in stop order: the log service last, so that every
    /// other daemon's records of its own shutdown still reach it.
    pub const STOP_ORDER: [Kind; 4] = [Kind::Portal, Kind::Grading, Kind::Registry, Kind::Log];

    /// The subcommand (and service name).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Registry => "registry",
            Kind::Log => "log",
            Kind::Grading => "grading",
            Kind::Portal => "portal",
        }
    }
}

/// `--scale SERVICE=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// The service.
    pub kind: Kind,
    /// How many instances.
    pub count: usize,
}

/// Reads `SERVICE=N`.
pub fn parse_scale(text: &str) -> Result<Scale, String> {
    let (service, count) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SERVICE=N (for example grading=3)"))?;
    let kind = Kind::START_ORDER
        .into_iter()
        .find(|k| k.name() == service.trim())
        .ok_or_else(|| {
            format!("unknown service {service:?}: the services are log, grading and portal")
        })?;
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| format!("{count:?} is not a number of instances"))?;
    if count == 0 {
        return Err(format!(
            "{service}=0: every service needs at least one instance"
        ));
    }
    if count > 16 {
        return Err(format!("{service}={count}: at most 16 instances"));
    }
    Ok(Scale { kind, count })
}

impl UpArgs {
    /// How many instances of `kind` to run.
    pub fn count(&self, kind: Kind) -> usize {
        self.scale
            .iter()
            .rev()
            .find(|s| s.kind == kind)
            .map_or(1, |s| s.count)
    }

    /// Checks what cannot work together.
    pub fn validate(&self) -> anyhow::Result<()> {
        let graders = self.count(Kind::Grading);
        if graders > 1 && self.database_url.is_none() {
            bail!(
                "--scale grading={graders} needs --database-url postgres://...: SQLite is one \
                 process's file, so several grading instances must share a PostgreSQL database"
            );
        }
        Ok(())
    }

    fn first_listen(&self, kind: Kind) -> SocketAddr {
        match kind {
            Kind::Registry => self.registry_listen,
            Kind::Log => self.log_listen,
            Kind::Grading => self.grading_listen,
            Kind::Portal => self.portal_listen,
        }
    }
}

/// Binds every child's socket and lays out its command line.
fn plan(args: &UpArgs) -> anyhow::Result<Vec<ChildSpec>> {
    let binary = std::env::current_exe().context("cannot find the gradebook binary")?;
    let data = |sub: String| args.data_dir.join(sub).display().to_string();
    // Every socket first: the registry nodes are told of each other, the
    // others of every registry node, where they really are (a port may
    // have been 0).
    let mut sockets = Vec::new();
    for kind in Kind::START_ORDER {
        for index in 1..=args.count(kind) {
            let wanted = if index == 1 {
                args.first_listen(kind)
            } else {
                SocketAddr::new(args.first_listen(kind).ip(), 0)
            };
            let listener = bind_for_child(wanted)?;
            let address = address_of(&listener)?;
            sockets.push((kind, index, listener, address));
        }
    }
    let registries: Vec<String> = sockets
        .iter()
        .filter(|(kind, ..)| *kind == Kind::Registry)
        .map(|(_, _, _, address)| address.to_string())
        .collect();
    let registry_urls = registries
        .iter()
        .map(|address| url_of(address))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (kind, index, listener, address) in sockets {
        {
            let suffix = if index == 1 {
                String::new()
            } else {
                format!("-{index}")
            };
            let mut child_args = vec!["--listen".to_owned(), address.to_string()];
            if args.insecure {
                child_args.push("--insecure".to_owned());
            } else {
                child_args.extend(["--certs".to_owned(), args.certs_dir().display().to_string()]);
            }
            if kind != Kind::Registry {
                child_args.extend(["--registry".to_owned(), registry_urls.clone()]);
            }
            match kind {
                Kind::Registry if registries.len() > 1 => {
                    child_args.extend(["--peers".to_owned(), registries.join(",")]);
                }
                Kind::Registry => {}
                Kind::Portal => {
                    child_args.extend(["--data-dir".into(), data("portal".to_owned())]);
                }
                Kind::Log => {
                    child_args.extend(["--data-dir".into(), data(format!("log{suffix}"))]);
                }
                Kind::Grading => {
                    child_args.extend([
                        "--data-dir".into(),
                        data(format!("grading{suffix}")),
                        "--demo-data".into(),
                        args.demo_data.to_string(),
                    ]);
                    if let Some(url) = &args.database_url {
                        child_args.extend(["--database-url".into(), url.clone()]);
                    }
                }
            }
            children.push(ChildSpec {
                name: format!("{}{suffix}", kind.name()),
                kind,
                binary: binary.clone(),
                args: child_args,
                listener,
                address,
            });
        }
    }
    Ok(children)
}

/// Waits until the portal at `address` answers `/readyz` with 200.
async fn portal_ready(address: SocketAddr, shutdown: &Shutdown) -> bool {
    let address = address.to_string();
    let deadline = Instant::now() + START_PATIENCE;
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        let ready = async {
            let mut connection = HttpConnection::open(&address).await.ok()?;
            connection.get("/readyz").await.ok()
        };
        if let Ok(Some((200, _))) = tokio::time::timeout(Duration::from_secs(1), ready).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Where the tools (`services`, `logs`, `users`, ...) should point, when
/// `up` does not run where their defaults look: the registry's port or the
/// data directory moved.
fn tools_hint(args: &UpArgs, children: &[ChildSpec]) -> Option<String> {
    let registries: Vec<String> = children
        .iter()
        .filter(|c| c.kind == Kind::Registry)
        .map(|c| c.address.to_string())
        .collect();
    let moved = registries != [DEFAULT_REGISTRY_LISTEN] || args.data_dir != Path::new("data");
    let registry = registries.join(",http://");
    moved.then(|| {
        let certs = if args.insecure {
            "GRADEBOOK_INSECURE=true".to_owned()
        } else {
            format!("GRADEBOOK_CERTS={}", args.certs_dir().display())
        };
        format!(
            "For the tools: export GRADEBOOK_REGISTRY=http://{registry} {certs} GRADEBOOK_DATA_DIR={}",
            args.data_dir.display()
        )
    })
}

/// Every identity `up` issues a certificate to: its daemons and the tools.
fn identities() -> Vec<Identity> {
    let mut identities: Vec<Identity> = Kind::START_ORDER
        .iter()
        .filter_map(|kind| Identity::new(kind.name()).ok())
        .collect();
    identities.push(Identity::admin());
    identities
}

/// The registry's URLs, comma-separated, as the children are given them.
fn registry_urls(fleet: &Fleet) -> String {
    fleet
        .running(Kind::Registry)
        .iter()
        .map(|r| url_of(&r.address.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `gradebook up` until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    telemetry::init_stderr(telemetry::DEFAULT_FILTER);
    args.validate()?;
    let shutdown = Shutdown::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10), 0.2)?;
    // Every socket first: a taken port fails here, before anything starts.
    let children = plan(&args)?;
    let tools_hint = tools_hint(&args, &children);
    let tls = if args.insecure {
        eprintln!("{INSECURE_WARNING}");
        Tls::Off
    } else {
        let certs = args.certs_dir();
        renewal::renew(&certs, &identities(), args.cert_lifetime).await?;
        tokio::spawn(renewal::keep_renewed(
            certs.clone(),
            identities(),
            args.cert_lifetime,
            shutdown.clone(),
        ));
        Tls::load(&certs, Identity::admin())?
    };
    // The accounts: on an empty database, a first admin whose password is
    // printed once, with the ready line.
    let accounts_dir = crate::cli::users::accounts_dir(&args.data_dir);
    let first_admin = tokio::task::spawn_blocking(move || {
        crate::portal::accounts::AccountStore::open(&accounts_dir)?.bootstrap_admin()
    })
    .await??;
    let portals: Vec<SocketAddr> = children
        .iter()
        .filter(|c| c.kind == Kind::Portal)
        .map(|c| c.address)
        .collect();
    let mut by_kind: Vec<(Kind, Vec<ChildSpec>)> =
        Kind::START_ORDER.iter().map(|k| (*k, Vec::new())).collect();
    for child in children {
        if let Some((_, list)) = by_kind.iter_mut().find(|(k, _)| *k == child.kind) {
            list.push(child);
        }
    }
    let fleet = Arc::new(Fleet::new(backoff));
    for (_, specs) in by_kind {
        if shutdown.is_cancelled() {
            break;
        }
        let mut starting = Vec::new();
        for spec in specs {
            starting.push((spec.name.clone(), spec.address));
            fleet.start(spec);
        }
        for (name, address) in starting {
            if !wait_serving(&url_of(&address.to_string()), &tls, START_PATIENCE).await {
                tracing::warn!(daemon = %name, "not SERVING yet; starting the rest anyway");
            }
        }
    }
    let mut ready = Vec::new();
    for portal in &portals {
        if portal_ready(*portal, &shutdown).await {
            ready.push(format!("http://{portal}/students"));
        }
    }
    if !ready.is_empty() {
        println!("Gradebook is ready: {} (Ctrl-C stops it)", ready.join(" "));
        match &first_admin {
            Some((name, password)) => println!(
                "Sign in as {name} with the password {password} (shown this once; `gradebook users add NAME --role teacher --password-stdin` adds teachers)"
            ),
            None => println!(
                "Sign in with your account (`gradebook users add NAME --role teacher --password-stdin` adds one)"
            ),
        }
        if let Some(hint) = &tools_hint {
            println!("{hint}");
        }
    }
    let control = control::serve(
        &args.data_dir,
        control::Context {
            fleet: fleet.clone(),
            tls: tls.clone(),
            registry_urls: registry_urls(&fleet),
            shared_database: args.database_url.is_some(),
        },
        &shutdown,
    );
    if let Err(error) = &control {
        tracing::warn!(%error, "no control socket: `gradebook rollout` cannot reach this supervisor");
    }
    shutdown.cancelled().await;
    tracing::info!("stopping the gradebook");
    for kind in Kind::STOP_ORDER {
        fleet.stop_kind(kind).await;
    }
    if let Ok(control) = control {
        control.remove();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn up(args: &[&str]) -> Result<UpArgs, String> {
        match crate::cli::Cli::try_parse_from([&["gradebook", "up"], args].concat()) {
            Ok(crate::cli::Cli {
                command: crate::cli::Command::Up(up),
            }) => Ok(up),
            Ok(_) => Err("not up".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn scale_is_read_and_checked() {
        let args = up(&[
            "--scale",
            "grading=3",
            "--scale",
            "log=2",
            "--database-url",
            "postgres://x/y",
        ])
        .unwrap();
        assert_eq!(args.count(Kind::Grading), 3);
        assert_eq!(args.count(Kind::Log), 2);
        assert_eq!(args.count(Kind::Portal), 1);
        args.validate().unwrap();

        let sqlite = up(&["--scale", "grading=2"]).unwrap();
        let error = sqlite.validate().unwrap_err().to_string();
        assert!(
            error.contains("--database-url") && error.contains("SQLite"),
            "{error}"
        );
        up(&["--scale", "portal=2"]).unwrap().validate().unwrap();
        let group = up(&["--scale", "registry=3"]).unwrap();
        assert_eq!(group.count(Kind::Registry), 3);
        group.validate().unwrap();

        for (bad, says) in [
            ("reports=2", "unknown service"),
            ("grading=0", "at least one instance"),
            ("grading=x", "not a number"),
            ("grading", "SERVICE=N"),
            ("grading=17", "at most 16"),
        ] {
            let error = up(&["--scale", bad]).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
