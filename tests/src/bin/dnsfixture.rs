//! A small DNS server for the tests, with the faults this kernel cannot
//! make on the wire (no netem): it answers after a set delay, drops queries
//! of a given type, and answers NXDOMAIN for names under given suffixes.
//! Every query it receives is printed as one JSON line (the ground truth of
//! what the client asked).
//!
//!   dnsfixture --listen 127.0.0.1:53 [--delay-ms N] [--drop-type AAAA]
//!              [--nxdomain SUFFIX]... [--answer-a IP] [--empty-aaaa]
//!
//! It answers over UDP and over TCP (each message after its 2-byte
//! length), on the same address; a query's line says which.
//!
//! A queries are answered 10.1.2.3 (or --answer-a), AAAA queries fd00::1
//! (or nothing, with --empty-aaaa); other types get an empty NOERROR
//! answer. It prints {"listening": "ADDR"} when ready.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

struct Config {
    delay: Duration,
    drop_types: Vec<u16>,
    nxdomain: Vec<String>,
    answer_a: [u8; 4],
    empty_aaaa: bool,
}

fn type_code(name: &str) -> u16 {
    match name {
        "A" => 1,
        "AAAA" => 28,
        "MX" => 15,
        "TXT" => 16,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("unknown type {other}")),
    }
}

fn type_name(code: u16) -> String {
    match code {
        1 => "A".into(),
        28 => "AAAA".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        other => other.to_string(),
    }
}

/// Reads the question: (name, type, end of question). None if malformed.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn answer(q: &[u8], end: usize, qtype: u16, nx: bool, cfg: &Config) -> Vec<u8> {
    let mut r = q[..end].to_vec();
    r[2] = 0x80 | (q[2] & 0x01); // QR, copy RD
    r[3] = 0x80 | if nx { 3 } else { 0 }; // RA, rcode
    r[4..6].copy_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    r[8..12].fill(0); // NSCOUNT, ARCOUNT
    let rdata: Vec<u8> = match (nx, qtype) {
        (false, 1) => cfg.answer_a.to_vec(),
        (false, 28) if cfg.empty_aaaa => Vec::new(),
        (false, 28) => {
            let mut v = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            v[15] = 1;
            v
        }
        _ => Vec::new(),
    };
    let answers: u16 = if rdata.is_empty() { 0 } else { 1 };
    r[6..8].copy_from_slice(&answers.to_be_bytes());
    if answers == 1 {
        r.extend_from_slice(&[0xc0, 0x0c]); // name: pointer to the question
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&60u32.to_be_bytes()); // TTL
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    r
}

/// Logs a query; returns its type, where its question ends and whether
/// it gets NXDOMAIN, or None when it is dropped or not a query.
fn received(
    q: &[u8],
    transport: &str,
    cfg: &Config,
    out: &Mutex<std::io::Stdout>,
) -> Option<(u16, usize, bool)> {
    let (name, qtype, end) = question(q)?;
    let id = u16::from_be_bytes([q[0], q[1]]);
    let dropped = cfg.drop_types.contains(&qtype);
    let nx = cfg
        .nxdomain
        .iter()
        .any(|s| name == *s || name.ends_with(&format!(".{s}")));
    let mut o = out.lock().unwrap();
    let _ = writeln!(
        o,
        "{{\"name\":\"{name}\",\"type\":\"{}\",\"id\":{id},\"dropped\":{dropped},\
         \"nxdomain\":{nx},\"transport\":\"{transport}\"}}",
        type_name(qtype)
    );
    let _ = o.flush();
    (!dropped).then_some((qtype, end, nx))
}

/// One TCP client: length-prefixed queries, answered in order.
fn serve_tcp(mut conn: TcpStream, cfg: &Config, out: &Mutex<std::io::Stdout>) {
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut q).is_err() {
            return;
        }
        let Some((qtype, end, nx)) = received(&q, "tcp", cfg, out) else {
            continue;
        };
        std::thread::sleep(cfg.delay);
        let a = answer(&q, end, qtype, nx, cfg);
        let mut framed = (a.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&a);
        if conn.write_all(&framed).is_err() {
            return;
        }
    }
}

fn main() {
    let mut listen = "127.0.0.1:53".to_string();
    let mut cfg = Config {
        delay: Duration::ZERO,
        drop_types: Vec::new(),
        nxdomain: Vec::new(),
        answer_a: [10, 1, 2, 3],
        empty_aaaa: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value(),
            "--delay-ms" => cfg.delay = Duration::from_millis(value().parse().unwrap()),
            "--drop-type" => cfg.drop_types.push(type_code(&value())),
            "--nxdomain" => cfg.nxdomain.push(value().to_lowercase()),
            "--answer-a" => {
                let ip: std::net::Ipv4Addr = value().parse().expect("an IPv4 address");
                cfg.answer_a = ip.octets();
            }
            "--empty-aaaa" => cfg.empty_aaaa = true,
            other => panic!("unknown option {other}"),
        }
    }
    let sock = UdpSocket::bind(&listen).expect("bind");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut o = out.lock().unwrap();
        let _ = writeln!(o, "{{\"listening\":\"{}\"}}", sock.local_addr().unwrap());
        let _ = o.flush();
    }
    let sock = Arc::new(sock);
    let cfg = Arc::new(cfg);
    let tcp = TcpListener::bind(&listen).expect("bind TCP");
    {
        let (cfg, out) = (cfg.clone(), out.clone());
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                let (cfg, out) = (cfg.clone(), out.clone());
                std::thread::spawn(move || serve_tcp(conn, &cfg, &out));
            }
        });
    }
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let q = buf[..n].to_vec();
        let Some((qtype, end, nx)) = received(&q, "udp", &cfg, &out) else {
            continue;
        };
        let (sock, cfg) = (sock.clone(), cfg.clone());
        // Each answer on its own thread: a delay does not hold up the next.
        std::thread::spawn(move || {
            std::thread::sleep(cfg.delay);
            let _ = sock.send_to(&answer(&q, end, qtype, nx, &cfg), from);
        });
    }
}
