//! `faultline-agent classify-log [FILE|-] [--json]`: what the classifiers take from each line of a
//! log. Kernel lines get the kernel classifier's answer; NCCL / PyTorch-distributed lines also show
//! what `nccl::parse` extracted (peer, collective, ranks, device, error).
//!
//! Without FILE it reads stdin and prints one JSON object per line, as it always has (scripts rely
//! on that). With FILE (`-` for stdin) it prints a table of the lines that show something, or with
//! `--json` one JSON object per line.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde_json::Value;

use super::nccl::{self, NcclLine};
use super::{Class, classify, to_json};

/// Arguments of `classify-log`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifyLogArgs {
    /// Log file to read, `-` for stdin. Without it: stdin, JSON output.
    pub file: Option<PathBuf>,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One line's answer as a JSON value: the kernel classifier's object, with the NCCL extraction
/// under `nccl` (and its class) when the line is collective-library evidence.
pub fn line_json(line: &str) -> Value {
    let line = nccl::strip_cri(line).map(|(l, _)| l).unwrap_or(line);
    let c = classify(line);
    let mut v: Value = serde_json::from_str(&to_json(&c)).unwrap_or(Value::Null);
    if let Some(n) = nccl::parse(line) {
        v["class"] = Value::from(n.class().as_str());
        if c.class == Class::None {
            v["severity"] = Value::from(n.class().default_severity().as_str());
        }
        v["nccl"] = serde_json::to_value(&n).unwrap_or(Value::Null);
    }
    v
}

/// Runs the subcommand.
pub fn run(args: &ClassifyLogArgs) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = match args.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
        )),
    };
    let json = args.json || args.file.is_none();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = Vec::new();
    let mut input = input;
    let (mut n, mut shown) = (0u64, 0u64);
    if !json {
        writeln!(out, "{}", row(&HEADER.map(str::to_string)))?;
    }
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).map_err(|e| anyhow::anyhow!("reading input: {e}"))? == 0 {
            break;
        }
        n += 1;
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if json {
            writeln!(out, "{}", line_json(text))?;
            continue;
        }
        let stripped = nccl::strip_cri(text).map(|(l, _)| l).unwrap_or(text);
        let c = classify(stripped);
        let nl = nccl::parse(stripped);
        if c.class == Class::None && nl.is_none() {
            continue;
        }
        shown += 1;
        writeln!(out, "{}", row(&cells(n, &c, nl.as_ref())))?;
    }
    if !json {
        writeln!(out, "{shown} of {n} lines show something")?;
    }
    out.flush()?;
    Ok(())
}

const HEADER: [&str; 12] =
    ["LINE", "CLASS", "KIND", "RANK", "LOCAL", "DEV", "HOST", "PEER", "SEQ", "OP", "TIMEOUT", "DETAIL"];
const WIDTHS: [usize; 11] = [6, 21, 17, 5, 6, 4, 16, 22, 9, 14, 8];

fn row(cells: &[String; 12]) -> String {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        match WIDTHS.get(i) {
            Some(&w) => s.push_str(&format!("{c:<w$} ")),
            None => s.push_str(c),
        }
    }
    s.trim_end().to_string()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn cells(n: u64, c: &super::Classification, nl: Option<&NcclLine>) -> [String; 12] {
    let Some(l) = nl else {
        let detail = [
            c.xid.map(|x| format!("xid={x}")),
            c.device.as_ref().map(|d| format!("device={d}")),
            c.nic.as_ref().map(|d| format!("nic={d}")),
            c.pid.map(|p| format!("pid={p}")),
            c.disk.as_ref().map(|d| format!("disk={d}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        let dash = || "-".to_string();
        return [
            n.to_string(),
            c.class.as_str().into(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            dash(),
            detail,
        ];
    };
    let peer = l.peer.as_ref().map(|p| match l.peer_port {
        Some(port) if p.contains(':') => format!("[{p}]:{port}"),
        Some(port) => format!("{p}:{port}"),
        None => p.clone(),
    });
    let timeout = l.timeout_ms.map(|t| format!("{}s", t / 1000));
    let detail = [
        l.error.clone(),
        l.wc_status.map(|s| format!("status={s}")),
        l.vendor_err.map(|s| format!("vendor_err={s}")),
        l.hca.as_ref().map(|h| format!("hca={h}")),
        l.remote_gid.as_ref().map(|g| format!("remote_gid={g}")),
        l.local_gid.as_ref().map(|g| format!("local_gid={g}")),
        l.last_completed.map(|s| format!("last_completed={s}")),
        l.last_enqueued.map(|s| format!("last_enqueued={s}")),
        l.ran_ms.map(|s| format!("ran={}s", s / 1000)),
        l.pid.map(|p| format!("pid={p}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    [
        n.to_string(),
        l.class().as_str().into(),
        l.kind.as_str().into(),
        opt(l.rank),
        opt(l.local_rank),
        opt(l.device),
        opt(l.hostname.clone()),
        opt(peer),
        opt(l.seq),
        opt(l.op.clone()),
        opt(timeout),
        detail,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_the_kernel_answer_and_adds_the_nccl_extraction() {
        let v = line_json("NVRM: Xid (PCI:0000:3b:00): 79, pid=12, GPU has fallen off the bus.");
        assert_eq!(v["class"], "xid");
        assert!(v.get("nccl").is_none());
        let v = line_json(
            "2025-01-01T00:00:00.000000001Z stderr F [default1]:n1:10:11 [1] misc/socket.cc:46 NCCL WARN socketProgressOpt: Call to recv from 10.0.0.7<4000> failed : Connection reset by peer",
        );
        assert_eq!(v["class"], "nccl_peer_connection");
        assert_eq!(v["nccl"]["peer"], "10.0.0.7");
        assert_eq!(v["nccl"]["local_rank"], 1);
        assert_eq!(v["nccl"]["device"], 1);
    }
}
