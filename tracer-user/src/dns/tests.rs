//! The lookup state's unit tests.

use super::*;

#[test]
fn error_names() {
    assert_eq!(lookup_result(LookupFn::Getaddrinfo, -2), "EAI_NONAME");
    assert_eq!(lookup_result(LookupFn::Getaddrinfo, -3), "EAI_AGAIN");
    assert_eq!(lookup_result(LookupFn::GethostbynameR, 1), "HOST_NOT_FOUND");
    assert_eq!(lookup_result(LookupFn::Getaddrinfo, 0), "ok");
    assert_eq!(lookup_result(LookupFn::Getaddrinfo, -77), "error -77");
}

/// A finished lookup of `host` to 127.0.0.1, started on thread 1 and
/// returned on `end_tid`.
pub(crate) fn lookup(func: LookupFn, host: &str, end_tid: u32) -> LookupEvent {
    // SAFETY: a #[repr(C)] record of integers and byte arrays.
    let mut ev: LookupEvent = unsafe { std::mem::zeroed() };
    ev.tgid = 100;
    ev.tid = 1;
    ev.end_tid = end_tid;
    ev.func = func as u32;
    ev.naddrs = 1;
    ev.families[0] = libc::AF_INET as u16;
    ev.addrs[0][..4].copy_from_slice(&[127, 0, 0, 1]);
    ev.host[..host.len()].copy_from_slice(host.as_bytes());
    ev
}

#[test]
fn a_go_lookup_names_the_next_connect_on_the_thread_it_returned_on() {
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let host = |name: &str| ConnectName::Host(name.into());
    let mut dns = DnsState::default();
    // The goroutine parked in the lookup and came back on thread 2.
    dns.on_lookup(
        &lookup(LookupFn::GoLookupIpAddr, "prom1.example.com", 2),
        || None,
    );
    assert_eq!(dns.host_for_connect(1, &local), ConnectName::Unknown);
    assert_eq!(dns.host_for_connect(2, &local), host("prom1.example.com"));
    // Thread 2 runs another goroutine next, dialing the same address
    // by number: not prom1's connect.
    assert_eq!(dns.host_for_connect(2, &local), ConnectName::Unknown);
    dns.on_lookup(&lookup(LookupFn::GoLookupIpAddr, "127.0.0.1", 2), || None);
    assert_eq!(dns.host_for_connect(2, &local), ConnectName::Address);
    // A thread of a C program is its own: its lookup names each of its
    // connects (a client retrying the same host), until the next.
    dns.on_lookup(&lookup(LookupFn::Getaddrinfo, "api.example.com", 1), || {
        None
    });
    assert_eq!(dns.host_for_connect(1, &local), host("api.example.com"));
    assert_eq!(dns.host_for_connect(1, &local), host("api.example.com"));
}

#[test]
fn host_names_are_counted_in_lower_case_and_copied_only_with_capitals() {
    assert!(matches!(
        lowercase("api.example.com"),
        Cow::Borrowed("api.example.com")
    ));
    assert_eq!(lowercase("Api.Example.COM"), "api.example.com");
    assert!(matches!(lowercase("Api.Example.COM"), Cow::Owned(_)));
    let mut dns = DnsState::default();
    for host in ["API.example.com", "api.example.com", "Api.Example.Com"] {
        dns.on_lookup(&lookup(LookupFn::Getaddrinfo, host, 1), || None);
    }
    assert_eq!(dns.hosts.len(), 1, "{:?}", dns.hosts.keys());
    let h = &dns.hosts["api.example.com"];
    assert_eq!(h.latency.count, 3);
    assert_eq!(h.results.get("ok"), Some(&3));
}

#[test]
fn a_record_keeps_each_address_once_in_order_and_its_service_as_sent() {
    let mut ev = lookup(LookupFn::Getaddrinfo, "api.example.com", 1);
    // getaddrinfo returns an address once per socket type: here 2 entries
    // of ::1 and 2 of 127.0.0.1, interleaved, as the kernel copies them.
    let v6 = Ipv6Addr::LOCALHOST.octets();
    for (i, fam) in [libc::AF_INET6, libc::AF_INET, libc::AF_INET6, libc::AF_INET]
        .into_iter()
        .enumerate()
    {
        ev.families[i] = fam as u16;
        ev.addrs[i] = if fam == libc::AF_INET {
            [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        } else {
            v6
        };
    }
    ev.naddrs = 4;
    ev.service[..2].copy_from_slice(b"80");
    let mut dns = DnsState::default();
    let r = dns.on_lookup(&ev, || None).expect("a libc lookup's record");
    let want: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    assert_eq!(r.addresses.as_slice(), want.as_slice());
    assert_eq!(r.service.as_deref(), Some("80"));
    // A service of bytes that are not UTF-8, as long as the kernel copies:
    // each shown as U+FFFD, none lost.
    ev.service = [0xff; tracer_common::SERVICE_MAX];
    let r = dns.on_lookup(&ev, || None).expect("a record");
    let service = r.service.expect("a service");
    assert_eq!(service.chars().count(), tracer_common::SERVICE_MAX);
    assert!(service.chars().all(|c| c == char::REPLACEMENT_CHARACTER));
    ev.service = [0; tracer_common::SERVICE_MAX];
    assert_eq!(dns.on_lookup(&ev, || None).expect("a record").service, None);
}
