//! Names for people: the host a socket's address was looked up by.

use std::net::SocketAddr;

use super::Aggregate;
use crate::{connect::ConnectRecord, dns::ConnectName, peer::Peer};

impl Aggregate {
    /// The other end of a process's socket, for people: the host name it
    /// was looked up by when we saw the lookup, and the address.
    pub fn peer_name(&self, pid: u32, fd: i32) -> Option<String> {
        if let Some((_, name)) = self.fd_peers.get(&(pid, fd)) {
            return Some(name.clone());
        }
        let peer = crate::target::socket_peer(pid, fd).map(Peer::Inet)?;
        Some(self.name_peer(&peer))
    }
    /// `api.example.com:443 (10.0.0.7)` when the address was connected to
    /// right after a lookup of that host, or only one traced lookup
    /// returned it; else the address.
    pub fn name_peer(&self, peer: &Peer) -> String {
        match peer {
            Peer::Inet(a) => {
                let host = match self.names_by_addr.get(a) {
                    Some(named) => named.as_deref(),
                    None => self.guess_host(a),
                };
                match host {
                    Some(host) => format!("{host}:{} ({})", a.port(), a.ip()),
                    None => a.to_string(),
                }
            }
            other => other.to_string(),
        }
    }
    /// The host of an address no connect named: the one host lookups
    /// returned its IP for, unless connects to other ports of that IP went
    /// to other names (or to the bare address): then services share the IP
    /// (127.0.0.1 above all) and the IP says nothing.
    fn guess_host(&self, a: &SocketAddr) -> Option<&str> {
        let host = self.dns.host_of(&a.ip())?;
        let agrees = self
            .names_by_addr
            .iter()
            .filter(|(other, _)| other.ip() == a.ip())
            .all(|(_, name)| {
                name.as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(host))
            });
        agrees.then_some(host)
    }

    /// Names the socket a connect went to, for the calls made on it later:
    /// by the lookup that preceded it on its thread, else as the address's
    /// other connects were named.
    pub(super) fn name_connected_socket(&mut self, record: &ConnectRecord) {
        let Some(peer) = &record.peer else { return };
        let name = match peer {
            Peer::Inet(a) => match self.dns.host_for_connect(record.tid, &a.ip()) {
                ConnectName::Host(host) => {
                    self.note_name_of_addr(*a, Some(&host));
                    format!("{host}:{} ({})", a.port(), a.ip())
                }
                ConnectName::Address => {
                    self.note_name_of_addr(*a, None);
                    a.to_string()
                }
                ConnectName::Unknown => self.name_peer(peer),
            },
            _ => self.name_peer(peer),
        };
        self.fd_peers
            .insert((record.pid, record.fd), (peer.clone(), name));
    }

    /// What connects to an address were to: one host, or (None) the bare
    /// address or several hosts sharing it, when a connect no lookup
    /// names cannot be told apart.
    fn note_name_of_addr(&mut self, a: SocketAddr, host: Option<&str>) {
        let named = self
            .names_by_addr
            .entry(a)
            .or_insert_with(|| host.map(str::to_string));
        if named.as_deref() != host {
            *named = None;
        }
    }
}
