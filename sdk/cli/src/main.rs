//! The `trustmesh` command line.

use clap::Parser;

/// trustmesh: self-hostable, security-first data quality.
#[derive(Parser)]
#[command(name = "trustmesh", version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
