//! What the agent's process tests share: the running agent (killed on drop) and its address, its
//! `/healthz`, and waiting for a condition.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running agent, killed and reaped when dropped.
pub struct Agent(Child);

impl Agent {
    /// Starts `cmd` (a `faultline-agent` command with `--listen 127.0.0.1:0`) and returns the agent
    /// with the URL its first line (`listening on URL`) names. The rest of its stdout is drained, so
    /// the agent never writes into a closed pipe.
    pub fn start(cmd: &mut Command) -> (Agent, String) {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let agent = Agent(child);
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        std::thread::spawn(move || for _ in reader.lines() {});
        let url =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {line:?}")).to_string();
        (agent, url)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's `/healthz` answer.
pub fn healthz(url: &str) -> Option<serde_json::Value> {
    let body = reqwest::blocking::get(format!("{url}/healthz")).ok()?.text().ok()?;
    serde_json::from_str(&body).ok()
}

/// Polls `f` until it gives a value; fails the test after a minute.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
