//! `faultline demo --serve` after the scored run: the simulated cluster keeps running at real speed,
//! a new fault every few minutes, its agents' reports posted over HTTP to the served analyzer, so
//! `status`, `watch`, Prometheus, Grafana and Alertmanager see a living cluster.
//!
//! The live world is the demo scenario continued: same seed, same cluster and jobs, the scored faults
//! then a repeating cycle of the same fault kinds and targets. It is stepped through the scored run's
//! virtual time first (its reports thrown away, the analyzer already has them), so counters, job steps
//! and boot times continue where the scored run left them instead of starting again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use faultline_analyzer::clock::FakeClock;
use faultline_sim::scenario::FaultSpec;
use faultline_sim::{Scenario, World};

/// Live faults start this long after the scored run ends: soon enough that the first `faultline
/// status` after `listening on` finds an incident opening, late enough for the first reports to land.
pub const LIVE_FIRST_AFTER_S: f64 = 5.0;

/// A new live fault every 4 minutes: the scored run's own spacing (demo_scenario.toml), "every few
/// minutes", and about one incident open at any moment (a fault lasts 150 s and its incident resolves
/// 120 s after the symptoms go, the engine's hysteresis).
pub const LIVE_EVERY_S: f64 = 240.0;

/// How long each live fault lasts: the scored faults' 150 s.
pub const LIVE_LASTS_S: f64 = 150.0;

/// How long the live cluster keeps getting new faults: one day of real time. Past that the clock and
/// the reports stop, as without live mode; the horizon bounds the world's fault list (360 faults).
pub const LIVE_HORIZON_S: f64 = 86_400.0;

/// The demo scenario continued live: `LIVE_HORIZON_S` longer, jobs that ended with the scored run
/// running on, and the scored faults' kinds and targets again, one every `LIVE_EVERY_S`.
pub fn live_scenario(scored: &Scenario) -> Scenario {
    let mut sc = scored.clone();
    let end = scored.duration_s + LIVE_HORIZON_S;
    sc.duration_s = end;
    for j in &mut sc.jobs {
        if j.end_s >= scored.duration_s {
            j.end_s = end;
        }
    }
    let cycle: Vec<FaultSpec> = scored.faults.clone();
    if cycle.is_empty() {
        return sc;
    }
    let mut at = scored.duration_s + LIVE_FIRST_AFTER_S;
    let mut k = 0usize;
    while at + LIVE_LASTS_S < end {
        let f = &cycle[k % cycle.len()];
        sc.faults.push(FaultSpec { kind: f.kind, target: f.target.clone(), at_s: at, duration_s: LIVE_LASTS_S });
        at += LIVE_EVERY_S;
        k += 1;
    }
    sc
}

/// The live world, stepped to where the scored run stopped. Started on its own thread while the
/// scored run runs, so serving starts without waiting for it.
pub struct Prepared {
    handle: JoinHandle<(World, Scenario)>,
}

/// Builds the live world for `scored` (whose run starts at `epoch_ms`) and steps it through the
/// scored run's `0..=ceil(duration)` virtual seconds, as the scored run does.
pub fn prepare(scored: &Scenario, epoch_ms: i64) -> Prepared {
    let sc = live_scenario(scored);
    let steps = (scored.duration_s.ceil() as i64).max(1);
    let handle = std::thread::spawn(move || {
        let mut world = World::new(&sc, epoch_ms);
        for _ in 0..=steps {
            drop(world.step());
        }
        (world, sc)
    });
    Prepared { handle }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the live feeder shares with the caller.
#[derive(Debug, Default)]
pub struct Counters {
    /// Reports the analyzer accepted.
    pub posted: AtomicU64,
    /// Reports it refused or that could not be sent.
    pub failed: AtomicU64,
}

/// Runs the live cluster: virtual time kept at wall time (one virtual second per real second, after
/// catching up the scored run's own wall time), its reports posted to `url`, `clock`
/// set to the world's time before each second's reports, one line per injected and cleared fault
/// on `say`. Stops when `stop` is set or the horizon is reached.
pub fn feed(
    prepared: Prepared,
    url: String,
    clock: Arc<FakeClock>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    say: impl Fn(&str) + Send + 'static,
) -> JoinHandle<()> {
    // The blocking client is built (and dropped) on the feeder's own thread: it owns a runtime,
    // which must not be created or dropped inside the server's async context.
    std::thread::spawn(move || {
        let http = match reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build() {
            Ok(h) => h,
            Err(e) => {
                say(&format!("live cluster: cannot build an HTTP client ({e}); serving the scored run only"));
                return;
            }
        };
        let Ok((mut world, sc)) = prepared.handle.join() else {
            say("live cluster: the simulation thread failed; serving the scored run only");
            return;
        };
        let endpoint = format!("{url}/api/v1/reports");
        let first_t = world.t_ms;
        let mut events: Vec<(f64, String)> = Vec::new();
        for f in sc.faults.iter().filter(|f| f.at_s * 1000.0 > first_t as f64) {
            events.push((f.at_s, format!("live: inject   {} on {}", f.kind, f.target)));
            events.push((f.at_s + f.duration_s, format!("live: cleared  {} on {}", f.kind, f.target)));
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut next_event = 0usize;
        while !stop.load(Ordering::SeqCst) && world.t_ms < world.duration_ms {
            // Virtual time is wall time: the scored run ended its virtual time at the moment the demo
            // started, so the seconds the scored run took are caught up flat out first, then each
            // virtual second waits for its wall second ("opened 5s ago" means five real seconds).
            let due_ms = world.epoch_ms + world.t_ms + 1000;
            let wait_ms = due_ms - wall_ms();
            if wait_ms > 0 {
                std::thread::sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)));
            }
            let out = world.step();
            clock.set_ms(world.epoch_ms + world.t_ms);
            let now_s = world.t_ms as f64 / 1000.0;
            while events.get(next_event).is_some_and(|(t, _)| *t <= now_s) {
                say(&events[next_event].1);
                next_event += 1;
            }
            for o in out {
                let ok = serde_json::to_vec(&o.report).ok().is_some_and(|body| {
                    http.post(&endpoint)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .is_ok_and(|r| r.status().is_success())
                });
                let c = if ok { &counters.posted } else { &counters.failed };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !stop.load(Ordering::SeqCst) {
            say("live cluster: one day of live faults is over; the clock stops here");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_faults_follow_the_scored_run_every_few_minutes() {
        let scored = crate::demo::scenario(None, Some(crate::demo::SHORT_DURATION_S)).unwrap();
        let live = live_scenario(&scored);
        assert_eq!(live.duration_s, scored.duration_s + LIVE_HORIZON_S);
        assert_eq!(&live.faults[..scored.faults.len()], &scored.faults[..], "the scored faults come first");
        let extra = &live.faults[scored.faults.len()..];
        assert!(extra.len() >= 300, "{}", extra.len());
        assert_eq!(extra[0].at_s, scored.duration_s + LIVE_FIRST_AFTER_S);
        assert!(extra.windows(2).all(|w| w[1].at_s - w[0].at_s == LIVE_EVERY_S));
        assert!(extra.iter().all(|f| f.duration_s == LIVE_LASTS_S && f.at_s + f.duration_s < live.duration_s));
        // The cycle repeats the scored kinds on their targets.
        assert_eq!((extra[0].kind, &extra[0].target), (scored.faults[0].kind, &scored.faults[0].target));
        assert!(live.jobs.iter().all(|j| j.end_s == live.duration_s));
    }
}
