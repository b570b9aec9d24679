//! HTTP requests a traced server served, by endpoint: each request from the
//! read that began with its request line to its response's last write (the
//! kernel side's `RequestLineEvent` and `RequestEndEvent`), and the
//! lookups, connects, SSL calls and slow reads and writes made for it.
//!
//! Which calls are a request's: a call belongs to the request open on its
//! own thread (a thread-per-request server: the thread that read the
//! request serves it); on a thread with no request open, to the process's
//! only open request (a server whose I/O thread reads and whose workers
//! handle, as waitress, when one request runs at a time). A call made while
//! several requests are open on its thread (an event loop serving
//! concurrent requests), or in its process with none on its thread, waits:
//! a request whose response's last write came before the call began is
//! not its owner, and when one candidate is left, the call is its. When no
//! such end tells them apart, the call has no sound owner: it is counted as
//! such, not guessed.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use tracer_common::{LatencyStats, REQUEST_LINE_BYTES, RequestEndEvent, RequestLineEvent};

use crate::kind::CallKind;

/// Routes kept by default (`--max-routes`); the rest are counted as `other`.
pub const DEFAULT_MAX_ROUTES: usize = 50;

/// The slowest requests kept with their calls, for their timelines.
const SLOWEST_KEPT: usize = 10;

/// The target of a request's calls on its own connection.
pub const CLIENT: &str = "the client";

/// Calls kept per request for its timeline (a response read in 1,000 TLS
/// records is shown as runs of calls anyway); the rest are still counted.
const CALLS_KEPT: usize = 2000;

/// The methods of RFC 9110, and PATCH: anything else the kernel side let
/// through (capital letters and a space) is not a request line.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A route: method and normalized path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Route {
    pub method: String,
    pub path: String,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// One call made for a request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestCall {
    pub kind: CallKind,
    /// Host, peer or file, as the call's own table names it.
    pub target: String,
    pub start_ns: u64,
    pub latency_ns: u64,
    /// Its call site (`Attributor`'s id), if its stack was taken.
    #[serde(skip)]
    pub site: Option<u32>,
}

/// Calls of one kind to one target from one call site (if known).
type CallKey = (CallKind, String, Option<u32>);

/// A request begun and not ended yet.
#[derive(Debug)]
struct OpenRequest {
    fd: i32,
    tid: u32,
    start_ns: u64,
    route: Route,
    calls: Vec<RequestCall>,
    /// Calls not kept in `calls` (over `CALLS_KEPT`): not in its timeline,
    /// but counted with its route's (calls, ns).
    calls_dropped: u64,
    overflow: BTreeMap<CallKey, (u64, u64)>,
}

/// A call that several open requests could own, kept until the others are
/// known to have been answered before it began (waitress's I/O thread can
/// read the next request before it sees the last one's connection close).
#[derive(Debug)]
struct PendingCall {
    pid: u32,
    fd: Option<i32>,
    /// The requests it may be for: (fd, start).
    candidates: Vec<(i32, u64)>,
    call: RequestCall,
}

/// Calls kept undecided at most; past this, unowned at once.
const PENDING_KEPT: usize = 10_000;

/// A request served, with the calls made for it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub pid: u32,
    pub tid: u32,
    pub route: Route,
    pub start_ns: u64,
    pub latency_ns: u64,
    /// In the order they started.
    pub calls: Vec<RequestCall>,
    pub calls_dropped: u64,
}

/// One route's requests, and the calls made for them by kind and target,
/// and by call site.
#[derive(Debug, Clone)]
pub struct RouteStats {
    pub latency: LatencyStats,
    /// (kind as rows count it, target) -> (calls, ns).
    pub calls: BTreeMap<(CallKind, String), (u64, u64)>,
    /// (kind, target, call site) -> (calls, ns), for the calls whose site
    /// is known.
    pub sites: BTreeMap<(CallKind, String, u32), (u64, u64)>,
}

impl Default for RouteStats {
    fn default() -> Self {
        Self {
            latency: LatencyStats::ZERO,
            calls: BTreeMap::new(),
            sites: BTreeMap::new(),
        }
    }
}

impl RouteStats {
    fn add(&mut self, (kind, target, site): CallKey, n: u64, ns: u64) {
        if let Some(site) = site {
            let e = self.sites.entry((kind, target.clone(), site)).or_default();
            (e.0, e.1) = (e.0 + n, e.1 + ns);
        }
        let e = self.calls.entry((kind, target)).or_default();
        (e.0, e.1) = (e.0 + n, e.1 + ns);
    }
}

/// Every traced server's HTTP requests.
#[derive(Debug)]
pub struct HttpState {
    max_routes: usize,
    /// Requests open, per process: few at a time, so a list.
    open: HashMap<u32, Vec<OpenRequest>>,
    pub routes: BTreeMap<Route, RouteStats>,
    /// Requests whose route was not kept (over `max_routes`).
    pub other: RouteStats,
    /// The slowest requests, slowest first.
    pub slowest: Vec<RequestRecord>,
    /// Requests that ended with no response written (the client left, or
    /// the connection was closed unanswered): not timed.
    pub unanswered: u64,
    /// Calls made while a request was open in their process that no rule
    /// gives to one request (several open on their thread; or none on
    /// their thread, and several in the process).
    pub calls_unowned: u64,
    /// With `--events`: requests at least this slow are kept in `finished`
    /// until taken.
    keep_finished_ns: Option<u64>,
    finished: Vec<RequestRecord>,
    /// The ids of their spans.
    span_ids: SpanIds,
    pending: Vec<PendingCall>,
}

impl Default for HttpState {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ROUTES)
    }
}

impl HttpState {
    pub fn new(max_routes: usize) -> Self {
        Self {
            max_routes,
            open: HashMap::new(),
            routes: BTreeMap::new(),
            other: RouteStats::default(),
            slowest: Vec::new(),
            unanswered: 0,
            calls_unowned: 0,
            keep_finished_ns: None,
            finished: Vec::new(),
            span_ids: SpanIds::new(),
            pending: Vec::new(),
        }
    }

    /// Keeps at most `n` routes (`--max-routes`); the rest are `other`.
    pub fn set_max_routes(&mut self, n: usize) {
        self.max_routes = n;
    }

    /// Keeps each request at least `min_ns` slow for the event stream.
    pub fn keep_finished(&mut self, min_ns: u64) {
        self.keep_finished_ns = Some(min_ns);
    }

    /// The requests kept since the last time, as span trees (see
    /// `RequestRecord::to_span`).
    pub fn take_finished_spans(&mut self) -> Vec<serde_json::Value> {
        let finished = std::mem::take(&mut self.finished);
        finished
            .iter()
            .map(|r| r.to_span(&mut self.span_ids))
            .collect()
    }

    pub fn requests_total(&self) -> u64 {
        self.routes.values().map(|r| r.latency.count).sum::<u64>() + self.other.latency.count
    }

    /// Whether a request is open in the process (its calls may be the
    /// request's: see `on_call`).
    pub fn serving(&self, pid: u32) -> bool {
        self.open.contains_key(&pid)
    }

    /// The process exited: its open requests were never answered (the
    /// kernel closes its connections with no close() to end them), and
    /// they hold no memory from now on (node mode runs for days).
    pub fn forget_process(&mut self, pid: u32) {
        if let Some(open) = self.open.remove(&pid) {
            self.unanswered += open.len() as u64;
        }
        let before = self.pending.len();
        self.pending.retain(|p| p.pid != pid);
        self.calls_unowned += (before - self.pending.len()) as u64;
    }

    /// Calls that several open requests could still own.
    pub fn calls_undecided(&self) -> u64 {
        self.pending.len() as u64
    }

    /// Requests begun and not ended.
    pub fn open_count(&self) -> usize {
        self.open.values().map(Vec::len).sum()
    }

    pub fn on_line(&mut self, ev: &RequestLineEvent) {
        let Some(route) = parse_line(&ev.line, ev.len as usize) else {
            return;
        };
        let open = self.open.entry(ev.tgid).or_default();
        // A request the kernel saw no end of (its end lost with a full
        // ring) gives way to the next on its connection.
        open.retain(|r| r.fd != ev.fd);
        open.push(OpenRequest {
            fd: ev.fd,
            tid: ev.tid,
            start_ns: ev.start_ns,
            route,
            calls: Vec::new(),
            calls_dropped: 0,
            overflow: BTreeMap::new(),
        });
    }

    pub fn on_end(&mut self, ev: &RequestEndEvent) {
        let Some(open) = self.open.get_mut(&ev.tgid) else {
            return;
        };
        let Some(i) = open
            .iter()
            .position(|r| r.fd == ev.fd && r.start_ns == ev.start_ns)
        else {
            return;
        };
        let mut req = open.swap_remove(i);
        if open.is_empty() {
            self.open.remove(&ev.tgid);
        }
        self.settle_pending(ev);
        if ev.end_ns == 0 {
            self.unanswered += 1;
            return;
        }
        // Calls after the response's last write (the thread waiting for
        // the connection's next request) are not the request's.
        req.calls.retain(|c| c.start_ns < ev.end_ns);
        // The kernel ends a TLS request at its last write syscall's return
        // (the busy time); its last SSL write returns after that, and the
        // span ends there so that it holds the calls it lists.
        let end_ns = req
            .calls
            .iter()
            .filter(|c| c.target == CLIENT)
            .map(|c| c.start_ns + c.latency_ns)
            .fold(ev.end_ns, u64::max);
        // They came as they ended; a timeline is in the order they began
        // (a resolver's connect inside its lookup after the lookup).
        req.calls.sort_by_key(|c| c.start_ns);
        let latency_ns = end_ns.saturating_sub(req.start_ns);
        let stats = if self.routes.contains_key(&req.route) || self.routes.len() < self.max_routes {
            self.routes.entry(req.route.clone()).or_default()
        } else {
            &mut self.other
        };
        stats.latency.record(latency_ns);
        for c in &req.calls {
            stats.add((c.kind, c.target.clone(), c.site), 1, c.latency_ns);
        }
        for (key, (n, ns)) in std::mem::take(&mut req.overflow) {
            stats.add(key, n, ns);
        }
        let record = RequestRecord {
            pid: ev.tgid,
            tid: req.tid,
            route: req.route,
            start_ns: req.start_ns,
            latency_ns,
            calls: req.calls,
            calls_dropped: req.calls_dropped,
        };
        if self.keep_finished_ns.is_some_and(|min| latency_ns >= min) {
            self.finished.push(record.clone());
        }
        self.keep_if_slow(record);
    }

    fn keep_if_slow(&mut self, record: RequestRecord) {
        if self.slowest.len() == SLOWEST_KEPT
            && self
                .slowest
                .last()
                .is_some_and(|l| l.latency_ns >= record.latency_ns)
        {
            return;
        }
        let at = self
            .slowest
            .partition_point(|r| r.latency_ns >= record.latency_ns);
        self.slowest.insert(at, record);
        self.slowest.truncate(SLOWEST_KEPT);
    }

    /// A finished call of a traced process, on socket or file `fd` if it
    /// has one: the request it was made for keeps it (see the module's
    /// rule). With several candidates, it waits (`PendingCall`) until
    /// one is left.
    pub fn on_call(&mut self, (pid, tid, fd): (u32, u32, Option<i32>), call: RequestCall) {
        let Some(open) = self.open.get_mut(&pid) else {
            return;
        };
        // The candidates: the requests open on its thread, else in its
        // process, that began before it. One (the usual case, a call per
        // TLS record) is found without building a list.
        let began = call.start_ns;
        let on_thread = open.iter().any(|r| r.tid == tid && r.start_ns <= began);
        let candidate = |r: &OpenRequest| r.start_ns <= began && (!on_thread || r.tid == tid);
        let mut found = open.iter_mut().filter(|r| candidate(r));
        match (found.next(), found.next()) {
            (None, _) => {}
            (Some(r), None) => r.keep(fd, call),
            _ if self.pending.len() < PENDING_KEPT => {
                let candidates = open
                    .iter()
                    .filter(|r| candidate(r))
                    .map(|r| (r.fd, r.start_ns))
                    .collect();
                self.pending.push(PendingCall {
                    pid,
                    fd,
                    candidates,
                    call,
                });
            }
            _ => self.calls_unowned += 1,
        }
    }

    /// Request `ev` ended: a call waiting on it and others is not its if
    /// it began after its response's last write; one left with a single
    /// candidate is that one's. One that may be this request's, and
    /// another's too, is no one's.
    fn settle_pending(&mut self, ev: &RequestEndEvent) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.retain_mut(|p| {
            let Some(k) = (p.pid == ev.tgid)
                .then(|| p.candidates.iter().position(|&c| c == (ev.fd, ev.start_ns)))
                .flatten()
            else {
                return true;
            };
            if ev.end_ns != 0 && p.call.start_ns < ev.end_ns {
                self.calls_unowned += 1;
                return false;
            }
            p.candidates.swap_remove(k);
            let [(fd, start)] = p.candidates[..] else {
                return true;
            };
            let owner = self
                .open
                .get_mut(&p.pid)
                .and_then(|open| open.iter_mut().find(|r| r.fd == fd && r.start_ns == start));
            match owner {
                Some(r) => r.keep(p.fd, p.call.clone()),
                None => self.calls_unowned += 1,
            }
            false
        });
        self.pending = pending;
    }
}

impl OpenRequest {
    /// Keeps a call made for this request. A call on its own connection (a
    /// TLS server's reads and writes of it) is the server answering it: its
    /// target is `CLIENT`, one row for every client.
    fn keep(&mut self, fd: Option<i32>, mut call: RequestCall) {
        if fd == Some(self.fd) {
            call.target = CLIENT.to_string();
        }
        if self.calls.len() < CALLS_KEPT {
            self.calls.push(call);
            return;
        }
        self.calls_dropped += 1;
        let e = self
            .overflow
            .entry((call.kind, call.target, call.site))
            .or_default();
        (e.0, e.1) = (e.0 + 1, e.1 + call.latency_ns);
    }
}

impl RequestRecord {
    /// The time inside at least one of its calls (a call inside another,
    /// as a resolver's connect inside its lookup, is not counted twice).
    pub fn in_calls_ns(&self) -> u64 {
        let (mut total, mut covered_to) = (0u64, 0u64);
        // `calls` are in the order they began.
        for c in &self.calls {
            let end = c.start_ns + c.latency_ns;
            if end > covered_to {
                total += end - c.start_ns.max(covered_to);
                covered_to = end;
            }
        }
        total
    }

    /// The request as a span tree, shaped after OpenTelemetry's span
    /// model: the request is the root span of its own trace, each call a
    /// child span; ids are random-looking and unique within the run
    /// (`ids` draws them), times are CLOCK_MONOTONIC nanoseconds.
    fn to_span(&self, ids: &mut SpanIds) -> serde_json::Value {
        let trace_id = format!("{:016x}{:016x}", ids.next(), ids.next());
        let span_id = format!("{:016x}", ids.next());
        let children: Vec<serde_json::Value> = self
            .calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "trace_id": trace_id,
                    "span_id": format!("{:016x}", ids.next()),
                    "parent_span_id": span_id,
                    "name": format!("{} {}", c.kind, c.target),
                    "start_ns": c.start_ns,
                    "end_ns": c.start_ns + c.latency_ns,
                    "attributes": {"tracer.kind": c.kind, "tracer.target": c.target},
                })
            })
            .collect();
        serde_json::json!({
            "kind": "http_request",
            "trace_id": trace_id,
            "span_id": span_id,
            "name": self.route.to_string(),
            "start_ns": self.start_ns,
            "end_ns": self.start_ns + self.latency_ns,
            "pid": self.pid,
            "tid": self.tid,
            "attributes": {
                "http.request.method": self.route.method,
                "http.route": self.route.path,
            },
            "children": children,
            "children_dropped": self.calls_dropped,
        })
    }
}

/// Span ids: a splitmix64 sequence from a seed taken from the clock and
/// the PID, so that two runs' ids do not collide.
#[derive(Debug)]
struct SpanIds(u64);

impl SpanIds {
    fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(now ^ (u64::from(std::process::id()) << 32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // Never 0: an all-zero id is invalid in OpenTelemetry.
        (z ^ (z >> 31)).max(1)
    }
}

/// The route of a request line's method and path (as the kernel side cut
/// it: nothing after the path); `None` when it is not a request line.
pub fn parse_line(line: &[u8; REQUEST_LINE_BYTES], len: usize) -> Option<Route> {
    let text = std::str::from_utf8(line.get(..len)?).ok()?;
    let (method, path) = text.split_once(' ')?;
    if !METHODS.contains(&method) {
        return None;
    }
    Some(Route {
        method: method.to_string(),
        path: normalize_path(path),
    })
}

/// A path as a route: each segment that is a number, a UUID or a long hex
/// string (16 digits or more) becomes `:id`, so `/users/42/orders/9f8e…`
/// and `/users/7/orders/0a1b…` are one route.
pub fn normalize_path(path: &str) -> String {
    path.split('/')
        .map(|seg| if is_id(seg) { ":id" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_id(seg: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let groups: Vec<&str> = seg.split('-').collect();
    let uuid = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| hex(g));
    uuid || (seg.len() >= 16 && hex(seg))
}

#[cfg(test)]
mod tests;
