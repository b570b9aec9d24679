//! DNS, aggregated: each name lookup with the DNS messages its thread sent
//! and received while inside it, DNS traffic outside any libc lookup, and
//! per host name the evidence a finding is made of.
//!
//! `wire` decodes the messages; `go` gives a Go lookup the queries its
//! resolver's goroutines sent.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::Serialize;
use tracer_common::{DNS_SEND, DnsPacketEvent, DnsWaitEvent, LatencyStats, LookupEvent, LookupFn};

use self::fields::{c_string, is_address, service_of};
pub use self::{
    fields::{Addresses, Service, lookup_result},
    wire::{DnsMessage, parse_message},
};
use crate::{
    peer::{Peer, parse_sockaddr},
    unwind::HashMap,
};

mod fields;
mod go;
mod wire;

/// Lookups kept with their full detail, slowest first.
const SLOWEST_KEPT: usize = 100;
/// Messages and waits kept per lookup (a lookup with more is abnormal).
const EVENTS_PER_LOOKUP: usize = 64;

/// One DNS query and, when it came, its answer.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRecord {
    pub name: String,
    pub qtype: String,
    pub id: u16,
    pub server: Option<String>,
    #[serde(skip)]
    pub sent_ns: u64,
    /// Time from the send to the answer; None if no answer was seen.
    pub latency_ns: Option<u64>,
    pub rcode: Option<String>,
    pub answers: u16,
    /// The same name and type were already asked in this lookup.
    pub retry: bool,
}

impl QueryRecord {
    /// A query just sent, not answered yet.
    fn sent(name: String, qtype: String, id: u16, server: Option<String>, sent_ns: u64) -> Self {
        Self {
            name,
            qtype,
            id,
            server,
            sent_ns,
            latency_ns: None,
            rcode: None,
            answers: 0,
            retry: false,
        }
    }

    /// The answer came: when, with what code and how many records.
    fn answered(&mut self, msg: &DnsMessage, ts_ns: u64) {
        self.latency_ns = Some(ts_ns.saturating_sub(self.sent_ns));
        self.rcode = Some(msg.rcode.clone());
        self.answers = msg.answers;
    }
}

/// A resolver's wait in poll() for an answer.
#[derive(Debug, Clone, Serialize)]
pub struct WaitRecord {
    pub duration_ns: u64,
    /// poll returned 0: no answer within the timeout.
    pub timed_out: bool,
    pub timeout_ms: i64,
}

/// What a connect's address was looked up as (see `host_for_connect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectName {
    Host(String),
    /// The program used the address itself.
    Address,
    Unknown,
}

/// A thread's last lookup, for naming the connect that follows it.
#[derive(Debug, Clone)]
struct LastLookup {
    host: String,
    addrs: Addresses,
    /// A Go lookup names only the next connect to its addresses on its
    /// thread: the thread runs other goroutines after it, whose connects
    /// are not this lookup's.
    go: bool,
}

/// The result of a lookup still open when the report was made.
pub const IN_PROGRESS: &str = "in progress";

/// One finished libc lookup.
#[derive(Debug, Clone, Serialize)]
pub struct LookupRecord {
    pub pid: u32,
    pub tid: u32,
    pub function: &'static str,
    pub host: String,
    pub service: Option<Service>,
    #[serde(skip)]
    pub start_ns: u64,
    pub duration_ns: u64,
    /// "ok", or the error by name (EAI_NONAME, HOST_NOT_FOUND, ...).
    pub result: Cow<'static, str>,
    /// Distinct addresses returned (as far as copied).
    pub addresses: Addresses,
    pub queries: Vec<QueryRecord>,
    pub waits: Vec<WaitRecord>,
    /// The code that made the lookup.
    pub call_site: Option<String>,
}

/// Everything seen for one host name.
#[derive(Debug, Clone)]
pub struct HostStats {
    pub latency: LatencyStats,
    pub results: BTreeMap<String, u64>,
    pub queries: u64,
    pub retries: u64,
    pub timeouts: u64,
    /// Time waited in polls that ended in a timeout.
    pub timeout_wait_ns: u64,
    /// Per query type: asked, answered, answer latency.
    pub by_type: BTreeMap<String, TypeStats>,
    /// Names queried that are not the host itself (search-domain
    /// expansions), and in how many lookups.
    pub expansions: BTreeMap<String, u64>,
    pub servers: BTreeMap<String, u64>,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl HostStats {
    fn new(first_ns: u64) -> Self {
        Self {
            latency: LatencyStats::ZERO,
            results: BTreeMap::new(),
            queries: 0,
            retries: 0,
            timeouts: 0,
            timeout_wait_ns: 0,
            by_type: BTreeMap::new(),
            expansions: BTreeMap::new(),
            servers: BTreeMap::new(),
            first_ns,
            last_ns: first_ns,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TypeStats {
    pub asked: u64,
    pub answered: u64,
    pub latency: LatencyStats,
    pub rcodes: BTreeMap<String, u64>,
}

/// A lookup in progress on a thread, collecting its DNS traffic.
#[derive(Debug)]
struct OpenLookup {
    start_ns: u64,
    queries: Vec<QueryRecord>,
    waits: Vec<WaitRecord>,
}

/// DNS queries made outside libc lookups (other resolvers), by
/// (name, type, server).
#[derive(Debug, Clone)]
pub struct StandaloneStats {
    pub latency: LatencyStats,
    pub unanswered: u64,
    pub rcodes: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct DnsState {
    open: HashMap<u32, OpenLookup>,
    pub hosts: BTreeMap<String, HostStats>,
    pub lookups_total: u64,
    pub slowest: Vec<LookupRecord>,
    /// Standalone queries awaiting an answer, by (pid, fd, id).
    pending: HashMap<(u32, i32, u16), QueryRecord>,
    pub standalone: BTreeMap<(String, String, String), StandaloneStats>,
    pub undecodable: u64,
    /// The host names traced lookups returned each address for.
    hosts_by_ip: HashMap<IpAddr, BTreeSet<String>>,
    /// Each thread's last successful lookup, by the thread it returned
    /// on. A connect on the same thread to one of its addresses is a
    /// connect to that host, even when several hosts share the address.
    last_by_thread: HashMap<u32, LastLookup>,
    /// Every query seen, by (type, response code or "none", server).
    pub query_counts: BTreeMap<(String, String, String), u64>,
    /// Go lookups in progress, per process. Go's resolver sends its
    /// queries from goroutines of their own, on any thread: a query is a
    /// lookup's when the process has one open, and the lookup, when it
    /// ends, takes the queries for its name sent while it ran.
    open_go: HashMap<u32, u32>,
    /// Queries sent while a Go lookup was open, by process: (fd, query).
    go_queries: HashMap<u32, Vec<(i32, QueryRecord)>>,
}

/// Adds one to `key`'s count, allocating its name only the first time.
fn count_in(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// A host name in lower case, copied only when it has capitals.
pub(crate) fn lowercase(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) || !name.is_ascii() {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Counts a query by type, response code and server.
fn count_query(counts: &mut BTreeMap<(String, String, String), u64>, q: &QueryRecord) {
    let key = (
        q.qtype.clone(),
        q.rcode.clone().unwrap_or_else(|| "none".into()),
        q.server.clone().unwrap_or_else(|| "?".into()),
    );
    *counts.entry(key).or_default() += 1;
}

fn server_of(peer: &[u8; 28]) -> Option<String> {
    match parse_sockaddr(peer)? {
        Peer::Inet(a) => Some(a.to_string()),
        _ => None,
    }
}

impl DnsState {
    /// A lookup began: from its `LookupStartEvent`, or from its stack
    /// record, which stands for one (`tracer_common::STACK_FOR_LOOKUP`).
    pub fn on_lookup_start(&mut self, tgid: u32, tid: u32, go: bool, start_ns: u64) {
        if go {
            *self.open_go.entry(tgid).or_default() += 1;
            return;
        }
        self.open.insert(
            tid,
            OpenLookup {
                start_ns,
                queries: Vec::new(),
                waits: Vec::new(),
            },
        );
    }

    pub fn on_packet(&mut self, ev: &DnsPacketEvent) {
        let captured = (ev.captured as usize).min(ev.data.len());
        let Some(msg) = parse_message(&ev.data[..captured]) else {
            self.undecodable += 1;
            return;
        };
        let server = server_of(&ev.peer);
        let open = self.open.get_mut(&ev.tid);
        if open.is_none() && self.open_go.get(&ev.tgid).is_some_and(|&n| n > 0) {
            self.on_go_packet(ev, msg, server);
            return;
        }
        if ev.direction == DNS_SEND {
            let Some((name, qtype)) = msg.question.clone() else {
                return;
            };
            let mut q = QueryRecord::sent(name, qtype, msg.id, server, ev.ts_ns);
            match open {
                Some(open) => {
                    q.retry = open
                        .queries
                        .iter()
                        .any(|p| p.name == q.name && p.qtype == q.qtype);
                    if open.queries.len() < EVENTS_PER_LOOKUP {
                        open.queries.push(q);
                    }
                }
                None => {
                    self.pending.insert((ev.tgid, ev.fd, msg.id), q);
                }
            }
            return;
        }
        // A response: find its query by id (and question, when present).
        let matches = |q: &QueryRecord| {
            q.id == msg.id
                && q.latency_ns.is_none()
                && msg
                    .question
                    .as_ref()
                    .is_none_or(|(n, t)| *n == q.name && *t == q.qtype)
        };
        let answer = |q: &mut QueryRecord| q.answered(&msg, ev.ts_ns);
        if let Some(open) = open {
            if let Some(q) = open.queries.iter_mut().rev().find(|q| matches(q)) {
                answer(q);
            }
            return;
        }
        if let Some(mut q) = self.pending.remove(&(ev.tgid, ev.fd, msg.id)) {
            answer(&mut q);
            self.record_standalone(&q);
        }
    }

    pub fn on_wait(&mut self, ev: &DnsWaitEvent) {
        if let Some(open) = self.open.get_mut(&ev.tid)
            && open.waits.len() < EVENTS_PER_LOOKUP
        {
            open.waits.push(WaitRecord {
                duration_ns: ev.duration_ns,
                timed_out: ev.ret == 0,
                timeout_ms: ev.timeout_ms,
            });
        }
    }

    /// A finished lookup; returns its record (also kept if among the
    /// slowest), or None when it was a part of a Go lookup: a Go program
    /// built with cgo resolves through getaddrinfo (`GODEBUG=netdns=cgo`),
    /// inside `lookupIPAddr`, and the lookup counts once, as Go's, with
    /// the queries getaddrinfo sent.
    ///
    /// `call_site` names the lookup's site, asked only for a lookup kept
    /// among the slowest (a site's label is a few hundred bytes, copied
    /// per lookup otherwise).
    pub fn on_lookup(
        &mut self,
        ev: &LookupEvent,
        call_site: impl FnOnce() -> Option<String>,
    ) -> Option<LookupRecord> {
        let func = LookupFn::from_u32(ev.func).unwrap_or(LookupFn::Getaddrinfo);
        if !func.is_go() && self.open_go.get(&ev.tgid).is_some_and(|&n| n > 0) {
            let held = self.go_queries.entry(ev.tgid).or_default();
            if let Some(open) = self.open.remove(&ev.tid) {
                held.extend(open.queries.into_iter().map(|q| (-1, q)));
            }
            return None;
        }
        let open = if func.is_go() {
            None
        } else {
            self.open.remove(&ev.tid)
        };
        let host = c_string(&ev.host);
        // Go "looks up" every address it dials, the DNS server's own
        // included, and returns at once: not a lookup, but it says that
        // the dial that follows is to the bare address.
        if func.is_go()
            && let Ok(ip) = host.parse::<IpAddr>()
        {
            self.claim_go_queries(ev, &host);
            let last = LastLookup {
                host,
                addrs: [ip.to_canonical()].into_iter().collect(),
                go: true,
            };
            self.last_by_thread.insert(ev.end_tid, last);
            return None;
        }
        let service = service_of(&ev.service);
        let result = lookup_result(func, ev.ret);
        let mut addresses: Addresses = ev
            .families
            .iter()
            .zip(ev.addrs.iter())
            .filter_map(|(&fam, a)| match fam as i32 {
                libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
                // Go keeps some IPv4 addresses in 16 bytes.
                libc::AF_INET6 if func.is_go() => Some(Ipv6Addr::from(*a).to_canonical()),
                libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
                _ => None,
            })
            .collect();
        addresses.sort();
        let mut previous = None;
        addresses.retain(|a| previous.replace(*a) != Some(*a));
        // A numeric host (getaddrinfo("127.0.0.1")) names nothing new.
        if !addresses.is_empty() {
            if !is_address(&host) {
                let lower = lowercase(&host);
                for a in &addresses {
                    let names = self.hosts_by_ip.entry(*a).or_default();
                    // Most lookups name a host already known by its address.
                    if !names.contains(lower.as_ref()) {
                        names.insert(lower.clone().into_owned());
                    }
                }
            }
            // A loop's lookups are the same each time: kept as they are.
            let same = self
                .last_by_thread
                .get(&ev.end_tid)
                .is_some_and(|l| l.host == host && l.addrs == addresses && l.go == func.is_go());
            if !same {
                let last = LastLookup {
                    host: host.clone(),
                    addrs: addresses.clone(),
                    go: func.is_go(),
                };
                self.last_by_thread.insert(ev.end_tid, last);
            }
        }
        // Traffic between LookupStart and now belongs to this lookup; a
        // LookupStart lost to a full ring buffer leaves it empty.
        let (queries, waits) = match open {
            Some(o) if o.start_ns == ev.start_ns => (o.queries, o.waits),
            _ if func.is_go() => self.claim_go_queries(ev, &host),
            _ => (Vec::new(), Vec::new()),
        };
        let record = LookupRecord {
            pid: ev.tgid,
            tid: ev.tid,
            function: func.name(),
            host,
            service,
            start_ns: ev.start_ns,
            duration_ns: ev.duration_ns,
            result,
            addresses,
            queries,
            waits,
            call_site: None,
        };
        self.add_lookup(&record, call_site);
        Some(record)
    }

    /// Counts a lookup. Per lookup, it allocates only what is new: a new
    /// host, result or expansion (the collector's time went to allocating).
    /// `call_site` names the lookup's site when the record does not.
    fn add_lookup(&mut self, r: &LookupRecord, call_site: impl FnOnce() -> Option<String>) {
        self.lookups_total += 1;
        let key = lowercase(&r.host);
        if !self.hosts.contains_key(key.as_ref()) {
            self.hosts
                .insert(key.clone().into_owned(), HostStats::new(r.start_ns));
        }
        let h = self.hosts.get_mut(key.as_ref()).expect("inserted above");
        h.latency.record(r.duration_ns);
        count_in(&mut h.results, &r.result);
        h.first_ns = h.first_ns.min(r.start_ns);
        h.last_ns = h.last_ns.max(r.start_ns);
        let bare = key.trim_end_matches('.');
        let mut expanded: Vec<&str> = r
            .queries
            .iter()
            .map(|q| q.name.as_str())
            .filter(|n| *n != bare)
            .collect();
        expanded.sort_unstable();
        expanded.dedup();
        for name in expanded {
            count_in(&mut h.expansions, name);
        }
        for q in &r.queries {
            count_query(&mut self.query_counts, q);
            h.queries += 1;
            h.retries += u64::from(q.retry);
            if let Some(s) = &q.server {
                count_in(&mut h.servers, s);
            }
            let t = h
                .by_type
                .entry(q.qtype.clone())
                .or_insert_with(|| TypeStats {
                    asked: 0,
                    answered: 0,
                    latency: LatencyStats::ZERO,
                    rcodes: BTreeMap::new(),
                });
            t.asked += 1;
            if let Some(l) = q.latency_ns {
                t.answered += 1;
                t.latency.record(l);
            }
            if let Some(rc) = &q.rcode {
                count_in(&mut t.rcodes, rc);
            }
        }
        for w in r.waits.iter().filter(|w| w.timed_out) {
            h.timeouts += 1;
            h.timeout_wait_ns += w.duration_ns;
        }
        // Most lookups are not among the slowest: the last kept says so
        // without the search (its probes, each into another 400-byte
        // record, were a tenth of this function's samples in `perf`).
        let full = self.slowest.len() >= SLOWEST_KEPT;
        if full && self.slowest[SLOWEST_KEPT - 1].duration_ns >= r.duration_ns {
            return;
        }
        let pos = self
            .slowest
            .partition_point(|x| x.duration_ns >= r.duration_ns);
        if pos < SLOWEST_KEPT {
            let mut kept = r.clone();
            if kept.call_site.is_none() {
                kept.call_site = call_site();
            }
            self.slowest.insert(pos, kept);
            self.slowest.truncate(SLOWEST_KEPT);
        }
    }

    fn record_standalone(&mut self, q: &QueryRecord) {
        count_query(&mut self.query_counts, q);
        let key = (
            q.name.clone(),
            q.qtype.clone(),
            q.server.clone().unwrap_or_else(|| "?".into()),
        );
        let s = self
            .standalone
            .entry(key)
            .or_insert_with(|| StandaloneStats {
                latency: LatencyStats::ZERO,
                unanswered: 0,
                rcodes: BTreeMap::new(),
            });
        match q.latency_ns {
            Some(l) => s.latency.record(l),
            None => s.unanswered += 1,
        }
        if let Some(rc) = &q.rcode {
            *s.rcodes.entry(rc.clone()).or_default() += 1;
        }
    }

    /// End of the trace: lookups still in progress count with the time they
    /// waited; standalone queries never answered count as such.
    pub fn finish(&mut self, in_flight: Vec<LookupRecord>) {
        self.finish_go(&in_flight);
        for r in in_flight {
            self.add_lookup(&r, || None);
        }
        let pending: Vec<QueryRecord> = self.pending.drain().map(|(_, q)| q).collect();
        for q in pending {
            self.record_standalone(&q);
        }
    }

    /// Lookups in progress at a snapshot, as records with the time waited
    /// so far and the traffic seen so far: `open` is (pid, tid, function,
    /// start, host) read from the kernel's lookup map.
    pub fn in_flight(
        &self,
        open: &[(u32, u32, u32, u64, String)],
        now_ns: u64,
    ) -> Vec<LookupRecord> {
        open.iter()
            .map(|(pid, tid, func, start, host)| {
                let func = LookupFn::from_u32(*func).unwrap_or(LookupFn::Getaddrinfo);
                let seen = self.open.get(tid).filter(|o| o.start_ns == *start);
                let (queries, waits) = if func.is_go() {
                    self.go_queries_so_far(*pid, *start, host)
                } else {
                    seen.map(|o| (o.queries.clone(), o.waits.clone()))
                        .unwrap_or_default()
                };
                LookupRecord {
                    pid: *pid,
                    tid: *tid,
                    function: func.name(),
                    host: host.clone(),
                    service: None,
                    start_ns: *start,
                    duration_ns: now_ns.saturating_sub(*start),
                    result: IN_PROGRESS.into(),
                    addresses: Addresses::new(),
                    queries,
                    waits,
                    call_site: None,
                }
            })
            .collect()
    }

    /// Host statistics with lookups still in progress counted in.
    pub fn hosts_with(
        &self,
        in_flight: &[LookupRecord],
    ) -> (BTreeMap<String, HostStats>, Vec<LookupRecord>) {
        let mut copy = DnsState {
            hosts: self.hosts.clone(),
            slowest: self.slowest.clone(),
            ..Default::default()
        };
        for r in in_flight {
            copy.add_lookup(r, || None);
        }
        (copy.hosts, copy.slowest)
    }

    /// The host name traced lookups resolved to this address, when only
    /// one did.
    pub fn host_of(&self, ip: &IpAddr) -> Option<&str> {
        match self.hosts_by_ip.get(ip) {
            Some(hosts) if hosts.len() == 1 => hosts.first().map(String::as_str),
            _ => None,
        }
    }

    /// What a thread's connect to `ip` went to: the host of the thread's
    /// last lookup if it returned `ip` (or the bare address, if that lookup
    /// was of the address itself, or the connect is a lookup's own, to its
    /// DNS server); `Unknown` if no lookup on the thread says.
    pub fn host_for_connect(&mut self, tid: u32, ip: &IpAddr) -> ConnectName {
        if self.open.contains_key(&tid) {
            return ConnectName::Address;
        }
        let Some(last) = self
            .last_by_thread
            .get(&tid)
            .filter(|l| l.addrs.contains(ip))
        else {
            return ConnectName::Unknown;
        };
        let name = match last.host.parse::<IpAddr>() {
            Ok(_) => ConnectName::Address,
            Err(_) => ConnectName::Host(last.host.clone()),
        };
        if last.go {
            self.last_by_thread.remove(&tid);
        }
        name
    }

    /// Forgets open lookups of threads that are gone.
    pub fn forget_thread(&mut self, tid: u32) {
        self.open.remove(&tid);
        self.last_by_thread.remove(&tid);
    }
}

#[cfg(test)]
pub(crate) mod tests;
