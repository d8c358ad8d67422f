//! Where the bytes of a compact report go: per part of the message, averaged over a scenario's
//! reports after its first minute. `cargo run --release -p faultline-sim --example wirebytes -- sim/scenarios/smoke.toml 120`

use faultline_proto::wire::Report;
use prost::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("sim/scenarios/smoke.toml");
    let secs: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(120);
    let sc = faultline_sim::Scenario::from_path(std::path::Path::new(path)).expect("scenario");
    let mut w = faultline_sim::World::new(&sc, 1_700_000_000_000);
    let mut parts: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut n = 0u64;
    while w.t_ms < secs * 1000 {
        for o in w.step() {
            if w.t_ms < 60_000 {
                continue;
            }
            let b = faultline_proto::wire::encode(&o.report);
            let r = Report::decode(b.as_slice()).expect("decode");
            n += 1;
            *parts.entry("total").or_default() += b.len() as u64;
            *parts.entry("strings").or_default() += r.strings.iter().map(|s| s.len() as u64 + 2).sum::<u64>();
            *parts.entry("host").or_default() += r.host.as_ref().map_or(0, |h| h.encoded_len() as u64);
            *parts.entry("jobs").or_default() += r.jobs.iter().map(|x| x.encoded_len() as u64).sum::<u64>();
            *parts.entry("events").or_default() += r.events.iter().map(|x| x.encoded_len() as u64).sum::<u64>();
            *parts.entry("disks").or_default() += r.disks.iter().map(|x| x.encoded_len() as u64).sum::<u64>();
            *parts.entry("nics").or_default() += r.nics.iter().map(|x| x.encoded_len() as u64).sum::<u64>();
            for g in &r.gpus {
                *parts.entry("gpus").or_default() += g.encoded_len() as u64;
                *parts.entry("gpus.nvlinks").or_default() += g.nvlinks.as_ref().map_or(0, |x| x.encoded_len() as u64);
                *parts.entry("gpus.processes").or_default() +=
                    g.processes.iter().map(|x| x.encoded_len() as u64).sum::<u64>();
                *parts.entry("gpus.pcie").or_default() += g.pcie.as_ref().map_or(0, |x| x.encoded_len() as u64);
                *parts.entry("gpus.clock_events").or_default() +=
                    (g.clock_event_keys.len() * 2 + g.clock_event_values.len() * 6) as u64;
            }
        }
    }
    println!("{n} reports");
    for (k, v) in parts {
        println!("{k:20} {:8.0} B", v as f64 / n.max(1) as f64);
    }
}
