//! `gradebook up` as tests run it: started on free ports with data in a
//! test directory, its children found through `/proc`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::binary;

/// The children of `pid` whose command line contains `word`.
pub fn children_running(pid: u32, word: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.get(1).is_some_and(|a| a == word) {
                found.push(child);
            }
        }
    }
    found
}

/// Every daemon on a free port: `up` binds the sockets itself and says
/// where the portal is.
pub const EVERY_PORT_ZERO: [&str; 8] = [
    "--registry-listen",
    "127.0.0.1:0",
    "--log-listen",
    "127.0.0.1:0",
    "--grading-listen",
    "127.0.0.1:0",
    "--portal-listen",
    "127.0.0.1:0",
];

/// Starts `gradebook up` with `args` and data under `dir`; returns the
/// process, its ready line, the line after it (how to sign in), and the
/// lines that follow.
pub fn start_up(
    args: &[&str],
    dir: &std::path::Path,
) -> (
    std::process::Child,
    String,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    let mut up = Command::new(binary())
        .args(["up", "--data-dir", &dir.display().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("up.stderr")).unwrap())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let ready = line_rx
        .recv_timeout(Duration::from_secs(90))
        .expect("up prints a line when ready");
    let sign_in = line_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("up says how to sign in");
    (up, ready, sign_in, line_rx)
}

/// The command-line argument after `flag` of process `pid`.
pub fn argument_of(pid: u32, flag: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1).cloned()
}
