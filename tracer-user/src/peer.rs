//! Where a socket goes: the `struct sockaddr` a process passed to
//! connect() or sendto(), decoded.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use serde::Serialize;

/// Where a connect() went.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Peer {
    Inet(SocketAddr),
    Unix(String),
    /// AF_UNSPEC: dissolves a datagram socket's association.
    Unspecified,
    Other(u16),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Inet(a) => write!(f, "{a}"),
            Peer::Unix(p) => write!(f, "unix:{p}"),
            Peer::Unspecified => write!(f, "AF_UNSPEC"),
            Peer::Other(fam) => write!(f, "family {fam}"),
        }
    }
}

/// Decodes the `struct sockaddr` bytes a process passed to connect().
pub fn parse_sockaddr(bytes: &[u8]) -> Option<Peer> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    match family as i32 {
        libc::AF_INET => {
            let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(Peer::Inet(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                port,
            )))
        }
        libc::AF_INET6 => {
            let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(ip);
            // Show v4-mapped peers as the IPv4 address they are.
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Some(Peer::Inet(SocketAddr::new(ip, port)))
        }
        libc::AF_UNIX => {
            let path = bytes.get(2..).unwrap_or_default();
            let (prefix, path) = match path.first() {
                // Abstract socket: leading NUL, name is the rest (not NUL-terminated).
                Some(0) => ("@", &path[1..]),
                _ => ("", path.split(|&b| b == 0).next().unwrap_or_default()),
            };
            let path = path.split(|&b| b == 0).next().unwrap_or_default();
            Some(Peer::Unix(format!(
                "{prefix}{}",
                String::from_utf8_lossy(path)
            )))
        }
        libc::AF_UNSPEC => Some(Peer::Unspecified),
        other => Some(Peer::Other(other as u16)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn parses_socket_addresses() {
        assert_eq!(
            parse_sockaddr(&sockaddr_in([127, 0, 0, 1], 443)),
            Some(Peer::Inet("127.0.0.1:443".parse().unwrap()))
        );
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(
            parse_sockaddr(&v6),
            Some(Peer::Inet("[::1]:8080".parse().unwrap()))
        );
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/mysqld/mysqld.sock\0junk");
        assert_eq!(
            parse_sockaddr(&un),
            Some(Peer::Unix("/run/mysqld/mysqld.sock".into()))
        );
        let mut abs = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0name");
        assert_eq!(parse_sockaddr(&abs), Some(Peer::Unix("@name".into())));
        assert_eq!(parse_sockaddr(&[1]), None);
        assert_eq!(parse_sockaddr(&sockaddr_in([1, 2, 3, 4], 5)[..6]), None);
    }
}
