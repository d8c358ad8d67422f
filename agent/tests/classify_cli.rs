//! `faultline-agent classify-log`: the real binary reads lines on stdin and prints one JSON object per
//! line, `{"class":"none"}` for lines without a fault, and survives bytes that are not UTF-8.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn classify_log(input: &[u8]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .arg("classify-log")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn one_json_object_per_line() {
    let input = b"[Fri Aug 30 11:43:14 2024] NVRM: Xid (PCI:0000:3b:00): 79, pid=1797828, name=python, GPU has fallen off the bus.\n\
kernel: NVRM: Xid (PCI:0000:ed:00): 45, pid=1818992, name=python3, Ch 0000000c caused by previous Xid 145\n\
just a line\n\
[ 4443.974372] mlx5_core 0000:53:00.0 mlx5_3: Port: 1 Link DOWN\n\
2024-04-29T14:55:41,679700+02:00 Out of memory: Killed process 1440763 (perl) total-vm:87033376kB\n\
[ 99.1] blk_update_request: I/O error, dev nvme0n1, sector 12345\n\
\xff\xfe not utf-8 \xc3\n\
\n\
no newline at the end: NETDEV WATCHDOG: eth0 (ixgbe): transmit queue 0 timed out";
    let out = classify_log(input);
    assert_eq!(out.len(), 9, "{out:#?}");
    assert_eq!(
        out[0],
        serde_json::json!({"class": "xid", "xid": 79, "device": "0000:3b:00", "severity": "critical", "pid": 1797828})
    );
    assert_eq!(out[1]["caused_by_xid"], 145);
    assert_eq!(out[1]["xid"], 45);
    assert_eq!(out[2], serde_json::json!({"class": "none"}));
    assert_eq!(out[3]["class"], "nic_link_down");
    assert_eq!(out[3]["nic"], "mlx5_3");
    assert_eq!(out[4]["class"], "oom_kill");
    assert_eq!(out[4]["pid"], 1440763);
    assert_eq!(out[5]["class"], "io_error");
    assert_eq!(out[5]["disk"], "nvme0n1");
    assert_eq!(out[6], serde_json::json!({"class": "none"}));
    assert_eq!(out[7], serde_json::json!({"class": "none"}));
    assert_eq!(out[8]["class"], "netdev_watchdog");
    assert_eq!(out[8]["nic"], "eth0");
}

#[test]
fn empty_input_prints_nothing() {
    assert!(classify_log(b"").is_empty());
}

/// A training log given as FILE: the table names what each evidence line shows, `--json` gives one
/// object per line with the NCCL extraction, and `-` reads stdin.
#[test]
fn a_training_log_file_gives_a_table_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("slurm-4242.out");
    std::fs::write(
        &log,
        "epoch 1 step 10 loss 2.0\n\
gpu-a17:2211:2390 [3] transport/net_ib.cc:2411 NCCL WARN NET/IB: Got completion from peer 10.0.8.21<41327> with status=IBV_WC_RETRY_EXC_ERR(12) opcode=IBV_WC_SEND(0) vendor_err=129  localGid ::ffff:10.1.3.17 remoteGids::ffff:10.1.3.21 hca mlx5_3\n\
[rank7]:[E816 01:45:40.183009389 ProcessGroupNCCL.cpp:607] [Rank 7] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=80078, OpType=BROADCAST, NumelIn=5056, NumelOut=5056, Timeout(ms)=600000) ran for 600026 milliseconds before timing out.\n",
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
            .arg("classify-log")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or_default()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let path = log.to_str().unwrap();
    let table = run(&[path], None);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "header, two evidence lines, summary:\n{table}");
    assert!(rows[0].starts_with("LINE") && rows[0].contains("PEER") && rows[0].contains("SEQ"), "{table}");
    assert!(rows[1].starts_with('2') && rows[1].contains("ib_completion_error"), "{table}");
    assert!(
        rows[1].contains("10.0.8.21:41327") && rows[1].contains("hca=mlx5_3") && rows[1].contains("gpu-a17"),
        "{table}"
    );
    assert!(rows[2].contains("nccl_timeout") && rows[2].contains("80078") && rows[2].contains("BROADCAST"), "{table}");
    assert!(rows[2].contains("600s"), "{table}");
    assert_eq!(rows[3], "2 of 3 lines show something");

    let json = run(&[path, "--json"], None);
    let objs: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objs.len(), 3);
    assert_eq!(objs[0], serde_json::json!({"class": "none"}));
    assert_eq!(objs[1]["nccl"]["peer"], "10.0.8.21");
    assert_eq!(objs[1]["nccl"]["peer_port"], 41327);
    assert_eq!(objs[1]["nccl"]["device"], 3);
    assert_eq!(objs[2]["nccl"]["rank"], 7);
    assert_eq!(objs[2]["nccl"]["seq"], 80078);
    assert_eq!(objs[2]["nccl"]["op"], "BROADCAST");
    assert_eq!(objs[2]["nccl"]["timeout_ms"], 600000);

    let from_stdin = run(&["-"], Some(std::fs::read(&log).unwrap().as_slice()));
    assert_eq!(from_stdin, table, "`-` reads stdin the same way");
}

#[test]
fn a_missing_file_is_an_error_with_its_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline-agent"))
        .args(["classify-log", "/nonexistent/train.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/train.log"));
}
