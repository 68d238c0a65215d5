//! `gradebook users`: the portal's accounts, from the command line, on the
//! same database the portal uses (`DATA_DIR/portal/accounts.sqlite3`, with
//! `--data-dir` as `gradebook up` takes it).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::portal::accounts::store::SecretKind;
use crate::portal::accounts::{AccountStore, Role};

/// `gradebook users`.
#[derive(Debug, Clone, clap::Args)]
pub struct UsersArgs {
    /// The data directory `gradebook up` uses (the accounts are in its `portal/`).
    #[arg(
        long,
        env = "GRADEBOOK_DATA_DIR",
        default_value = "data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// The `users` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCommand {
    /// Add an account; its password is read from standard input.
    Add {
        /// The account name (lowercase letters, digits, '.', '-', '_').
        name: String,
        /// What it may do: teacher, or admin (who also sees services and logs).
        #[arg(long, default_value = "teacher")]
        role: Role,
        /// Read the password from standard input (the only way: it never
        /// appears in the process list or the shell's history).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Set an account's password (read from standard input); ends its sessions.
    Passwd {
        /// The account name.
        name: String,
        /// Read the password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Print a new personal API token for an account (`Authorization: Bearer TOKEN`).
    Token {
        /// The account name.
        name: String,
    },
}

/// The accounts database of `gradebook up`'s data directory.
pub fn accounts_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("portal")
}

fn read_password() -> anyhow::Result<String> {
    let mut password = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut password)
        .context("cannot read the password from standard input")?;
    Ok(password.trim_end_matches(['\n', '\r']).to_owned())
}

/// Runs `gradebook users`.
pub fn run(args: UsersArgs) -> anyhow::Result<()> {
    let store = AccountStore::open(&accounts_dir(&args.data_dir))?;
    match args.command {
        UsersCommand::Add { name, role, .. } => {
            store.add_user(&name, role, &read_password()?)?;
            println!("added {name} ({role})");
        }
        UsersCommand::Passwd { name, .. } => {
            store.set_password(&name, &read_password()?)?;
            println!("set the password of {name}; its sessions ended");
        }
        UsersCommand::Token { name } => {
            println!(
                "{}",
                store.new_secret(&name, SecretKind::Token, SystemTime::now())?
            );
        }
    }
    Ok(())
}
