//! Connects: each connect() joined with its TCP handshake, per peer, and
//! the slowest ones.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

use serde::Serialize;
use tracer_common::{ConnectEvent, HandshakeEvent, LatencyStats, TCP_ESTABLISHED};

use crate::peer::{Peer, parse_sockaddr};

const EINPROGRESS: i64 = 115;

/// How a connect attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ConnectOutcome {
    Connected,
    /// connect() failed with this errno name (ECONNREFUSED, ETIMEDOUT, ...).
    Failed(String),
    /// Non-blocking connect whose handshake failed (reset or timed out).
    HandshakeFailed,
    /// Not finished when tracing stopped: a blocking connect still in the
    /// syscall, or a non-blocking one with no answer to its SYN yet.
    InProgress,
}

impl fmt::Display for ConnectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectOutcome::Connected => f.write_str("ok"),
            ConnectOutcome::Failed(e) => f.write_str(e),
            ConnectOutcome::HandshakeFailed => f.write_str("handshake failed"),
            ConnectOutcome::InProgress => f.write_str("in progress"),
        }
    }
}

/// One connect() call, joined with its TCP handshake where there was one.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectRecord {
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub peer: Option<Peer>,
    /// True when the kernel moved a TCP socket to SYN_SENT in this call.
    pub tcp: bool,
    pub nonblocking: bool,
    pub outcome: ConnectOutcome,
    /// Monotonic time the call started.
    pub start_ns: u64,
    /// Time spent inside the connect() syscall.
    pub syscall_ns: u64,
    /// SYN sent to SYN-ACK received (or failure), when known.
    pub handshake_ns: Option<u64>,
    /// The code that called connect().
    #[serde(skip)]
    pub call_site: Option<u32>,
}

impl ConnectRecord {
    /// The latency that counts: the handshake for a non-blocking connect,
    /// the syscall for a blocking one.
    pub fn latency_ns(&self) -> u64 {
        if self.nonblocking {
            self.handshake_ns.unwrap_or(self.syscall_ns)
        } else {
            self.syscall_ns
        }
    }
}

/// All connects to one peer.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub latency: LatencyStats,
    pub outcomes: BTreeMap<ConnectOutcome, u64>,
    pub tcp: bool,
}

/// Counts a connect in the statistics of its peer.
pub fn add_to_peers(peers: &mut BTreeMap<Peer, PeerStats>, record: &ConnectRecord) {
    let Some(peer) = &record.peer else { return };
    let stats = peers.entry(peer.clone()).or_insert_with(|| PeerStats {
        latency: LatencyStats::ZERO,
        outcomes: BTreeMap::new(),
        tcp: false,
    });
    stats.latency.record(record.latency_ns());
    *stats.outcomes.entry(record.outcome.clone()).or_default() += 1;
    stats.tcp |= record.tcp;
}

/// How long a handshake seen before its connect() record is kept for the join.
const EARLY_HANDSHAKE_TTL_NS: u64 = 60_000_000_000;

/// How many individual connects are kept for the "slowest" list.
const SLOWEST_KEPT: usize = 200;

/// Every connect of the traced processes: joined with its handshake,
/// counted per peer, the slowest kept.
#[derive(Debug, Default)]
pub struct ConnectState {
    pub peers: BTreeMap<Peer, PeerStats>,
    pub total: u64,
    /// The slowest connects, slowest first, at most `SLOWEST_KEPT`.
    pub slowest: Vec<ConnectRecord>,
    /// Connects inside the syscall when the snapshot was taken.
    pub in_flight: Vec<ConnectRecord>,
    awaiting_handshake: HashMap<u64, ConnectRecord>,
    early_handshakes: HashMap<u64, HandshakeEvent>,
}

/// The record of a connect() call, before its handshake is joined.
pub fn record_of(c: &ConnectEvent, call_site: Option<u32>) -> ConnectRecord {
    let len = (c.addr_len as usize).min(c.addr.len());
    ConnectRecord {
        pid: c.tgid,
        tid: c.tid,
        fd: c.fd,
        peer: parse_sockaddr(&c.addr[..len]),
        tcp: c.skaddr != 0,
        nonblocking: c.ret == -EINPROGRESS,
        outcome: if c.ret == 0 {
            ConnectOutcome::Connected
        } else {
            ConnectOutcome::Failed(crate::syscall_names::errno_name(-c.ret))
        },
        start_ns: c.start_ns,
        syscall_ns: c.duration_ns,
        handshake_ns: None,
        call_site,
    }
}

impl ConnectState {
    /// Joins a connect with its TCP handshake: the record when the connect
    /// is finished, `None` while its handshake is still to come.
    pub fn on_connect(&mut self, skaddr: u64, mut record: ConnectRecord) -> Option<ConnectRecord> {
        if skaddr == 0 {
            return Some(record);
        }
        let early = self.early_handshakes.remove(&skaddr);
        if !record.nonblocking {
            record.handshake_ns = early.map(|h| h.duration_ns);
            return Some(record);
        }
        match early {
            Some(h) => Some(with_handshake(record, &h)),
            None => {
                self.awaiting_handshake.insert(skaddr, record);
                None
            }
        }
    }

    /// The connect a handshake finishes, if its record came first.
    pub fn on_handshake(&mut self, h: HandshakeEvent) -> Option<ConnectRecord> {
        match self.awaiting_handshake.remove(&h.skaddr) {
            Some(record) => Some(with_handshake(record, &h)),
            None => {
                // A blocking connect's handshake ends inside the syscall, so
                // it arrives before the connect record: keep it for the join.
                let now = h.start_ns + h.duration_ns;
                self.early_handshakes
                    .retain(|_, e| now.saturating_sub(e.start_ns) < EARLY_HANDSHAKE_TTL_NS);
                self.early_handshakes.insert(h.skaddr, h);
                None
            }
        }
    }

    /// Counts a finished connect in its peer's statistics and the slowest.
    pub fn count(&mut self, record: ConnectRecord) {
        self.total += 1;
        add_to_peers(&mut self.peers, &record);
        let pos = self
            .slowest
            .partition_point(|r| r.latency_ns() >= record.latency_ns());
        if pos < SLOWEST_KEPT {
            self.slowest.insert(pos, record);
            self.slowest.truncate(SLOWEST_KEPT);
        }
    }

    /// At the end of the run: the connects not finished, in progress, with
    /// the time they have waited so far.
    pub fn take_unfinished(&mut self, now_ns: u64) -> Vec<ConnectRecord> {
        let mut unfinished: Vec<_> = self.awaiting_handshake.drain().map(|(_, r)| r).collect();
        unfinished.append(&mut self.in_flight);
        for record in &mut unfinished {
            record.outcome = ConnectOutcome::InProgress;
            record.handshake_ns = Some(now_ns.saturating_sub(record.start_ns));
        }
        unfinished
    }
}

fn with_handshake(mut record: ConnectRecord, h: &HandshakeEvent) -> ConnectRecord {
    record.handshake_ns = Some(h.duration_ns);
    record.outcome = if h.new_state == TCP_ESTABLISHED {
        ConnectOutcome::Connected
    } else {
        ConnectOutcome::HandshakeFailed
    };
    record
}
