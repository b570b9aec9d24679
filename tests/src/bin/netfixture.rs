//! A process the end-to-end tests trace. It does what it is told on stdin,
//! one command per line, and prints what it measured itself (the ground
//! truth the tracer is compared with) as one JSON object per line.
//!
//! Commands:
//!   connect-ok PORT N        N blocking connects to 127.0.0.1:PORT
//!   connect-refused PORT N   N blocking connects expected to be refused
//!   connect-ok6 PORT N       N blocking connects to [::1]:PORT
//!   connect-slow PORT        one non-blocking connect; prints {"started":..}
//!                            right after connect(), then waits until done
//!   connect-unix PATH        one connect to a unix socket path
//!   sleep MS N               N sleeps of MS milliseconds (clock_nanosleep)
//!   getppid N                N getppid() calls (a syscall nothing else makes)
//!   rename NAME              prctl(PR_SET_NAME): the process's new name
//!   threads N PORT [M]       N threads, started together, each making M
//!                            (default 1) blocking connects to PORT
//!   fork-connect PORT N      fork a child that makes N connects and exits
//!   fork-many N PORT         fork N children at once, each one connect to
//!                            PORT and exit without closing it; reaps them all
//!   fork-hold N PORT         fork N children that each connect to PORT,
//!                            then stay until `release`; answers once all
//!                            have connected
//!   release                  lets the held children exit; reaps them
//!   exec PROGRAM ARGS...     execvp PROGRAM (stdin and stdout stay)
//!   exit                     exit 0
//! At start it prints {"ready": PID}. Arguments, if any, are a first command
//! run right after that (`netfixture connect-ok 8080 100`): one a program
//! makes the moment it is exec'd.

use std::{
    io::{BufRead as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

fn say(json: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{json}");
    let _ = out.flush();
}

fn micros(d: Duration) -> u128 {
    d.as_micros()
}

fn list(v: &[u128]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// One blocking connect; returns (elapsed, errno or 0).
fn blocking_connect(port: u16) -> (Duration, i32) {
    blocking_connect_to(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn blocking_connect_to(addr: SocketAddr) -> (Duration, i32) {
    let t0 = Instant::now();
    let r = TcpStream::connect(addr);
    let dt = t0.elapsed();
    match r {
        Ok(s) => {
            drop(s);
            (dt, 0)
        }
        Err(e) => (dt, e.raw_os_error().unwrap_or(-1)),
    }
}

/// A non-blocking connect timed from the call to the moment poll() says the
/// socket is writable (the handshake is over), as an event loop would see it.
fn nonblocking_connect(port: u16) -> (Duration, i32) {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        assert!(fd >= 0, "socket");
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let t0 = Instant::now();
        let rc = libc::connect(
            fd,
            (&raw const sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        say(format!(
            "{{\"started\":true,\"fd\":{fd},\"rc\":{rc},\"errno\":{}}}",
            if rc == 0 { 0 } else { errno }
        ));
        if rc != 0 && errno != libc::EINPROGRESS {
            libc::close(fd);
            return (t0.elapsed(), errno);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        libc::poll(&mut pfd, 1, 30_000);
        let dt = t0.elapsed();
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        );
        libc::close(fd);
        (dt, err)
    }
}

fn main() {
    say(format!("{{\"ready\":{}}}", std::process::id()));
    let stdin = std::io::stdin();
    // `fork-hold`'s children, and the pipe end whose closing releases them.
    let mut held_children: Vec<libc::pid_t> = Vec::new();
    let mut release_fd = -1;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let first = (!args.is_empty()).then(|| Ok(args.join(" ")));
    for line in first.into_iter().chain(stdin.lock().lines()) {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("bad command: {line}"))
        };
        match words.first().copied() {
            Some("connect-ok") | Some("connect-refused") | Some("connect-ok6") => {
                let (port, n) = (num(1) as u16, num(2));
                let ip: std::net::IpAddr = if words[0] == "connect-ok6" {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                };
                let mut times = Vec::new();
                let mut errnos = Vec::new();
                for _ in 0..n {
                    let (dt, e) = blocking_connect_to(SocketAddr::new(ip, port));
                    times.push(micros(dt));
                    errnos.push(e as u128);
                }
                say(format!(
                    "{{\"cmd\":\"{}\",\"micros\":{},\"errnos\":{}}}",
                    words[0],
                    list(&times),
                    list(&errnos)
                ));
            }
            Some("connect-slow") => {
                let (dt, err) = nonblocking_connect(num(1) as u16);
                say(format!(
                    "{{\"cmd\":\"connect-slow\",\"micros\":{},\"so_error\":{err}}}",
                    micros(dt)
                ));
            }
            Some("connect-unix") => {
                let path = words.get(1).expect("path");
                let r = std::os::unix::net::UnixStream::connect(path);
                let errno = r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
                say(format!("{{\"cmd\":\"connect-unix\",\"errno\":{errno}}}"));
            }
            Some("sleep") => {
                let (ms, n) = (num(1), num(2));
                let mut times = Vec::new();
                for _ in 0..n {
                    let t0 = Instant::now();
                    std::thread::sleep(Duration::from_millis(ms));
                    times.push(micros(t0.elapsed()));
                }
                say(format!("{{\"cmd\":\"sleep\",\"micros\":{}}}", list(&times)));
            }
            Some("getppid") => {
                let n = num(1);
                for _ in 0..n {
                    // SAFETY: getppid has no preconditions.
                    unsafe { libc::getppid() };
                }
                say(format!("{{\"cmd\":\"getppid\",\"calls\":{n}}}"));
            }
            Some("rename") => {
                let name = std::ffi::CString::new(words[1]).expect("a name without NUL");
                // SAFETY: PR_SET_NAME reads a NUL-terminated string (at most
                // 16 bytes are kept) that outlives the call.
                let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
                say(format!("{{\"cmd\":\"rename\",\"rc\":{rc}}}"));
            }
            Some("threads") => {
                let each = if words.len() > 3 { num(3) } else { 1 };
                threads(num(1), num(2) as u16, each);
            }
            Some("fork-connect") => {
                let (port, n) = (num(1) as u16, num(2));
                // SAFETY: single-threaded here (threads above are joined); the
                // child only connects and exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    for _ in 0..n {
                        let _ = blocking_connect(port);
                    }
                    unsafe { libc::_exit(0) };
                }
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                say(format!("{{\"cmd\":\"fork-connect\",\"child\":{pid}}}"));
            }
            Some("fork-many") => fork_many(num(1), num(2) as u16),
            Some("fork-hold") => {
                let (children, fd) = fork_hold(num(1), num(2) as u16);
                held_children.extend(children);
                release_fd = fd;
            }
            Some("release") => {
                // SAFETY: closing our end of the pipe and reaping our children.
                unsafe {
                    libc::close(release_fd);
                    for pid in held_children.drain(..) {
                        let mut status = 0;
                        libc::waitpid(pid, &mut status, 0);
                    }
                }
                say("{\"cmd\":\"release\"}".to_string());
            }
            Some("exec") => {
                use std::os::unix::process::CommandExt as _;
                let err = std::process::Command::new(words[1])
                    .args(&words[2..])
                    .exec();
                say(format!("{{\"cmd\":\"exec\",\"error\":\"{err}\"}}"));
            }
            Some("exit") => break,
            _ => panic!("unknown command: {line}"),
        }
    }
}

/// `threads N PORT [EACH]`: N threads connect at once, EACH times.
fn threads(n: u64, port: u16, each: u64) {
    // All threads connect at the same time, not one after another.
    let start = std::sync::Arc::new(std::sync::Barrier::new(n as usize));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                let tid = unsafe { libc::gettid() };
                start.wait();
                let failed = (0..each).filter(|_| blocking_connect(port).1 != 0).count();
                (tid, failed)
            })
        })
        .collect();
    let results: Vec<(i32, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let tids: Vec<u128> = results.iter().map(|r| r.0 as u128).collect();
    let failed: usize = results.iter().map(|r| r.1).sum();
    say(format!(
        "{{\"cmd\":\"threads\",\"tids\":{},\"failed\":{failed}}}",
        list(&tids)
    ));
}

/// `fork-many N PORT`: N children each connect and exit.
fn fork_many(n: u64, port: u16) {
    let mut children = Vec::new();
    for _ in 0..n {
        // SAFETY: no other thread runs here; the child connects
        // and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The socket is left open: the exit closes it with
            // no close() call, as most programs' exits do.
            let code = match TcpStream::connect(("127.0.0.1", port)) {
                Ok(socket) => {
                    std::mem::forget(socket);
                    0
                }
                Err(_) => 1,
            };
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork");
        children.push(pid);
    }
    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            failed += 1;
        }
    }
    say(format!(
        "{{\"cmd\":\"fork-many\",\"children\":{n},\"failed\":{failed}}}"
    ));
}

/// `fork-hold N PORT`: N children connect and wait until `release`;
/// returns them and the pipe end whose closing releases them.
fn fork_hold(n: u64, port: u16) -> (Vec<libc::pid_t>, i32) {
    let mut held = Vec::new();
    let (mut release, mut ready) = ([0; 2], [0; 2]);
    // SAFETY: pipe() fills the arrays; fork() with no other
    // thread running; the children only connect, write, read and
    // _exit.
    unsafe {
        assert_eq!(libc::pipe(release.as_mut_ptr()), 0, "pipe");
        assert_eq!(libc::pipe(ready.as_mut_ptr()), 0, "pipe");
        for _ in 0..n {
            let pid = libc::fork();
            if pid == 0 {
                libc::close(release[1]);
                let ok = TcpStream::connect(("127.0.0.1", port)).map(std::mem::forget);
                libc::write(ready[1], [u8::from(ok.is_ok())].as_ptr().cast(), 1);
                // Blocks until the parent closes its end.
                let mut byte = 0u8;
                libc::read(release[0], (&raw mut byte).cast(), 1);
                libc::_exit(0);
            }
            assert!(pid > 0, "fork");
            held.push(pid);
        }
        libc::close(release[0]);
        libc::close(ready[1]);
        let mut connected = 0;
        for _ in 0..n {
            let mut byte = 0u8;
            if libc::read(ready[0], (&raw mut byte).cast(), 1) == 1 {
                connected += u64::from(byte);
            }
        }
        libc::close(ready[0]);
        say(format!(
            "{{\"cmd\":\"fork-hold\",\"children\":{n},\"connected\":{connected}}}"
        ));
    }
    (held, release[1])
}
