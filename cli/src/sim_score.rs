//! `faultline sim score SCENARIO REPORT`: score a run report (`sim run --json`) against its scenario
//! again, without running anything: with a newer scorer, after editing what counts as a match, or
//! for a report another machine produced. The incidents in the report are taken as they are.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use faultline_sim::runner::truth;
use faultline_sim::score::{self, RunFacts};
use faultline_sim::{RunReport, Scenario, World};

#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// Scenario file the report was made from (TOML, see sim/SCENARIO.md)
    pub scenario: PathBuf,
    /// Run report written by `faultline sim run SCENARIO --json REPORT`
    pub report: PathBuf,
    /// Write the re-scored report as JSON here
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
}

/// Re-scores `report` against `sc`: the faults and the summary are computed again from the
/// report's incidents; everything else (cluster, timings, analyzer stats) is kept.
pub fn rescore(sc: &Scenario, mut report: RunReport) -> anyhow::Result<RunReport> {
    if report.scenario != sc.name || report.seed != sc.seed {
        bail!(
            "the report is of scenario {:?} seed {}, the scenario file is {:?} seed {}",
            report.scenario,
            report.seed,
            sc.name,
            sc.seed
        );
    }
    if (report.virtual_s - sc.duration_s).abs() > 0.5 {
        bail!("the report covers {} s of virtual time, the scenario {} s", report.virtual_s, sc.duration_s);
    }
    let world = World::new(sc, 0);
    let truth = truth(&world, sc);
    let facts = RunFacts { duration_s: sc.duration_s, interval_s: sc.interval_s, nodes: world.cluster.nodes.len() };
    let (faults, summary) = score::score(&truth, &report.incidents, facts);
    report.faults = faults;
    report.summary = summary;
    Ok(report)
}

pub fn run(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let sc = Scenario::from_path(&args.scenario)?;
    let text =
        std::fs::read_to_string(&args.report).with_context(|| format!("cannot read {}", args.report.display()))?;
    let report: RunReport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run report (`faultline sim run --json`)", args.report.display()))?;
    let report = rescore(&sc, report)?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(report.table().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_scores_the_same_again_and_a_foreign_one_is_refused() {
        let sc = crate::demo::scenario(None, Some(crate::demo::SHORT_DURATION_S)).unwrap();
        let report = faultline_sim::run(&sc, Default::default()).unwrap();
        let again = rescore(&sc, serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap()).unwrap();
        assert_eq!(again.faults, report.faults);
        assert_eq!(again.summary, report.summary);
        // With the incidents gone, nothing is diagnosed any more.
        let mut empty = report.clone();
        empty.incidents.clear();
        let none = rescore(&sc, empty).unwrap();
        assert_eq!(none.summary.correct, 0);
        let other = crate::demo::scenario(Some(7), Some(crate::demo::SHORT_DURATION_S)).unwrap();
        assert!(rescore(&other, report).unwrap_err().to_string().contains("seed"));
    }
}
