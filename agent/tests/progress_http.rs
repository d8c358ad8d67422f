//! The progress API over real sockets: HTTP on 127.0.0.1:0 and a Unix socket, posted to by a plain
//! HTTP client and by the `report-progress` client code. Good posts update the store; bad ones get a
//! 4xx with the reason and change nothing.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use faultline_agent::progress::{self, MAX_BODY_BYTES, ProgressStore, ReportProgressArgs};
use faultline_proto::ProgressStatus;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ReportProgressArgs,
}

fn cli(args: &[&str]) -> ReportProgressArgs {
    let mut v = vec!["report-progress"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap().args
}

fn start(store: &ProgressStore) -> SocketAddr {
    let (addr, fut) = progress::serve_http(store.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    tokio::spawn(fut);
    addr
}

async fn post(client: &reqwest::Client, addr: SocketAddr, body: impl Into<String>) -> (u16, String) {
    let resp = client.post(format!("http://{addr}/progress")).body(body.into()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_posts_update_the_store_and_bad_ones_are_refused_with_a_reason() {
    let store = ProgressStore::new();
    let addr = start(&store);
    let client = reqwest::Client::new();

    let (st, _) =
        post(&client, addr, r#"{"job":"llm","rank":3,"step":100,"step_time_ms":250.5,"compute_ms":200,"loss":1.25}"#)
            .await;
    assert_eq!(st, 204);
    // Python's json.dumps writes NaN bare; it is accepted as a non-finite loss.
    let (st, body) = post(&client, addr, r#"{"job": "llm", "rank": 3, "step": 101, "loss": NaN}"#).await;
    assert_eq!(st, 204, "{body}");
    let p = store.get("llm", 3, progress::now_ms()).unwrap();
    assert_eq!((p.step, p.loss, p.nonfinite_loss, p.compute_ms), (101, Some(1.25), true, Some(200.0)));

    let before = store.snapshot(0);
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"job":"llm","rank":3,"step":"#, 400, "malformed JSON"),
        (r#"{"job":"llm","rank":3}"#, 400, "missing field `step`"),
        (r#"{"job":"llm","rank":3,"step":-4}"#, 400, "non-negative"),
        (r#"{"job":"llm","rank":3,"step":102,"status":"sleeping"}"#, 400, "unknown `status`"),
        (r#"{"job":"llm","rank":3,"step":102,"status":"exited"}"#, 400, "exit_code"),
        (r#"{"job":"llm","rank":3,"step":102,"loss":"big"}"#, 400, "`loss`"),
        (r#"{"job":"llm","rank":3,"step":102,"step_time_ms":-1}"#, 400, "step_time_ms"),
        (r#"{"job":"l l m","rank":3,"step":102}"#, 400, "not a valid id"),
        (r#"{"job":"llm","rank":3,"step":102,"extra":1}"#, 400, "unknown field `extra`"),
        (r#""just a string""#, 400, "JSON object"),
    ];
    for (body, want_status, want_reason) in cases {
        let (st, text) = post(&client, addr, *body).await;
        assert_eq!(st, *want_status, "{body} → {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let reason = v["error"].as_str().unwrap();
        assert!(reason.contains(want_reason), "{body} → {reason}");
    }
    let huge = format!(r#"{{"job":"llm","rank":3,"step":102,"loss":{}1}}"#, "0".repeat(MAX_BODY_BYTES));
    let (st, _) = post(&client, addr, huge).await;
    assert_eq!(st, 413);
    assert_eq!(store.snapshot(0), before, "refused posts changed nothing");

    // Exited with a code, then the listing shows it.
    let (st, _) = post(&client, addr, r#"{"job":"llm","rank":3,"step":102,"status":"exited","exit_code":-11}"#).await;
    assert_eq!(st, 204);
    let list: serde_json::Value =
        client.get(format!("http://{addr}/progress")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["job"], "llm");
    assert_eq!(list[0]["progress"]["status"], "exited");
    assert_eq!(list[0]["progress"]["exit_code"], -11);
    let resp = client.put(format!("http://{addr}/progress")).body("{}").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_progress_client_posts_over_tcp_and_reports_refusals() {
    let store = ProgressStore::with_capacity(1);
    let addr = start(&store);
    let url = format!("http://{addr}/progress");
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        progress::report_progress(cli(&[
            "--job",
            "j1",
            "--rank",
            "0",
            "--step",
            "7",
            "--loss",
            "-inf",
            "--compute-ms",
            "12",
            "--url",
            &u,
        ]))
    })
    .await
    .unwrap()
    .unwrap();
    let p = store.get("j1", 0, progress::now_ms()).unwrap();
    assert_eq!((p.step, p.nonfinite_loss, p.compute_ms), (7, true, Some(12.0)));

    // The store holds one entry: a second (job, rank) is refused with 429, and the client says why.
    let u = url.clone();
    let err = tokio::task::spawn_blocking(move || {
        progress::report_progress(cli(&["--job", "j2", "--rank", "0", "--step", "1", "--url", &u]))
    })
    .await
    .unwrap()
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("429") && msg.contains("tracking limit"), "{msg}");
    assert_eq!(store.dropped(), 1);

    // Bad command lines fail before the network.
    let u = url.clone();
    let err = tokio::task::spawn_blocking(move || {
        progress::report_progress(cli(&[
            "--job", "j1", "--rank", "0", "--step", "8", "--status", "exited", "--url", &u,
        ]))
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(format!("{err:#}").contains("exit_code"), "{err:#}");
    // Nobody listening: a connection error naming the target.
    let dead = format!(
        "http://127.0.0.1:{}/progress",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let err = tokio::task::spawn_blocking(move || {
        progress::report_progress(cli(&[
            "--job",
            "j1",
            "--rank",
            "0",
            "--step",
            "9",
            "--url",
            &dead,
            "--timeout",
            "2s",
        ]))
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(format!("{err:#}").contains("cannot reach the agent"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_serves_the_same_api_and_replaces_only_stale_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("progress.sock");
    // A stale socket file from a dead agent is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let store = ProgressStore::new();
    let fut = progress::serve_unix(store.clone(), &path).unwrap();
    tokio::spawn(fut);

    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        progress::report_progress(cli(&[
            "--job",
            "4242",
            "--rank",
            "1",
            "--step",
            "5",
            "--socket",
            p.to_str().unwrap(),
        ]))?;
        progress::report_progress(cli(&[
            "--job",
            "4242",
            "--rank",
            "1",
            "--step",
            "5",
            "--status",
            "exited",
            "--exit-code",
            "2",
            "--socket",
            p.to_str().unwrap(),
        ]))
    })
    .await
    .unwrap()
    .unwrap();
    let p = store.get("4242", 1, progress::now_ms()).unwrap();
    assert_eq!((p.step, p.status, p.exit_code), (5, ProgressStatus::Exited, Some(2)));

    // A live socket is not stolen, and a regular file is not replaced.
    let e = progress::serve_unix(ProgressStore::new(), &path).err().expect("second server on a live socket");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    assert!(progress::serve_unix(ProgressStore::new(), &file).is_err());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_posts_on_one_keep_alive_connection() {
    let store = ProgressStore::new();
    let addr = start(&store);
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(10)).build().unwrap();
    for step in 0..200u64 {
        let (st, body) =
            post(&client, addr, format!(r#"{{"job":"ka","rank":0,"step":{step},"step_time_ms":10}}"#)).await;
        assert_eq!(st, 204, "{body}");
    }
    assert_eq!(store.get("ka", 0, progress::now_ms()).unwrap().step, 199);
}
