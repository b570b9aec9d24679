//! The kinds of call tracer times, each named once: how tables and JSON
//! name it, how metrics label it, and which `--kind` it answers to. A leaf:
//! every layer names kinds through it, and nothing parses a name back.

use serde::Serialize;

/// One kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallKind {
    /// A name lookup: getaddrinfo and its kin.
    Lookup,
    /// A connect(), joined with its TCP handshake.
    Connect,
    /// An SSL call that ran the handshake and moved no data.
    TlsHandshake,
    TlsRead,
    TlsWrite,
    /// A read or write syscall over the slow-I/O threshold.
    SlowRead,
    SlowWrite,
}

impl CallKind {
    #[cfg(test)]
    pub const ALL: [CallKind; 7] = [
        CallKind::Lookup,
        CallKind::Connect,
        CallKind::TlsHandshake,
        CallKind::TlsRead,
        CallKind::TlsWrite,
        CallKind::SlowRead,
        CallKind::SlowWrite,
    ];

    /// For people, where reads and writes are apart (`top`).
    pub const fn label(self) -> &'static str {
        match self {
            CallKind::SlowRead => "slow read",
            CallKind::SlowWrite => "slow write",
            other => other.json_name(),
        }
    }

    /// The name in JSON `kind` fields and in the report's rows: slow reads
    /// and writes are one row kind there, `io`.
    pub const fn json_name(self) -> &'static str {
        match self {
            CallKind::Lookup => "dns",
            CallKind::Connect => "connect",
            CallKind::TlsHandshake => "handshake",
            CallKind::TlsRead => "tls read",
            CallKind::TlsWrite => "tls write",
            CallKind::SlowRead | CallKind::SlowWrite => "io",
        }
    }

    /// The value of the `kind` label of the per-target metrics.
    pub const fn metric_name(self) -> &'static str {
        match self {
            CallKind::Lookup => "dns",
            CallKind::Connect => "connect",
            CallKind::TlsHandshake => "tls_handshake",
            CallKind::TlsRead => "tls_read",
            CallKind::TlsWrite => "tls_write",
            CallKind::SlowRead => "slow_read",
            CallKind::SlowWrite => "slow_write",
        }
    }

    /// The row kind it is shown under: slow reads and writes to one target
    /// are one row.
    pub const fn row(self) -> CallKind {
        match self {
            CallKind::SlowWrite => CallKind::SlowRead,
            other => other,
        }
    }

    /// The `--kind` that selects it.
    pub const fn family(self) -> Kind {
        match self {
            CallKind::Lookup => Kind::Dns,
            CallKind::Connect => Kind::Connect,
            CallKind::TlsHandshake | CallKind::TlsRead | CallKind::TlsWrite => Kind::Tls,
            CallKind::SlowRead | CallKind::SlowWrite => Kind::Io,
        }
    }
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json_name())
    }
}

impl Serialize for CallKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.json_name())
    }
}

/// The kinds of call a user can pick with `--kind`: families of
/// `CallKind`, and the syscalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Kind {
    Dns,
    Tls,
    Io,
    Connect,
    Syscall,
}

impl Kind {
    /// The heading of its part of the report.
    pub fn title(self) -> &'static str {
        match self {
            Kind::Dns => "DNS lookups",
            Kind::Tls => "TLS",
            Kind::Io => "Slow reads and writes",
            Kind::Connect => "Connects",
            Kind::Syscall => "Syscalls",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_metric_name_and_a_row_of_its_family() {
        let mut names: Vec<_> = CallKind::ALL.iter().map(|k| k.metric_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CallKind::ALL.len());
        for k in CallKind::ALL {
            assert_eq!(k.row().family(), k.family());
            assert_eq!(k.row().json_name(), k.json_name());
        }
    }
}
