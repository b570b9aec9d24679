//! TLS calls into the aggregate: a Go read's idle wait taken out first
//! (`TlsState::idle_wait_ns`), the call named by its connection's peer.

use tracer_common::TlsEvent;

use super::{Aggregate, FinishedCall};

impl Aggregate {
    pub(super) fn on_tls(&mut self, call: &TlsEvent) {
        // A Go read's wait while its connection had nothing asked of the
        // peer is not the call's time.
        let idle = self.tls.idle_wait_ns(call, |pid, fd| {
            crate::target::accepted_sockets(pid).contains(&fd)
        });
        self.account_tls(call, idle);
    }

    /// One TLS call, `idle` ns of it (a Go read's idle wait) left out.
    fn account_tls(&mut self, call: &TlsEvent, idle: u64) {
        let work = crate::tls::work_of(call);
        let class = work.map_or(0, tracer_common::TlsFn::class);
        let site = self
            .sites
            .take_tls(call.tid, call.start_ns, call.ssl, class);
        let t = &TlsEvent {
            start_ns: call.start_ns + idle,
            duration_ns: call.duration_ns - idle,
            blocked_ns: call.blocked_ns.saturating_sub(idle),
            ..*call
        };
        // A socket: one we saw connected and not closed, or one /proc says
        // is a socket; named now, as its fd number may be reused later.
        let mut tls = std::mem::take(&mut self.tls);
        let this = &*self;
        tls.on_call(t, site, |pid, fd| {
            if this.fd_peers.contains_key(&(pid, fd)) || crate::target::is_socket(pid, fd) {
                Some(
                    this.peer_name(pid, fd)
                        .unwrap_or_else(|| format!("pid {pid} fd {fd}")),
                )
            } else {
                None
            }
        });
        self.tls = tls;
        let Some(func) = work else { return };
        let (target, fd) = match self.tls.connections.get(&(t.tgid, t.ssl)) {
            Some(conn) => (crate::tls::peer_key(conn), conn.fd),
            None => (format!("pid {} (socket unknown)", t.tgid), None),
        };
        let call = FinishedCall {
            kind: crate::tls::call_kind(func),
            pid: t.tgid,
            tid: t.tid,
            start_ns: t.start_ns,
            latency_ns: t.duration_ns,
            target: Some(target),
            fd,
            site,
            // An SSL call's site is kept with its connection (`tls`).
            per_site: false,
        };
        let (ret, bytes) = (t.ret, t.bytes);
        self.account(call, |_, call| {
            let result = if ret > 0 {
                format!("{bytes} bytes")
            } else {
                format!("returned {ret}")
            };
            (call.target.clone().unwrap_or_default(), result)
        });
    }
}
