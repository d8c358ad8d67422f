//! `faultline`: the diagnosis CLI (a client of the analyzer API), plus `demo` and `sim run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: reports are decoded on request (or decoder) threads and freed on the engine's, and
/// glibc malloc's per-thread arenas spend much of the analyzer's time on such cross-thread frees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod cmd_actions;
mod commands;
mod config;
mod demo;
mod demo_live;
mod render;
mod shell;
mod sim_cmd;
mod sim_score;

#[derive(Debug, Parser)]
#[command(
    name = "faultline",
    version,
    about = "faultline: find the broken part of a GPU cluster and the jobs it hurts",
    after_help = commands::TOP_HELP
)]
struct Cli {
    #[command(flatten)]
    conn: commands::ConnArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Diag(commands::Command),
    /// Run a simulated 64-node cluster with injected faults through the real analyzer, live, and score it
    #[command(after_help = DEMO_HELP)]
    Demo(demo::DemoArgs),
    /// Simulate a cluster, inject faults, run the analyzer on it, and score the diagnosis
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
    /// Take a node out of scheduling (Slurm drain) through the analyzer
    #[command(after_help = cmd_actions::WRITE_EXIT_CODES)]
    Drain(cmd_actions::DrainArgs),
    /// Put a drained node back into scheduling; only faultline's own drains unless --force
    #[command(after_help = cmd_actions::WRITE_EXIT_CODES)]
    Resume(cmd_actions::ResumeArgs),
    /// Remediation actions: pending (suggested, blocked, waiting to resume) and taken
    #[command(after_help = cmd_actions::ACTIONS_EXIT_CODES)]
    Actions(cmd_actions::ActionsArgs),
    /// Print a shell completion script (bash, zsh or fish) on stdout
    #[command(after_help = shell::COMPLETIONS_HELP)]
    Completions(shell::CompletionsArgs),
    /// Print the faultline(1) man page (roff) on stdout: faultline manpage | man -l -
    Manpage,
}

/// The `demo --help` epilogue.
const DEMO_HELP: &str = "\
Nothing to install and no analyzer to run: the engine runs in-process on virtual time, and the
incidents go to a SQLite store in a temporary directory.

Exit codes:
  0  the run completed (the scores are reported, not judged); with --serve, after Ctrl-C
  2  error";

fn main() -> ExitCode {
    faultline_analyzer::alloc::keep_freed_pages();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Diag(c) => commands::run(&cli.conn, c),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Sim(c) => sim_cmd::run(&cli.conn, c),
        Cmd::Drain(a) => cmd_actions::run_drain(&cli.conn, &a),
        Cmd::Resume(a) => cmd_actions::run_resume(&cli.conn, &a),
        Cmd::Actions(a) => cmd_actions::run_list(&cli.conn, &a),
        Cmd::Completions(a) => shell::completions::<Cli>(&a),
        Cmd::Manpage => shell::manpage::<Cli>(),
    }
}
