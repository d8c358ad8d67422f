//! Reports built in the buffers of earlier ones (`World::recycle`) are the reports built fresh: a
//! field left holding an old report's value would be a sample the node never sent. Randomized worlds
//! (faults, lost GPUs, jobs that end, nodes of other shapes) are stepped twice, once recycling each
//! report after it is sent and once not, and every report must be equal.

use faultline_proto::NodeReport;
use faultline_sim::Scenario;
use faultline_sim::fuzz::{self, draw};
use faultline_sim::world::World;

const EPOCH: i64 = 1_700_000_000_000;

fn world(seed: u64) -> (Scenario, World) {
    let sc = Scenario::parse(&draw::world_toml(seed), "w.toml").expect("a drawn world parses");
    let w = World::new(&sc, EPOCH);
    (sc, w)
}

#[test]
fn a_recycled_report_is_the_report_built_fresh() {
    let mut compared = 0usize;
    let mut with_faults = 0usize;
    // Reports of another world (other GPU and NIC counts, other jobs) go in first.
    let mut foreign: Vec<NodeReport> = Vec::new();
    for i in 0..6 {
        let seed = fuzz::world_seed(20_261_207, i);
        let (sc, mut fresh) = world(seed);
        let (_, mut reused) = world(seed);
        with_faults += usize::from(!sc.faults.is_empty());
        for r in foreign.drain(..) {
            reused.recycle(r);
        }
        let steps = (sc.duration_s as usize).min(900);
        for _ in 0..steps {
            let a = fresh.step();
            let b = reused.step();
            assert_eq!(a.len(), b.len(), "world {seed}: the same reports are sent");
            // Handed back newest first, so a node's next report is built in another node's buffers.
            for (x, y) in a.into_iter().zip(b).rev() {
                // Not `assert_eq!`: a report's debug print is tens of kilobytes.
                assert!(x.report == y.report, "world {seed}: {} seq {} differs", x.report.node, x.report.seq);
                compared += 1;
                if foreign.len() < 64 {
                    foreign.push(x.report);
                }
                reused.recycle(y.report);
            }
        }
    }
    assert!(compared > 500, "only {compared} reports compared");
    assert!(with_faults >= 3, "only {with_faults} of the worlds have faults");
}

/// With `encode_compact`, a report's buffers build the next node's report as soon as its bytes are
/// made: the bytes must be those of the report built fresh, and its heading must name it.
#[test]
fn compact_bytes_made_in_reused_buffers_are_those_of_the_fresh_report() {
    let mut compared = 0usize;
    let mut foreign: Vec<NodeReport> = Vec::new();
    for i in 0..6 {
        let seed = fuzz::world_seed(20_261_208, i);
        let (sc, mut fresh) = world(seed);
        let (_, mut reused) = world(seed);
        // Reports of another world's shape are the first buffers reused.
        for r in foreign.drain(..) {
            reused.recycle(r);
        }
        reused.encode_compact = true;
        let steps = (sc.duration_s as usize).min(900);
        for _ in 0..steps {
            let a = fresh.step();
            let b = reused.step();
            assert_eq!(a.len(), b.len(), "world {seed}: the same reports are sent");
            for (x, y) in a.into_iter().zip(b) {
                let r = &x.report;
                let h = &y.report;
                assert_eq!(
                    (&h.node, h.seq, h.timestamp_ms, h.shutdown, h.urgent),
                    (&r.node, r.seq, r.timestamp_ms, r.shutdown, r.urgent)
                );
                assert!(h.gpus.is_empty() && h.nics.is_empty() && h.jobs.is_empty(), "a heading carries no samples");
                let bytes = y.compact.expect("compact bytes are made with encode_compact");
                assert!(
                    bytes == faultline_proto::wire::encode(r),
                    "world {seed}: {} seq {} encodes differently",
                    r.node,
                    r.seq
                );
                compared += 1;
                if foreign.len() < 64 {
                    foreign.push(x.report);
                }
                // What comes back is a heading: the world does not build in it.
                reused.recycle(y.report);
            }
        }
    }
    assert!(compared > 500, "only {compared} reports compared");
}
