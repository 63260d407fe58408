//! The one result table, as Markdown: every section's rows with the direct-DDS baseline of
//! the same run, the ratio, the goal and whether it was met.

use std::fmt::Write as _;

use crate::results::Results;

/// Column headers of the table.
pub const HEADER: [&str; 6] = [
    "measurement",
    "mapper / bridge",
    "direct DDS (same run)",
    "ratio (mapper or bridge / direct)",
    "goal",
    "met?",
];

/// A table cell: `|` escaped and newlines folded so a value cannot break the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The table alone (one header, a bold line per section).
pub fn markdown_table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", HEADER.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
    for s in &r.sections {
        let _ = writeln!(out, "| **{}** | | | | | |", cell(&s.title));
        for row in &s.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&row.name),
                cell(&row.value),
                cell(&row.baseline),
                cell(&row.ratio),
                cell(&row.goal),
                row.verdict()
            );
        }
    }
    out
}

/// `table.md`: the command, the machine, the table, the goal count and the notes.
pub fn markdown_report(r: &Results) -> String {
    let mut out = String::new();
    if !r.command.is_empty() {
        let _ = writeln!(out, "`{}`\n", r.command);
    }
    if let Some(m) = &r.machine {
        let _ = writeln!(
            out,
            "Machine: {}. The machine is shared with other work and noisy: compare the ratios, \
             which were taken in the same run, rather than absolute numbers.\n",
            m.describe()
        );
    }
    out.push_str(&markdown_table(r));
    let (met, missed) = r.goal_counts();
    let _ = writeln!(out, "\nGoals: {met} met, {missed} missed.");
    if !r.notes.is_empty() {
        out.push('\n');
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
