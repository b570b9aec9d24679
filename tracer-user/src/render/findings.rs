//! "What to fix first": the worst offenders in plain words, each with the
//! evidence the trace holds and the obvious fix, largest share first.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Kind, Report};

/// Offenders smaller than this share of the time are not worth a line,
/// except connects that stall for a second or more.
pub(super) const MIN_SHARE: f64 = 0.01;

#[derive(Debug, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub share: f64,
    pub what: String,
    pub evidence: String,
    pub fix: String,
}

pub fn write(out: &mut String, r: &Report, rows: usize, kinds: Option<&[Kind]>) {
    let shown: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| kinds.is_none_or(|k| k.contains(&f.kind)))
        .collect();
    if shown.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nWhat to fix first");
    for (i, f) in shown.into_iter().take(rows).enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, f.what);
        let _ = writeln!(out, "     why: {}", f.evidence);
        let _ = writeln!(out, "     fix: {}", f.fix);
    }
}
