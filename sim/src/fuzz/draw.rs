//! Drawing one world from a seed, as scenario TOML (so that a failing world is its own reproducer):
//! fabric and link layer, 1–8 GPUs and 1–8 NICs per node, several GPU models, noise 0.5–3, jobs
//! from one GPU to every node, the behaviour and network options, and 0–3 faults of any catalog
//! kind on targets that exist, sometimes at the same moment.

use std::fmt::Write;

use faultline_proto::{ComponentKind, FaultClass};

use crate::noise::SeqRng;

/// GPU models the worlds use (names as NVML gives them).
const MODELS: [&str; 4] = ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA B200"];
/// NVLinks per GPU of each model (same order).
const NVLINKS: [u32; 4] = [18, 18, 12, 18];

struct Rng(SeqRng);

impl Rng {
    fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.unit() * (hi - lo)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

struct JobDraw {
    id: String,
    /// Host indexes (by placement order; the TOML uses `nodes = N`, placement is the parser's).
    nodes: u32,
    gpus: u32,
    start_s: f64,
    end_s: f64,
}

/// The scenario TOML of world `seed`.
pub fn world_toml(seed: u64) -> String {
    let mut r = Rng(SeqRng::new(seed, 0xf022));
    let rail = r.chance(0.4);
    let roce = r.chance(0.4);
    let gpn = r.pick(&[1u32, 2, 4, 8, 8, 8, 8]);
    let nics = r.pick(&[1u32, 2, 4, 8, 8, 8]);
    let mi = r.below(MODELS.len() as u64) as usize;
    // Modest clusters keep a world near a second; one in ten is larger, for jobs of many nodes.
    let nodes = if r.chance(0.1) { 24 + r.below(41) as u32 } else { 2 + r.below(13) as u32 };
    let per_leaf = r.pick(&[2u32, 4, 8, 16]).min(nodes.max(1));
    let noise = (r.range(0.5, 3.0) * 10.0).round() / 10.0;
    let duration = 1200.0 + 300.0 * r.below(4) as f64;
    let mut t = String::new();
    let _ = writeln!(t, "# World {seed} of a `faultline sim fuzz` campaign. Reproduce: faultline sim run THIS.toml");
    let _ = writeln!(
        t,
        "name = \"fuzz-{seed}\"\nseed = {seed}\nduration_s = {duration}\ninterval_s = 10\nnoise = {noise}\n"
    );
    let _ = writeln!(t, "[cluster]\nfabric = \"{}\"\nnodes = {nodes}", if rail { "rail" } else { "tor" });
    if !rail {
        let _ = writeln!(t, "nodes_per_leaf = {per_leaf}");
    }
    let _ = writeln!(
        t,
        "spines = 2\ngpus_per_node = {gpn}\nnics_per_node = {nics}\ngpu_model = \"{}\"\nnvlinks_per_gpu = {}\nlink_layer = \"{}\"",
        MODELS[mi],
        if gpn == 1 { 0 } else { NVLINKS[mi] },
        if roce { "ethernet" } else { "infiniband" }
    );
    // Half the worlds run agents that also report their management and storage netdevs: taken from
    // the seed, not drawn, so that every other draw of a seed's world stays what it was.
    let _ = writeln!(t, "nonfabric_netdevs = {}\n", seed % 2 == 1);
    let _ = writeln!(t, "[behaviour]\nprogress_api_share = {:.2}", r.pick(&[0.1, 0.25, 0.25, 0.5]));
    if r.chance(0.3) {
        let _ = writeln!(t, "nccl_timeout_s = {}", r.pick(&[300.0, 1800.0]));
    }
    let _ =
        writeln!(t, "\n[network]\nlate_share = {:.3}\nlost_share = {:.3}\n", r.range(0.0, 0.03), r.range(0.0, 0.01));

    // Jobs: a share of the nodes, from one GPU to all of them.
    let mut jobs: Vec<JobDraw> = Vec::new();
    let mut free = nodes;
    for i in 0..1 + r.below(4) {
        if free == 0 {
            break;
        }
        let n = match r.below(4) {
            0 => 1,
            1 => 1 + r.below(u64::from(free.min(4))) as u32,
            _ => 1 + r.below(u64::from(free)) as u32,
        };
        let g = if n == 1 && r.chance(0.4) { 1 + r.below(u64::from(gpn)) as u32 } else { gpn };
        free -= n;
        let late = r.chance(0.2);
        let start_s = if late { (r.range(0.0, duration / 3.0) / 10.0).round() * 10.0 } else { 0.0 };
        let end_s = if r.chance(0.15) { (r.range(duration * 0.6, duration) / 10.0).round() * 10.0 } else { duration };
        jobs.push(JobDraw { id: format!("job-{i}"), nodes: n, gpus: g, start_s, end_s });
    }
    for j in &jobs {
        let sched = r.pick(&["slurm", "slurm", "kubernetes", "torchrun"]);
        let _ = writeln!(
            t,
            "[[job]]\nid = \"{}\"\nnodes = {}\ngpus_per_node = {}\nstep_time_s = {:.2}\nstart_s = {}\nend_s = {}\nscheduler = \"{sched}\"\n",
            j.id,
            j.nodes,
            j.gpus,
            r.range(0.3, 6.0),
            j.start_s,
            j.end_s
        );
    }

    // Faults: 0–3, any kind; a quarter of multi-fault worlds put them in the same minute.
    let count = r.pick(&[0u64, 1, 1, 1, 2, 2, 3]);
    let together = r.chance(0.25);
    let base = (r.range(400.0, duration - 700.0) / 10.0).round() * 10.0;
    let leaves = if rail { nics } else { nodes.div_ceil(per_leaf) };
    for _ in 0..count {
        let mut kind = r.pick(FaultClass::ALL);
        if kind.target_kind() == ComponentKind::Nvlink && gpn == 1 {
            kind = FaultClass::GpuLost;
        }
        let at_s =
            if together { base + r.below(60) as f64 } else { (r.range(400.0, duration - 700.0) / 10.0).round() * 10.0 };
        let host = |r: &mut Rng| format!("node-{:04}", r.below(u64::from(nodes)));
        let target = match kind.target_kind() {
            ComponentKind::Gpu => format!("{}/gpu{}", host(&mut r), r.below(u64::from(gpn))),
            ComponentKind::Nvlink => {
                format!("{}/gpu{}/nvlink{}", host(&mut r), r.below(u64::from(gpn)), r.below(u64::from(NVLINKS[mi])))
            }
            ComponentKind::Nic => format!("{}/nic:mlx5_{}", host(&mut r), r.below(u64::from(nics))),
            ComponentKind::Disk => format!("{}/disk:nvme0n1", host(&mut r)),
            ComponentKind::Agent => format!("{}/agent", host(&mut r)),
            ComponentKind::Switch => format!("switch:leaf-{:02}", r.below(u64::from(leaves))),
            ComponentKind::Node | ComponentKind::Rank => host(&mut r),
            ComponentKind::Job => {
                let running: Vec<&JobDraw> =
                    jobs.iter().filter(|j| j.start_s <= at_s && at_s + 1.0 < j.end_s).collect();
                match running.get(r.below(running.len().max(1) as u64) as usize) {
                    Some(j) => format!("job:{}", j.id),
                    None => {
                        kind = FaultClass::HostMce;
                        host(&mut r)
                    }
                }
            }
        };
        let dur = if r.chance(0.3) { 0.0 } else { (r.range(150.0, 900.0) / 10.0).round() * 10.0 };
        let _ = writeln!(t, "[[fault]]\nkind = \"{kind}\"\ntarget = \"{target}\"\nat_s = {at_s}\nduration_s = {dur}\n");
    }
    t
}
