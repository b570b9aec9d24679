//! TLS, aggregated per connection (process and `SSL *`) and per peer: how
//! many reads and writes, how many bytes, how long, and how much of that
//! was waiting on the network (syscalls inside the SSL calls, and poll()
//! waits on the socket between them) rather than work.

use std::collections::{BTreeMap, HashMap};

use tracer_common::{LatencyStats, TlsEvent, TlsFn, TlsWaitEvent};

use crate::kind::CallKind;

mod go;

/// Closed connections kept for a late call (`TlsState::closed_recently`)
/// before all are added up.
const MAX_CLOSED_RECENTLY: usize = 1024;

/// Reads, or writes, of one connection.
#[derive(Debug, Clone)]
pub struct Direction {
    pub latency: LatencyStats,
    /// Calls that moved data.
    pub ok_calls: u64,
    pub bytes: u64,
    /// Time inside the calls spent in syscalls (blocked on the socket).
    pub blocked_ns: u64,
    /// Waits of Go reads on a connection with nothing asked of its peer,
    /// left out of the calls' time (see `TlsState::idle_wait_ns`).
    pub idle_ns: u64,
}

impl Default for Direction {
    fn default() -> Self {
        Self {
            latency: LatencyStats::ZERO,
            ok_calls: 0,
            bytes: 0,
            blocked_ns: 0,
            idle_ns: 0,
        }
    }
}

impl Direction {
    fn add(&mut self, ev: &TlsEvent) {
        self.latency.record(ev.duration_ns);
        self.blocked_ns += ev.blocked_ns.min(ev.duration_ns);
        if ev.bytes > 0 {
            self.ok_calls += 1;
            self.bytes += u64::from(ev.bytes);
        }
    }

    fn merge(&mut self, o: &Direction) {
        self.latency.merge(&o.latency);
        self.ok_calls += o.ok_calls;
        self.bytes += o.bytes;
        self.blocked_ns += o.blocked_ns;
        self.idle_ns += o.idle_ns;
    }
}

/// The reads that followed an event loop's read of a socket (see
/// `Connection::between_ns`).
#[derive(Debug, Clone, Copy)]
struct ReadSpan {
    start_ns: u64,
    end_ns: u64,
    /// Time inside SSL calls, counted as theirs.
    calls_ns: u64,
}

impl ReadSpan {
    fn between_ns(&self) -> u64 {
        (self.end_ns - self.start_ns).saturating_sub(self.calls_ns)
    }
}

/// One TLS connection: a process's `SSL *`.
#[derive(Debug, Clone)]
pub struct Connection {
    pub pid: u32,
    pub fd: Option<i32>,
    /// The other end, named when the socket was first seen.
    pub peer: Option<String>,
    pub handshakes: LatencyStats,
    pub handshake_blocked_ns: u64,
    pub reads: Direction,
    pub writes: Direction,
    /// poll() waits on the socket between SSL calls, and an event loop's
    /// waits that ended in a read of it.
    pub wait_ns: u64,
    pub waits: u64,
    /// On a memory BIO (asyncio, Node.js): the time from the event loop's
    /// read of the socket to the last SSL read of what it brought, outside
    /// the SSL calls (the runtime handing each piece to the code that
    /// awaits it). Part of the read time, as an app timing its reads sees.
    pub between_ns: u64,
    span: Option<ReadSpan>,
    /// Whether an SSL read got its data by reading the socket itself: it is
    /// not on a memory BIO.
    socket_io: bool,
    /// Bursts of reads after a write: responses to requests.
    pub responses: u64,
    /// Whether the process accepted this connection (it is the server):
    /// known once its socket is.
    server: Option<bool>,
    /// The end of the last read that brought data, and of the last write.
    last_data_read_end_ns: u64,
    last_write_end_ns: u64,
    /// When the writes since the last read ended (a few).
    writes_since_read: Vec<u64>,
    /// Calls per OpenSSL function (SSL_read_ex vs SSL_read, ...).
    pub functions: BTreeMap<&'static str, u64>,
    /// Calls and time per kind of call and call site (sampled stacks: a
    /// call without its own stack takes its thread's last one).
    pub sites: BTreeMap<(CallKind, u32), (u64, u64)>,
    last_was_read: bool,
}

impl Connection {
    fn close_span(&mut self) {
        if let Some(span) = self.span.take() {
            self.between_ns += span.between_ns();
        }
    }

    /// `between_ns`, with the reads still in progress.
    fn between_so_far_ns(&self) -> u64 {
        self.between_ns + self.span.map_or(0, |s| s.between_ns())
    }

    fn new(pid: u32) -> Self {
        Self {
            pid,
            fd: None,
            peer: None,
            handshakes: LatencyStats::ZERO,
            handshake_blocked_ns: 0,
            reads: Direction::default(),
            writes: Direction::default(),
            wait_ns: 0,
            waits: 0,
            between_ns: 0,
            span: None,
            socket_io: false,
            responses: 0,
            server: None,
            last_data_read_end_ns: 0,
            last_write_end_ns: 0,
            writes_since_read: Vec::new(),
            functions: BTreeMap::new(),
            sites: BTreeMap::new(),
            last_was_read: false,
        }
    }
}

#[derive(Debug, Default)]
pub struct TlsState {
    pub connections: HashMap<(u32, u64), Connection>,
    /// The connection last seen on each (pid, fd): where a poll wait goes.
    by_fd: HashMap<(u32, i32), u64>,
    /// Connections that are over (socket closed, or `SSL *` reused for a
    /// new handshake), already added up per peer.
    closed_by_peer: BTreeMap<String, PeerTls>,
    /// Connections whose socket was closed, kept a while before they are
    /// added up: net/http's read loop makes its last Read (the error the
    /// close causes) after the close, and it is theirs.
    closed_recently: HashMap<(u32, u64), Connection>,
    pub calls_total: u64,
}

impl TlsState {
    /// `name_socket(pid, fd)` names a candidate fd if it is a socket. The
    /// fd of a syscall made inside the call is the first candidate (it may
    /// be an eventfd a callback wrote to, as in Node.js); the fd the thread
    /// last read or wrote before the call is the second, for reads and
    /// handshakes (an SSL call on a memory BIO, as Node.js and asyncio use,
    /// makes no socket syscall of its own: the event loop read its input
    /// just before).
    pub fn on_call(
        &mut self,
        ev: &TlsEvent,
        site: Option<u32>,
        name_socket: impl Fn(u32, i32) -> Option<String>,
    ) {
        let Some(called) = TlsFn::from_u32(ev.func) else {
            return;
        };
        let func = work_of(ev).unwrap_or(called);
        self.calls_total += 1;
        self.reopen_if_closed(ev);
        // A freed `SSL *` comes back for the next connection: a handshake
        // on a connection that already carried data starts a new one.
        if called.is_handshake()
            && let Some(old) = self.connections.get(&(ev.tgid, ev.ssl))
            && old.handshakes.count > 0
            && old.reads.latency.count + old.writes.latency.count > 0
        {
            self.retire(ev.tgid, ev.ssl);
        }
        let conn = self
            .connections
            .entry((ev.tgid, ev.ssl))
            .or_insert_with(|| Connection::new(ev.tgid));
        // A write on a memory BIO comes before the event loop sends its
        // bytes: the thread's last read or write names another socket.
        let hint_fd = if called.is_write() { -1 } else { ev.hint_fd };
        if !(ev.fd >= 0 && conn.fd == Some(ev.fd) || hint_fd >= 0 && conn.fd == Some(hint_fd))
            && let Some((fd, name)) = [ev.fd, hint_fd]
                .into_iter()
                .filter(|&fd| fd >= 0)
                .find_map(|fd| name_socket(ev.tgid, fd).map(|name| (fd, name)))
        {
            conn.fd = Some(fd);
            conn.peer = Some(name);
            self.by_fd.insert((ev.tgid, fd), ev.ssl);
        }
        // A read that brought data by reading the socket itself. (Not any
        // call: Node.js sends from inside its handshake calls; nor any fd:
        // a callback inside a call may write an eventfd.)
        conn.socket_io |= func.is_read() && ev.bytes > 0 && ev.fd >= 0 && conn.fd == Some(ev.fd);
        if !func.is_read() {
            conn.close_span();
        }
        *conn.functions.entry(called.symbol()).or_default() += 1;
        if let Some(site) = site {
            let s = conn.sites.entry((call_kind(func), site)).or_default();
            s.0 += 1;
            s.1 += ev.duration_ns;
        }
        if func.is_handshake() {
            conn.handshakes.record(ev.duration_ns);
            conn.handshake_blocked_ns += ev.blocked_ns.min(ev.duration_ns);
        } else if func.is_read() {
            let end_ns = ev.start_ns + ev.duration_ns;
            if ev.bytes > 0 {
                if !conn.last_was_read {
                    conn.responses += 1;
                    conn.last_was_read = true;
                }
                conn.last_data_read_end_ns = end_ns;
            }
            conn.writes_since_read.clear();
            conn.reads.add(ev);
            if let Some(span) = conn.span.as_mut()
                && ev.start_ns >= span.start_ns
            {
                span.end_ns = span.end_ns.max(end_ns);
                span.calls_ns += ev.duration_ns;
            }
            // A read that found the BIO empty ends what the loop's read brought.
            if ev.bytes == 0 {
                conn.close_span();
            }
        } else if func.is_write() {
            if ev.bytes > 0 {
                conn.last_was_read = false;
                conn.last_write_end_ns = ev.start_ns + ev.duration_ns;
                if conn.writes_since_read.len() < 16 {
                    conn.writes_since_read.push(conn.last_write_end_ns);
                }
            }
            conn.writes.add(ev);
        }
    }

    /// A Go read or write on a connection whose socket was closed
    /// (`closed_recently`) is that connection's: net/http's read loop
    /// returns from its last Read after the close. Any other call is a new
    /// connection on a reused `SSL *` or `*tls.Conn` (Node.js handshakes
    /// inside SSL_read, so "not a handshake call" does not tell).
    fn reopen_if_closed(&mut self, ev: &TlsEvent) {
        let Some(closed) = self.closed_recently.remove(&(ev.tgid, ev.ssl)) else {
            return;
        };
        if matches!(
            TlsFn::from_u32(ev.func),
            Some(TlsFn::GoRead | TlsFn::GoWrite)
        ) {
            self.connections.insert((ev.tgid, ev.ssl), closed);
        } else {
            self.add_up(closed);
        }
    }

    /// The process closed a socket: the connection on it is over, and
    /// the fd number is free for reuse.
    pub fn on_close(&mut self, pid: u32, fd: i32) {
        if let Some(ssl) = self.by_fd.remove(&(pid, fd))
            && self
                .connections
                .get(&(pid, ssl))
                .is_some_and(|c| c.fd == Some(fd))
            && let Some(conn) = self.connections.remove(&(pid, ssl))
        {
            if self.closed_recently.len() >= MAX_CLOSED_RECENTLY {
                for (_, old) in std::mem::take(&mut self.closed_recently) {
                    self.add_up(old);
                }
            }
            self.closed_recently.insert((pid, ssl), conn);
        }
    }

    /// A process exited: its connections are over (the kernel closed its
    /// sockets without a close() to tell us).
    pub fn forget_process(&mut self, pid: u32) {
        let ssls: Vec<u64> = self
            .connections
            .keys()
            .filter(|&&(owner, _)| owner == pid)
            .map(|&(_, ssl)| ssl)
            .collect();
        for ssl in ssls {
            self.retire(pid, ssl);
        }
        let closed: Vec<(u32, u64)> = self
            .closed_recently
            .keys()
            .filter(|&&(owner, _)| owner == pid)
            .copied()
            .collect();
        for key in closed {
            if let Some(conn) = self.closed_recently.remove(&key) {
                self.add_up(conn);
            }
        }
        self.by_fd.retain(|&(owner, _), _| owner != pid);
    }

    /// Moves a connection that is over into its peer's totals.
    fn retire(&mut self, pid: u32, ssl: u64) {
        if let Some(conn) = self.connections.remove(&(pid, ssl)) {
            if let Some(fd) = conn.fd
                && self.by_fd.get(&(pid, fd)) == Some(&ssl)
            {
                self.by_fd.remove(&(pid, fd));
            }
            self.add_up(conn);
        }
    }

    /// Adds a connection that is over to its peer's totals.
    fn add_up(&mut self, conn: Connection) {
        self.closed_by_peer
            .entry(peer_key(&conn))
            .or_default()
            .add(&conn);
    }

    pub fn on_wait(&mut self, ev: &TlsWaitEvent) {
        if let Some(ssl) = self.by_fd.get(&(ev.tgid, ev.fd))
            && let Some(conn) = self.connections.get_mut(&(ev.tgid, *ssl))
        {
            conn.wait_ns += ev.duration_ns;
            conn.waits += 1;
            conn.close_span();
            if !conn.socket_io {
                conn.span = Some(ReadSpan {
                    start_ns: ev.ts_ns,
                    end_ns: ev.ts_ns,
                    calls_ns: 0,
                });
            }
        }
    }
}

/// What a call did: a read or write that ran OpenSSL's handshake state
/// machine and moved no data did handshake work (Node.js handshakes inside
/// SSL_read; a read that also returned data counts as the read it was).
pub fn work_of(ev: &TlsEvent) -> Option<TlsFn> {
    let func = TlsFn::from_u32(ev.func)?;
    Some(
        if ev.handshake_step != 0 && ev.bytes == 0 && !func.is_handshake() {
            TlsFn::StatemConnect
        } else {
            func
        },
    )
}

/// The kind of call an SSL function's work is (see `work_of`).
pub fn call_kind(func: TlsFn) -> CallKind {
    if func.is_read() {
        CallKind::TlsRead
    } else if func.is_write() {
        CallKind::TlsWrite
    } else {
        CallKind::TlsHandshake
    }
}

/// All connections to one peer, taken together.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    pub connections: u64,
    /// Connections that made handshake calls: a non-blocking client calls
    /// SSL_connect once per round trip, so calls are not handshakes.
    pub handshaken: u64,
    /// The handshake calls, and the time in them.
    pub handshakes: Option<LatencyStats>,
    pub handshake_blocked_ns: u64,
    pub reads: Direction,
    pub writes: Direction,
    pub wait_ns: u64,
    pub between_ns: u64,
    pub responses: u64,
    pub functions: BTreeMap<&'static str, u64>,
    pub sites: BTreeMap<(CallKind, u32), (u64, u64)>,
}

impl PeerTls {
    pub fn add(&mut self, c: &Connection) {
        self.connections += 1;
        self.handshaken += u64::from(c.handshakes.count > 0);
        self.handshakes
            .get_or_insert(LatencyStats::ZERO)
            .merge(&c.handshakes);
        self.handshake_blocked_ns += c.handshake_blocked_ns;
        self.reads.merge(&c.reads);
        self.writes.merge(&c.writes);
        self.wait_ns += c.wait_ns;
        self.between_ns += c.between_so_far_ns();
        self.responses += c.responses;
        for (f, n) in &c.functions {
            *self.functions.entry(f).or_default() += n;
        }
        for (site, (calls, ns)) in &c.sites {
            let s = self.sites.entry(*site).or_default();
            s.0 += calls;
            s.1 += ns;
        }
    }

    /// Time in reads, including the poll waits between them (and, on an
    /// event loop, its waits for the data and its handing over).
    pub fn read_time_ns(&self) -> u64 {
        self.reads.latency.total_ns + self.wait_ns + self.between_ns
    }

    /// Share of the read time spent waiting on the network.
    pub fn read_waiting_share(&self) -> f64 {
        crate::units::share(self.reads.blocked_ns + self.wait_ns, self.read_time_ns())
    }

    pub fn total_ns(&self) -> u64 {
        self.read_time_ns()
            + self.writes.latency.total_ns
            + self.handshakes.as_ref().map_or(0, |h| h.total_ns)
    }
}

/// The peer a connection is counted under (as named when first seen).
pub fn peer_key(c: &Connection) -> String {
    match &c.peer {
        Some(peer) => peer.clone(),
        None => format!("pid {} (socket unknown)", c.pid),
    }
}

/// Groups connections, open and closed, by peer.
pub fn by_peer(state: &TlsState) -> BTreeMap<String, PeerTls> {
    let mut out = state.closed_by_peer.clone();
    for c in state.closed_recently.values() {
        out.entry(peer_key(c)).or_default().add(c);
    }
    for c in state.connections.values() {
        out.entry(peer_key(c)).or_default().add(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::EventKind;

    pub(super) fn call(
        func: TlsFn,
        ssl: u64,
        fd: i32,
        bytes: u32,
        dur: u64,
        blocked: u64,
    ) -> TlsEvent {
        TlsEvent {
            kind: EventKind::Tls as u32,
            tgid: 7,
            tid: 7,
            func: func as u32,
            ssl,
            start_ns: 0,
            duration_ns: dur,
            blocked_ns: blocked,
            ret: 1,
            bytes,
            requested: 16384,
            nested_syscalls: u32::from(blocked > 0),
            fd,
            hint_fd: -1,
            handshake_step: 0,
            write_began_us: 0,
        }
    }

    #[test]
    fn reads_that_run_the_handshake_are_handshake_calls() {
        // Node.js: no SSL_do_handshake; SSL_read drives the handshake (no
        // data), then a read brings the session ticket and data at once.
        let mut s = TlsState::default();
        let socket = |_, fd| (fd == 3).then(|| "peer".to_string());
        let step = |bytes| {
            let mut ev = call(TlsFn::Read, 1, 3, bytes, 1_000, 0);
            ev.handshake_step = 1;
            ev
        };
        s.on_call(&step(0), None, socket);
        s.on_call(&step(0), None, socket);
        s.on_call(&call(TlsFn::Write, 1, 3, 80, 500, 0), None, socket);
        s.on_call(&step(120), None, socket);
        s.on_call(&call(TlsFn::Read, 1, 3, 60, 500, 0), None, socket);
        let peers = by_peer(&s);
        let p = &peers["peer"];
        assert_eq!(p.connections, 1, "the ticket's read is no new connection");
        assert_eq!(p.handshaken, 1);
        assert_eq!(p.handshakes.unwrap().count, 2);
        assert_eq!((p.reads.latency.count, p.reads.bytes), (2, 180));
        assert_eq!(s.connections[&(7, 1)].functions["SSL_read"], 4);
    }

    #[test]
    fn counts_reads_bytes_responses_and_waiting() {
        let mut s = TlsState::default();
        let fd3_is_a_socket = |_, fd| (fd == 3).then(|| format!("peer-of-{fd}"));
        s.on_call(
            &call(TlsFn::Connect, 1, 3, 0, 5_000, 4_000),
            None,
            fd3_is_a_socket,
        );
        for _ in 0..2 {
            s.on_call(
                &call(TlsFn::WriteEx, 1, 3, 100, 1_000, 500),
                None,
                fd3_is_a_socket,
            );
            for _ in 0..10 {
                // buffered reads make no syscall: fd -1, the connection knows it
                s.on_call(
                    &call(TlsFn::ReadEx, 1, -1, 50, 1_000, 900),
                    Some(4),
                    fd3_is_a_socket,
                );
            }
        }
        s.on_wait(&TlsWaitEvent {
            kind: EventKind::TlsWait as u32,
            tgid: 7,
            tid: 7,
            fd: 3,
            ts_ns: 0,
            duration_ns: 10_000,
            ret: 1,
        });
        let peers = by_peer(&s);
        let p = &peers["peer-of-3"];
        assert_eq!(p.reads.latency.count, 20);
        assert_eq!(p.reads.bytes, 1000);
        assert_eq!(p.responses, 2);
        assert_eq!(p.writes.bytes, 200);
        assert_eq!(p.handshakes.unwrap().count, 1);
        assert_eq!(p.read_time_ns(), 20_000 + 10_000);
        assert!((p.read_waiting_share() - (18_000.0 + 10_000.0) / 30_000.0).abs() < 1e-9);
        let row = crate::render::peer_row("peer-of-3".into(), p, 1_000_000, "busy time", |id| {
            format!("site {id}")
        });
        assert_eq!(row.call_sites, vec![("site 4".to_string(), 20, 20_000)]);
        assert_eq!(row.reads_with_data, 20);
        assert!(
            row.findings[0].contains("20 reads from peer-of-3"),
            "{:?}",
            row.findings
        );
        assert!(
            row.findings[0].contains("50 bytes per read"),
            "{:?}",
            row.findings
        );
        assert!(
            row.findings[0].contains("10 reads per response"),
            "{:?}",
            row.findings
        );
    }

    #[test]
    fn a_memory_bio_call_takes_the_threads_last_socket() {
        let mut s = TlsState::default();
        let mut ev = call(TlsFn::Read, 9, -1, 10, 100, 0);
        ev.hint_fd = 12;
        s.on_call(&ev, None, |_, fd| (fd == 12).then(String::new));
        assert_eq!(s.connections[&(7, 9)].fd, Some(12));
        let mut s = TlsState::default();
        s.on_call(&ev, None, |_, _| None);
        assert_eq!(s.connections[&(7, 9)].fd, None);
        // A callback's eventfd write inside the call is not the socket.
        let mut s = TlsState::default();
        ev.fd = 17;
        ev.hint_fd = 19;
        s.on_call(&ev, None, |_, fd| (fd == 19).then(String::new));
        assert_eq!(s.connections[&(7, 9)].fd, Some(19));
    }

    #[test]
    fn a_reused_ssl_pointer_or_fd_starts_a_new_connection() {
        let mut s = TlsState::default();
        let named = |name: &'static str| move |_, fd| (fd == 5).then(|| name.to_string());
        // Connection 1 on fd 5 to "a"; the socket closes; the same SSL *
        // and fd number come back for a connection to "b".
        s.on_call(&call(TlsFn::DoHandshake, 1, 5, 0, 10, 0), None, named("a"));
        s.on_call(&call(TlsFn::ReadEx, 1, 5, 100, 10, 0), None, named("a"));
        s.on_close(7, 5);
        s.on_call(&call(TlsFn::DoHandshake, 1, 5, 0, 10, 0), None, named("b"));
        s.on_call(&call(TlsFn::ReadEx, 1, 5, 100, 10, 0), None, named("b"));
        // No close seen (the fd closed before tracing, say): a handshake on
        // a connection that carried data is a new connection all the same.
        s.on_call(&call(TlsFn::DoHandshake, 1, 5, 0, 10, 0), None, named("b"));
        let peers = by_peer(&s);
        assert_eq!(peers["a"].connections, 1);
        assert_eq!(peers["a"].handshaken, 1);
        assert_eq!(peers["b"].connections, 2);
        assert_eq!(peers["b"].handshaken, 2);
        assert_eq!(peers["b"].reads.latency.count, 1);
    }

    #[test]
    fn a_read_that_ends_after_its_socket_closed_is_its_connections() {
        // net/http's read loop returns from Read with the error the close
        // caused, after the close; the next connection on the same
        // `*tls.Conn` address begins with a handshake.
        let mut s = TlsState::default();
        let socket = |_, fd| (fd == 3).then(|| "peer".to_string());
        s.on_call(&call(TlsFn::GoHandshake, 1, 3, 0, 500, 0), None, socket);
        s.on_call(&call(TlsFn::GoRead, 1, 3, 100, 500, 0), None, socket);
        s.on_close(7, 3);
        s.on_call(&call(TlsFn::GoRead, 1, -1, 0, 500, 0), None, |_, _| None);
        let peers = by_peer(&s);
        assert_eq!(peers.len(), 1, "{:?}", peers.keys());
        assert_eq!(peers["peer"].connections, 1);
        assert_eq!(peers["peer"].reads.latency.count, 2);
        s.on_close(7, 3);
        let other = |_, fd| (fd == 4).then(|| "other".to_string());
        s.on_call(&call(TlsFn::GoHandshake, 1, 4, 0, 500, 0), None, other);
        let peers = by_peer(&s);
        assert_eq!(
            (peers["peer"].connections, peers["other"].connections),
            (1, 1)
        );
        // OpenSSL's `SSL *` reused after a close, as Node.js does, with the
        // handshake inside SSL_read: a new connection.
        let mut s = TlsState::default();
        s.on_call(&call(TlsFn::Read, 2, 3, 100, 500, 0), None, socket);
        s.on_close(7, 3);
        let mut step = call(TlsFn::Read, 2, 4, 0, 500, 0);
        step.handshake_step = 1;
        s.on_call(&step, None, other);
        let peers = by_peer(&s);
        assert_eq!(
            (peers["peer"].connections, peers["other"].connections),
            (1, 1)
        );
    }
}
