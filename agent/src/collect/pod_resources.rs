//! Which Kubernetes pod holds which GPU, from the kubelet's pod-resources API: the gRPC service
//! `v1.PodResourcesLister/List` on the Unix socket `/var/lib/kubelet/pod-resources/kubelet.sock`.
//! Its answer lists, per pod and container, the device ids the device plugin handed out; for
//! NVIDIA's plugin those are GPU UUIDs (`GPU-…`) or MIG device UUIDs (`MIG-…`). The GPU metrics then
//! carry `pod`, `namespace` and `container`, as dcgm-exporter's do on Kubernetes.
//!
//! The messages are the kubelet's `api.proto` (`k8s.io/kubelet/pkg/apis/podresources/v1`), written
//! out with prost's derive (field numbers as published; fields we do not read are skipped by the
//! decoder). The call is one unary gRPC request over HTTP/2 (hyper), with no TLS, as the kubelet
//! serves it on that socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;

/// The kubelet's default pod-resources socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The gRPC method path.
const LIST_PATH: &str = "/v1.PodResourcesLister/List";
/// Largest answer taken: a node with hundreds of pods answers in tens of KiB.
const MAX_ANSWER_BYTES: usize = 16 << 20;

#[derive(Clone, PartialEq, Message)]
pub struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pub pod_resources: Vec<PodResources>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
}

/// The pod, namespace and container a device is allocated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

/// Device id (GPU or MIG UUID) → owner.
pub type Owners = Arc<RwLock<BTreeMap<String, Owner>>>;

/// Strip the gRPC message frame (1 byte compressed flag, 4 bytes big-endian length) and decode.
pub fn decode_list(body: &[u8]) -> Result<ListPodResourcesResponse, String> {
    let (head, rest) = body.split_at_checked(5).ok_or("gRPC answer shorter than its frame header")?;
    if head[0] != 0 {
        return Err("gRPC answer is compressed (we asked for none)".into());
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let msg = rest.get(..len).ok_or_else(|| format!("gRPC frame says {len} bytes, {} came", rest.len()))?;
    ListPodResourcesResponse::decode(msg).map_err(|e| format!("not a ListPodResourcesResponse: {e}"))
}

/// Which pod holds each NVIDIA device (resources named `nvidia.com/…`: `gpu`, `mig-1g.10gb`, …).
pub fn gpu_owners(r: &ListPodResourcesResponse) -> BTreeMap<String, Owner> {
    let mut out = BTreeMap::new();
    for p in &r.pod_resources {
        for c in &p.containers {
            for d in c.devices.iter().filter(|d| d.resource_name.starts_with("nvidia.com/")) {
                for id in &d.device_ids {
                    let owner =
                        Owner { pod: p.name.clone(), namespace: p.namespace.clone(), container: c.name.clone() };
                    out.insert(id.clone(), owner);
                }
            }
        }
    }
    out
}

/// One `List` call on the kubelet's socket; the raw gRPC answer body.
pub async fn list(socket: &Path) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Full, Limited};
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(conn);
    // An empty ListPodResourcesRequest in its gRPC frame.
    let req = hyper::Request::post(format!("http://localhost{LIST_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(hyper::body::Bytes::from_static(&[0, 0, 0, 0, 0])))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| format!("List: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("List answered HTTP {}", resp.status()));
    }
    let header_status = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string);
    let collected =
        Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect().await.map_err(|e| format!("List: {e}"))?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(header_status);
    match status.as_deref() {
        Some("0") => Ok(collected.to_bytes().to_vec()),
        Some(code) => Err(format!("List failed with gRPC status {code}")),
        None => Err("List answer has no grpc-status".into()),
    }
}

/// Refresh `owners` from the socket every `every`, for as long as the process runs. A failure keeps
/// the last map and is logged when it starts and when it ends, not on every try.
pub fn spawn(socket: PathBuf, owners: Owners, every: Duration) {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            let got = match tokio::time::timeout(every.max(Duration::from_secs(1)), list(&socket)).await {
                Ok(r) => r.and_then(|b| decode_list(&b)),
                Err(_) => Err("List timed out".into()),
            };
            match got {
                Ok(r) => {
                    if failing {
                        tracing::info!(socket = %socket.display(), "kubelet pod-resources answers again");
                        failing = false;
                    }
                    *owners.write().unwrap_or_else(|p| p.into_inner()) = gpu_owners(&r);
                }
                Err(e) if !failing => {
                    tracing::warn!(socket = %socket.display(), error = %e, "cannot read GPU owners from the kubelet's pod-resources socket; GPU series go without pod labels");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(every).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of a kubelet with two GPU pods (one on a whole GPU, one on a MIG device) and a
    /// CPU-only pod, as gRPC framed protobuf: written by `tests/fixtures/make-podresources.py`, an
    /// encoder of its own from api.proto's field numbers, not by these types.
    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/podresources-list.bin");

    #[test]
    fn the_fixture_answer_maps_gpus_and_mig_devices_to_their_pods() {
        let r = decode_list(FIXTURE).unwrap();
        assert_eq!(r.pod_resources.len(), 3);
        let owners = gpu_owners(&r);
        let o = |pod: &str, ns: &str, c: &str| Owner { pod: pod.into(), namespace: ns.into(), container: c.into() };
        assert_eq!(
            owners.get("GPU-fa0e0000-0000-4000-8000-000000000003"),
            Some(&o("llm-train-0", "research", "trainer"))
        );
        assert_eq!(
            owners.get("GPU-fa0e0000-0000-4000-8000-000000000002"),
            Some(&o("llm-train-0", "research", "trainer"))
        );
        assert_eq!(owners.get("MIG-0a1b2c3d-0000-4000-8000-000000000001"), Some(&o("notebook-7", "team-b", "jupyter")));
        assert_eq!(owners.len(), 3, "the CPU-only pod and the NIC resource hold no GPU: {owners:?}");
    }

    /// An HTTP/2 answer body: the gRPC frame, then the `grpc-status` trailer.
    struct Answer(Option<hyper::body::Bytes>, Option<hyper::HeaderMap>);

    impl hyper::body::Body for Answer {
        type Data = hyper::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            let frame = match self.0.take() {
                Some(d) => Some(hyper::body::Frame::data(d)),
                None => self.1.take().map(hyper::body::Frame::trailers),
            };
            std::task::Poll::Ready(frame.map(Ok))
        }
    }

    /// A stand-in kubelet on a Unix socket: answers `List` with `answer` and `grpc-status: status`,
    /// and records the paths it was asked for.
    async fn kubelet(socket: &Path, answer: &'static [u8], status: &'static str) -> Arc<std::sync::Mutex<Vec<String>>> {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    seen.lock().unwrap().push(format!(
                        "{} {}",
                        req.uri().path(),
                        req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
                    ));
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static(status));
                    let body = Answer(Some(hyper::body::Bytes::from_static(answer)), Some(trailers));
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder().header("content-type", "application/grpc").body(body).unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, svc),
                );
            }
        });
        asked
    }

    #[tokio::test]
    async fn list_calls_the_kubelet_over_grpc_on_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let asked = kubelet(&socket, FIXTURE, "0").await;
        let body = list(&socket).await.unwrap();
        assert_eq!(body, FIXTURE);
        assert_eq!(*asked.lock().unwrap(), vec!["/v1.PodResourcesLister/List application/grpc".to_string()]);

        let failing = dir.path().join("failing.sock");
        kubelet(&failing, b"", "14").await;
        assert!(list(&failing).await.unwrap_err().contains("status 14"));
        assert!(list(&dir.path().join("absent.sock")).await.is_err());
    }

    #[tokio::test]
    async fn the_refresh_task_fills_the_owner_map() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        kubelet(&socket, FIXTURE, "0").await;
        let owners = Owners::default();
        spawn(socket, owners.clone(), Duration::from_millis(50));
        for _ in 0..200 {
            if owners.read().unwrap().len() == 3 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("owners never filled: {:?}", owners.read().unwrap());
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        assert!(decode_list(&[]).is_err());
        assert!(decode_list(&[1, 0, 0, 0, 0]).unwrap_err().contains("compressed"));
        assert!(decode_list(&[0, 0, 0, 0, 9, 1]).unwrap_err().contains("9 bytes"));
        assert_eq!(decode_list(&[0, 0, 0, 0, 0]).unwrap().pod_resources.len(), 0);
    }
}
