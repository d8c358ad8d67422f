//! A blocking client of the analyzer's read API. It keeps each answer both as raw JSON (what
//! `--json` prints, extra fields included) and as the `proto::api` type the renderers use.

use std::path::Path;
use std::time::Duration;

use faultline_proto::api::{ComponentView, JobView, NodeEntry, Summary, TopologyView};
use faultline_proto::{ComponentId, Incident};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long to wait for a TCP connection. Loopback or a LAN answers in milliseconds; a dead host
/// behind a firewall drops packets and would otherwise hang for the kernel's ~2 minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take in all. The largest answer (incidents with full paths on a big
/// cluster) is a few MB from an in-process store, well under this on any working analyzer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read, bytes. A 20,000-node cluster's node list with full detail is about 20 MB;
/// anything past this is not the analyzer talking.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// Response header the analyzer sets on read answers while its store is failing.
pub const STORE_HEADER: &str = "x-faultline-store";

/// Why a request failed. The variants are what the CLI turns into advice.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the analyzer at {url}: {reason}. Is faultline-analyzer running? Set --analyzer or FAULTLINE_ANALYZER."
    )]
    Unreachable { url: String, reason: String },
    /// The analyzer's TLS certificate is signed by a CA this client does not trust.
    #[error(
        "certificate not trusted: pass --ca-cert (or FAULTLINE_CA_CERT) with the CA that signed the analyzer's certificate at {url} ({reason})"
    )]
    Untrusted { url: String, reason: String },
    #[error("cannot read the CA certificate {path}: {message}")]
    CaCert { path: String, message: String },
    /// Something answered, but not in HTTP the client could read (a TLS server spoken to in plain
    /// HTTP, another service on the port, a proxy cutting the answer).
    #[error(
        "the server at {url} answered, but not like faultline-analyzer: {reason}. Check the scheme (http:// or https://) and port of --analyzer."
    )]
    Protocol { url: String, reason: String },
    #[error("the analyzer's answer to {path} is larger than {MAX_RESPONSE_BYTES} bytes; refusing to read it")]
    TooLarge { path: String },
    #[error("the analyzer refused the token (HTTP {status}: {message}); set --token or FAULTLINE_TOKEN")]
    Unauthorized { status: u16, message: String },
    /// 404, with the server's own words (`no incident inc-000099`).
    #[error("{message}")]
    NotFound { message: String },
    #[error("the analyzer answered HTTP {status} for {path}: {message}")]
    Status { status: u16, path: String, message: String },
    #[error("the analyzer's answer to {path} is not what this version of faultline understands: {message}")]
    Decode { path: String, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// An answer as JSON and as its typed form.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub raw: Value,
    pub value: T,
}

/// Which incidents to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Open,
    All,
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
    /// What the analyzer said about its store, when it said it is failing (warned once).
    store_failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Client {
    /// `base` is the analyzer URL without a trailing slash; `ca` a PEM file of CAs to trust
    /// instead of the system's.
    pub fn new(base: &str, token: Option<String>, ca: Option<&Path>) -> Result<Self, ClientError> {
        let http = builder(ca)?.timeout(REQUEST_TIMEOUT).build().map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http, store_failing: Default::default() })
    }

    /// The analyzer's word on its store, when a read answer said it is failing.
    pub fn store_failing(&self) -> Option<String> {
        self.store_failing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn note_store(&self, resp: &reqwest::blocking::Response) {
        let Some(v) = resp.headers().get(STORE_HEADER).and_then(|v| v.to_str().ok()) else { return };
        let mut f = self.store_failing.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            eprintln!(
                "warning: the analyzer's store is {v}. Open incidents come from its memory; a restart now would lose them."
            );
        }
        *f = Some(v.to_string());
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// GETs `path` (already encoded) and returns the JSON body.
    pub fn get_raw(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().map_err(|e| self.send_error(&e))?;
        let status = resp.status();
        self.note_store(&resp);
        let body = read_capped(resp).map_err(|e| match e {
            None => ClientError::TooLarge { path: path.to_string() },
            Some(e) => ClientError::Protocol { url: self.base.clone(), reason: e },
        })?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| first_line(&body));
            return Err(match status.as_u16() {
                401 | 403 => ClientError::Unauthorized { status: status.as_u16(), message },
                404 => ClientError::NotFound { message },
                s => ClientError::Status { status: s, path: path.to_string(), message },
            });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Decode { path: path.to_string(), message: e.to_string() })
    }

    /// GETs `path` and decodes it as `T`, keeping the raw JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Fetched<T>, ClientError> {
        let raw = self.get_raw(path)?;
        let value =
            T::deserialize(&raw).map_err(|e| ClientError::Decode { path: path.to_string(), message: e.to_string() })?;
        Ok(Fetched { raw, value })
    }

    pub fn summary(&self) -> Result<Fetched<Summary>, ClientError> {
        self.get("/api/v1/summary")
    }

    pub fn nodes(&self) -> Result<Fetched<Vec<NodeEntry>>, ClientError> {
        self.get("/api/v1/nodes")
    }

    /// Incidents, newest first as the analyzer orders them. `since_s` is Unix seconds.
    pub fn incidents(&self, status: StatusFilter, since_s: Option<f64>) -> Result<Fetched<Vec<Incident>>, ClientError> {
        let mut path = String::from("/api/v1/incidents?status=");
        path.push_str(match status {
            StatusFilter::Open => "open",
            StatusFilter::All => "all",
        });
        if let Some(s) = since_s {
            path.push_str(&format!("&since={s:.3}"));
        }
        self.get(&path)
    }

    pub fn incident(&self, id: &str) -> Result<Fetched<Incident>, ClientError> {
        self.get(&format!("/api/v1/incidents/{}", encode_segment(id)))
    }

    /// One component; its `/` separators stay path separators (the server's route is a wildcard).
    pub fn component(&self, id: &ComponentId) -> Result<Fetched<ComponentView>, ClientError> {
        let s = id.to_string();
        let encoded: Vec<String> = s.split('/').map(encode_segment).collect();
        self.get(&format!("/api/v1/components/{}", encoded.join("/")))
    }

    pub fn jobs(&self) -> Result<Fetched<Vec<JobView>>, ClientError> {
        self.get("/api/v1/jobs")
    }

    /// One job, by id without the `job:` prefix.
    pub fn job(&self, id: &str) -> Result<Fetched<JobView>, ClientError> {
        self.get(&format!("/api/v1/jobs/{}", encode_segment(id)))
    }

    pub fn topology(&self) -> Result<Fetched<TopologyView>, ClientError> {
        self.get("/api/v1/topology")
    }
}

/// Reads at most `MAX_RESPONSE_BYTES` of a body; None when there is more.
fn read_capped(resp: reqwest::blocking::Response) -> Result<String, Option<String>> {
    use std::io::Read;
    let mut buf = Vec::new();
    resp.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut buf).map_err(|e| Some(e.to_string()))?;
    if buf.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(None);
    }
    String::from_utf8(buf).map_err(|_| Some("the answer is not UTF-8 text".to_string()))
}

impl Client {
    /// A request that got no answer: unreachable (nothing listening, TLS refused, timeout), or
    /// something answered in a way that is not HTTP from the analyzer.
    fn send_error(&self, e: &reqwest::Error) -> ClientError {
        let why = reason(e);
        if is_untrusted(e) {
            ClientError::Untrusted { url: self.base.clone(), reason: why }
        } else if e.is_connect() || e.is_timeout() {
            ClientError::Unreachable { url: self.base.clone(), reason: why }
        } else {
            ClientError::Protocol { url: self.base.clone(), reason: why }
        }
    }
}

/// Percent-encodes one path segment: RFC 3986 unreserved characters and `:` stay as they are.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP client builder with the CLI's connect timeout and user agent; with `ca`, trusting the
/// CAs in that PEM file only (as the agent's `--ca-cert` does).
pub fn builder(ca: Option<&Path>) -> Result<reqwest::blocking::ClientBuilder, ClientError> {
    let mut b = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("faultline-cli/", env!("CARGO_PKG_VERSION")));
    // An empty FAULTLINE_CA_CERT counts as unset.
    if let Some(path) = ca.filter(|p| !p.as_os_str().is_empty()) {
        let err = |message: String| ClientError::CaCert { path: path.display().to_string(), message };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in it".into()));
        }
        b = b.tls_certs_only(certs);
    }
    Ok(b)
}

/// A request that got no answer, told apart: an untrusted certificate needs `--ca-cert`, not a
/// running analyzer.
pub fn unreachable(url: &str, e: &reqwest::Error) -> ClientError {
    let why = reason(e);
    if is_untrusted(e) {
        ClientError::Untrusted { url: url.to_string(), reason: why }
    } else {
        ClientError::Unreachable { url: url.to_string(), reason: why }
    }
}

/// Whether the TLS handshake failed because the server's certificate chains to no trusted CA
/// (rustls' `UnknownIssuer`, or a self-signed certificate not trusted as a CA).
fn is_untrusted(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        let text = s.to_string();
        if text.contains("UnknownIssuer") || text.contains("unknown issuer") || text.contains("CaUsedAsEndEntity") {
            return true;
        }
        src = s.source();
    }
    false
}

/// The most useful words for why a request never got an answer: the OS error when there is one.
fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::TimedOut => format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                _ => io.to_string(),
            };
        }
        last = s.to_string();
        src = s.source();
    }
    // No OS error: the innermost cause (a TLS verdict, an HTTP parse error) says the most; the
    // outer "error sending request" says nothing.
    if last.is_empty() { e.to_string() } else { last }
}

fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    if line.is_empty() { "(empty body)".to_string() } else { line.chars().take(200).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_colons_and_escape_the_rest() {
        assert_eq!(encode_segment("nic:mlx5_2"), "nic:mlx5_2");
        assert_eq!(encode_segment("inc-000001"), "inc-000001");
        assert_eq!(encode_segment("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn closed_port_reads_connection_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), None, None).unwrap();
        let err = c.summary().unwrap_err();
        assert!(matches!(&err, ClientError::Unreachable { reason, .. } if reason == "connection refused"), "{err}");
        assert!(err.to_string().contains("FAULTLINE_ANALYZER"), "{err}");
    }
}
