//! `ballast-gateway`: the edge process of Ballast.
//!
//! Subcommands so far: `check`, which loads and validates device files the way the gateway
//! will, printing every problem as `file:line:column: field: message`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;

/// Ballast edge gateway.
#[derive(Debug, Parser)]
#[command(name = "ballast-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate Device and DeviceModel files (KubeEdge devices.kubeedge.io/v1beta1).
    ///
    /// Prints every problem as file:line:column: field: message, then a one-line summary.
    /// Exits 0 when the files are valid, 1 when any has an error, 2 on bad usage.
    Check {
        /// Files or directories (searched recursively for *.yaml and *.yml). Models may be in
        /// any of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Print only errors and the summary.
        #[arg(long, short)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            paths,
            deny_warnings,
            quiet,
        } => check::run(&paths, deny_warnings, quiet),
    }
}
