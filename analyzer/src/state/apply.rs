//! Applying one report's samples and events to the state: GPUs, NICs, host, jobs and ranks. Split
//! from `state.rs` so the types stay readable next to what fills them.

use super::*;

pub(super) fn apply_event(node: &mut NodeState, e: &faultline_proto::Event) {
    if let Some(c) = &e.collective {
        super::comm::record(node, e, c); // collective evidence (detect/nccl.rs reads it)
    }
    let ev = StoredEvent {
        ts: e.ts_ms,
        source: e.source,
        class: e.class,
        component: e.component.clone().filter(|c| !c.is_empty()),
        xid: e.xid,
        pid: e.pid.or_else(|| killed_pid(&e.message)),
        count: e.count,
        message: e.message.chars().take(200).collect(),
    };
    let gpu_idx = ev
        .component
        .as_deref()
        .and_then(|c| c.strip_prefix("gpu"))
        .and_then(|i| i.parse::<u32>().ok())
        .or_else(|| e.device.as_deref().and_then(|d| gpu_by_pci(node, d)));
    // XIDs also go to the GPU they name.
    if let (Some(xid), Some(idx)) = (e.xid, gpu_idx) {
        let g = node.gpus.entry(idx).or_default();
        let class = faultline_proto::xid::classify_event(xid, &e.message);
        push(&mut g.xids, XidSeen { ts: e.ts_ms, xid, caused_by: e.caused_by_xid, class }, MAX_POINTS);
        if xid == 79 {
            g.fell_off_at = Some(e.ts_ms);
        }
    }
    if let Some(idx) = gpu_idx {
        let g = node.gpus.entry(idx).or_default();
        match ev.class {
            EventClass::GpuFallenOffBus | EventClass::GpuLost => {
                g.lost_since.get_or_insert(e.ts_ms);
                if ev.class == EventClass::GpuFallenOffBus {
                    g.fell_off_at = Some(e.ts_ms);
                }
            }
            EventClass::EccDbe => g.ecc_dbe_event_at = Some(e.ts_ms),
            EventClass::PcieAerCorrected | EventClass::PcieAerUncorrected => {
                push(&mut g.aer, (e.ts_ms, ev.class == EventClass::PcieAerUncorrected), MAX_POINTS);
            }
            _ => {}
        }
    }
    if let Some(c) = ev.component.as_deref() {
        if let Some(dev) = c.strip_prefix("disk:") {
            if ev.class == EventClass::IoError {
                push(&mut node.disks.entry(dev.to_string()).or_default().errors, e.ts_ms, MAX_POINTS);
            }
        }
        if let Some(nic) = c.strip_prefix("nic:") {
            // Kernel lines name a RoCE port by its netdev: find the port behind it.
            let name = if node.nics.contains_key(nic) {
                nic.to_string()
            } else {
                node.nics
                    .iter()
                    .find(|(_, n)| n.netdev.as_deref() == Some(nic))
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| nic.to_string())
            };
            let st = node.nics.entry(name).or_default();
            match ev.class {
                // A port never seen up is not wired: its link events say nothing.
                EventClass::NicLinkDown if st.down_since.is_none() && st.ever_up => {
                    st.down_since = Some(e.ts_ms);
                    push(&mut st.downs, e.ts_ms, MAX_POINTS);
                }
                EventClass::NicLinkUp if st.down_since.is_some_and(|t| t <= e.ts_ms) => {
                    st.down_since = None;
                    st.up_at = Some(e.ts_ms);
                }
                EventClass::NicDriverError | EventClass::NetdevWatchdog | EventClass::IbCompletionError => {
                    push(&mut st.driver_events, (e.ts_ms, ev.class), MAX_POINTS);
                }
                _ => {}
            }
        }
    }
    if let (EventClass::CgroupOomKill, Some(pid)) = (ev.class, ev.pid) {
        push(&mut node.cgroup_ooms, (ev.ts, pid), MAX_POINTS);
    }
    push(&mut node.events, ev, MAX_EVENTS_PER_NODE);
}

/// `… Killed process 4242 (python) …` → 4242: the OOM killer's lines name the pid in words.
pub fn killed_pid(msg: &str) -> Option<u32> {
    let i = msg.find("Killed process ")?;
    msg[i + 15..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The GPU whose PCI address a kernel line names (`0000:3b:00`, `0000:3b:00.0`, `3b:00.0`).
fn gpu_by_pci(node: &NodeState, dev: &str) -> Option<u32> {
    let key = |s: &str| {
        let s = s.to_ascii_lowercase();
        let s = s.split('.').next().unwrap_or("").to_string();
        // Keep bus:device, drop the domain whatever its width.
        let parts: Vec<&str> = s.split(':').collect();
        parts[parts.len().saturating_sub(2)..].join(":")
    };
    let want = key(dev);
    node.gpus.iter().find(|(_, g)| g.pci_bus_id.as_deref().is_some_and(|p| key(p) == want)).map(|(i, _)| *i)
}

pub(super) fn apply_host(node: &mut NodeState, h: Option<&HostSample>, ts: i64) {
    let Some(h) = h else { return };
    let fan_bad = h.fans.iter().any(|f| f.alarm || fan_rpm_bad(f.rpm, f.min_rpm));
    let mem = match (h.mem_total_bytes, h.mem_used_bytes, h.mem_available_bytes) {
        (Some(t), _, Some(a)) if t > 0 => Some(1.0 - a as f64 / t as f64),
        (Some(t), Some(u), _) if t > 0 => Some(u as f64 / t as f64),
        _ => None,
    };
    push(
        &mut node.host_points,
        HostPoint { ts, cpu: h.cpu_util_pct, cpu_non_job: h.cpu_non_job_pct, mem_used_frac: mem, fan_bad },
        HOST_POINTS,
    );
    node.uptime_s = h.uptime_s;
    if node.host.as_ref().is_none_or(|o| o.addrs != h.addrs) {
        node.addr_changes += 1;
    }
    node.host = Some(h.clone());
}

/// A fan turning slower than its hwmon minimum, or not at all, has failed.
pub fn fan_rpm_bad(rpm: Option<f64>, min: Option<f64>) -> bool {
    match (rpm, min) {
        (Some(r), Some(m)) if m > 0.0 => r < m,
        (Some(r), _) => r <= 0.0,
        _ => false,
    }
}

pub(super) fn apply_gpus(node: &mut NodeState, gpus: &[GpuSample], ts: i64) {
    node.gpus_reported = gpus.len();
    for g in gpus {
        let st = node.gpus.entry(g.index).or_default();
        st.missing_since = None;
        st.state = g.state;
        if g.pci_bus_id.is_some() {
            set_str(&mut st.pci_bus_id, g.pci_bus_id.as_deref());
        }
        st.pci_present = g.pci_present;
        // NVML's own words: "GPU is lost" is lost; any other error (a fallen-off GPU often answers
        // "Unknown Error") leaves the GPU unresponsive until the kernel log or PCI says more.
        let err = g.nvml_error.as_deref().filter(|e| !e.to_ascii_lowercase().contains("not supported"));
        set_str(&mut st.nvml_error, err);
        let lost_word = err.is_some_and(|e| e.to_ascii_lowercase().contains("lost"));
        let state = match g.state {
            WireGpuState::Ok if lost_word => WireGpuState::Lost,
            WireGpuState::Ok if err.is_some() => WireGpuState::Unresponsive,
            s => s,
        };
        match state {
            WireGpuState::Lost => {
                st.lost_since.get_or_insert(ts);
            }
            WireGpuState::Unresponsive => {
                st.unresponsive_since.get_or_insert(ts);
            }
            WireGpuState::Ok => {
                st.lost_since = None;
                st.unresponsive_since = None;
            }
        }
        if state == WireGpuState::Ok {
            let (thermal_share, brake_share) = clock_shares(st, &g.clock_event_ns, ts);
            let has = |r: &str| g.throttle_reasons.iter().any(|x| x == r);
            let pcie = g.pcie.as_ref();
            push(
                &mut st.points,
                GpuPoint {
                    ts,
                    temp_c: g.temp_c,
                    sm_mhz: g.sm_clock_mhz,
                    sm_max_mhz: g.sm_clock_max_mhz,
                    util: g.util_gpu_pct,
                    power_w: g.power_w,
                    power_limit_w: g.power_limit_w,
                    thermal: has("hw_thermal_slowdown") || has("sw_thermal_slowdown"),
                    power_brake: has("hw_power_brake_slowdown"),
                    pcie_width: pcie.and_then(|p| Some((p.width?, p.max_width?))),
                    pcie_gen: pcie.and_then(|p| Some((p.generation?, p.max_generation?))),
                    thermal_share,
                    brake_share,
                },
                GPU_POINTS,
            );
            trim(&mut st.points, ts, |p| p.ts);
            if let Some(v) = g.ecc.sbe_volatile {
                st.sbe.update(ts, v);
            }
            if let Some(v) = g.ecc.dbe_volatile {
                if st.dbe.update(ts, v).is_some_and(|d| d > 0) {
                    st.dbe_at = Some(ts);
                }
            }
            if let Some(v) = g.ecc.sram_uncorrectable {
                if st.sram.update(ts, v).is_some_and(|d| d > 0) {
                    st.sram_at = Some(ts);
                }
            }
            if let Some(v) = pcie.and_then(|p| p.replay_count) {
                st.pcie_replay.update(ts, v);
            }
            if let Some(rr) = &g.row_remap {
                st.remap_pending = rr.pending;
                st.remap_failure = rr.failure;
            }
            let nvl = g
                .nvlinks
                .iter()
                .filter_map(|l| Some(l.tx_bytes?.saturating_add(l.rx_bytes?)))
                .fold(None, |a: Option<u64>, b| Some(a.unwrap_or(0).saturating_add(b)));
            if let Some(total) = nvl {
                st.nvlink_traffic.update(ts, total, NVLINK_TRAFFIC_FLOOR_BYTES_PER_S);
            }
            if st.nvlinks.is_empty() {
                st.nvlinks.reserve_exact(g.nvlinks.len());
            }
            for l in &g.nvlinks {
                let ls = st.nvlinks.entry_or_default(l.link);
                if l.active {
                    ls.seen_active = true;
                    ls.inactive_since = None;
                } else {
                    ls.inactive_since.get_or_insert(ts);
                }
                ls.active = l.active;
                if let Some(v) = l.crc_errors {
                    ls.crc.update(ts, v);
                }
                if let Some(v) = l.replay_errors {
                    ls.replay.update(ts, v);
                }
                if let Some(v) = l.recovery_errors {
                    ls.recovery.update(ts, v);
                }
            }
        }
        st.seen = true;
    }
    // GPUs the node had and no longer lists have gone missing (fell off the bus).
    for (idx, st) in node.gpus.iter_mut() {
        if !gpus.iter().any(|g| g.index == *idx) && st.seen {
            st.missing_since.get_or_insert(ts);
        }
    }
}

/// Every reason `clock_shares` reads (NVML's reason names): what `GpuState::clock_events` keeps, in
/// this order. The clocks are held down for heat by the first two (`THERMAL`), for the power brake
/// by the last (`BRAKE`).
pub const CLOCK_REASONS: [&str; 3] = ["hw_thermal_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"];
const THERMAL: std::ops::Range<usize> = 0..2;
const BRAKE: std::ops::Range<usize> = 2..3;

/// Share of the interval since the previous sample that the clocks were held for heat and for the
/// power brake, from NVML's cumulative violation times. `None` without counters (or on the first).
/// Only the reasons read here are kept from one sample to the next (`CLOCK_REASONS`).
fn clock_shares(st: &mut GpuState, now: &faultline_proto::CounterMap, ts: i64) -> (Option<f64>, Option<f64>) {
    if now.is_empty() {
        st.clock_events = None;
        return (None, None);
    }
    let cur: [Option<u64>; CLOCK_REASONS.len()] = std::array::from_fn(|i| now.get(CLOCK_REASONS[i]).copied());
    let prev = st.clock_events.replace((ts, cur));
    let Some((pt, prev)) = prev.filter(|(pt, _)| *pt < ts) else { return (None, None) };
    let span_ns = (ts - pt) as f64 * 1e6;
    let share = |reasons: std::ops::Range<usize>| -> Option<f64> {
        let mut any = false;
        let mut max = 0.0f64;
        for i in reasons {
            if let (Some(a), Some(b)) = (prev[i], cur[i]) {
                any = true;
                // A reset (driver reload) restarts the count: the new value is the time since.
                let d = if b >= a { b - a } else { b };
                max = max.max(d as f64 / span_ns);
            }
        }
        any.then_some(max.min(1.0))
    };
    (share(THERMAL), share(BRAKE))
}

pub(super) fn apply_nics(node: &mut NodeState, nics: &[NicSample], ts: i64) {
    super::comm::record_addrs(node, nics); // addresses for peer lookup (detect/nccl.rs)
    for n in nics {
        let st = slot(&mut node.nics, &n.name);
        st.fabric = n.is_fabric();
        if n.netdev.is_some() {
            set_str(&mut st.netdev, n.netdev.as_deref());
        }
        let down = n.carrier == Some(false)
            || n.operstate.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("down") || s == "lowerlayerdown")
            || n.ib_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("down"))
            || n.ib_phys_state.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("disabled") || s == "Polling");
        if !down {
            st.ever_up = true;
        }
        if down {
            // A port down since it was first seen (unwired, `ifb0`, a spare) is silence, not a fault.
            if st.down_since.is_none() && st.ever_up {
                st.down_since = Some(ts);
                push(&mut st.downs, ts, MAX_POINTS);
            }
        } else if st.down_since.is_some() {
            st.down_since = None;
            st.up_at = Some(ts);
        }
        let mut all = [None::<u64>; NIC_COUNTERS.len()];
        let mut raw = [None::<u64>; NIC_COUNTERS.len()];
        st.saturated.clear();
        // The report's counters come in byte order, as `NIC_COUNTERS` is: one pass over both
        // finds each known name, instead of a search of the list per counter.
        let mut at = 0;
        for (key, v) in &n.counters {
            let key = key.as_str();
            while at < NIC_COUNTERS.len() && NIC_COUNTERS[at] < key {
                at += 1;
            }
            if at == NIC_COUNTERS.len() {
                break;
            }
            if NIC_COUNTERS[at] != key {
                continue;
            }
            let (i, name) = (at, NIC_COUNTERS[at]);
            raw[i] = Some(*v);
            let c = st.counters.slot(i);
            // Stuck at its width's maximum: no delta, unknown rather than zero.
            if n.saturated.iter().any(|x| x == name) || faultline_proto::counters::at_max(NIC_COUNTER_MAX[i], *v) {
                c.mark_saturated();
                st.saturated.push(name);
                continue;
            }
            all[i] = c.update(ts, *v);
        }
        let deltas: [Option<u64>; 6] = CONGESTION_AT.map(|i| all[i]);
        // Congestion per byte sent, only while the port carries traffic: a job that stalls and
        // resumes changes wait and bytes together, a congested fabric changes the ratio.
        let bytes = deltas[0].or(deltas[1]).unwrap_or(0);
        // A saturated `port_xmit_wait` is unknown, not zero: the point keeps the ECN/CNP marks (RoCE)
        // and no wait. A port that can tell neither (IB with its wait counter at the maximum) adds no
        // point, so it neither votes for nor against a congested leaf.
        let wait_known = !st.saturated.iter().any(|x| *x == "port_xmit_wait");
        let wait = deltas[2].filter(|_| wait_known);
        let marks_known = deltas[3..].iter().any(Option::is_some);
        if bytes >= CONGESTION_MIN_BYTES && !down && (wait.is_some() || marks_known) {
            let marks = deltas[3].unwrap_or(0) + deltas[4].unwrap_or(0) + deltas[5].unwrap_or(0);
            push(
                &mut st.congestion,
                CongestionPoint {
                    ts,
                    wait_per_mb: wait.map(|w| w as f64 * 1e6 / bytes as f64),
                    marks,
                    marks_per_mb: marks as f64 * 1e6 / bytes as f64,
                },
                COUNTER_POINTS,
            );
        }
        // Data bytes both ways: the netdev names, else the IB data counters (already in bytes).
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        let moved = sum(raw[RX_BYTES_AT], raw[TX_BYTES_AT])
            .or_else(|| sum(n.counters.get("port_rcv_data").copied(), raw[PORT_XMIT_DATA_AT]));
        if let Some(b) = moved.filter(|_| !down) {
            st.traffic.update(ts, b, TRAFFIC_FLOOR_BYTES_PER_S);
        }
        if let Some(v) = n.carrier_changes {
            st.carrier_changes.update(ts, v);
        }
        let rate = n.rate_gbps.or(n.speed_mbps.map(|m| m as f64 / 1000.0));
        if let Some(rate) = rate {
            if !down {
                push(&mut st.rates, (ts, rate), GPU_POINTS);
            }
        }
        set_str(&mut st.link_layer, n.link_layer.as_deref());
        set_str(&mut st.state_word, n.ib_state.as_deref().or(n.operstate.as_deref()));
        st.max_rate_gbps = n.max_rate_gbps;
    }
}

/// Whether `j` (as `node` reports it) changes what the job is, not only how it runs: a rank exited,
/// vanished from the node or reports a non-finite loss, or the scheduler ended the job. Read before
/// the sample is applied.
pub(super) fn job_news(jobs: &BTreeMap<String, JobState>, node: &str, j: &JobSample) -> bool {
    let listed_before = jobs.get(&j.job_id).and_then(|s| s.by_node.get(node)).map_or(0, Vec::len);
    sample_news(j, listed_before)
}

/// `job_news` for a sample whose node listed `listed_before` ranks of the job last time.
fn sample_news(j: &JobSample, listed_before: usize) -> bool {
    j.ranks.len() < listed_before
        || j.sched_state.is_some_and(|s| s.is_ended())
        || j.ranks.iter().any(|r| {
            r.exit_code.is_some()
                || matches!(r.state, ProcState::Exited | ProcState::Zombie)
                || r.progress.as_ref().and_then(|p| p.loss).is_some_and(|l| !l.is_finite())
        })
}

/// Applies one job's sample from `host`; returns its news (`job_news`, as it was before).
pub(super) fn apply_job(
    jobs: &mut BTreeMap<String, JobState>,
    host: &str,
    j: &JobSample,
    ts: i64,
    interval: i64,
) -> bool {
    // Looked up by name first: the key is copied only for a job new to the analyzer.
    if !jobs.contains_key(&j.job_id) {
        jobs.insert(j.job_id.clone(), JobState { id: j.job_id.clone(), first_seen_ms: ts, ..Default::default() });
    }
    let job = jobs.get_mut(&j.job_id).expect("inserted above when missing");
    let before = job.by_node.get(host);
    let news = sample_news(j, before.map_or(0, Vec::len));
    job.last_seen_ms = job.last_seen_ms.max(ts);
    job.ended_ms = None;
    if j.world_size.is_some() {
        job.world_size = j.world_size;
    }
    if let Some(st) = j.sched_state {
        job.sched_state = Some(st);
        job.sched_exit_code = j.sched_exit_code.or(job.sched_exit_code);
        if st.is_ended() {
            job.sched_ended_ms.get_or_insert(ts);
        } else {
            job.sched_ended_ms = None;
        }
    }
    // Ranks this node ran and no longer lists: their processes are gone.
    let same = before.is_some_and(|b| b.iter().copied().eq(j.ranks.iter().map(|r| r.rank)));
    if !same {
        let listed: Vec<u32> = j.ranks.iter().map(|r| r.rank).collect();
        if let Some(before) = job.by_node.insert(host.to_string(), listed.clone()) {
            for k in before.iter().filter(|k| !listed.contains(k)) {
                if let Some(rs) = job.ranks.get_mut(k).filter(|rs| rs.node == host && rs.gone_ms.is_none()) {
                    rs.gone_ms = Some(ts);
                }
            }
        }
    }
    for r in &j.ranks {
        let rs = job.ranks.entry(r.rank).or_default();
        if rs.node != host || rs.gpus != r.gpus || rs.nic != r.nic {
            job.placement_dirty = true;
        }
        if rs.gone_ms.is_some() && rs.node == host && r.exit_code.is_none() && r.state != ProcState::Exited {
            // The rank came back on this node: a restarted job with the same id.
            rs.exit_code = None;
            rs.exited_ms = None;
        }
        if rs.node != host {
            rs.node = host.to_string();
        }
        if rs.gpus != r.gpus {
            rs.gpus.clone_from(&r.gpus);
        }
        set_str(&mut rs.nic, r.nic.as_deref());
        rs.pid = r.pid.or(rs.pid);
        rs.state = r.state;
        rs.seen_ms = ts;
        rs.gone_ms = None;
        rs.interval_ms = interval;
        if let Some(w) = r.io_write_bytes {
            rs.io.update(ts, w, WRITE_FLOOR_BYTES_PER_S);
        }
        let code = r.exit_code.or(r.progress.as_ref().and_then(|p| p.exit_code));
        if code.is_some() || r.state == ProcState::Exited {
            if rs.exited_ms.is_none() {
                rs.exited_ms = Some(ts);
            }
            rs.exit_code = code.or(rs.exit_code);
        } else {
            rs.exit_code = None;
            rs.exited_ms = None;
        }
        if let Some(p) = &r.progress {
            if rs.step != Some(p.step) || rs.last_progress_ms != Some(p.last_progress_ms) {
                if let Some(st) = p.step_time_ms {
                    push(&mut rs.step_times, st, RANK_POINTS);
                }
                if let Some(c) = p.compute_ms {
                    push(&mut rs.compute, c, RANK_POINTS);
                }
                if let Some(g) = p.grad_norm {
                    push(&mut rs.grad_norms, g, RANK_POINTS);
                }
            }
            // The gradient norm belongs to `loss_step` (or, from agents that do not say, to `step`).
            if let Some(g) = p.grad_norm.filter(|g| g.is_finite()) {
                let at = p.loss_step.unwrap_or(p.step);
                if rs.grads.back().is_none_or(|(s, _)| *s != at) {
                    push(&mut rs.grads, (at, g), GRAD_POINTS);
                }
            }
            rs.reports_loss = p.loss.is_some() || p.nonfinite_loss;
            // A pause the job came back from by itself (no hang was called on it) is its own pause
            // length: later pauses as long are no hang.
            if let Some(prev) = rs.last_progress_ms.filter(|_| job.hung_since.is_none())
                && rs.step.is_some_and(|s| p.step > s)
            {
                rs.longest_pause_ms = rs.longest_pause_ms.max(p.last_progress_ms - prev);
            }
            rs.step = Some(p.step);
            rs.last_progress_ms = Some(p.last_progress_ms);
            rs.status = p.status;
            if p.status == ProgressStatus::Exited {
                rs.exited_ms.get_or_insert(ts);
                if p.exit_code.is_some() {
                    rs.exit_code = p.exit_code;
                }
            }
            if p.nonfinite_loss {
                rs.nonfinite_since.get_or_insert(ts);
            } else {
                rs.nonfinite_since = None;
            }
        }
    }
    news
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_and_pci_addresses_from_kernel_lines() {
        assert_eq!(killed_pid("Memory cgroup out of memory: Killed process 4242 (python) total-vm:100kB"), Some(4242));
        assert_eq!(killed_pid("Out of memory: Killed process 77 (pt_main_thread)"), Some(77));
        assert_eq!(killed_pid("oom-kill:constraint=CONSTRAINT_MEMCG"), None);
        let mut n = NodeState::default();
        n.gpus.insert(3, GpuState { pci_bus_id: Some("00000000:3B:00.0".into()), ..Default::default() });
        assert_eq!(gpu_by_pci(&n, "0000:3b:00"), Some(3));
        assert_eq!(gpu_by_pci(&n, "0000:3b:00.0"), Some(3));
        assert_eq!(gpu_by_pci(&n, "0000:5e:00"), None);
    }

    /// A job learns its own pause length from the gaps between steps it came back from by itself,
    /// not from a gap it was declared hung in.
    #[test]
    fn a_job_learns_the_pauses_it_came_back_from() {
        use faultline_proto::{Progress, RankSample};
        let post = |step: u64, at: i64| JobSample {
            job_id: "j".into(),
            ranks: vec![RankSample {
                rank: 0,
                progress: Some(Progress { step, last_progress_ms: at, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut jobs = BTreeMap::new();
        for (step, at) in [(1, 10_000), (2, 12_000), (2, 12_000), (3, 412_000), (4, 414_000)] {
            apply_job(&mut jobs, "a", &post(step, at), at + 500, 10_000);
        }
        assert_eq!(jobs["j"].ranks[&0].longest_pause_ms, 400_000);
        jobs.get_mut("j").unwrap().hung_since = Some(414_000);
        apply_job(&mut jobs, "a", &post(5, 1_414_000), 1_414_500, 10_000);
        assert_eq!(jobs["j"].ranks[&0].longest_pause_ms, 400_000, "a hang that ended is no pause");
        // A restart counts steps from 0 again: no gap to learn.
        jobs.get_mut("j").unwrap().hung_since = None;
        apply_job(&mut jobs, "a", &post(0, 3_000_000), 3_000_500, 10_000);
        assert_eq!(jobs["j"].ranks[&0].longest_pause_ms, 400_000);
    }

    /// A RoCE port whose 32-bit `port_xmit_wait` sits at its maximum still gives its ECN/CNP marks;
    /// an IB port with the wait saturated and no ECN counters gives no point at all.
    #[test]
    fn congestion_points_treat_a_saturated_wait_as_unknown() {
        let sample = |t: u64, ecn: bool| {
            let mut counters = faultline_proto::CounterMap::new();
            counters.insert("port_xmit_data".into(), t * 20_000_000_000);
            counters.insert("port_xmit_wait".into(), u64::from(u32::MAX));
            if ecn {
                counters.insert("np_ecn_marked_roce_packets".into(), t * 1000);
            }
            NicSample {
                name: "mlx5_0".into(),
                fabric: Some(true),
                carrier: Some(true),
                saturated: vec!["port_xmit_wait".into()],
                counters,
                ..Default::default()
            }
        };
        for (ecn, want) in [(true, 3), (false, 0)] {
            let mut n = NodeState::default();
            for t in 1..=4u64 {
                apply_nics(&mut n, &[sample(t, ecn)], t as i64 * 10_000);
            }
            let st = &n.nics["mlx5_0"];
            assert_eq!(st.congestion.len(), want, "ecn counters: {ecn}");
            assert!(st.congestion.iter().all(|p| p.wait_per_mb.is_none() && p.marks == 1000));
        }
    }
}
