//! Go lookups and their queries. Go's resolver sends a lookup's queries
//! from goroutines of their own, on any thread: while a process has a Go
//! lookup open, its DNS messages are held, and a Go lookup, when it ends,
//! takes the queries for its name sent while it ran.

use tracer_common::{DNS_SEND, DnsPacketEvent, LookupEvent};

use super::{DnsMessage, DnsState, EVENTS_PER_LOOKUP, QueryRecord, WaitRecord};

/// Whether `name` was asked for a lookup of `host`: the name itself, or a
/// search-domain expansion of it.
fn asked_for(name: &str, host: &str) -> bool {
    let (name, host) = (name.trim_end_matches('.'), host.trim_end_matches('.'));
    name.eq_ignore_ascii_case(host)
        || (name.len() > host.len()
            && name.as_bytes()[host.len()] == b'.'
            && name[..host.len()].eq_ignore_ascii_case(host))
}

/// The timeouts of a Go lookup's queries: Go's resolver waits in the
/// netpoller, not in a poll() the kernel side could time, so a query
/// never answered is a wait that timed out, from its send to the next
/// send of the same name and type (the retry) or the lookup's end. For a
/// lookup still open (`end_ns` None), a query with no retry yet is still
/// being waited for: not a timeout.
fn timeouts(queries: &[QueryRecord], end_ns: Option<u64>) -> Vec<WaitRecord> {
    queries
        .iter()
        .enumerate()
        .filter(|(_, q)| q.latency_ns.is_none())
        .filter_map(|(i, q)| {
            let until = queries[i + 1..]
                .iter()
                .find(|r| r.name == q.name && r.qtype == q.qtype)
                .map(|r| r.sent_ns)
                .or(end_ns)?;
            Some(WaitRecord {
                duration_ns: until.saturating_sub(q.sent_ns),
                timed_out: true,
                timeout_ms: -1,
            })
        })
        .collect()
}

impl DnsState {
    /// A DNS message of a process with a Go lookup open: held for the
    /// lookup (see `open_go`).
    pub(super) fn on_go_packet(
        &mut self,
        ev: &DnsPacketEvent,
        msg: DnsMessage,
        server: Option<String>,
    ) {
        let held = self.go_queries.entry(ev.tgid).or_default();
        if ev.direction == DNS_SEND {
            let Some((name, qtype)) = msg.question else {
                return;
            };
            let retry = held.iter().any(|(_, p)| p.name == name && p.qtype == qtype);
            if held.len() < EVENTS_PER_LOOKUP * 4 {
                let mut q = QueryRecord::sent(name, qtype, msg.id, server, ev.ts_ns);
                q.retry = retry;
                held.push((ev.fd, q));
            }
            return;
        }
        if let Some((_, q)) = held.iter_mut().rev().find(|(fd, q)| {
            *fd == ev.fd
                && q.id == msg.id
                && q.latency_ns.is_none()
                && msg
                    .question
                    .as_ref()
                    .is_none_or(|(n, t)| *n == q.name && *t == q.qtype)
        }) {
            q.answered(&msg, ev.ts_ns);
        }
    }

    /// A Go lookup ended: it takes the held queries for its host sent
    /// while it ran, and their timeouts (see `timeouts`). When none is
    /// open any more, the rest are queries of their own.
    pub(super) fn claim_go_queries(
        &mut self,
        ev: &LookupEvent,
        host: &str,
    ) -> (Vec<QueryRecord>, Vec<WaitRecord>) {
        let open = self.open_go.entry(ev.tgid).or_default();
        *open = open.saturating_sub(1);
        let none_open = *open == 0;
        let held = self.go_queries.remove(&ev.tgid).unwrap_or_default();
        let end = ev.start_ns + ev.duration_ns;
        let (mine, rest): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, q)| {
            (ev.start_ns..=end).contains(&q.sent_ns) && asked_for(&q.name, host)
        });
        if none_open {
            self.open_go.remove(&ev.tgid);
            for (_, q) in &rest {
                self.record_standalone(q);
            }
        } else if !rest.is_empty() {
            self.go_queries.insert(ev.tgid, rest);
        }
        let mut mine: Vec<QueryRecord> = mine.into_iter().map(|(_, q)| q).collect();
        mine.sort_by_key(|q| q.sent_ns);
        let waits = timeouts(&mine, Some(end));
        (mine, waits)
    }

    /// The queries a Go lookup still open has sent so far, and the
    /// timeouts among them (nothing is taken: it may end later).
    pub(super) fn go_queries_so_far(
        &self,
        tgid: u32,
        start_ns: u64,
        host: &str,
    ) -> (Vec<QueryRecord>, Vec<WaitRecord>) {
        let mut mine: Vec<QueryRecord> = self
            .go_queries
            .get(&tgid)
            .into_iter()
            .flatten()
            .filter(|(_, q)| q.sent_ns >= start_ns && asked_for(&q.name, host))
            .map(|(_, q)| q.clone())
            .collect();
        mine.sort_by_key(|q| q.sent_ns);
        let waits = timeouts(&mine, None);
        (mine, waits)
    }

    /// The run ended: held messages that no open lookup counts (see
    /// `go_queries_so_far`) are queries of their own.
    pub(super) fn finish_go(&mut self, in_flight: &[super::LookupRecord]) {
        for (tgid, held) in std::mem::take(&mut self.go_queries) {
            for (_, q) in held {
                let counted = in_flight.iter().any(|r| {
                    r.pid == tgid && q.sent_ns >= r.start_ns && asked_for(&q.name, &r.host)
                });
                if !counted {
                    self.record_standalone(&q);
                }
            }
        }
        self.open_go.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{QueryRecord, asked_for, timeouts};

    fn query(qtype: &str, sent_ns: u64, latency_ns: Option<u64>) -> QueryRecord {
        let mut q = QueryRecord::sent("api.example.com".into(), qtype.into(), 1, None, sent_ns);
        q.latency_ns = latency_ns;
        q
    }

    #[test]
    fn an_unanswered_go_query_waited_until_its_retry_or_the_end() {
        // AAAA dropped twice, A answered: two timeouts, 1 s then 0.5 s.
        let queries = [
            query("A", 0, Some(100)),
            query("AAAA", 10, None),
            query("AAAA", 1_000_010, None),
        ];
        let waits = timeouts(&queries, Some(1_500_010));
        let durations: Vec<u64> = waits.iter().map(|w| w.duration_ns).collect();
        assert_eq!(durations, [1_000_000, 500_000]);
        assert!(waits.iter().all(|w| w.timed_out));
        // The lookup still open: the retry is still being waited for.
        let so_far: Vec<u64> = timeouts(&queries, None)
            .iter()
            .map(|w| w.duration_ns)
            .collect();
        assert_eq!(so_far, [1_000_000]);
    }

    #[test]
    fn a_lookup_asks_for_its_name_and_its_expansions_only() {
        assert!(asked_for("api.example.com", "API.example.com."));
        assert!(asked_for("svc.corp.example", "svc"));
        assert!(!asked_for("svcx.corp.example", "svc"));
        assert!(!asked_for("other.example.com", "api.example.com"));
    }
}
