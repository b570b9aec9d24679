//! Before and after: the breakdown of this run next to the one of an
//! earlier run's JSON report (`--baseline`), so a fix shows as a number.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Report, fmt_ns, fmt_share};

/// What of an earlier report the comparison needs.
#[derive(Debug, Deserialize)]
pub struct Baseline {
    pub busy_ns: u64,
    pub breakdown: Vec<BaselineRow>,
}

#[derive(Debug, Deserialize)]
pub struct BaselineRow {
    pub kind: String,
    pub target: String,
    pub what: String,
    pub total_ns: u64,
    pub share: f64,
}

/// One kind of call to one target, before and after.
#[derive(Debug, Serialize)]
pub struct ComparisonRow {
    pub what: String,
    pub before_ns: u64,
    pub after_ns: u64,
    pub before_share: f64,
    pub after_share: f64,
}

/// The comparison, as the report carries it.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub before_busy_ns: u64,
    pub after_busy_ns: u64,
    pub rows: Vec<ComparisonRow>,
}

/// Rows below this share on both sides are left out.
const MIN_SHARE: f64 = 0.005;

pub fn load(path: &Path) -> anyhow::Result<Baseline> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the baseline report {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a JSON report of tracer (write one with `tracer report --json FILE`)",
            path.display()
        )
    })
}

/// Rows present on either side, the biggest change first.
pub fn compare(report: &Report, baseline: &Baseline, path: &Path) -> Comparison {
    let mut rows: BTreeMap<(String, String), ComparisonRow> = BTreeMap::new();
    for b in &baseline.breakdown {
        rows.insert(
            (b.kind.clone(), b.target.to_lowercase()),
            ComparisonRow {
                what: b.what.clone(),
                before_ns: b.total_ns,
                after_ns: 0,
                before_share: b.share,
                after_share: 0.0,
            },
        );
    }
    for a in &report.breakdown {
        let row = rows
            .entry((a.kind.to_string(), a.target.to_lowercase()))
            .or_insert_with(|| ComparisonRow {
                what: a.what.clone(),
                before_ns: 0,
                after_ns: 0,
                before_share: 0.0,
                after_share: 0.0,
            });
        row.after_ns = a.total_ns;
        row.after_share = a.share;
    }
    let mut rows: Vec<ComparisonRow> = rows
        .into_values()
        .filter(|r| r.before_share >= MIN_SHARE || r.after_share >= MIN_SHARE)
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.before_ns.abs_diff(r.after_ns)));
    Comparison {
        baseline: path.display().to_string(),
        before_busy_ns: baseline.busy_ns,
        after_busy_ns: report.busy_ns,
        rows,
    }
}

pub fn write(out: &mut String, report: &Report, words: &str, rows: usize) {
    let Some(c) = &report.comparison else {
        return;
    };
    let _ = writeln!(
        out,
        "\nCompared with the baseline {} (busy time {} -> {}; shares of each run's {words})",
        c.baseline,
        fmt_ns(c.before_busy_ns),
        fmt_ns(c.after_busy_ns),
    );
    for r in c.rows.iter().take(rows) {
        let verdict = if r.after_ns * 2 < r.before_ns && r.before_share - r.after_share >= 0.05 {
            " (fixed: most of it is gone)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {}: {} -> {} ({} -> {}){verdict}",
            r.what,
            fmt_share(r.before_share),
            fmt_share(r.after_share),
            fmt_ns(r.before_ns),
            fmt_ns(r.after_ns),
        );
    }
}
