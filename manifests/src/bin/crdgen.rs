//! `crdgen`: writes the bundle's CRDs (`manifests/crds/*.yaml`) from the Rust types, or checks
//! that the checked-in files are current (`--check`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "crdgen",
    about = "Generate the bundle's CRD YAML from the Rust types"
)]
struct Args {
    /// Output directory. Default: `manifests/crds` of this source tree.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only check that the files are current; exit 1 if not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let dir = a.out.unwrap_or_else(manifests::crd_dir);
    let r: anyhow::Result<ExitCode> = (|| {
        if a.check {
            let stale = manifests::stale(&dir)?;
            if stale.is_empty() {
                println!("CRDs in {} are current", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!(
                "stale in {}: {} (run `cargo run -p manifests --bin crdgen`)",
                dir.display(),
                stale.join(", ")
            );
            return Ok(ExitCode::from(1));
        }
        for p in manifests::write_all(&dir)? {
            println!("wrote {}", p.display());
        }
        Ok(ExitCode::SUCCESS)
    })();
    r.unwrap_or_else(|e| {
        eprintln!("crdgen: {e:#}");
        ExitCode::from(2)
    })
}
