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
