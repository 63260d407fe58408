//! Embeds every file under `interfaces/<pkg>/{msg,srv,action}/` into the crate.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("interfaces");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    if let Ok(pkgs) = std::fs::read_dir(&root) {
        for pkg in pkgs.flatten() {
            for kind in ["msg", "srv", "action"] {
                let dir = pkg.path().join(kind);
                println!("cargo:rerun-if-changed={}", dir.display());
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().and_then(|x| x.to_str()) == Some(kind) {
                        let rel = format!(
                            "{}/{kind}/{}",
                            pkg.file_name().to_string_lossy(),
                            e.file_name().to_string_lossy()
                        );
                        files.push((rel, p));
                    }
                }
            }
        }
    }
    files.sort();
    let mut out = String::from("&[\n");
    for (rel, p) in &files {
        let _ = writeln!(
            out,
            "    ({rel:?}, include_str!({:?})),",
            p.display().to_string()
        );
    }
    out.push(']');
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("bundled.rs");
    std::fs::write(dest, out).expect("write bundled.rs");
}
