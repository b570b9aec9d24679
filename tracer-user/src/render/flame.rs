//! Flame graphs of the attributed time: every call site's frames, outermost
//! first, topped by a frame naming the call and its target, weighed by the
//! time spent (microseconds). Folded lines are Brendan Gregg's format; the
//! SVG comes from `inferno`, the Rust port of flamegraph.pl.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;

use super::Report;

/// `frame;frame;...;leaf microseconds` lines, one per call site.
pub fn folded(report: &Report) -> String {
    let mut out = String::new();
    for row in &report.call_sites {
        let us = row.total_ns / 1_000;
        if us == 0 {
            continue;
        }
        let mut frames: Vec<String> = row.frames.iter().map(|f| clean(&f.label())).collect();
        frames.push(clean(&format!("[{} {}]", row.kind, row.target)));
        let _ = writeln!(out, "{} {us}", frames.join(";"));
    }
    out
}

/// A frame name may not hold the separators of the format.
fn clean(label: &str) -> String {
    label.replace(';', ":").replace('\n', " ")
}

/// Writes the folded lines as an SVG flame graph.
pub fn write_svg(folded: &str, path: &Path, title: &str) -> anyhow::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "µs".to_string();
    options.name_type = "Call:".to_string();
    if folded.is_empty() {
        // inferno refuses an empty graph; say why there is nothing.
        anyhow::bail!(
            "no call sites were recorded, so there is no flame graph to write to {}",
            path.display()
        );
    }
    let file = std::fs::File::create(path)
        .with_context(|| format!("creating the flame graph {}", path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut writer)
        .with_context(|| format!("writing the flame graph {}", path.display()))?;
    Ok(())
}
