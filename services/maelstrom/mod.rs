//! A node for Maelstrom, Jepsen's workbench for distributed-systems
//! exercises, serving Fly.io's Gossip Glomers workloads: echo (#1), unique
//! ids (#2) and broadcast (#3a to #3e), the broadcast on the same gossip
//! engine as the registry's ([`crate::gossip`]). It reads Maelstrom's
//! newline-delimited JSON on stdin, writes its replies and its messages to
//! other nodes on stdout, and logs on stderr (`gradebook maelstrom`).
//!
//! # Layout
//!
//! - [`protocol`]: envelopes, requests, replies and error bodies.
//! - [`node`]: the node as a state machine: lines and time in, output out.
//! - [`run`]: the shell on stdin and stdout.

pub mod node;
pub mod protocol;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

pub use node::{MaelstromNode, Output};

/// Runs a node on `input` and `output` (stdin and stdout) until the input
/// ends: Maelstrom stops a node by killing it, so the end of input is the
/// only other way out.
pub async fn run(
    input: impl tokio::io::AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let start = Instant::now();
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let mut node = MaelstromNode::new(generation, generation ^ u64::from(std::process::id()));
    let mut lines = BufReader::new(input).lines();
    loop {
        let deadline = node
            .next_deadline()
            .map(|at| tokio::time::Instant::from_std(start + at));
        let out = tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) => node.handle_line(&line, start.elapsed()),
                None => return Ok(()),
            },
            _ = sleep_until(deadline) => node.tick(start.elapsed()),
        };
        for item in out {
            match item {
                Output::Send(envelope) => {
                    let mut line = envelope.to_line();
                    line.push('\n');
                    output.write_all(line.as_bytes()).await?;
                }
                Output::Log(text) => eprintln!("{text}"),
            }
        }
        output.flush().await?;
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending::<()>().await,
    }
}
