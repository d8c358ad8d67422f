//! The Slurm adapter against the real `scontrol` when the controller is gone (its port closed):
//! with a short timeout the call is killed and reported as a timeout; with a long one, scontrol's
//! own error comes back. No call hangs the caller. The happy path (a live slurmctld) is in
//! `tests/tests/slurm_e2e.rs`.

use std::path::PathBuf;
use std::time::Duration;

use faultline_analyzer::remediate::slurm::SlurmRemediator;
use faultline_analyzer::remediate::{RemediateError, Remediator, SlurmConfig};
use faultline_tests::external;

/// `scontrol`; under CI a missing one fails the test, elsewhere it is skipped loudly (`external`).
fn scontrol() -> Option<PathBuf> {
    external("scontrol")
}

/// A slurm.conf whose controller port nobody listens on.
fn dead_cluster(dir: &std::path::Path) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.join("slurm.conf");
    std::fs::write(
        &conf,
        format!(
            "ClusterName=gone\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort={port}\nAuthType=auth/munge\n\
             NodeName=node-0001 NodeHostname=localhost CPUs=1\nPartitionName=main Nodes=ALL Default=YES\n"
        ),
    )
    .unwrap();
    conf
}

fn adapter(scontrol: PathBuf, conf: &std::path::Path, timeout: Duration) -> SlurmRemediator {
    SlurmRemediator::new(&SlurmConfig {
        scontrol,
        env: [("SLURM_CONF".to_string(), conf.display().to_string())].into(),
        timeout,
        node_map: Default::default(),
    })
}

#[test]
fn an_unreachable_controller_is_an_error_within_the_timeout() {
    let Some(sc) = scontrol() else { return };
    let dir = tempfile::tempdir().unwrap();
    let conf = dead_cluster(dir.path());
    // scontrol retries a dead controller for several seconds; half a second is cut short.
    let a = adapter(sc.clone(), &conf, Duration::from_millis(500));
    for r in [a.node_state("node-0001").map(|_| ()), a.drain("node-0001", "faultline: test"), a.resume("node-0001")] {
        let e = r.unwrap_err();
        assert!(matches!(e, RemediateError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("killed"), "{e}");
    }
    // Given time, scontrol's own words come back.
    let a = adapter(sc, &conf, Duration::from_secs(60));
    let e = a.node_state("node-0001").unwrap_err();
    let RemediateError::Failed { stderr, .. } = &e else { panic!("expected scontrol's failure, got {e}") };
    assert!(stderr.to_lowercase().contains("controller"), "{e}");
}
