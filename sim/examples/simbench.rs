//! Measures the simulator alone (no analyzer): physics, report building and JSON per round; then
//! the cost per report of each encoding both ways (encode; decode + validation, as ingest does).
//! `cargo run --release -p faultline-sim --example simbench -- sim/scenarios/scale-16k.toml 120`

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("sim/scenarios/scale-16k.toml");
    let secs: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let sc = match faultline_sim::Scenario::from_path(std::path::Path::new(path)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let mut w = faultline_sim::World::new(&sc, 1_700_000_000_000);
    eprintln!("world built in {:.2} s", t0.elapsed().as_secs_f64());
    let (mut step, mut json, mut n, mut bytes) = (Duration::ZERO, Duration::ZERO, 0u64, 0u64);
    let mut sample = Vec::new();
    while w.t_ms < secs * 1000 {
        let a = Instant::now();
        let out = w.step();
        step += a.elapsed();
        let b = Instant::now();
        for o in &out {
            bytes += serde_json::to_vec(&o.report).map(|v| v.len() as u64).unwrap_or(0);
        }
        json += b.elapsed();
        n += out.len() as u64;
        // Up to 2,000 reports of the first 64 nodes, over every round: deltas need a node's
        // previous report.
        if sample.len() < 2000 {
            sample.extend(out.into_iter().map(|o| o.report).filter(|r| {
                r.node.trim_start_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().is_ok_and(|i| i < 64)
            }));
        }
    }
    encodings(&sample);
    let rounds = (secs as f64 / sc.interval_s).max(1.0);
    println!(
        "{n} reports, {:.1} KiB avg; per round: step {:.1} ms, json {:.1} ms; per report: step {:.1} us, json {:.1} us; peak RSS {} MiB",
        bytes as f64 / n.max(1) as f64 / 1024.0,
        step.as_secs_f64() * 1000.0 / rounds,
        json.as_secs_f64() * 1000.0 / rounds,
        step.as_secs_f64() * 1e6 / n.max(1) as f64,
        json.as_secs_f64() * 1e6 / n.max(1) as f64,
        faultline_sim::report::peak_rss_bytes() >> 20
    );
}

/// Per report, over `reports`: bytes, encode, and decode + validation, for JSON and the compact
/// encoding, full and as deltas (each node's report against its previous one, as agents send them;
/// the sample must hold several rounds for deltas to show).
fn encodings(reports: &[faultline_proto::NodeReport]) {
    use faultline_analyzer::ingest::{Bases, Encoding, decode_any};
    use faultline_proto::wire::delta::Sender;
    let n = reports.len().max(1) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    for enc in [Encoding::Json, Encoding::Protobuf, Encoding::Delta] {
        let mut senders: std::collections::HashMap<String, Sender> = Default::default();
        let t0 = Instant::now();
        // (body, the encoding it went in: a delta sender sends some reports in full)
        let bodies: Vec<(Vec<u8>, Encoding)> = reports
            .iter()
            .map(|r| match enc {
                Encoding::Json => (serde_json::to_vec(r).unwrap_or_default(), enc),
                Encoding::Protobuf => (faultline_proto::wire::encode(r), enc),
                Encoding::Delta => {
                    let full = faultline_proto::wire::encode(r);
                    let s = senders.entry(r.node.clone()).or_insert_with(|| Sender::new(30));
                    match s.delta(&r.node, r.seq, &full) {
                        Some(d) => {
                            s.acknowledged(r.seq, full, true);
                            (d, Encoding::Delta)
                        }
                        None => {
                            s.acknowledged(r.seq, full.clone(), false);
                            (full, Encoding::Protobuf)
                        }
                    }
                }
            })
            .collect();
        let enc_t = t0.elapsed();
        let bases = Bases::default();
        let t1 = Instant::now();
        let ok = bodies
            .iter()
            .zip(reports)
            .filter(|((b, e), r)| match decode_any(b, *e, &bases) {
                Ok(mut d) => {
                    if let Some(c) = d.take_compact() {
                        bases.keep(&r.node, r.seq, c);
                    }
                    true
                }
                Err(_) => false,
            })
            .count();
        let dec_t = t1.elapsed();
        let t2 = Instant::now();
        for r in reports {
            let _ = r.validate();
        }
        let val_t = t2.elapsed();
        let size = bodies.iter().map(|(b, _)| b.len()).sum::<usize>() as f64 / n;
        println!(
            "{enc:?}: {size:.0} B/report; encode {:.1} us, decode+validate {:.1} us (validate alone {:.1} us); {ok}/{} decoded",
            us(enc_t),
            us(dec_t),
            us(val_t),
            reports.len()
        );
    }
}
