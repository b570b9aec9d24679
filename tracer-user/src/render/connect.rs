//! The connect tables: per peer, and the slowest connects.

use std::collections::BTreeMap;

use comfy_table::Table;
use serde::Serialize;

use super::{Kind, Report, findings::Finding, new_table, right_align};
use crate::{
    aggregate::Aggregate,
    connect::{ConnectRecord, add_to_peers},
    peer::Peer,
    units::{LatencyRow, fmt_ns, fmt_share, share},
};

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub peer: String,
    pub proto: &'static str,
    #[serde(flatten)]
    pub latency: LatencyRow,
    pub outcomes: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ConnectRow {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub peer: String,
    pub proto: &'static str,
    pub nonblocking: bool,
    pub outcome: String,
    pub latency_ns: u64,
    pub syscall_ns: u64,
    pub handshake_ns: Option<u64>,
    pub call_site: Option<String>,
}

/// "tcp" when the kernel saw the socket send a SYN; "unix" for unix
/// sockets; "-" when unknown (a datagram socket, or a call that failed
/// before any packet).
fn proto(tcp: bool, peer: Option<&Peer>) -> &'static str {
    match (tcp, peer) {
        (true, _) => "tcp",
        (false, Some(Peer::Unix(_))) => "unix",
        _ => "-",
    }
}

pub(super) fn peer_table(rows: &[PeerRow], limit: usize) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "PEER", "PROTO", "CALLS", "RESULTS", "TOTAL", "P50", "P99", "MAX",
    ]);
    for r in rows.iter().take(limit) {
        let outcomes: Vec<String> = r.outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        t.add_row(vec![
            r.peer.clone(),
            r.proto.to_string(),
            r.latency.count.to_string(),
            outcomes.join(", "),
            fmt_ns(r.latency.total_ns),
            fmt_ns(r.latency.p50_ns),
            fmt_ns(r.latency.p99_ns),
            fmt_ns(r.latency.max_ns),
        ]);
    }
    right_align(&mut t, 2..3);
    right_align(&mut t, 4..8);
    Some(t)
}

pub(super) fn slowest_table(rows: &[ConnectRow], limit: usize) -> Option<Table> {
    if rows.is_empty() {
        return None;
    }
    let mut t = new_table(&[
        "PID",
        "TID",
        "FD",
        "PEER",
        "PROTO",
        "MODE",
        "RESULT",
        "LATENCY",
        "SYSCALL",
        "HANDSHAKE",
    ]);
    for r in rows.iter().take(limit) {
        t.add_row(vec![
            r.pid.to_string(),
            r.tid.to_string(),
            r.fd.to_string(),
            r.peer.clone(),
            r.proto.to_string(),
            if r.nonblocking {
                "non-blocking"
            } else {
                "blocking"
            }
            .to_string(),
            r.outcome.clone(),
            fmt_ns(r.latency_ns),
            fmt_ns(r.syscall_ns),
            r.handshake_ns.map_or("-".into(), fmt_ns),
        ]);
    }
    right_align(&mut t, 0..3);
    right_align(&mut t, 7..10);
    Some(t)
}

/// The connect rows: per peer, and the slowest connects.
pub(super) fn rows(agg: &Aggregate) -> (Vec<PeerRow>, Vec<ConnectRow>) {
    // Unfinished connects count, with the time they have waited so far.
    let mut peers = agg.connects().peers.clone();
    for r in &agg.connects().in_flight {
        add_to_peers(&mut peers, r);
    }
    let mut connect_peers: Vec<PeerRow> = peers
        .iter()
        .map(|(peer, s)| PeerRow {
            peer: agg.name_peer(peer),
            proto: proto(s.tcp, Some(peer)),
            latency: LatencyRow::from(&s.latency),
            outcomes: s
                .outcomes
                .iter()
                .map(|(o, n)| (o.to_string(), *n))
                .collect(),
        })
        .collect();
    connect_peers.sort_by_key(|r| std::cmp::Reverse(r.latency.total_ns));
    let mut slowest: Vec<&ConnectRecord> = agg
        .connects()
        .slowest
        .iter()
        .chain(&agg.connects().in_flight)
        .collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.latency_ns()));
    let slowest_connects = slowest
        .into_iter()
        .map(|r| ConnectRow {
            pid: r.pid,
            tid: r.tid,
            fd: r.fd,
            peer: r.peer.as_ref().map_or("?".into(), |p| agg.name_peer(p)),
            proto: proto(r.tcp, r.peer.as_ref()),
            nonblocking: r.nonblocking,
            outcome: r.outcome.to_string(),
            latency_ns: r.latency_ns(),
            syscall_ns: r.syscall_ns,
            handshake_ns: r.handshake_ns,
            call_site: r.call_site.map(|id| agg.sites().site(id).label()),
        })
        .collect();
    (connect_peers, slowest_connects)
}

/// What to fix first about each peer connected to: stalls, refusals.
pub(super) fn findings(r: &Report, denominator_ns: u64, out: &mut Vec<Finding>) {
    for p in &r.connect_peers {
        let s = share(p.latency.total_ns, denominator_ns);
        let stalls = p.proto == "tcp" && p.latency.max_ns >= 900_000_000;
        if stalls {
            out.push(Finding {
                kind: Kind::Connect,
                share: s,
                what: format!(
                    "connects to {} stall: up to {} ({})",
                    p.peer,
                    fmt_ns(p.latency.max_ns),
                    fmt_share(s)
                ),
                evidence: format!(
                    "{} connects, p50 {}, p99 {}: a second or more is a SYN retransmit (after \
                     1 s, then 3 s)",
                    p.latency.count,
                    fmt_ns(p.latency.p50_ns),
                    fmt_ns(p.latency.p99_ns)
                ),
                fix: "the server's accept queue is full or SYNs are lost: a larger listen \
                      backlog, a server that accepts faster, or fewer new connections (reuse them)"
                    .to_string(),
            });
        } else if let Some(refused) = p.outcomes.get("ECONNREFUSED")
            && *refused >= 3
        {
            out.push(Finding {
                kind: Kind::Connect,
                share: s,
                what: format!("{refused} connects to {} were refused", p.peer),
                evidence: "nothing listens there".to_string(),
                fix: "is the service down, or the address stale? stop calling it, or fail \
                      over sooner"
                    .to_string(),
            });
        }
    }
}
