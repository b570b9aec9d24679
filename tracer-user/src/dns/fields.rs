//! The fields of a lookup's kernel record as the report shows them: its
//! names as text, its addresses and service kept in place, its result by
//! name.

use std::{borrow::Cow, net::IpAddr};

use arrayvec::{ArrayString, ArrayVec};
use tracer_common::{LOOKUP_ADDRS, LookupFn, SERVICE_MAX};

/// A lookup's addresses, as many as the kernel copies: kept in place, as
/// is the service name, so that a lookup's record costs no heap block
/// but its host's (at 10,000 lookups a second, each block and its free
/// is a measurable share of the collector).
pub type Addresses = ArrayVec<IpAddr, LOOKUP_ADDRS>;

/// A service as the kernel copied it (`SERVICE_MAX` bytes at most, but
/// each byte that is not UTF-8 is shown as 3).
pub type Service = ArrayString<{ 3 * SERVICE_MAX }>;

/// The service name of a lookup's record, None when it had none.
pub(super) fn service_of(bytes: &[u8]) -> Option<Service> {
    let mut service = Service::new();
    for c in String::from_utf8_lossy(before_nul(bytes)).chars() {
        if service.try_push(c).is_err() {
            break;
        }
    }
    Some(service).filter(|s| !s.is_empty())
}

pub(super) fn c_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(before_nul(bytes)).into_owned()
}

/// Whether `host` is an address written out (getaddrinfo("127.0.0.1")):
/// parsed only when every character could be in one, as most hosts are
/// names (the parse was 2% of the collector's time at 10,000 lookups a
/// second of "localhost").
pub(super) fn is_address(host: &str) -> bool {
    host.bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
        && host.parse::<std::net::IpAddr>().is_ok()
}

/// A C string's bytes: up to its NUL, or all of them without one.
fn before_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// "ok", or the error by name: getaddrinfo's EAI_* codes (glibc values),
/// gethostbyname's h_errno values.
pub fn lookup_result(func: LookupFn, ret: i32) -> Cow<'static, str> {
    if ret == 0 {
        return Cow::Borrowed("ok");
    }
    let name = if func.is_go() {
        // A Go error value; the tracer does not read which.
        "error"
    } else if func == LookupFn::Getaddrinfo {
        match ret {
            -1 => "EAI_BADFLAGS",
            -2 => "EAI_NONAME",
            -3 => "EAI_AGAIN",
            -4 => "EAI_FAIL",
            -5 => "EAI_NODATA",
            -6 => "EAI_FAMILY",
            -7 => "EAI_SOCKTYPE",
            -8 => "EAI_SERVICE",
            -9 => "EAI_ADDRFAMILY",
            -10 => "EAI_MEMORY",
            -11 => "EAI_SYSTEM",
            -12 => "EAI_OVERFLOW",
            _ => "",
        }
    } else {
        match ret {
            1 => "HOST_NOT_FOUND",
            2 => "TRY_AGAIN",
            3 => "NO_RECOVERY",
            4 => "NO_DATA",
            -1 => "failed",
            _ => "",
        }
    };
    if name.is_empty() {
        Cow::Owned(format!("error {ret}"))
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::is_address;

    #[test]
    fn addresses_are_told_from_names() {
        for address in ["127.0.0.1", "::1", "fe80::1", "2001:db8::ff00:42:8329"] {
            assert!(is_address(address), "{address}");
        }
        for name in [
            "localhost",
            "db.example",
            "cafe",
            "dead:beef:zz",
            "1.2.3",
            "",
        ] {
            assert!(!is_address(name), "{name}");
        }
    }
}
