//! The processes to trace: checking a PID the user gave, listing its threads,
//! and starting a command held at the door until the probes are in place.

use std::{ffi::CString, fs, io, path::Path};

use crate::error::UsageError;

/// What /proc says about a process we are asked to trace.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
}

/// Fields of /proc/PID/stat that decide whether a PID can be traced.
struct Stat {
    comm: String,
    state: char,
    flags: u64,
}

const PF_KTHREAD: u64 = 0x0020_0000;

fn read_stat(pid: u32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // comm is in parentheses and may itself contain spaces or ')'.
    let open = text
        .find('(')
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let close = text
        .rfind(')')
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After comm: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9).
    let state = rest.first().and_then(|s| s.chars().next()).unwrap_or('?');
    let flags = rest.get(6).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Stat { comm, state, flags })
}

/// Checks that `pid` is a live user process; the error says what it is instead.
pub fn inspect(pid: u32) -> Result<ProcessInfo, UsageError> {
    let stat = match read_stat(pid) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(UsageError(format!("no process with PID {pid}")));
        }
        Err(e) => return Err(UsageError(format!("cannot read /proc/{pid}/stat: {e}"))),
    };
    // A thread id is also visible under /proc; tracing works by process.
    if let Some(tgid) = tgid_of(pid)
        && tgid != pid
    {
        return Err(UsageError(format!(
            "{pid} is a thread of process {tgid}: pass --pid {tgid} (all its threads are traced)"
        )));
    }
    if stat.flags & PF_KTHREAD != 0 {
        return Err(UsageError(format!(
            "PID {pid} ({}) is a kernel thread: it makes no syscalls to trace",
            stat.comm
        )));
    }
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(UsageError(format!(
            "PID {pid} ({}) has exited (zombie): nothing left to trace",
            stat.comm
        )));
    }
    Ok(ProcessInfo {
        pid,
        comm: stat.comm,
    })
}

fn tgid_of(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Thread ids of a process right now.
pub fn threads_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The syscall a thread is blocked in and its six arguments, from
/// /proc/PID/task/TID/syscall (`42 0x3 0x7ffd... 0x10 ...`); `None` when
/// the thread is running or gone.
pub fn blocked_syscall(pid: u32, tid: u32) -> Option<(u64, [u64; 6])> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let mut words = text.split_whitespace();
    let nr = words.next()?.parse().ok()?;
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(words.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

/// The fds of a process's TCP connections that it accepted, as best /proc
/// tells: established sockets whose local port is one a socket listens on
/// in its network namespace (a client's local port is an ephemeral one).
pub fn accepted_sockets(pid: u32) -> Vec<i32> {
    // The fds first: most processes have few, and a process without
    // sockets (most of those node mode adopts) needs no look at the
    // namespace's whole TCP table.
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let sockets: Vec<(i32, String)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let link = fs::read_link(e.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some((e.file_name().to_str()?.parse().ok()?, inode.to_string()))
        })
        .collect();
    if sockets.is_empty() {
        return Vec::new();
    }
    let mut listening = std::collections::HashSet::new();
    let mut established = std::collections::HashMap::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let Some(port) = local.rsplit(':').next() else {
                continue;
            };
            match *state {
                "0A" => {
                    listening.insert(port.to_string());
                }
                "01" => {
                    established.insert(inode.to_string(), port.to_string());
                }
                _ => {}
            }
        }
    }
    sockets
        .into_iter()
        .filter(|(_, inode)| {
            established
                .get(inode)
                .is_some_and(|p| listening.contains(p))
        })
        .map(|(fd, _)| fd)
        .collect()
}

/// Reads a NUL-terminated string (at most `max` bytes) from a process.
pub fn read_c_string(pid: u32, addr: u64, max: usize) -> Option<String> {
    let bytes = read_memory(pid, addr, max)?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// Reads `len` bytes at `addr` of a process's memory (we are root: the
/// kernel allows it for a process we could ptrace).
pub fn read_memory(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let file = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    let n = file.read_at(&mut buf, addr).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// What a process's fd is, for people: a path, `pipe:[N]`, ...
pub fn fd_path(pid: u32, fd: i32) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// Whether a process's fd is a socket (/proc/PID/fd/FD -> "socket:[N]").
pub fn is_socket(pid: u32, fd: i32) -> bool {
    socket_inode(pid, fd).is_some()
}

fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The remote address of a process's TCP socket, from the kernel's socket
/// tables (/proc/PID/net/tcp and tcp6: the process's own network namespace).
pub fn socket_peer(pid: u32, fd: i32) -> Option<std::net::SocketAddr> {
    let inode = socket_inode(pid, fd)?;
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        text.lines()
            .skip(1)
            .find_map(|line| parse_tcp_line(line, inode))
    })
}

/// One line of /proc/net/tcp{,6}: `sl local rem st ... uid timeout inode`;
/// the remote address of the socket with `inode`, if this is its line.
fn parse_tcp_line(line: &str, inode: u64) -> Option<std::net::SocketAddr> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(9)?.parse::<u64>().ok()? != inode {
        return None;
    }
    let (ip, port) = f.get(2)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The address is in host byte order, 32 bits at a time.
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
        }
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

pub fn is_alive(pid: u32) -> bool {
    matches!(read_stat(pid), Ok(s) if s.state != 'Z' && s.state != 'X')
}

/// A command started by the tracer, stopped before `execvp` until
/// [`LaunchedCommand::release`] so that its first syscall is traced.
///
/// The child stops itself (SIGSTOP) rather than waiting in a syscall: a
/// wait in `read` on a pipe was traced as the command's own slow read (the
/// time tracer took to attach, 88% of a short command's busy time, named
/// after tracer's own code), and symbolizing that tracer frame held up the
/// probing of the libraries the command went on to load (fresh31: curl's
/// handshake came before its libssl was probed).
pub struct LaunchedCommand {
    pub pid: u32,
    released: bool,
}

impl LaunchedCommand {
    /// Forks; the child stops itself, then execs `argv` when continued.
    /// Call before any other thread exists (before the async runtime
    /// starts): between fork and exec the child only makes
    /// async-signal-safe calls.
    pub fn spawn(argv: &[String]) -> Result<Self, UsageError> {
        let c_args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| UsageError("the command contains a NUL byte".into()))?;
        let Some(program) = c_args.first() else {
            return Err(UsageError("no command given after `--`".into()));
        };
        if !argv[0].contains('/') && which(&argv[0]).is_none() {
            return Err(UsageError(format!("command not found: {}", argv[0])));
        }
        let mut ptrs: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());

        // SAFETY: the child only calls raise, execvp and _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(UsageError(format!(
                "fork failed: {}",
                io::Error::last_os_error()
            )));
        }
        if pid == 0 {
            unsafe {
                // Continued by `release` (SIGCONT), or killed by `drop`.
                libc::raise(libc::SIGSTOP);
                libc::execvp(program.as_ptr(), ptrs.as_ptr());
                libc::_exit(127);
            }
        }
        // Stopped before it is traced: what it does from here on is its
        // own program's.
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
        if r != pid || !libc::WIFSTOPPED(status) {
            // Never to run untraced.
            // SAFETY: kill(2) and waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(UsageError(format!(
                "the command's process did not wait to be traced (wait status {status:#x})"
            )));
        }
        Ok(Self {
            pid: pid as u32,
            released: false,
        })
    }

    /// Lets the command run (it execs right away).
    pub fn release(&mut self) -> io::Result<()> {
        // SAFETY: kill(2) on our own stopped child.
        if unsafe { libc::kill(self.pid as i32, libc::SIGCONT) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.released = true;
        Ok(())
    }

    /// Reaps the child if it has exited; returns its wait status.
    pub fn try_wait(&self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        (r == self.pid as i32).then_some(status)
    }
}

impl Drop for LaunchedCommand {
    fn drop(&mut self) {
        // Never released (attach failed): it never runs its command.
        if !self.released {
            // SAFETY: kill(2) and waitpid on our own stopped child.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid as i32, &mut status, 0);
            }
        }
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Node mode's scope: every process, or those in one cgroup v2 and below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeScope {
    /// The cgroup's id (its directory's inode number); 0 for every process.
    pub cgroup_id: u64,
    /// Its depth below the cgroup v2 root.
    pub cgroup_level: u32,
    /// The network namespace's inode number; 0 for any.
    pub netns: u32,
}

/// The node-mode scope of `--cgroup PATH`: the id and depth of a cgroup v2
/// directory, found from where cgroup2 is mounted (/proc/self/mountinfo).
pub fn cgroup_scope(path: &Path) -> Result<NodeScope, UsageError> {
    use std::os::unix::fs::MetadataExt as _;
    let bad = |why: String| UsageError(format!("--cgroup {}: {why}", path.display()));
    let real = fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let meta = fs::metadata(&real).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| bad(e.to_string()))?;
    let mounts = cgroup2_mounts(&mountinfo);
    let Some(below) = mounts.iter().find_map(|m| real.strip_prefix(m).ok()) else {
        let hint = match mounts.first() {
            Some(m) => format!("cgroup v2 is mounted at {}", m.display()),
            None => "no cgroup v2 hierarchy is mounted".into(),
        };
        return Err(bad(format!("not a cgroup v2 directory ({hint})")));
    };
    Ok(NodeScope {
        cgroup_id: meta.ino(),
        cgroup_level: below.components().count() as u32,
        netns: 0,
    })
}

/// The node-mode scope of `--netns PATH`: the inode number of a network
/// namespace file (/run/netns/NAME, /proc/PID/ns/net), checked to be one.
pub fn netns_scope(path: &Path) -> Result<u32, UsageError> {
    use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
    let bad = |why: String| {
        UsageError(format!(
            "--netns {}: {why} (give /run/netns/NAME or /proc/PID/ns/net)",
            path.display()
        ))
    };
    let file = fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    // NS_GET_NSTYPE (_IO(0xb7, 0x3)): the kind of namespace a file is.
    const NS_GET_NSTYPE: libc::Ioctl = 0xb703;
    // SAFETY: an ioctl without an argument on a descriptor we own.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(bad("not a network namespace".into()));
    }
    let inode = file.metadata().map_err(|e| bad(e.to_string()))?.ino();
    u32::try_from(inode).map_err(|_| bad(format!("inode {inode} out of range")))
}

/// Where the (first) cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> Option<std::path::PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mounts(&mountinfo).into_iter().next()
}

/// Mount points of cgroup2 file systems, from mountinfo's text.
fn cgroup2_mounts(mountinfo: &str) -> Vec<std::path::PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
        })
        .collect()
}

/// A wait status as a person reads it: `status 1`, `killed by signal 9`.
pub fn describe_wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn finds_cgroup2_mounts_in_mountinfo() {
        let info = "30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                    35 30 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                    36 30 0:32 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mounts(info),
            vec![std::path::PathBuf::from("/sys/fs/cgroup/unified")]
        );
    }
    use super::*;

    #[test]
    fn our_own_process_is_traceable() {
        let me = std::process::id();
        let info = inspect(me).expect("self");
        assert_eq!(info.pid, me);
        assert!(threads_of(me).contains(&me));
    }

    #[test]
    fn finds_the_peer_of_a_tcp_socket() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let me = std::process::id();
        assert!(is_socket(me, client.as_raw_fd()));
        assert_eq!(socket_peer(me, client.as_raw_fd()), Some(addr));
        assert!(!is_socket(me, 0) || socket_peer(me, 0).is_none());
        let line = "   0: 0100007F:1F90 0100007F:01BB 01 00000000:00000000 00:00000000 \
                    00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(
            parse_tcp_line(line, 4242),
            Some("127.0.0.1:443".parse().unwrap())
        );
        assert_eq!(parse_tcp_line(line, 1), None);
    }

    #[test]
    fn reads_a_process_memory() {
        let secret = *b"tracer reads this";
        let got = read_memory(std::process::id(), secret.as_ptr() as u64, secret.len());
        assert_eq!(got.as_deref(), Some(&secret[..]));
    }

    #[test]
    fn bad_pids_say_what_they_are() {
        let e = inspect(i32::MAX as u32).unwrap_err();
        assert!(e.0.contains("no process"), "{e}");
        // PID 2 is kthreadd on Linux.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            let e = inspect(2).unwrap_err();
            assert!(e.0.contains("kernel thread"), "{e}");
        }
    }

    #[test]
    fn an_accepted_connection_is_told_from_the_client_end() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let fds = accepted_sockets(std::process::id());
        assert!(fds.contains(&accepted.as_raw_fd()), "{fds:?}");
        assert!(!fds.contains(&client.as_raw_fd()), "{fds:?}");
        assert!(!fds.contains(&listener.as_raw_fd()), "{fds:?}");
    }
}
