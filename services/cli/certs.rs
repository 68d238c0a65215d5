//! `gradebook certs`: the mesh's local certificate authority by hand.
//! `init` creates it; `issue SERVICE` gives a service (or `admin`, the
//! tools' identity) a certificate; `ensure` does both where needed and
//! renews what is due, and with `--keep` goes on renewing until stopped
//! (the compose stack's renewer). `gradebook up` does all this on its own.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::parse_duration;
use crate::mesh::config::DEFAULT_CERTS_DIR;
use crate::mesh::shutdown::{Shutdown, cancel_on_signal};
use crate::mesh::telemetry;
use crate::mesh::tls::Identity;
use crate::mesh::tls::authority::{self, DEFAULT_CERT_LIFETIME};
use crate::mesh::tls::renewal;

/// `gradebook certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// The `certs` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a certificate authority: DIR/ca.crt and DIR/ca.key.
    Init {
        /// The certificate directory.
        #[arg(long, env = "GRADEBOOK_CERTS", default_value = DEFAULT_CERTS_DIR)]
        dir: PathBuf,
    },
    /// Issue SERVICE a certificate signed by the authority in DIR:
    /// DIR/SERVICE.crt and DIR/SERVICE.key (replacing any it had).
    Issue {
        /// The identity: a service name, or `admin` for the tools.
        service: String,
        /// The certificate directory.
        #[arg(long, env = "GRADEBOOK_CERTS", default_value = DEFAULT_CERTS_DIR)]
        dir: PathBuf,
        /// How long the certificate is valid.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        lifetime: Duration,
        /// A further DNS name or IP address the certificate is valid for
        /// (for a browser-facing portal); repeat for several.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
    /// Make sure DIR has an authority (created if missing) and a
    /// certificate for each SERVICE with a third of its life left (issued
    /// or renewed otherwise): what `gradebook up` does, for containers.
    /// With `--keep`, goes on renewing them until SIGTERM or Ctrl-C.
    Ensure {
        /// The identities.
        #[arg(required = true)]
        services: Vec<String>,
        /// The certificate directory.
        #[arg(long, env = "GRADEBOOK_CERTS", default_value = DEFAULT_CERTS_DIR)]
        dir: PathBuf,
        /// How long new certificates are valid.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        lifetime: Duration,
        /// Keep running, renewing each certificate after two thirds of its
        /// life, until stopped.
        #[arg(long)]
        keep: bool,
    },
}

/// Runs `gradebook certs`.
pub async fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Init { dir } => {
            let cert = authority::init(&dir)?;
            println!("created the certificate authority {}", cert.display());
        }
        CertsCommand::Issue {
            service,
            dir,
            lifetime,
            names,
        } => {
            let identity = Identity::new(&service)?;
            let cert = authority::issue(&dir, &identity, lifetime, &names)?;
            println!("issued {} to {identity}", cert.display());
            if lifetime == DEFAULT_CERT_LIFETIME {
                println!(
                    "it expires in 24h: issue it again before then (`gradebook up` renews its own)"
                );
            }
        }
        CertsCommand::Ensure {
            services,
            dir,
            lifetime,
            keep,
        } => {
            let identities = services
                .iter()
                .map(|service| Identity::new(service))
                .collect::<Result<Vec<_>, _>>()?;
            for (identity, renewal) in renewal::renew(&dir, &identities, lifetime).await? {
                println!("{identity}: {renewal:?}");
            }
            if keep {
                telemetry::init_stderr(telemetry::DEFAULT_FILTER);
                let shutdown = Shutdown::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                println!("renewing them until stopped");
                renewal::keep_renewed(dir, identities, lifetime, shutdown).await;
            }
        }
    }
    Ok(())
}
