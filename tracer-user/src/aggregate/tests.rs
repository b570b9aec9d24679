use tracer_common::{ConnectEvent, HandshakeEvent, TCP_ESTABLISHED};

use super::*;

const EINPROGRESS: i64 = 115;

fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    b[2..4].copy_from_slice(&port.to_be_bytes());
    b[4..8].copy_from_slice(&ip);
    b
}

fn connect_event(skaddr: u64, ret: i64, start: u64, dur: u64) -> ConnectEvent {
    let mut addr = [0u8; 112];
    addr[..16].copy_from_slice(&sockaddr_in([127, 0, 0, 1], 9000));
    ConnectEvent {
        kind: 1,
        tgid: 10,
        tid: 11,
        fd: 3,
        ret,
        start_ns: start,
        duration_ns: dur,
        skaddr,
        addr_len: 16,
        _pad: 0,
        addr,
    }
}

fn handshake(skaddr: u64, state: u32, start: u64, dur: u64) -> HandshakeEvent {
    HandshakeEvent {
        kind: 2,
        tgid: 10,
        tid: 11,
        new_state: state,
        skaddr,
        start_ns: start,
        duration_ns: dur,
    }
}

#[test]
fn a_socket_is_named_by_the_lookup_before_its_connect_not_by_its_address() {
    use crate::dns::tests::lookup;
    use tracer_common::LookupFn;
    let mut agg = Aggregate::new(0);
    let connect = |agg: &mut Aggregate, fd: i32| {
        let mut ev = connect_event(fd as u64, 0, 100, 5);
        (ev.tgid, ev.tid, ev.fd) = (100, 2, fd);
        agg.apply(Event::Connect(ev));
        agg.peer_name(100, fd).unwrap()
    };
    // Two names for one address, each dialed by the goroutine that
    // looked it up (on the thread its lookup returned on).
    for (fd, host) in [(3, "prom1.example.com"), (4, "prom2.example.com")] {
        agg.dns
            .on_lookup(&lookup(LookupFn::GoLookupIpAddr, host, 2), || None);
        assert_eq!(connect(&mut agg, fd), format!("{host}:9000 (127.0.0.1)"));
    }
    // A connect no lookup names: either name would be a guess.
    assert_eq!(connect(&mut agg, 5), "127.0.0.1:9000");
}

#[inline(never)]
fn a_function_that_looks_up() -> u64 {
    std::hint::black_box(a_function_that_looks_up as *const () as u64)
}

#[test]
fn a_lookup_counts_under_its_host_in_lower_case_and_keeps_its_site_and_spelling() {
    use crate::dns::tests::lookup;
    use tracer_common::LookupFn;
    let mut agg = Aggregate::new(0);
    agg.keep_slow_calls(0);
    // The kernel's stack of the call (one frame, in this process),
    // then the lookup it belongs to: thread 1, started at 5.
    // SAFETY: a plain-data record; all zeros is a valid one.
    let mut frames: tracer_common::FramesEvent = unsafe { std::mem::zeroed() };
    (frames.tgid, frames.tid, frames.key_ns) = (std::process::id(), 1, 5);
    frames.native_depth = 1;
    frames.native_end = tracer_common::UNWOUND_END;
    frames.py_status = tracer_common::PY_NOT_PYTHON;
    frames.words[0] = a_function_that_looks_up();
    agg.apply(Event::Frames(&frames));
    let mut ev = lookup(LookupFn::Getaddrinfo, "API.Example.com", 1);
    (ev.start_ns, ev.duration_ns) = (5, 7_000);
    agg.apply(Event::Lookup(&ev));

    let ((kind, target, id), stats) = agg.by_site().iter().next().expect("one site");
    assert_eq!(
        (*kind, target.as_str(), stats.count),
        (CallKind::Lookup, "api.example.com", 1)
    );
    let label = agg.sites().site_label(*id);
    assert!(label.contains("a_function_that_looks_up"), "{label}");
    assert!(agg.dns().hosts.contains_key("api.example.com"));
    // The slowest lookups keep the site's label (made only for them)
    // and the name as the program wrote it; so does the event stream.
    let kept = &agg.dns().slowest[0];
    assert_eq!(kept.call_site.as_deref(), Some(label.as_str()));
    assert_eq!(
        (kept.host.as_str(), kept.result.as_ref()),
        ("API.Example.com", "ok")
    );
    let slow = agg.take_slow_calls();
    assert_eq!(
        (slow[0].target.as_str(), slow[0].result.as_str()),
        ("API.Example.com", "ok")
    );
    assert!(
        slow[0]
            .call_site
            .as_deref()
            .is_some_and(|s| s.contains("a_function_that_looks_up"))
    );
    // A second lookup of the same name, in lower case: the same row.
    let mut again = lookup(LookupFn::Getaddrinfo, "api.example.com", 1);
    (again.start_ns, again.duration_ns) = (20, 9_000);
    agg.apply(Event::Lookup(&again));
    assert_eq!(agg.dns().hosts.len(), 1);
    let slowest = &agg.dns().slowest;
    assert_eq!(slowest[0].duration_ns, 9_000);
    assert_eq!(slowest[0].call_site, None, "this one had no stack");
    assert_eq!(slowest[1].call_site.as_deref(), Some(label.as_str()));
    assert_eq!(agg.take_slow_calls()[0].target, "api.example.com");
}

#[test]
fn nonblocking_connect_takes_the_handshake_time_in_either_order() {
    let mut agg = Aggregate::new(0);
    // connect record first, handshake later
    agg.apply(Event::Connect(connect_event(1, -EINPROGRESS, 100, 5)));
    assert_eq!(agg.connects.total, 0, "waits for its handshake");
    agg.apply(Event::Handshake(handshake(
        1,
        TCP_ESTABLISHED,
        101,
        1_000_000,
    )));
    // handshake first (completed inside the call), then the record
    agg.apply(Event::Handshake(handshake(2, 7, 200, 3_000)));
    agg.apply(Event::Connect(connect_event(2, -EINPROGRESS, 199, 5)));
    assert_eq!(agg.connects.total, 2);
    let slow = &agg.connects.slowest;
    assert_eq!(slow[0].latency_ns(), 1_000_000);
    assert_eq!(slow[0].outcome, ConnectOutcome::Connected);
    assert_eq!(slow[1].outcome, ConnectOutcome::HandshakeFailed);
}

#[test]
fn blocking_connect_keeps_syscall_time_and_errno() {
    let mut agg = Aggregate::new(0);
    agg.apply(Event::Handshake(handshake(3, 7, 10, 50)));
    agg.apply(Event::Connect(connect_event(3, -111, 9, 80)));
    let r = &agg.connects.slowest[0];
    assert_eq!(r.outcome, ConnectOutcome::Failed("ECONNREFUSED".into()));
    assert_eq!((r.latency_ns(), r.handshake_ns), (80, Some(50)));
    let peer = Peer::Inet("127.0.0.1:9000".parse().unwrap());
    assert_eq!(agg.connects.peers[&peer].latency.count, 1);
}

#[test]
fn unanswered_handshake_is_pending_at_the_end() {
    let mut agg = Aggregate::new(0);
    agg.apply(Event::Connect(connect_event(4, -EINPROGRESS, 1_000, 5)));
    agg.finish(5_000);
    let r = &agg.connects.slowest[0];
    assert_eq!(r.outcome, ConnectOutcome::InProgress);
    assert_eq!(r.latency_ns(), 4_000);
}
