//! Real network peers for the tests: listeners that answer slowly or not
//! at all, a DNS server, a TLS server, network namespaces of our own.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::*;

/// A loopback TCP listener that accepts everything, on a thread.
pub struct OpenListener {
    pub port: u16,
}

impl OpenListener {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_v6() -> Self {
        Self::start_on("[::1]:0")
    }

    fn start_on(addr: &str) -> Self {
        let l = TcpListener::bind(addr).unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            for conn in l.incoming() {
                drop(conn);
            }
        });
        Self { port }
    }
}

/// A loopback port nobody listens on: connects are refused.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
    // dropped here: the port is closed (and not reused at once)
}

/// A listener whose accept queue is full (backlog 0 plus one connection the
/// test itself made), so the kernel drops the next SYN. Released after a
/// delay, it drains the queue and the client's SYN retransmit, sent about
/// 1 s after the first SYN, completes the handshake. This kernel has no
/// netem; this is how a known handshake delay is made (see PLATFORM.md).
pub struct SlowListener {
    pub port: u16,
    listener: Option<TcpListener>,
    _filler: TcpStream,
}

impl SlowListener {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: listen(2) on our socket; backlog 0 leaves room for one.
        unsafe {
            use std::os::fd::AsRawFd as _;
            assert_eq!(libc::listen(listener.as_raw_fd(), 0), 0);
        }
        let filler = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Self {
            port,
            listener: Some(listener),
            _filler: filler,
        }
    }

    /// Starts accepting after `delay`, for a few seconds.
    pub fn release_after(&mut self, delay: Duration) {
        let listener = self.listener.take().expect("released once");
        thread::spawn(move || {
            thread::sleep(delay);
            listener.set_nonblocking(true).unwrap();
            let end = Instant::now() + Duration::from_secs(4);
            let mut held = Vec::new();
            while Instant::now() < end {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }
}

/// A network namespace the test made, with its own loopback and
/// resolv.conf (`ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf
/// over /etc/resolv.conf). Deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str, resolv_conf: &str) -> Self {
        let name = format!("tracer-{tag}-{}", std::process::id());
        // A namespace left by an earlier run that was killed.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = |args: &[&str]| {
            let st = Command::new("ip")
                .args(args)
                .status()
                .expect("ip (iproute2)");
            assert!(st.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let dir = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), resolv_conf).unwrap();
        Self { name }
    }

    /// `program args...` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// The test DNS server (`dnsfixture`) on 127.0.0.1:53 inside a namespace.
/// Its log is every query it received: the ground truth.
pub struct DnsServer {
    child: Child,
    pub log: Lines,
}

impl DnsServer {
    pub fn start(ns: &NetNs, args: &[&str]) -> Self {
        Self::start_command(ns.command(bin_dir().join("dnsfixture")), args)
    }

    /// In the network namespace the caller is in.
    pub fn start_here(args: &[&str]) -> Self {
        Self::start_command(Command::new(bin_dir().join("dnsfixture")), args)
    }

    fn start_command(mut cmd: Command, args: &[&str]) -> Self {
        let mut child = cmd
            .args(["--listen", "127.0.0.1:53"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start dnsfixture");
        let mut log = Lines::new(child.stdout.take().unwrap());
        log.wait_for("listening", Duration::from_secs(10));
        Self { child, log }
    }

    /// The queries received so far (waits a moment for the log to catch up).
    pub fn queries(&mut self) -> Vec<Value> {
        while self.log.next(Duration::from_millis(300)).is_some() {}
        self.log
            .seen
            .iter()
            .filter(|l| l.contains("\"name\""))
            .map(|l| json(l))
            .collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh self-signed certificate for CN=localhost: (cert, key) paths.
pub fn self_signed_cert() -> (PathBuf, PathBuf) {
    let dir = scratch("tls-cert");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl req");
    (cert, key)
}

/// A TLS server on loopback (tests/fixtures/tls_server.py) with a fresh
/// self-signed certificate: every request gets `records` TLS records of
/// `size` bytes, `delay_ms` apart.
pub struct TlsServer {
    child: Child,
    pub port: u16,
    pub out: Lines,
}

impl TlsServer {
    pub fn start(records: u32, size: u32, delay_ms: u32) -> Self {
        Self::start_command(Command::new(python()), records, size, delay_ms)
    }

    /// On the loopback of a network namespace.
    pub fn start_in(ns: &NetNs, records: u32, size: u32, delay_ms: u32) -> Self {
        Self::start_command(ns.command(python()), records, size, delay_ms)
    }

    fn start_command(mut cmd: Command, records: u32, size: u32, delay_ms: u32) -> Self {
        let (cert, key) = self_signed_cert();
        let mut child = cmd
            .arg(fixture_file("tls_server.py"))
            .arg(&cert)
            .arg(&key)
            .args([records, size, delay_ms].map(|v| v.to_string()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tls_server.py");
        let mut out = Lines::new(child.stdout.take().unwrap());
        let line = json(&out.wait_for("listening", Duration::from_secs(20)));
        let port = line["listening"].as_u64().unwrap() as u16;
        Self { child, port, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The response size in bytes: the body the server sends.
    pub fn served(&mut self) -> u64 {
        json(&self.out.wait_for("served", Duration::from_secs(30)))["served"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP backend that answers each connection's first read with "result"
/// after `delay`: a slow database for a server fixture to query.
pub fn slow_backend(delay: Duration) -> u16 {
    use std::io::{Read as _, Write as _};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 100];
                let _ = c.read(&mut buf);
                std::thread::sleep(delay);
                let _ = c.write_all(b"result");
            });
        }
    });
    port
}

/// One HTTP/1.0 GET of / on loopback, read to the end.
pub fn http_get_root(port: u16) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
}
