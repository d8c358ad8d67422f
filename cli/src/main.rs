//! `faultline`: the diagnosis CLI (a client of the analyzer API), plus `demo` and `sim run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod commands;
mod config;
mod render;
mod sim_cmd;

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
    /// Simulate a cluster, inject faults, run the analyzer on it, and score the diagnosis
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Diag(c) => commands::run(&cli.conn, c),
        Cmd::Sim(c) => sim_cmd::run(&cli.conn, c),
    }
}
