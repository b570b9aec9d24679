//! The slowest call sites: lookups, connects and SSL calls by the code
//! that made them.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Kind, Report, TlsPeerRow, new_table, right_align, section};
use crate::{
    aggregate::Aggregate,
    attribute::Frame,
    kind::CallKind,
    units::{fmt_ns, fmt_share, share},
};

/// Time spent in one kind of call to one target from one call site.
#[derive(Debug, Serialize)]
pub struct CallSiteRow {
    pub kind: CallKind,
    pub target: String,
    /// The frames, outermost caller first, joined.
    pub call_site: String,
    /// The program's own innermost frame and the call: what to look at.
    pub summary: String,
    pub frames: Vec<Frame>,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: Option<u64>,
    pub share: f64,
}

impl Report {
    pub(super) fn write_call_sites(
        &self,
        out: &mut String,
        rows: usize,
        kinds: Option<&[Kind]>,
        min_latency_ns: Option<u64>,
    ) {
        let shown: Vec<&CallSiteRow> = self
            .call_sites
            .iter()
            .filter(|r| kinds.is_none_or(|k| k.contains(&r.kind.family())))
            // SSL call sites keep no maximum: they stay.
            .filter(|r| min_latency_ns.is_none_or(|min| r.max_ns.is_none_or(|m| m >= min)))
            .collect();
        if shown.is_empty() {
            return;
        }
        let mut t = new_table(&[
            "KIND",
            "TARGET",
            "CALLS",
            "TOTAL",
            "MAX",
            self.share_of.header(),
            "CALLED FROM",
        ]);
        for r in shown.iter().take(rows) {
            t.add_row(vec![
                r.kind.to_string(),
                r.target.clone(),
                r.count.to_string(),
                fmt_ns(r.total_ns),
                r.max_ns.map_or("-".into(), fmt_ns),
                fmt_share(r.share),
                r.summary.clone(),
            ]);
        }
        right_align(&mut t, 2..6);
        section(
            out,
            "Slowest call sites (lookups, connects and SSL calls by the code that made them)",
            Some(t),
        );
        for r in shown.iter().take(3) {
            let _ = writeln!(out, "  {} {} ({}):", r.kind, r.target, fmt_ns(r.total_ns));
            for f in &r.frames {
                let _ = writeln!(out, "      {}", f.label());
            }
        }
        let a = &self.attribution;
        if a.stale_python_frames > 0 || a.python_thread_not_found > 0 {
            let _ = writeln!(
                out,
                "  ({} Python frames could not be read back and show as ?; {} calls found no \
                 Python thread state)",
                a.stale_python_frames, a.python_thread_not_found
            );
        }
    }
}

/// Lookups, connects, slow I/O and SSL calls by call site, slowest first.
pub(super) fn rows(agg: &Aggregate, tls_peers: &[TlsPeerRow], wall_ns: u64) -> Vec<CallSiteRow> {
    let mut call_sites: Vec<CallSiteRow> = agg
        .by_site()
        .iter()
        .map(|((kind, target, id), s)| {
            let site = agg.sites().site(*id);
            CallSiteRow {
                kind: *kind,
                target: target.clone(),
                call_site: site.label(),
                summary: site.summary(),
                frames: site.frames.clone(),
                count: s.count,
                total_ns: s.total_ns,
                max_ns: Some(s.max_ns),
                share: share(s.total_ns, wall_ns),
            }
        })
        .collect();
    for peer in tls_peers {
        for (kind, id, calls, ns) in &peer.site_ids {
            let site = agg.sites().site(*id);
            call_sites.push(CallSiteRow {
                kind: *kind,
                target: peer.peer.clone(),
                call_site: site.label(),
                summary: site.summary(),
                frames: site.frames.clone(),
                count: *calls,
                total_ns: *ns,
                max_ns: None,
                share: share(*ns, wall_ns),
            });
        }
    }
    call_sites.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
    call_sites
}
