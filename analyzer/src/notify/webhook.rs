//! Generic JSON webhooks: the payload (`{"event", "incident", "link", "sent_at"}`), its
//! HMAC-SHA256 signature, and the headers that let a receiver verify and deduplicate it.
//!
//! The outbox stores the payload without `sent_at`; the sender adds it at each attempt and signs the
//! exact bytes it sends, so a receiver can check the signature against the raw body it read.

use std::collections::BTreeMap;

use faultline_proto::{Incident, rfc3339};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::config::{Event, Secret};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` when the receiver has a secret.
pub const SIGNATURE_HEADER: &str = "X-Faultline-Signature";
/// Header carrying the event name (`opened`, `updated`, `resolved`).
pub const EVENT_HEADER: &str = "X-Faultline-Event";
/// Header carrying the key that is the same on every retry of one notification.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

#[derive(Serialize)]
struct Stored<'a> {
    event: &'static str,
    /// The identity labels of the incident's Alertmanager alert (one scheme for both).
    labels: &'a BTreeMap<String, String>,
    incident: &'a Incident,
    link: &'a str,
}

/// The stored form of a webhook notification (everything but `sent_at`).
pub fn payload(
    event: Event,
    incident: &Incident,
    link: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Stored { event: event.as_str(), labels, incident, link })
}

/// The body to send now: the stored payload with `sent_at` (RFC 3339) added. A stored payload
/// that is not a JSON object (written by hand into the database) is an error, not a panic.
pub fn body_at(stored: &str, now_s: f64) -> Result<Vec<u8>, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(stored).map_err(|e| format!("stored webhook payload is not JSON: {e}"))?;
    let obj = v.as_object_mut().ok_or_else(|| "stored webhook payload is not a JSON object".to_string())?;
    obj.insert("sent_at".into(), serde_json::Value::String(rfc3339(now_s)));
    serde_json::to_vec(&v).map_err(|e| format!("cannot encode webhook body: {e}"))
}

/// `sha256=<lower-case hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes keys of every length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header value against a body in constant time (for receivers written in Rust
/// and for tests).
pub fn verify(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::incident;

    #[test]
    fn payload_has_event_incident_link_and_gets_sent_at_on_sending() {
        let inc = incident();
        let labels = crate::notify::alertmanager::identity_labels(&inc, Some("train-a"));
        let stored = payload(Event::Opened, &inc, "http://a/api/v1/incidents/inc-000007", &labels).unwrap();
        let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["labels"]["node"], "node-0003");
        assert_eq!(v["labels"]["gpu"], "5");
        assert_eq!(v["labels"]["cluster"], "train-a");
        assert_eq!(v["labels"]["incident"], "inc-000007");
        assert_eq!(v["event"], "opened");
        assert_eq!(v["incident"]["id"], "inc-000007");
        assert_eq!(v["incident"]["root"], "node-0003/gpu5");
        assert_eq!(v["link"], "http://a/api/v1/incidents/inc-000007");
        assert!(v.get("sent_at").is_none());
        let body = body_at(&stored, 1_700_000_000.25).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["sent_at"], "2023-11-14T22:13:20.250Z");
        // The incident round-trips into the shared type.
        let back: Incident = serde_json::from_value(v["incident"].clone()).unwrap();
        assert_eq!(back, inc);
        assert!(body_at("[1]", 0.0).unwrap_err().contains("not a JSON object"));
        assert!(body_at("{", 0.0).unwrap_err().contains("not JSON"));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let secret = Secret::new("k");
        let sig = signature(&secret, b"{}");
        assert!(verify(&secret, b"{}", &sig));
        assert!(!verify(&secret, b"{ }", &sig));
        assert!(!verify(&Secret::new("other"), b"{}", &sig));
        assert!(!verify(&secret, b"{}", "sha1=00"));
        assert!(!verify(&secret, b"{}", "sha256=zz"));
    }
}
