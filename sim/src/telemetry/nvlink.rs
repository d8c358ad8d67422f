//! NVLink data bytes per link, as NVML's `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX/RX` fields count them
//! (KiB, cumulative): they move with the collectives of a job that spans several GPUs of the node,
//! and stop dead when the job hangs in a collective (NCCL spins on the GPU and sends nothing).

use super::Load;

/// NVLink data a training rank sends per second, per direction, summed over its links (an H100 has
/// 450 GB/s per direction; tensor- and data-parallel collectives average a fraction of that over a
/// step).
pub const NVL_BUSY_BYTES_PER_S: f64 = 60.0e9;
/// NVLink data a rank sends per second in an evaluation pass: forward passes only, and the loss or
/// metric all-reduce each evaluation batch ends with (a few KiB per all-reduce, a few batches a
/// second). The lower bound, for a purely data-parallel job whose forward pass moves nothing.
pub const NVL_EVAL_BYTES_PER_S: f64 = 64.0 * 1024.0;
/// NVLink data while the job warms up (NCCL setup, weights broadcast, compile-time collectives).
pub const NVL_WARMUP_BYTES_PER_S: f64 = 1.0e6;

/// Bytes per second per direction a GPU's links carry under `load`, when `peers` ranks of its job
/// (itself included) sit on this node: a job alone on its GPU in this node moves nothing over NVLink.
pub fn rate(load: Load, peers: usize, slowdown: f64) -> f64 {
    if peers < 2 {
        return 0.0;
    }
    match load {
        Load::Busy(..) => NVL_BUSY_BYTES_PER_S / slowdown.max(1e-6),
        Load::Eval => NVL_EVAL_BYTES_PER_S,
        Load::Warmup => NVL_WARMUP_BYTES_PER_S,
        Load::Idle | Load::Spin | Load::Checkpoint | Load::Stuck => 0.0,
    }
}

/// Add `bytes_per_s` × `dt_s` to the links that are up (`up[l]`), split evenly, in whole KiB as NVML
/// counts them; `kib[l]` holds (tx, rx) in KiB. `rx_share` skews receive slightly from send.
pub fn advance(kib: &mut [[u64; 2]], up: &[bool], bytes_per_s: f64, dt_s: f64, rx_share: f64) {
    let n = up.iter().filter(|u| **u).count();
    if n == 0 || bytes_per_s <= 0.0 {
        return;
    }
    let per_link = bytes_per_s * dt_s / n as f64 / 1024.0;
    for (c, _) in kib.iter_mut().zip(up).filter(|(_, u)| **u) {
        c[0] += per_link.round() as u64;
        c[1] += (per_link * rx_share).round() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_collective_moves_nothing_and_evaluation_moves_some() {
        assert_eq!(rate(Load::Spin, 8, 1.0), 0.0);
        assert!(rate(Load::Eval, 8, 1.0) > 0.0);
        assert!(rate(Load::Busy(97.0, 50.0), 8, 1.0) > rate(Load::Eval, 8, 1.0));
        assert_eq!(rate(Load::Busy(97.0, 50.0), 1, 1.0), 0.0, "a one-GPU rank has no NVLink peer");
    }

    #[test]
    fn bytes_go_over_the_links_that_are_up() {
        let mut kib = vec![[0u64; 2]; 3];
        advance(&mut kib, &[true, false, true], 2.0 * 1024.0 * 1024.0, 1.0, 1.0);
        assert_eq!(kib, vec![[1024, 1024], [0, 0], [1024, 1024]]);
    }
}
