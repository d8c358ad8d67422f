#!/usr/bin/env python3
"""Writes the generated benchmark scenarios of sim/scenarios/ (catalog, catalog-rail, clean,
scale-16k, scale-100k). Run from the repository root: python3 sim/scenarios/gen/make_scenarios.py
Deterministic: the same script writes the same files."""

import random

OUT = "sim/scenarios/"

# ---------------------------------------------------------------- catalog (tor and rail)

CATALOG_JOBS = [
    # id, hosts, gpus_per_node, step_time_s, start_s, end_s
    ("llm-a", ["node-0000", "node-0001", "node-0002", "node-0003", "node-0008", "node-0009", "node-0010", "node-0011"], None, 2.0, None, None),
    ("llm-b", ["node-0016", "node-0017", "node-0018", "node-0019", "node-0024", "node-0025", "node-0026", "node-0027"], None, 3.0, None, None),
    ("llm-c", ["node-0004", "node-0005", "node-0012", "node-0013"], None, 1.5, None, None),
    ("solo-d", ["node-0020"], None, 1.0, None, None),
    ("half-e", ["node-0021", "node-0022"], 4, 1.2, None, None),
    ("half-f", ["node-0021", "node-0022"], 4, 0.8, None, None),
    ("churn-g", ["node-0006", "node-0007"], None, 2.5, 600, 12000),
    ("churn-h", ["node-0006", "node-0007"], None, 2.5, 12600, None),
]

# Three targets per kind, spread over jobs (llm-a/b/c multi-node, solo-d one node, half-e/f sharing
# nodes) and idle nodes (node-0014/15/23/28..31).
CATALOG_FAULTS = {
    "gpu_lost": ["node-0001/gpu3", "node-0017/gpu6", "node-0020/gpu2"],
    "gpu_hbm_uncorrectable": ["node-0009/gpu0", "node-0025/gpu7", "node-0021/gpu1"],
    "gpu_sram_uncorrectable": ["node-0012/gpu4", "node-0002/gpu5", "node-0022/gpu6"],
    "gpu_gsp_hang": ["node-0018/gpu1", "node-0010/gpu7", "node-0020/gpu5"],
    "gpu_thermal_throttle": ["node-0003/gpu2", "node-0026/gpu3", "node-0013/gpu0"],
    "gpu_power_brake": ["node-0019/gpu4", "node-0011/gpu6", "node-0021/gpu5"],
    "gpu_slow": ["node-0008/gpu1", "node-0024/gpu5", "node-0020/gpu7"],
    "gpu_ecc_sbe_storm": ["node-0000/gpu6", "node-0027/gpu0", "node-0014/gpu2"],
    "gpu_row_remap_failure": ["node-0016/gpu3", "node-0005/gpu1", "node-0022/gpu0"],
    "gpu_sdc": ["node-0001/gpu7", "node-0018/gpu2", "node-0004/gpu6"],
    "nvlink_down": ["node-0009/gpu4/nvlink3", "node-0017/gpu1/nvlink11", "node-0020/gpu0/nvlink7"],
    "nvlink_crc_storm": ["node-0025/gpu2/nvlink0", "node-0002/gpu3/nvlink15", "node-0012/gpu6/nvlink5"],
    "pcie_downtrained": ["node-0010/gpu2", "node-0019/gpu0", "node-0022/gpu7"],
    "nic_down": ["node-0003/nic:mlx5_4", "node-0024/nic:mlx5_1", "node-0005/nic:mlx5_6"],
    "nic_flap": ["node-0016/nic:mlx5_2", "node-0011/nic:mlx5_0", "node-0013/nic:mlx5_3"],
    "cable_bit_errors": ["node-0000/nic:mlx5_5", "node-0026/nic:mlx5_7", "node-0021/nic:mlx5_2"],
    "nic_speed_degraded": ["node-0027/nic:mlx5_3", "node-0008/nic:mlx5_6", "node-0004/nic:mlx5_0"],
    "leaf_switch_down": None,  # per fabric below
    "leaf_congestion": None,
    "node_down": ["node-0017", "node-0030", "node-0012"],
    "agent_down": ["node-0010/agent", "node-0026/agent", "node-0005/agent"],
    "host_fan_failure": ["node-0001", "node-0019", "node-0020"],
    "host_oom": ["node-0011", "node-0024", "node-0021"],
    "host_mce": ["node-0002", "node-0028", "node-0018"],
    "host_cpu_contention": ["node-0009", "node-0027", "node-0004"],
    "disk_failure": ["node-0003/disk:nvme0n1", "node-0016/disk:nvme0n1", "node-0013/disk:nvme0n1"],
    # Not the job the disk fault just before hit: its incident may still be open.
    "job_hang": ["job:llm-b", "job:solo-d", "job:llm-a"],
    "job_crash": ["job:llm-c", "job:half-e", "job:llm-b"],
}
LEAVES = {
    "tor": {"leaf_switch_down": ["switch:leaf-00", "switch:leaf-02", "switch:leaf-03"],
            "leaf_congestion": ["switch:leaf-01", "switch:leaf-03", "switch:leaf-02"]},
    "rail": {"leaf_switch_down": ["switch:leaf-01", "switch:leaf-04", "switch:leaf-06"],
             "leaf_congestion": ["switch:leaf-00", "switch:leaf-03", "switch:leaf-07"]},
}
# Faults only collective-communication evidence shows (training logs), after the others so that every
# earlier fault keeps its time. NIC targets talk to two ring peers (jobs of 4 and 8 nodes); the GPUs
# run ranks of multi-node jobs, which run PyTorch's NaN check (nan_check_share = 1 below).
COLLECTIVE_FAULTS = {
    "switch_silent_drop": None,  # per fabric below
    "nic_connection_resets": ["node-0002/nic:mlx5_3", "node-0018/nic:mlx5_5", "node-0012/nic:mlx5_1"],
    "gpu_collective_corruption": ["node-0003/gpu5", "node-0019/gpu2", "node-0005/gpu3"],
}
SILENT_DROP = {
    # tor: leaves crossed by llm-a/llm-c (leaf-00, leaf-01) and llm-b (leaf-03) from several nodes.
    "tor": ["switch:leaf-01", "switch:leaf-03", "switch:leaf-00"],
    # rail: each rail carries every multi-node job.
    "rail": ["switch:leaf-02", "switch:leaf-05", "switch:leaf-07"],
}
# Faults only the progress API shows (spec/fault-catalog.md, "What real machines give").
PROGRESS_ONLY = ("gpu_slow", "gpu_sdc")
WARMUP_S = 600   # baselines before the first fault
SLOT_S = 300     # one fault every five minutes
FAULT_S = 150    # each lasts 2.5 minutes, then clears (incidents resolve before the next)


def job_toml(j, progress_api=None):
    jid, hosts, gpn, step, start, end = j
    lines = ["[[job]]", f'id = "{jid}"', "hosts = [" + ", ".join(f'"{h}"' for h in hosts) + "]"]
    if gpn:
        lines.append(f"gpus_per_node = {gpn}")
    lines.append(f"step_time_s = {step}")
    if progress_api is not None:
        lines.append(f"progress_api = {'true' if progress_api else 'false'}")
    if start is not None:
        lines.append(f"start_s = {start}")
    if end is not None:
        lines.append(f"end_s = {end}")
    return "\n".join(lines) + "\n"


def catalog(fabric):
    faults = dict(CATALOG_FAULTS)
    faults.update(LEAVES[fabric])
    kinds = list(faults)
    order = [(k, faults[k][r]) for r in range(3) for k in kinds]
    collective = dict(COLLECTIVE_FAULTS)
    collective["switch_silent_drop"] = SILENT_DROP[fabric]
    order += [(k, collective[k][r]) for r in range(3) for k in collective]
    duration = WARMUP_S + len(order) * SLOT_S + SLOT_S
    name = "catalog" if fabric == "tor" else "catalog-rail"
    head = f"""# Every kind of spec/fault-catalog.md three times, on different targets, one at a time: a fault
# every {SLOT_S} s after a {WARMUP_S} s warm-up, each lasting {FAULT_S} s, so the incident of one resolves
# before the next starts. Fabric: {fabric}. Generated by sim/scenarios/gen/make_scenarios.py.
name = "{name}"
seed = 42
duration_s = {duration}
interval_s = 10
noise = 1.0

[cluster]
fabric = "{fabric}"
nodes = 32
"""
    if fabric == "tor":
        head += "nodes_per_leaf = 8\n"
    head += 'spines = 2\ngpus_per_node = 8\nnics_per_node = 8\ngpu_model = "H100"\n'
    head += "# Agents also report their management and storage netdevs (never fault roots).\nnonfabric_netdevs = true\n\n"
    head += "[behaviour]\n# Every job runs PyTorch's NaN check, so a GPU corrupting collectives is named.\nnan_check_share = 1.0\n\n"
    # A slow GPU or silent data corruption shows only in the steps and losses ranks post: the jobs
    # those faults hit use the progress API; the others do not, so hangs are also judged by counters.
    needs = {t.split("/")[0] for k in PROGRESS_ONLY for t in faults[k]}
    body = "\n".join(job_toml(j, any(h in needs for h in j[1])) for j in CATALOG_JOBS)
    fl = []
    for i, (k, t) in enumerate(order):
        at = WARMUP_S + i * SLOT_S
        fl.append(f'[[fault]]\nkind = "{k}"\ntarget = "{t}"\nat_s = {at}\nduration_s = {FAULT_S}\n')
    with open(OUT + name + ".toml", "w") as f:
        f.write(head + body + "\n" + "\n".join(fl))


# ---------------------------------------------------------------- clean: 24 h, 256 nodes, churn

def clean(name="clean", nodes=256, per_leaf=16, spines=4, size_scale=1):
    rnd = random.Random(2024)
    horizon = 86400
    cap = int(nodes * 0.85)
    busy = []  # (start, end, n)
    jobs = []
    t = 0
    k = 0
    while t < horizon - 1800:
        n = size_scale * rnd.choice([1, 1, 2, 4, 4, 8, 8, 16, 32])
        length = rnd.choice([1800, 3600, 7200, 14400, 28800])
        start, end = t, min(horizon, t + length)
        used = max([sum(b[2] for b in busy if b[0] < e and s < b[1]) for s, e in [(start, end)]] or [0])
        # Worst-case overlap over the window (count-based: every job takes whole nodes).
        points = sorted({start} | {b[0] for b in busy if start <= b[0] < end})
        used = max(sum(b[2] for b in busy if b[0] <= p < b[1]) for p in points)
        if used + n <= cap:
            step = rnd.choice([0.8, 1.0, 1.5, 2.0, 3.0, 4.0])
            jobs.append((f"job-{k:03d}", n, step, start, end if end < horizon else None))
            busy.append((start, end, n))
            k += 1
        t += rnd.choice([60, 120, 300, 600])
    head = f"""# 24 virtual hours of a healthy {nodes}-node cluster: {len(jobs)} jobs of {size_scale} to {32 * size_scale} nodes start and end,
# with the full noise model (step jitter, checkpoints, single ECC/symbol errors, application XIDs,
# planned reboots of idle nodes) and no fault. Every incident here is a false one.
# Generated by sim/scenarios/gen/make_scenarios.py.
name = "{name}"
seed = 2024
duration_s = {horizon}
interval_s = 10
noise = 1.0

[cluster]
fabric = "tor"
nodes = {nodes}
nodes_per_leaf = {per_leaf}
spines = {spines}
gpus_per_node = 8
nics_per_node = 8
gpu_model = "H100"
# Agents also report their management and storage netdevs (never fault roots).
nonfabric_netdevs = true

"""
    body = []
    for jid, n, step, start, end in jobs:
        s = f'[[job]]\nid = "{jid}"\nnodes = {n}\nstep_time_s = {step}\nstart_s = {start}\n'
        if end is not None:
            s += f"end_s = {end}\n"
        body.append(s)
    with open(OUT + name + ".toml", "w") as f:
        f.write(head + "\n".join(body))


# ---------------------------------------------------------------- scale

def scale(name, nodes, per_leaf, spines, mix, duration, faults, comment):
    head = f"""# {comment}
# Generated by sim/scenarios/gen/make_scenarios.py.
name = "{name}"
seed = 7
duration_s = {duration}
interval_s = 10
noise = 1.0

[cluster]
fabric = "tor"
nodes = {nodes}
nodes_per_leaf = {per_leaf}
spines = {spines}
gpus_per_node = 8
nics_per_node = 8
gpu_model = "H100"

"""
    body = []
    k = 0
    first = 0
    for count, size, step in mix:
        for _ in range(count):
            hosts = ", ".join(f'"node-{h:0{max(4, len(str(nodes - 1)))}d}"' for h in range(first, first + size))
            body.append(f'[[job]]\nid = "j{k:04d}"\nhosts = [{hosts}]\nstep_time_s = {step}\n')
            first += size
            k += 1
    assert first <= nodes, (name, first)
    fl = [f'[[fault]]\nkind = "{kind}"\ntarget = "{t}"\nat_s = {at}\nduration_s = {d}\n' for kind, t, at, d in faults]
    with open(OUT + name + ".toml", "w") as f:
        f.write(head + "\n".join(body) + "\n" + "\n".join(fl))


if __name__ == "__main__":
    catalog("tor")
    catalog("rail")
    clean()
    # The dashboard-sized cluster's day: 2,048 nodes, the same churn with jobs 8× as large.
    clean("clean-2k", 2048, 32, 8, 8)
    # 2,048 nodes: 16 × 64-node, 32 × 16-node, 64 × 4-node and 128 one-node jobs; 128 idle nodes.
    scale("scale-16k", 2048, 32, 8, [(16, 64, 3.0), (32, 16, 2.0), (64, 4, 1.5), (128, 1, 1.0)], 900,
          [("gpu_lost", "node-0100/gpu3", 300, 200),
           ("nic_down", "node-1500/nic:mlx5_2", 420, 200),
           ("gpu_thermal_throttle", "node-0700/gpu5", 540, 200),
           ("node_down", "node-1900", 660, 0)],
          "16,384 GPUs (2,048 nodes × 8): scale check with four faults.")
    # 12,500 nodes: 96 × 100-node, 200 × 8-node and 600 one-node jobs; 300 idle nodes.
    scale("scale-100k", 12500, 32, 16, [(96, 100, 3.0), (200, 8, 2.0), (600, 1, 1.0)], 600,
          [("gpu_lost", "node-00500/gpu3", 200, 150),
           ("nic_down", "node-10000/nic:mlx5_2", 300, 150),
           ("gpu_thermal_throttle", "node-03000/gpu5", 400, 150)],
          "100,000 GPUs (12,500 nodes × 8): the per-round cost target (one 10 s round in <= 1 s).")
