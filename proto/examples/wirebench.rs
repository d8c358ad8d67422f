//! The compact codec alone, on one healthy 8-GPU node's report, in a loop: encode, prost decode,
//! decode (prost + from the messages) and validate, in µs per report. Quicker to read than the
//! simulator's ingest bench when working on `wire/`; uses the system allocator.
//! `cargo run --release -p faultline-proto --example wirebench -- 20000`

use std::time::Instant;

use faultline_proto::NodeReport;
use faultline_proto::wire;

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let json = include_str!("../src/wire/testdata/healthy-node.json");
    let r: NodeReport = match serde_json::from_str(json) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fixture: {e}");
            std::process::exit(2);
        }
    };
    let bytes = wire::encode(&r);
    let time = |name: &str, f: &mut dyn FnMut()| {
        for _ in 0..n / 10 {
            f();
        }
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        println!("  {name:<30} {:>8.2} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    };
    println!("{} B compact, {n} rounds", bytes.len());
    time("encode", &mut || drop(std::hint::black_box(wire::encode(std::hint::black_box(&r)))));
    time("prost decode", &mut || {
        drop(std::hint::black_box(<wire::Report as prost::Message>::decode(std::hint::black_box(&bytes[..]))))
    });
    time("decode", &mut || drop(std::hint::black_box(wire::decode(std::hint::black_box(&bytes)))));
    time("validate", &mut || drop(std::hint::black_box(std::hint::black_box(&r).validate())));
}
