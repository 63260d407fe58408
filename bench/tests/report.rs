//! The report on synthetic numbers (no benchmark runs here): the table has its ratio and
//! verdict columns, the JSON round-trips, and every plot is written as an SVG.

use std::time::Duration;

use bench::machine::Machine;
use bench::report;
use bench::results::{
    LatencyChart, Results, Row, Section, Series, SweepPoint, ThroughputPoint, Via,
};
use bench::table;

/// Latencies spread like a real run: mostly near `p50_us`, a tail up to 20x.
fn samples(n: usize, p50_us: u64) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let tail = if i % 97 == 0 { 20 } else { 1 };
            Duration::from_micros(p50_us / 2 + (i as u64 * 7919) % p50_us * tail)
        })
        .collect()
}

fn synthetic() -> Results {
    let sizes = [64u64, 1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20];
    let mut throughput = Vec::new();
    for (k, size) in sizes.iter().copied().enumerate() {
        for (via, factor) in [(Via::Direct, 1.0), (Via::Bridge, 0.7)] {
            let msgs = 20_000.0 / (k as f64 + 1.0).powi(2) * factor;
            throughput.push(ThroughputPoint {
                size,
                via,
                sent: 1000,
                delivered: 1000,
                msgs_per_s: msgs,
                mib_per_s: msgs * size as f64 / f64::from(1u32 << 20),
                p50_us: 500.0,
            });
        }
    }
    let mut sweep = Vec::new();
    for (hz, b, d) in [
        (2_000.0, 100.0, 100.0),
        (10_000.0, 99.5, 100.0),
        (40_000.0, 60.0, 80.0),
    ] {
        sweep.push(SweepPoint {
            offered_hz: hz,
            via: Via::Bridge,
            delivered_pct: b,
        });
        sweep.push(SweepPoint {
            offered_hz: hz,
            via: Via::Direct,
            delivered_pct: d,
        });
    }
    Results {
        command: "cargo run --release -p bench -- all".into(),
        machine: Some(Machine {
            cpus: 2,
            cpu_model: "Test CPU".into(),
            kernel: "6.1".into(),
            load_at_start: 0.5,
            date: "2026-01-01 00:00 UTC".into(),
        }),
        sections: vec![
            Section {
                title: "mapper".into(),
                rows: vec![Row::new(
                    "sample -> twin report latency p99",
                    "367 µs".into(),
                    "374 µs".into(),
                    "0.98x".into(),
                    "≤ 5 ms",
                )
                .met(true)],
            },
            Section {
                title: "bridge".into(),
                rows: vec![
                    Row::new(
                        "64 B at 100 Hz: added latency p50 / p99",
                        "+570 µs / +16.5 ms".into(),
                        String::new(),
                        String::new(),
                        "≤ +150 µs / ≤ +1 ms",
                    )
                    .met(false),
                    Row::new(
                        "a | pipe in a name",
                        "1".into(),
                        String::new(),
                        String::new(),
                        "",
                    ),
                ],
            },
        ],
        notes: vec!["synthetic".into()],
        latency: vec![
            LatencyChart {
                name: "latency_bridge".into(),
                title: "bridge vs direct".into(),
                series: vec![
                    Series::new("bridge", &samples(1000, 1200)),
                    Series::new("direct DDS", &samples(1000, 600)),
                ],
            },
            LatencyChart {
                name: "latency_mapper".into(),
                title: "mapper".into(),
                series: vec![
                    Series::new("mapper", &samples(500, 220)),
                    Series::new("direct DDS", &samples(500, 200)),
                    Series::new("empty", &[]),
                ],
            },
        ],
        throughput,
        sweep,
    }
}

#[test]
fn table_has_ratio_goal_and_verdict_columns() {
    let r = synthetic();
    let t = table::markdown_table(&r);
    let header = t.lines().next().unwrap();
    for col in ["measurement", "direct DDS", "ratio", "goal", "met?"] {
        assert!(header.contains(col), "{col} missing from {header}");
    }
    // One table: one header line, one separator, a line per section and per row.
    assert_eq!(t.lines().count(), 2 + 2 + 3);
    assert!(t.contains("| **mapper** |") && t.contains("| **bridge** |"));
    assert!(t.contains("| 0.98x | ≤ 5 ms | met |"));
    assert!(t.contains("| **missed** |"));
    assert!(t.contains("a \\| pipe in a name"));
    // Every line has the same number of cells.
    let cells = |l: &str| l.replace("\\|", "").matches('|').count();
    assert!(t.lines().all(|l| cells(l) == cells(header)));

    let full = table::markdown_report(&r);
    assert!(full.contains("Test CPU") && full.contains("2026-01-01"));
    assert!(full.contains("noisy"));
    assert!(full.contains("Goals: 1 met, 1 missed."));
    assert!(full.contains("- synthetic"));
}

#[test]
fn report_writes_table_json_and_svg_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/out");
    let r = synthetic();
    let files = report::write(&out, &r).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for n in [
        "table.md",
        "results.json",
        "latency_bridge.svg",
        "latency_mapper.svg",
        "throughput_by_size.svg",
        "rate_sweep_64b.svg",
    ] {
        assert!(names.contains(&n.to_owned()), "{n} not in {names:?}");
        assert!(out.join(n).is_file(), "{n} not written");
    }
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
    {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(svg.starts_with("<svg"), "{}: not an SVG", f.display());
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "{}: truncated",
            f.display()
        );
        assert!(svg.contains("<polyline"), "{}: no line drawn", f.display());
    }
    let bridge = std::fs::read_to_string(out.join("latency_bridge.svg")).unwrap();
    assert!(bridge.contains("direct DDS") && bridge.contains("p99"));
    let sizes = std::fs::read_to_string(out.join("throughput_by_size.svg")).unwrap();
    assert!(sizes.contains("4 MiB") && sizes.contains("64 B"));

    let back: Results =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(
        std::fs::read_to_string(out.join("table.md")).unwrap(),
        table::markdown_report(&r)
    );
}

#[test]
fn plots_without_data_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let r = Results {
        sections: vec![Section {
            title: "mapper".into(),
            rows: vec![],
        }],
        ..Results::default()
    };
    let files = report::write(dir.path(), &r).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
}
