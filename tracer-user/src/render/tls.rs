//! The TLS table and findings: per peer, its reads, writes and handshakes.

use std::{collections::BTreeMap, fmt::Write as _};

use comfy_table::Table;
use serde::Serialize;
use tracer_common::LatencyStats;

use super::{
    Kind, Report,
    findings::{Finding, MIN_SHARE},
    new_table, right_align, section,
};
use crate::{
    aggregate::Aggregate,
    kind::CallKind,
    tls::{self, PeerTls},
    units::{LatencyRow, fmt_bytes, fmt_ns, fmt_ratio, fmt_share, share},
};

/// One row per peer, for the report.
#[derive(Debug, Serialize)]
pub struct TlsPeerRow {
    pub peer: String,
    /// Latency of the SSL_read calls (without the poll waits between them).
    pub read_latency: LatencyRow,
    pub connections: u64,
    /// Connections that did a handshake through SSL_do_handshake,
    /// SSL_connect or SSL_accept (Node.js handshakes inside SSL_read).
    pub handshakes: u64,
    pub handshake_calls: u64,
    /// Time in handshake calls.
    pub handshake_ns: u64,
    pub reads: u64,
    /// Reads that returned data (the others wanted more data or failed).
    pub reads_with_data: u64,
    pub read_bytes: u64,
    pub read_ns: u64,
    /// Time waiting on the network while reading: in syscalls inside
    /// SSL_read, and in poll() on the socket between reads.
    pub read_waiting_ns: u64,
    /// Go reads' waits while the connection was idle (nothing asked of
    /// the peer): not in `read_ns`.
    pub read_idle_ns: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub write_ns: u64,
    pub responses: u64,
    pub functions: BTreeMap<&'static str, u64>,
    /// Where the SSL calls came from: (call site, calls, time), busiest first.
    pub call_sites: Vec<(String, u64, u64)>,
    /// The same, by kind of call (see `call_kind`) and call-site id.
    #[serde(skip)]
    pub site_ids: Vec<(CallKind, u32, u64, u64)>,
    pub share: f64,
    pub findings: Vec<String>,
}

pub fn peer_row(
    peer: String,
    p: &PeerTls,
    wall_ns: u64,
    of: &str,
    site_label: impl Fn(u32) -> String,
) -> TlsPeerRow {
    let hs = p.handshakes.unwrap_or(LatencyStats::ZERO);
    let share_of_time = share(p.total_ns(), wall_ns);
    let mut site_ids: Vec<(CallKind, u32, u64, u64)> = p
        .sites
        .iter()
        .map(|((kind, id), (calls, ns))| (*kind, *id, *calls, *ns))
        .collect();
    site_ids.sort_by_key(|s| std::cmp::Reverse(s.3));
    let mut findings = Vec::new();
    let reads = p.reads.latency.count;
    if reads > 0 {
        let per_read = p.reads.bytes.checked_div(p.reads.ok_calls).unwrap_or(0);
        let mut s = format!(
            "{reads} reads from {peer}: {:.1}% of {of}, {:.0}% of it waiting on the network, \
             {per_read} bytes per read",
            share(p.read_time_ns(), wall_ns) * 100.0,
            p.read_waiting_share() * 100.0,
        );
        if p.responses > 0 {
            s.push_str(&format!(
                ", {} reads per response",
                fmt_ratio(p.reads.ok_calls as f64 / p.responses as f64)
            ));
        }
        findings.push(s);
        if p.reads.idle_ns > 0 {
            findings.push(format!(
                "  not counted: {} that Go's reading goroutines waited while nothing was asked \
                 of the peer (before the next request, or a server's wait for its client)",
                fmt_ns(p.reads.idle_ns)
            ));
        }
        if per_read > 0 && per_read < 1024 && p.reads.ok_calls >= 100 {
            findings.push(format!(
                "  the peer sends small TLS records ({per_read} bytes each): every read is a \
                 record; larger writes on the server, or fewer requests, cut the count"
            ));
        }
    }
    if p.handshaken > 0 {
        findings.push(format!(
            "{} handshake{} with {peer}: {} in handshake calls, {} per handshake ({:.0}% of it \
             waiting on the network)",
            p.handshaken,
            if p.handshaken == 1 { "" } else { "s" },
            fmt_ns(hs.total_ns),
            fmt_ns(hs.total_ns / p.handshaken),
            share(p.handshake_blocked_ns, hs.total_ns) * 100.0
        ));
    }
    TlsPeerRow {
        peer,
        read_latency: LatencyRow::from(&p.reads.latency),
        connections: p.connections,
        handshakes: p.handshaken,
        handshake_calls: hs.count,
        handshake_ns: hs.total_ns,
        reads,
        reads_with_data: p.reads.ok_calls,
        read_bytes: p.reads.bytes,
        read_ns: p.read_time_ns(),
        read_waiting_ns: p.reads.blocked_ns + p.wait_ns,
        read_idle_ns: p.reads.idle_ns,
        writes: p.writes.latency.count,
        write_bytes: p.writes.bytes,
        write_ns: p.writes.latency.total_ns,
        responses: p.responses,
        functions: p.functions.clone(),
        call_sites: site_ids
            .iter()
            .map(|(_, id, calls, ns)| (site_label(*id), *calls, *ns))
            .collect(),
        site_ids,
        share: share_of_time,
        findings,
    }
}

impl Report {
    pub(super) fn write_tls(&self, out: &mut String, rows: usize) {
        if self.tls_libraries.is_empty() {
            let _ = writeln!(
                out,
                "\nTLS: no TLS library (libssl, or OpenSSL linked into the executable) is mapped \
                 by the traced processes"
            );
            return;
        }
        section(
            out,
            &format!(
                "TLS by peer ({} SSL calls; probing {})",
                self.tls_calls_total,
                self.tls_libraries.join(", ")
            ),
            tls_table(&self.tls_peers, rows, self.share_of.header()),
        );
        let findings: Vec<&String> = self
            .tls_peers
            .iter()
            .take(rows)
            .flat_map(|p| p.findings.iter())
            .collect();
        for f in findings {
            let _ = writeln!(out, "  {f}");
        }
    }
}

fn tls_table(rows: &[TlsPeerRow], limit: usize, share_header: &str) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "PEER",
        "CONNS",
        "HANDSHAKES",
        "READS",
        "READ",
        "READ TIME",
        "WAITING",
        "WRITES",
        "WRITTEN",
        share_header,
    ]);
    for r in rows.iter().take(limit) {
        t.add_row(vec![
            r.peer.clone(),
            r.connections.to_string(),
            r.handshakes.to_string(),
            r.reads.to_string(),
            fmt_bytes(r.read_bytes),
            fmt_ns(r.read_ns),
            fmt_share(if r.read_ns == 0 {
                0.0
            } else {
                r.read_waiting_ns as f64 / r.read_ns as f64
            }),
            r.writes.to_string(),
            fmt_bytes(r.write_bytes),
            fmt_share(r.share),
        ]);
    }
    right_align(&mut t, 1..10);
    Some(t)
}

/// The TLS rows, one per peer, largest share first.
pub(super) fn rows(agg: &Aggregate, wall_ns: u64, of: &str) -> Vec<TlsPeerRow> {
    let mut tls_peers: Vec<TlsPeerRow> = tls::by_peer(agg.tls())
        .into_iter()
        .map(|(peer, p)| peer_row(peer, &p, wall_ns, of, |id| agg.sites().site(id).label()))
        .collect();
    tls_peers.sort_by(|a, b| b.share.total_cmp(&a.share));
    tls_peers
}

/// What to fix first about each TLS peer: its reads, its handshakes.
pub(super) fn findings(r: &Report, denominator_ns: u64, out: &mut Vec<Finding>) {
    for p in &r.tls_peers {
        let read_share = share(p.read_ns, denominator_ns);
        if read_share >= MIN_SHARE && p.reads > 0 {
            let per_read = p.read_bytes.checked_div(p.reads_with_data).unwrap_or(0);
            let waiting = share(p.read_waiting_ns, p.read_ns);
            let mut evidence = format!(
                "{} SSL reads of {per_read} bytes on average; {:.0}% of the read time waits on \
                 the network",
                p.reads,
                waiting * 100.0
            );
            if p.responses > 0 {
                let _ = write!(
                    evidence,
                    "; {} reads per response",
                    p.reads_with_data.div_ceil(p.responses)
                );
            }
            let fix = if per_read > 0 && per_read < 1024 && p.reads_with_data >= 100 {
                "the server writes small TLS records, one read each: have it write larger ones \
                 (up to 16 KiB), or ask for fewer, larger responses (bigger pages)"
            } else if waiting >= 0.5 {
                "the time is the peer's: it is slow to send; look at the server, or ask for less"
            } else {
                "the reads cost CPU here: fewer, larger reads (a bigger buffer) help"
            };
            out.push(Finding {
                kind: Kind::Tls,
                share: read_share,
                what: format!(
                    "TLS reads from {} took {} ({})",
                    p.peer,
                    fmt_ns(p.read_ns),
                    fmt_share(read_share)
                ),
                evidence,
                fix: fix.to_string(),
            });
        }
        let hs_share = share(p.handshake_ns, denominator_ns);
        if p.handshakes >= 3 && p.handshakes >= p.connections && hs_share >= MIN_SHARE / 2.0 {
            out.push(Finding {
                kind: Kind::Tls,
                share: hs_share,
                what: format!(
                    "{} TLS handshakes with {} took {} ({})",
                    p.handshakes,
                    p.peer,
                    fmt_ns(p.handshake_ns),
                    fmt_share(hs_share)
                ),
                evidence: format!(
                    "{} connections, each with its own handshake, {} responses in all",
                    p.connections, p.responses
                ),
                fix: "reuse connections: one client session (e.g. a requests.Session) or a \
                      connection pool with keep-alive"
                    .to_string(),
            });
        }
    }
}
