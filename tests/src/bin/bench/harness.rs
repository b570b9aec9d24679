//! What every section uses: the measured loop, the tools attached to it,
//! and the child processes a run starts.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, channel},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Env, Result};

/// Lines of a child's stream, read on a thread.
pub(crate) fn lines(read: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(read).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub(crate) fn wait_line(rx: &Receiver<String>, needle: &str, what: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return Ok(l),
            Ok(_) => {}
            Err(_) => return Err(format!("{what}: no line with {needle:?}")),
        }
    }
}

pub(crate) fn interrupt(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A tool attached to a workload: interrupted (detached) when dropped,
/// on every path out, errors included; a tool left attached would skew
/// every figure after it.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        interrupt(&mut self.0);
    }
}

/// The workload process.
pub(crate) struct Loop {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) out: Receiver<String>,
    pub(crate) pid: u32,
}

impl Loop {
    pub(crate) fn start(env: &Env, mode: &str) -> Result<Self> {
        let mut child = Command::new(&env.bench_loop)
            .arg(mode)
            .arg(&env.cert)
            .arg(&env.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("bench-loop: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let out = lines(child.stdout.take().expect("piped"));
        let ready: Value = serde_json::from_str(&wait_line(&out, "ready", "bench-loop")?)
            .map_err(|e| e.to_string())?;
        let pid = ready["ready"].as_u64().ok_or("bench-loop: no pid")? as u32;
        Ok(Self {
            child,
            stdin,
            out,
            pid,
        })
    }

    pub(crate) fn ask(&mut self, cmd: &str) -> Result<Value> {
        writeln!(self.stdin, "{cmd}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let line = self
            .out
            .recv_timeout(Duration::from_secs(300))
            .map_err(|_| format!("bench-loop did not answer `{cmd}`"))?;
        serde_json::from_str(&line).map_err(|e| format!("{line}: {e}"))
    }

    pub(crate) fn run(&mut self, calls: u64) -> Result<f64> {
        Ok(self.run_answer(calls)?.0)
    }

    /// The median ns of `calls` calls paced at `rate` a second, each timed
    /// alone, the loop asleep between them.
    pub(crate) fn paced(&mut self, rate: u64, calls: u64) -> Result<f64> {
        let answer = self.ask(&format!("paced {rate} {calls}"))?;
        answer["median_ns"]
            .as_f64()
            .ok_or_else(|| format!("no median_ns: {answer}"))
    }

    /// `run`, with the loop's whole answer (its `ssl_calls`, say).
    pub(crate) fn run_answer(&mut self, calls: u64) -> Result<(f64, Value)> {
        let answer = self.ask(&format!("run {calls}"))?;
        let ns = answer["ns_per_call"]
            .as_f64()
            .ok_or_else(|| "no ns_per_call".to_string())?;
        Ok((ns, answer))
    }

    /// The library file the workload's calls land in (for uprobes).
    pub(crate) fn library(&self, name: &str) -> Result<String> {
        Self::library_of(self.pid, name)
    }

    pub(crate) fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Tool {
    Floor,
    Bpftrace,
    BpftraceUstack,
    TracerNoSites,
    Tracer,
}

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Floor => "floor (empty programs)",
            Tool::Bpftrace => "bpftrace histogram",
            Tool::BpftraceUstack => "bpftrace histogram + ustack",
            Tool::TracerNoSites => "tracer --no-call-sites",
            Tool::Tracer => "tracer",
        }
    }
}

/// Where a workload's calls are probed: syscalls, or a library function.
pub(crate) enum Point {
    Syscall,
    Function(&'static str, &'static str),
}

pub(crate) struct Workload {
    pub(crate) name: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) calls: u64,
    pub(crate) point: Point,
}

/// A tool attached to the workload.
pub(crate) struct Attached {
    pub(crate) _tool: Guard,
}

impl Attached {
    pub(crate) fn start(env: &Env, tool: Tool, point: &Point, lp: &Loop) -> Result<Self> {
        let pid = lp.pid;
        let function = match point {
            Point::Function(lib, sym) => Some((lp.library(lib)?, *sym)),
            Point::Syscall => None,
        };
        let (mut cmd, ready, on_stdout) = match tool {
            Tool::Floor => {
                let mut c = Command::new(&env.tracer);
                c.arg("floor");
                match &function {
                    Some((lib, sym)) => c.arg("--uprobe").arg(format!("{lib}:{sym}")),
                    None => c.arg("--syscalls"),
                };
                (c, "floor attached", false)
            }
            Tool::Bpftrace | Tool::BpftraceUstack => {
                let key = if tool == Tool::BpftraceUstack {
                    "[ustack]"
                } else {
                    ""
                };
                let script = match &function {
                    Some((lib, sym)) => format!(
                        "uprobe:{lib}:{sym} /pid == {pid}/ {{ @s[tid] = nsecs; }} \
                         uretprobe:{lib}:{sym} /@s[tid]/ {{ @h{key} = hist(nsecs - @s[tid]); \
                         delete(@s[tid]); }}"
                    ),
                    None => format!(
                        "tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @s[tid] = nsecs; }} \
                         tracepoint:raw_syscalls:sys_exit /@s[tid]/ {{ @h[args->id] = \
                         hist(nsecs - @s[tid]); delete(@s[tid]); }}"
                    ),
                };
                let mut c = Command::new("bpftrace");
                c.arg("-e").arg(script);
                (c, "Attaching", true)
            }
            Tool::TracerNoSites | Tool::Tracer => {
                let mut c = Command::new(&env.tracer);
                c.args(["report", "--pid", &pid.to_string(), "--json", "/dev/null"]);
                if tool == Tool::TracerNoSites {
                    c.arg("--no-call-sites");
                }
                c.stdout(Stdio::null());
                (c, "tracing PID", false)
            }
        };
        if on_stdout {
            cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        } else {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", tool.name()))?;
        let rx = if on_stdout {
            lines(child.stdout.take().expect("piped"))
        } else {
            lines(child.stderr.take().expect("piped"))
        };
        let child = Guard(child);
        wait_line(&rx, ready, tool.name())?;
        // bpftrace says "Attaching" before it attaches: give it time.
        if on_stdout {
            thread::sleep(Duration::from_secs(1));
        }
        // Keep draining its output so that it never blocks on a full pipe.
        thread::spawn(move || while rx.recv().is_ok() {});
        Ok(Self { _tool: child })
    }

    pub(crate) fn stop(self) {
        drop(self);
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `added` as a multiple of an anchor's added cost, when the anchor's is
/// above zero: at or below it (the VM's noise on a dear call) there is no
/// ratio, and a negative one would read as tracer costing less than nothing.
pub(crate) fn times(added: f64, anchor: f64) -> Option<f64> {
    (anchor > 0.0).then(|| added / anchor)
}

/// "tracer adds 2.38x the floor's cost", or both figures when there is no
/// ratio (`times`).
pub(crate) fn versus(added: f64, anchor: f64, what: &str) -> String {
    match times(added, anchor) {
        Some(r) => format!("{r:.2}x {what}"),
        None => format!("{added:+.0} ns against {what} at {anchor:+.0} ns, no ratio"),
    }
}

/// The least and the greatest of `v` (a traced figure's range across its
/// rounds, the spread of the untraced medians).
pub(crate) fn extremes(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Calls a second of the paced rounds, and calls per round.
pub(crate) const PACED_RATE: u64 = 2_000;
pub(crate) const PACED_CALLS: u64 = 1_000;

/// One figure per round, untraced and traced.
#[derive(Default)]
pub(crate) struct Rounds {
    pub(crate) base: Vec<f64>,
    pub(crate) traced: Vec<f64>,
}

/// The rounds of one workload under one tool: flat out (ns per call over
/// a round) and paced (the median of a round's calls, each timed alone).
#[derive(Default)]
pub(crate) struct Measured {
    pub(crate) flat: Rounds,
    pub(crate) paced: Rounds,
}

/// The rounds of `w`: untraced, then under `tool`, then untraced again,
/// all in one process, so that the difference is the tool's and not the
/// machine's drift between measurements. Flat-out and paced rounds take
/// turns, under one attach.
pub(crate) fn measure(env: &Env, w: &Workload, tool: Tool) -> Result<Measured> {
    let mut lp = Loop::start(env, w.mode)?;
    let mut m = Measured::default();
    let round = |lp: &mut Loop, flat: &mut Vec<f64>, paced: &mut Vec<f64>| -> Result<()> {
        flat.push(lp.run(w.calls)?);
        paced.push(lp.paced(PACED_RATE, PACED_CALLS)?);
        Ok(())
    };
    for _ in 0..env.rounds.div_ceil(2) {
        round(&mut lp, &mut m.flat.base, &mut m.paced.base)?;
    }
    let attached = Attached::start(env, tool, &w.point, &lp)?;
    for _ in 0..env.rounds {
        round(&mut lp, &mut m.flat.traced, &mut m.paced.traced)?;
    }
    attached.stop();
    for _ in 0..env.rounds.div_ceil(2) {
        round(&mut lp, &mut m.flat.base, &mut m.paced.base)?;
    }
    lp.quit();
    Ok(m)
}

/// Starts `tracer report --json JSON` on `pid` and waits until it traces;
/// returns the tracer (stderr read on a thread).
pub(crate) fn attach_report(env: &Env, pid: u32, json: &Path) -> Result<Child> {
    let mut tracer = Command::new(&env.tracer)
        .args(["report", "--pid", &pid.to_string(), "--json"])
        .arg(json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let rx = lines(tracer.stderr.take().expect("piped"));
    wait_line(&rx, "tracing PID", "tracer")?;
    Ok(tracer)
}
