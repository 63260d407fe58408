//! `bench`: see the library ([`bench`]) for what it measures and writes.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> anyhow::Result<()> {
    bench::cli::run(bench::cli::Cli::parse())
}
