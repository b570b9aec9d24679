//! Go's reads: how much of one was its connection idle (see
//! `TlsState::idle_wait_ns`).

use tracer_common::{TlsEvent, TlsFn};

use super::{Connection, TlsState};

impl TlsState {
    /// How much of a Go read was its connection idle, with nothing asked
    /// of the peer: Go reads a connection from a goroutine of its own
    /// (net/http's read loops) that waits in `Read` whether or not a
    /// request is out. Counted apart (`Direction::idle_ns`), as a server's
    /// waits for work are. HTTP/2 writes frames that ask for nothing
    /// (WINDOW_UPDATE, PING acks) in both directions, so a write is not
    /// always a request, nor a read an answer:
    /// - On a client's connection: the wait before the last write during
    ///   the read began (the next request: the acknowledgements of the last
    ///   answer come first; the kernel notes when each write begins, as the
    ///   write can return after the read its request was answered by); with none, all of a read that brought nothing
    ///   when nothing was written since the last answer (the connection
    ///   idle until it closed). A read begun with a request out counts
    ///   whole, a timeout too; but with requests out at once on one
    ///   connection (HTTP/2), a wait is counted from the last request sent
    ///   while it went on.
    /// - On a server's (`accepted(pid, fd)`): every wait. A server reads
    ///   when its client sends, between requests or inside one (a client
    ///   slow to send a body is not shown here).
    ///
    /// OpenSSL's reads are made by the code that waits for the answer:
    /// not trimmed.
    pub fn idle_wait_ns(&mut self, ev: &TlsEvent, accepted: impl FnOnce(u32, i32) -> bool) -> u64 {
        if TlsFn::from_u32(ev.func) != Some(TlsFn::GoRead) {
            return 0;
        }
        self.reopen_if_closed(ev);
        let conn = (self.connections)
            .entry((ev.tgid, ev.ssl))
            .or_insert_with(|| Connection::new(ev.tgid));
        let fd = conn.fd.or((ev.fd >= 0).then_some(ev.fd));
        let server = match (conn.server, fd) {
            (Some(known), _) => known,
            (None, Some(fd)) => *conn.server.insert(accepted(ev.tgid, fd)),
            (None, None) => false,
        };
        let waited = ev.blocked_ns.min(ev.duration_ns);
        let end_ns = ev.start_ns + ev.duration_ns;
        let last_write_during =
            (conn.writes_since_read.iter()).rfind(|&&w| w > ev.start_ns && w <= end_ns);
        let idle = if server {
            waited
        } else if ev.write_began_us > 0 {
            // The kernel saw the write begin: right whatever order the
            // records of the two calls came in.
            (u64::from(ev.write_began_us - 1) * 1000).min(waited)
        } else if let Some(&w) = last_write_during {
            (w - ev.start_ns).min(waited)
        } else if ev.bytes == 0 && conn.last_write_end_ns <= conn.last_data_read_end_ns {
            waited
        } else {
            0
        };
        conn.reads.idle_ns += idle;
        idle
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::call;
    use super::*;

    /// A Go call from `start` to `end` (ms), waiting all but 1 ms of it.
    fn go_call(func: TlsFn, bytes: u32, start_ms: u64, end_ms: u64) -> TlsEvent {
        let mut ev = call(func, 1, 3, bytes, (end_ms - start_ms) * 1_000_000, 0);
        ev.start_ns = start_ms * 1_000_000;
        ev.blocked_ns = ev.duration_ns.saturating_sub(1_000_000);
        ev
    }

    #[test]
    fn a_request_whose_record_comes_after_the_read_still_ends_its_wait() {
        let mut s = TlsState::default();
        let socket = |_, _| Some("peer".to_string());
        // A request and its answer; then the read loop waits from 2 ms,
        // the next request's write begins at 1000 ms, the answer comes at
        // 1002 ms, and the write returns at 1003 ms: after the read, so its
        // record comes second. The kernel says when it began.
        for ev in [
            go_call(TlsFn::GoWrite, 50, 0, 1),
            go_call(TlsFn::GoRead, 100, 1, 2),
        ] {
            s.idle_wait_ns(&ev, |_, _| false);
            s.on_call(&ev, None, socket);
        }
        let mut read = go_call(TlsFn::GoRead, 100, 2, 1002);
        assert_eq!(
            s.idle_wait_ns(&read, |_, _| false),
            0,
            "without the kernel's note"
        );
        read.write_began_us = 998_000 + 1;
        assert_eq!(s.idle_wait_ns(&read, |_, _| false), 998_000_000);
    }

    /// Each call through idle_wait_ns then on_call, as the aggregate does;
    /// the idle parts, in ms.
    fn idle_parts(calls: &[TlsEvent], server: bool) -> Vec<u64> {
        let mut s = TlsState::default();
        let socket = |_, _| Some("peer".to_string());
        calls
            .iter()
            .map(|ev| {
                let idle = s.idle_wait_ns(ev, |_, _| server);
                s.on_call(ev, None, socket);
                idle / 1_000_000
            })
            .collect()
    }

    #[test]
    fn a_go_read_loops_wait_before_the_next_request_is_idle() {
        use TlsFn::{GoRead, GoWrite};
        // net/http's read loop: reads from 0 while the first request goes
        // out at 10 and its answer comes at 50 and 55 in two records; reads
        // again from 56, idle until the next request at 1000, answered at
        // 1040.
        let calls = [
            go_call(GoWrite, 100, 9, 10),
            go_call(GoRead, 500, 0, 50),
            go_call(GoRead, 500, 50, 55),
            go_call(GoWrite, 100, 999, 1000),
            go_call(GoRead, 500, 56, 1040),
        ];
        assert_eq!(idle_parts(&calls, false), [0, 10, 0, 0, 944]);
        // HTTP/2: the client acknowledges the answer's data (WINDOW_UPDATE)
        // before and while it reads again; the next request goes out at
        // 1000.
        let calls = [
            go_call(GoWrite, 100, 0, 1),
            go_call(GoRead, 500, 2, 40),
            go_call(GoWrite, 13, 41, 42),
            go_call(GoWrite, 13, 44, 45),
            go_call(GoWrite, 30, 999, 1000),
            go_call(GoRead, 500, 43, 1040),
        ];
        assert_eq!(idle_parts(&calls, false), [0, 0, 0, 0, 0, 957]);
    }

    #[test]
    fn a_go_servers_wait_for_its_clients_next_request_is_idle() {
        use TlsFn::{GoRead, GoWrite};
        // A request in two records, the response, then a wait for the
        // next request: every wait is the client's (but each read's last
        // ms of work).
        let calls = [
            go_call(GoRead, 500, 0, 100),
            go_call(GoRead, 500, 100, 120),
            go_call(GoWrite, 100, 130, 131),
            go_call(GoRead, 500, 131, 2000),
        ];
        assert_eq!(idle_parts(&calls, true), [99, 19, 0, 1868]);
        // So is the wait of a read that brought nothing (net/http's
        // background read, aborted when the handler is done).
        let calls = [go_call(GoRead, 500, 0, 100), go_call(GoRead, 0, 101, 150)];
        assert_eq!(idle_parts(&calls, true), [99, 48]);
        // A client's: a request out and no answer (a timeout) counts whole;
        // nothing asked and nothing came (idle until the close) does not.
        let calls = [
            go_call(GoWrite, 100, 0, 1),
            go_call(GoRead, 500, 2, 40),
            go_call(GoWrite, 100, 50, 51),
            go_call(GoRead, 0, 52, 2000),
        ];
        assert_eq!(idle_parts(&calls, false), [0, 0, 0, 0]);
        let calls = [
            go_call(GoWrite, 100, 0, 1),
            go_call(GoRead, 500, 2, 40),
            go_call(GoRead, 0, 41, 2000),
        ];
        assert_eq!(idle_parts(&calls, false), [0, 0, 1958]);
        // OpenSSL's reads are never trimmed.
        let mut ev = go_call(GoRead, 500, 131, 2000);
        ev.func = TlsFn::Read as u32;
        let mut s = TlsState::default();
        s.on_call(&go_call(GoWrite, 100, 130, 131), None, |_, _| None);
        assert_eq!(s.idle_wait_ns(&ev, |_, _| true), 0);
    }
}
