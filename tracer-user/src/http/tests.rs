//! The request state's rules, on made-up events.

use super::*;

fn line(text: &str) -> ([u8; REQUEST_LINE_BYTES], usize) {
    let mut l = [0u8; REQUEST_LINE_BYTES];
    l[..text.len()].copy_from_slice(text.as_bytes());
    (l, text.len())
}

fn begin(state: &mut HttpState, fd: i32, tid: u32, start: u64, text: &str) {
    let (l, len) = line(text);
    state.on_line(&RequestLineEvent {
        kind: 15,
        tgid: 1,
        tid,
        fd,
        start_ns: start,
        len: len as u32,
        _pad: 0,
        line: l,
    });
}

fn end(state: &mut HttpState, fd: i32, start: u64, end_ns: u64) {
    state.on_end(&RequestEndEvent {
        kind: 16,
        tgid: 1,
        fd,
        _pad: 0,
        start_ns: start,
        end_ns,
    });
}

fn lookup(start: u64) -> RequestCall {
    RequestCall {
        kind: CallKind::Lookup,
        target: "identity.test".into(),
        start_ns: start,
        latency_ns: 10,
        site: Some(7),
    }
}

#[test]
fn ids_uuids_and_long_hex_become_one_route() {
    assert_eq!(normalize_path("/users/42/orders"), "/users/:id/orders");
    assert_eq!(
        normalize_path("/o/123e4567-e89b-12d3-a456-426614174000"),
        "/o/:id"
    );
    assert_eq!(normalize_path("/blob/9f8e7d6c5b4a39281706"), "/blob/:id");
    // Short hex is a word, not an id.
    assert_eq!(normalize_path("/cafe/beef"), "/cafe/beef");
    assert_eq!(normalize_path("/"), "/");
    let (l, len) = line("GET /repos/17");
    assert_eq!(
        parse_line(&l, len).map(|r| r.to_string()).as_deref(),
        Some("GET /repos/:id")
    );
    let (l, len) = line("FOO /x");
    assert_eq!(parse_line(&l, len), None);
}

#[test]
fn a_thread_s_calls_are_its_request_s_and_a_worker_s_go_to_the_only_one_open() {
    let mut s = HttpState::default();
    begin(&mut s, 5, 10, 100, "GET /a");
    s.on_call((1, 10, None), lookup(150));
    // Another thread of the process, while one request is open: its.
    s.on_call((1, 11, None), lookup(160));
    // Before the request began: not its.
    s.on_call((1, 10, None), lookup(50));
    // After its last write: not its.
    s.on_call((1, 10, None), lookup(990));
    end(&mut s, 5, 100, 900);
    let route = &s.routes[&Route {
        method: "GET".into(),
        path: "/a".into(),
    }];
    assert_eq!(route.latency.count, 1);
    assert_eq!(route.latency.max_ns, 800);
    assert_eq!(
        route.calls[&(CallKind::Lookup, "identity.test".into())].0,
        2
    );
    assert_eq!(s.slowest[0].calls.len(), 2);
    assert_eq!(
        route.sites[&(CallKind::Lookup, "identity.test".into(), 7)],
        (2, 20)
    );
}

#[test]
fn calls_past_the_timeline_s_cap_still_count_for_the_route() {
    let mut s = HttpState::default();
    begin(&mut s, 5, 10, 100, "GET /a");
    for _ in 0..CALLS_KEPT + 5 {
        s.on_call((1, 10, None), lookup(150));
    }
    end(&mut s, 5, 100, 900);
    let route = s.routes.values().next().unwrap();
    let all = (CALLS_KEPT + 5) as u64;
    assert_eq!(
        route.calls[&(CallKind::Lookup, "identity.test".into())],
        (all, all * 10)
    );
    assert_eq!(
        route.sites[&(CallKind::Lookup, "identity.test".into(), 7)].0,
        all
    );
    assert_eq!(s.slowest[0].calls_dropped, 5);
}

#[test]
fn a_tls_server_s_calls_on_the_request_s_own_connection_are_the_client_s() {
    let mut s = HttpState::default();
    begin(&mut s, 5, 10, 100, "GET /a");
    let mut write = lookup(700);
    (write.kind, write.target) = (CallKind::TlsWrite, "127.0.0.1:50620".into());
    s.on_call((1, 10, Some(5)), write.clone());
    // The same on another socket (a backend's): named as it is.
    s.on_call((1, 10, Some(6)), write.clone());
    // Its last SSL write returns after the write syscall in it that
    // the kernel ends the request at: the request ends with it.
    (write.start_ns, write.latency_ns) = (880, 30);
    s.on_call((1, 10, Some(5)), write);
    end(&mut s, 5, 100, 900);
    assert_eq!(s.slowest[0].latency_ns, 810);
    let route = s.routes.values().next().unwrap();
    assert_eq!(route.calls[&(CallKind::TlsWrite, CLIENT.into())].0, 2);
    assert_eq!(
        route.calls[&(CallKind::TlsWrite, "127.0.0.1:50620".into())].0,
        1
    );
}

#[test]
fn a_call_several_requests_could_own_waits_until_one_is_left() {
    let mut s = HttpState::default();
    begin(&mut s, 5, 10, 100, "GET /a");
    begin(&mut s, 6, 10, 110, "GET /b");
    // Two open on its thread; two open on other threads, none on this
    // one: undecided either way.
    s.on_call((1, 10, None), lookup(150));
    s.on_call((1, 12, None), lookup(150));
    assert_eq!((s.calls_unowned, s.calls_undecided()), (0, 2));
    // /a was answered at 120, before they began: they are /b's.
    end(&mut s, 5, 100, 120);
    assert_eq!((s.calls_unowned, s.calls_undecided()), (0, 0));
    end(&mut s, 6, 110, 400);
    assert_eq!(s.slowest[0].calls.len(), 2);
    assert_eq!(s.slowest[0].route.path, "/b");
}

#[test]
fn a_call_that_either_of_two_requests_could_own_is_no_one_s() {
    let mut s = HttpState::default();
    begin(&mut s, 5, 10, 100, "GET /a");
    begin(&mut s, 6, 10, 110, "GET /b");
    s.on_call((1, 10, None), lookup(150));
    s.on_call((1, 12, None), lookup(160));
    // /a ends after they began: /a or /b, no rule says.
    end(&mut s, 5, 100, 200);
    assert_eq!((s.calls_unowned, s.calls_undecided()), (2, 0));
    // An unanswered request owns nothing: the call is the other's.
    begin(&mut s, 7, 10, 300, "GET /c");
    s.on_call((1, 11, None), lookup(350));
    end(&mut s, 6, 110, 0);
    assert_eq!(
        (s.calls_unowned, s.calls_undecided(), s.unanswered),
        (2, 0, 1)
    );
    // The process exits with /c open: unanswered, and forgotten.
    s.forget_process(1);
    assert_eq!((s.unanswered, s.open_count()), (2, 0));
}

#[test]
fn a_call_inside_another_is_not_counted_twice_and_calls_are_in_start_order() {
    let mut s = HttpState::default();
    begin(&mut s, 5, 10, 100, "GET /a");
    let mut connect = lookup(120);
    (connect.kind, connect.latency_ns) = (CallKind::Connect, 5);
    let mut outer = lookup(110);
    outer.latency_ns = 50;
    // The connect ends first, inside the lookup.
    s.on_call((1, 10, None), connect);
    s.on_call((1, 10, None), outer);
    s.on_call((1, 10, None), lookup(200));
    end(&mut s, 5, 100, 300);
    let r = &s.slowest[0];
    assert_eq!(r.calls[0].kind, CallKind::Lookup);
    assert_eq!(r.in_calls_ns(), 50 + 10);
}

#[test]
fn routes_over_the_cap_are_counted_as_other() {
    let mut s = HttpState::new(1);
    begin(&mut s, 5, 10, 100, "GET /a");
    end(&mut s, 5, 100, 200);
    begin(&mut s, 5, 10, 300, "GET /b");
    end(&mut s, 5, 300, 400);
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.other.latency.count, 1);
    assert_eq!(s.requests_total(), 2);
}
