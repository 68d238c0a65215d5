//! `gradebook up`: the whole gradebook from one command, supervised: it
//! starts the four daemons, prints the portal's URL when ready, restarts a
//! daemon killed with SIGKILL, and stops everything on Ctrl-C.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{PATIENCE, binary, eventually, free_port};

/// The children of `pid` whose command line contains `word`.
fn children_running(pid: u32, word: &str) -> Vec<u32> {
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

#[tokio::test]
async fn up_starts_supervises_and_stops_the_whole_gradebook() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let listen = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut up = Command::new(binary())
        .args(["up", "--data-dir", &dir.path().display().to_string()])
        .args(["--registry-listen", &listen(0), "--log-listen", &listen(1)])
        .args([
            "--grading-listen",
            &listen(2),
            "--portal-listen",
            &listen(3),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
        .recv_timeout(Duration::from_secs(60))
        .expect("up prints a line when ready");
    let portal = format!("http://{}", listen(3));
    assert_eq!(
        ready,
        format!("Gradebook is ready: {portal}/students (Ctrl-C stops it)")
    );

    let students: serde_json::Value = reqwest::get(format!("{portal}/api/students"))
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
        async move { (reqwest::get(&url).await.ok()?.status() == 200).then_some(()) }
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
}
