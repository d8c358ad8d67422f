//! A private Slurm on loopback for end-to-end tests: its own munged (generated key, own socket),
//! slurmctld and one slurmd that answers for every node `node-0000`, `node-0001`, …, all killed when
//! the value is dropped. Jobs run for real on `node-0000` (as the test's user, `proctrack/pgid`, no
//! accounting).

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_tests::{Proc, external, free_port, wait_for};

/// Generous: Slurm and the programs under test share two cores.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The Slurm programs; `None` (with a loud NOT RUN) outside CI when one is missing.
pub struct Programs {
    pub munged: PathBuf,
    pub slurmctld: PathBuf,
    pub slurmd: PathBuf,
    pub scontrol: PathBuf,
    pub sbatch: PathBuf,
    pub sacct: PathBuf,
}

pub fn programs(test: &str) -> Option<Programs> {
    // `external` panics under CI when a program is missing, so CI fails loudly.
    let found = ["munged", "slurmctld", "slurmd", "scontrol", "sbatch", "sacct"].map(external);
    let [Some(munged), Some(slurmctld), Some(slurmd), Some(scontrol), Some(sbatch), Some(sacct)] = found else {
        eprintln!(
            "NOT RUN: {test} needs munged, slurmctld, slurmd, scontrol, sbatch and sacct (scripts/install-test-deps.sh)"
        );
        return None;
    };
    Some(Programs { munged, slurmctld, slurmd, scontrol, sbatch, sacct })
}

/// Slurm's name of node `i`.
pub fn node(i: usize) -> String {
    format!("node-{i:04}")
}

pub struct Slurm {
    pub conf: PathBuf,
    pub scontrol: PathBuf,
    pub sbatch: PathBuf,
    /// The node jobs run on (`node-0000`).
    pub node: String,
    _daemons: Vec<Proc>,
}

impl Slurm {
    /// One node, `node-0000`.
    pub fn start(p: &Programs, dir: &Path) -> Slurm {
        Slurm::start_nodes(p, dir, 1)
    }

    /// `nodes` nodes, all IDLE when this returns.
    pub fn start_nodes(p: &Programs, dir: &Path, nodes: usize) -> Slurm {
        let munge_dir = dir.join("munge");
        std::fs::create_dir_all(&munge_dir).unwrap();
        std::fs::set_permissions(&munge_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = munge_dir.join("munge.key");
        let mut bytes = vec![0u8; 1024];
        std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
        std::fs::write(&key, &bytes).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        let socket = munge_dir.join("munge.socket");
        let mut cmd = Command::new(&p.munged);
        cmd.arg("--foreground")
            .arg("--force")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--pid-file={}", munge_dir.join("munged.pid").display()))
            .arg(format!("--log-file={}", munge_dir.join("munged.log").display()))
            .arg(format!("--seed-file={}", munge_dir.join("munged.seed").display()));
        let munged = Proc::spawn_plain(cmd);
        wait_for(DEADLINE, "munged's socket", || socket.exists().then_some(()));

        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        let (ctld_port, slurmd_port) = (free_port(), free_port());
        for d in ["state", "spool", "log", "out"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let first = node(0);
        std::fs::create_dir_all(dir.join("spool").join(&first)).unwrap();
        let d = dir.display();
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=faultline-agent-e2e\n\
                 SlurmctldHost=localhost(127.0.0.1)\n\
                 SlurmctldPort={ctld_port}\n\
                 SlurmdPort={slurmd_port}\n\
                 AuthType=auth/munge\n\
                 CredType=cred/munge\n\
                 AuthInfo=socket={socket}\n\
                 SlurmUser={user}\n\
                 StateSaveLocation={d}/state\n\
                 SlurmdSpoolDir={d}/spool/%n\n\
                 SlurmctldPidFile={d}/slurmctld.pid\n\
                 SlurmdPidFile={d}/slurmd-%n.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\n\
                 SlurmdLogFile={d}/log/slurmd-%n.log\n\
                 SelectType=select/linear\n\
                 ProctrackType=proctrack/pgid\n\
                 TaskPlugin=task/none\n\
                 MpiDefault=none\n\
                 JobCompType=jobcomp/none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 ReturnToService=2\n\
                 SlurmdTimeout=300\n\
                 NodeName=node-[0000-{last:04}] NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=1 RealMemory=100 State=UNKNOWN\n\
                 PartitionName=main Nodes=ALL Default=YES State=UP\n",
                socket = socket.display(),
                user = user.trim(),
                last = nodes.max(1) - 1,
            ),
        )
        .unwrap();
        let mut ctld = Command::new(&p.slurmctld);
        ctld.arg("-D").arg("-f").arg(&conf).env("SLURM_CONF", &conf);
        let slurmctld = Proc::spawn_plain(ctld);
        // One slurmd answers for every node: they share NodeHostname and port, so the controller's
        // pings to any of them reach it, and all come up IDLE.
        let mut sd = Command::new(&p.slurmd);
        sd.arg("-D").arg("-N").arg(&first).arg("-f").arg(&conf).env("SLURM_CONF", &conf);
        let slurmd = Proc::spawn_plain(sd);
        let s = Slurm {
            conf,
            scontrol: p.scontrol.clone(),
            sbatch: p.sbatch.clone(),
            node: first,
            _daemons: vec![slurmd, slurmctld, munged],
        };
        wait_for(DEADLINE, "every Slurm node IDLE", || {
            let states: Vec<_> = (0..nodes.max(1)).filter_map(|i| s.state(&node(i))).collect();
            (states.len() == nodes.max(1) && states.iter().all(|(st, _)| st == "IDLE")).then_some(())
        });
        s
    }

    /// `(State, Reason without the [user@time] stamp)` from `scontrol show node -o`.
    pub fn state(&self, n: &str) -> Option<(String, Option<String>)> {
        let out = self.scontrol(&["show", "node", "-o", n]);
        if !out.status.success() {
            return None;
        }
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let state = line.split_whitespace().find_map(|w| w.strip_prefix("State="))?.to_string();
        let reason = line.find(" Reason=").map(|i| {
            let r = &line[i + 8..];
            r.rfind(" [").map(|j| &r[..j]).unwrap_or(r).trim().to_string()
        });
        Some((state, reason))
    }

    pub fn drained(&self, n: &str) -> bool {
        self.state(n).is_some_and(|(s, _)| s.split('+').any(|w| w.starts_with("DRAIN")))
    }

    pub fn reason(&self, n: &str) -> Option<String> {
        self.state(n).and_then(|(_, r)| r)
    }

    pub fn drain_by_hand(&self, n: &str, reason: &str) {
        let out = self.scontrol(&["update", &format!("NodeName={n}"), "State=DRAIN", &format!("Reason={reason}")]);
        assert!(out.status.success(), "scontrol drain by hand: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn scontrol(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.scontrol).args(args).env("SLURM_CONF", &self.conf).output().unwrap()
    }

    /// Submit a batch script; returns the job id.
    pub fn sbatch(&self, script: &Path, out: &Path) -> String {
        let o = Command::new(&self.sbatch)
            .arg("--parsable")
            .arg("-o")
            .arg(out)
            .arg(script)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(o.status.success(), "sbatch: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap().to_string()
    }
}

/// Stands in for the agents: posts `report(node, seq)` for every node `node(0..nodes)` every second,
/// until dropped.
pub struct Reporter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Reporter {
    pub fn start(
        url: String,
        token: &'static str,
        nodes: usize,
        mut report: impl FnMut(&str, u64) -> serde_json::Value + Send + 'static,
    ) -> Reporter {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let client = faultline_tests::http();
            let mut seq = 0u64;
            while !s2.load(Ordering::SeqCst) {
                seq += 1;
                for i in 0..nodes {
                    let n = node(i);
                    let body = report(&n, seq);
                    let _ = client
                        .post(format!("{url}/api/v1/reports"))
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Reporter { stop, handle: Some(handle) }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
