//! Shared by the notification end-to-end tests: a tiny HTTP/1.1 receiver on 127.0.0.1 (std
//! `TcpListener`, one thread per connection, keep-alive) that records every request and answers as
//! told, and a NodeReport builder for one node whose GPUs can be lost or carry XID events.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with body `ok`.
    Ok,
    /// This status with body `nope`.
    Status(u16),
    /// Record the request, then never answer (until the mode changes, then close the connection).
    Hang,
}

/// One request the receiver read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A recording HTTP receiver. Stops accepting when dropped.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Request>>>,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Receiver {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub fn start(port: u16, mode: Mode) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let got: Arc<Mutex<Vec<Request>>> = Arc::default();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, m, s) = (got.clone(), mode.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (g, m, s) = (g.clone(), m.clone(), s.clone());
                        thread::spawn(move || serve(conn, g, m, s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { url: format!("http://127.0.0.1:{port}"), got, mode, stop, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, got: Arc<Mutex<Vec<Request>>>, mode: Arc<Mutex<Mode>>, stop: Arc<AtomicBool>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if chunked {
            body = match read_chunked(&mut reader) {
                Some(b) => b,
                None => return,
            };
        }
        // This receiver reads reports as JSON only, like an analyzer from before the compact
        // encoding: a compact report gets 415, and the agent falls back to JSON.
        let compact = path.ends_with("/api/v1/reports")
            && headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/x-protobuf"));
        if compact {
            let text = "reports must be sent as application/json";
            let resp =
                format!("HTTP/1.1 415 X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}", text.len());
            if writer.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        // A report posted by an agent is acknowledged as the analyzer does (its `seq` and `node`): an
        // agent counts only that answer as delivery and re-sends anything else.
        let ack = (path.ends_with("/api/v1/reports"))
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .map(|v| serde_json::json!({"seq": v["seq"], "node": v["node"]}).to_string());
        got.lock().unwrap().push(Request { method, path, headers, body });
        let m = *mode.lock().unwrap();
        let ack_text;
        let (status, text) = match m {
            Mode::Ok if ack.is_some() => {
                ack_text = ack.unwrap_or_default();
                (200, ack_text.as_str())
            }
            Mode::Ok => (200, "ok"),
            Mode::Status(s) => (s, "nope"),
            Mode::Hang => {
                while *mode.lock().unwrap() == Mode::Hang && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        let resp =
            format!("HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}", text.len());
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let mut chunk = vec![0u8; n + 2];
        reader.read_exact(&mut chunk).ok()?;
        if n == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

pub use faultline_tests::{now_ms, report_json as report};

/// How far back the analyzer keeps an XID as evidence (`detect::EVENT_HOLD_MS`, 5 minutes). Tests
/// that want an incident to resolve within seconds date their XID just inside it; the agent would
/// report such an XID late after a spool replay.
pub const EVENT_HOLD_MS: i64 = 300_000;

/// An NVML XID event on GPU `gpu`, `age_ms` old.
pub fn xid(gpu: u32, code: u32, text: &str, age_ms: i64) -> Value {
    json!({"ts_ms": now_ms() - age_ms, "source": "nvml", "class": "xid", "severity": "critical",
           "component": format!("gpu{gpu}"), "xid": code, "count": 1,
           "message": format!("NVRM: Xid (PCI:0000:{:02x}:00): {code}, pid=2003, {text}", 0x18 + gpu * 16)})
}

/// POST a report; panics unless the analyzer accepts it.
pub fn push(url: &str, token: &str, body: &Value) {
    let resp = faultline_tests::http()
        .post(format!("{url}/api/v1/reports"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("analyzer answers");
    let status = resp.status();
    assert!(status.is_success(), "report refused: {status} {}", resp.text().unwrap_or_default());
}

/// Incidents with `status` (`open`, `resolved`, `all`).
pub fn incidents(url: &str, token: &str, status: &str) -> Vec<Value> {
    faultline_tests::get_json(&format!("{url}/api/v1/incidents?status={status}"), Some(token))
        .and_then(|v| v.as_array().cloned())
        .expect("incident list")
}

/// The value of one sample line `name{labels} value` in a `/metrics` page.
pub fn metric(url: &str, series: &str) -> Option<f64> {
    let text = faultline_tests::http().get(format!("{url}/metrics")).send().ok()?.text().ok()?;
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
