//! The `trustmesh` command line.

mod check;
mod demo;

use clap::{Parser, Subcommand};

/// trustmesh: self-hostable, security-first data quality.
#[derive(Parser)]
#[command(name = "trustmesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Find label errors, outliers, duplicates, ... in a CSV file, without the mesh.
    Check(check::CheckArgs),
    /// Show what trustmesh finds in a bundled noisy dataset.
    Demo,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Check(args) => check::run(&args),
        Command::Demo => demo::run(),
    }
}
