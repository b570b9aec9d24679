//! Attribute: the call site behind each event. The kernel sends a stack
//! (registers, a copy of the user stack, the Python frames) tagged with the
//! start of the call it belongs to; here it becomes a list of frames — the
//! Python frames where the interpreter runs, then the native frames below
//! them (as `py-spy --native` shows) — interned once as a call site.

use crate::unwind::HashMap;

use serde::Serialize;
use tracer_common::{
    FramesEvent, NATIVE_FRAMES, PY_OK, PyFrameRef, StackEvent, UNWOUND_NO_TABLES_YET,
    UNWOUND_UNKNOWN_CODE,
};

use crate::{
    python::{CodeReader, Interpreter},
    unwind::NativeUnwinder,
};

/// One frame of a call site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    pub python: bool,
    /// Qualified Python name, or the native symbol (demangled); None for a
    /// stripped native frame.
    pub function: Option<String>,
    /// Python file, or the native source file where debug info has it.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The native file the frame is in (None for Python frames).
    pub module: Option<String>,
    /// Offset in `module` (for frames without a symbol).
    pub offset: Option<u64>,
}

impl Frame {
    /// `app.py:88 overview`, `getaddrinfo (libc.so.6)`, `resolve+0x1139`.
    pub fn label(&self) -> String {
        let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        if self.python {
            let Some(function) = &self.function else {
                return "<python frame gone>".into();
            };
            let file = self.file.as_deref().map(base).unwrap_or_else(|| "?".into());
            let line = self.line.map(|l| format!(":{l}")).unwrap_or_default();
            return format!("{file}{line} {function}");
        }
        if self.is_callers_unknown() {
            return CALLERS_UNKNOWN.into();
        }
        let module = self
            .module
            .as_deref()
            .map(base)
            .unwrap_or_else(|| "?".into());
        match (&self.function, &self.file, self.line) {
            (Some(f), Some(file), Some(line)) => format!("{f} ({file}:{line})"),
            (Some(f), _, _) => format!("{f} ({module})"),
            _ => format!("{module}+{:#x}", self.offset.unwrap_or(0)),
        }
    }
}

/// Stands for the native callers of a call the kernel sent only the leaf
/// of (`UNWOUND_NO_TABLES_YET`): a busy process's calls while its tables
/// are made, once it has sent its share of stack copies.
const CALLERS_UNKNOWN: &str = "[callers not unwound: unwind tables loading]";

impl Frame {
    fn callers_unknown() -> Self {
        Self {
            python: false,
            function: Some(CALLERS_UNKNOWN.into()),
            file: None,
            line: None,
            module: None,
            offset: None,
        }
    }

    fn is_callers_unknown(&self) -> bool {
        !self.python && self.module.is_none() && self.function.as_deref() == Some(CALLERS_UNKNOWN)
    }
}

/// A call site: frames from the outermost caller to the probed call.
#[derive(Debug, Clone, Serialize)]
pub struct CallSite {
    pub id: u32,
    pub frames: Vec<Frame>,
}

impl Frame {
    /// Code of the program itself rather than of a library: a Python file
    /// outside the interpreter's lib/pythonX.Y (stdlib and site-packages),
    /// or native code in the main executable rather than a shared object.
    fn is_application(&self) -> bool {
        if self.python {
            return self
                .file
                .as_deref()
                .is_some_and(|f| !f.contains("/lib/python") && !f.starts_with('<'));
        }
        self.module
            .as_deref()
            .is_some_and(|m| !m.rsplit('/').next().unwrap_or(m).contains(".so"))
            && self
                .function
                .as_deref()
                .is_none_or(|f| f != "_start" && f != "main" && !is_runtime_symbol(f))
    }
}

/// A function of a language runtime linked into the executable (Rust's
/// std, a static libc, Go's runtime and standard library): not the
/// program's own code.
fn is_runtime_symbol(function: &str) -> bool {
    let f = function.trim_start_matches(['<', '&']);
    [
        "std::", "core::", "alloc::", "__rust", "__libc", "__GI_", "_IO_",
    ]
    .iter()
    .any(|p| f.starts_with(p))
        || is_go_std_symbol(f)
}

/// A Go function of the standard library: its package path (up to the
/// first dot after the last slash: `net/http.(*Transport).dialConn`) has
/// no dot in its first element, where a module's has its domain
/// (`github.com/...`), and is not `main`. (A C compiler's clones,
/// `foo.part.0`, read as such too: they are not in a program's own code
/// often enough to matter.)
fn is_go_std_symbol(function: &str) -> bool {
    let head = function.split('(').next().unwrap_or(function);
    let last_slash = head.rfind('/').map_or(0, |i| i + 1);
    let Some(dot) = head[last_slash..].find('.') else {
        return false;
    };
    let package = &head[..last_slash + dot];
    let first = package.split('/').next().unwrap_or(package);
    !package.is_empty() && !first.contains('.') && package != "main" && !package.contains("::")
}

impl CallSite {
    /// The whole chain, outermost first.
    pub fn label(&self) -> String {
        let labels: Vec<String> = self.frames.iter().map(Frame::label).collect();
        labels.join(" → ")
    }

    /// The innermost frame of the program's own code, and the call it led
    /// to: `github.py:17 get_repositories_data → … → SSL_read_ex`.
    pub fn summary(&self) -> String {
        let Some(leaf) = self.frames.last() else {
            return "?".into();
        };
        let app = self
            .frames
            .iter()
            .rposition(Frame::is_application)
            .or_else(|| self.frames.iter().rposition(|f| f.python));
        match app {
            Some(i) if i + 1 == self.frames.len() => leaf.label(),
            Some(i) if i + 2 == self.frames.len() => {
                format!("{} → {}", self.frames[i].label(), leaf.label())
            }
            Some(i) => format!("{} → … → {}", self.frames[i].label(), leaf.label()),
            None if self.frames.iter().any(Frame::is_callers_unknown) => {
                format!("{CALLERS_UNKNOWN} → {}", leaf.label())
            }
            None => leaf.label(),
        }
    }
}

/// Counts of what could not be attributed, for the report.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AttributionCounts {
    pub stacks: u64,
    pub python_stacks: u64,
    /// Python frames whose code object did not check out when read (freed
    /// or changed since the kernel saw it): shown as `?`, never wrong.
    pub stale_python_frames: u64,
    /// Python processes whose thread state was not found for a call.
    pub python_thread_not_found: u64,
    /// Stacks unwound in the kernel, by its tables.
    pub unwound_in_kernel: u64,
    /// Of those, the ones whose unwind stopped at code no table covers
    /// (JIT code, or a library mapped since the tables were written).
    pub stopped_at_unknown_code: u64,
    /// Stacks copied for user space to unwind, by why the kernel did not:
    /// its tables were full, or the process's were not written yet.
    pub unwound_here_tables_full: u64,
    pub unwound_here_no_tables_yet: u64,
    /// Stacks the kernel sent the leaf of (and the Python frames): the
    /// process's tables were not written yet, and it had sent its share
    /// of copies.
    pub leaf_only_no_tables_yet: u64,
}

#[derive(Default)]
pub struct Attributor {
    native: NativeUnwinder,
    code: CodeReader,
    interpreters: HashMap<u32, Interpreter>,
    sites: Vec<CallSite>,
    by_frames: HashMap<Vec<Frame>, u32>,
    /// Call sites waiting for their event: (tid, call start).
    pending: HashMap<(u32, u64), u32>,
    /// The last sampled SSL call site of each thread, per connection and
    /// kind of call (`TlsFn::class`): reads and writes, or reads of two
    /// connections, come from different lines.
    last_tls: HashMap<(u32, u64, usize), u32>,
    pub counts: AttributionCounts,
    /// Processes the kernel's unwind tables had no room for.
    tables_full: std::collections::HashSet<u32>,
    /// Each site's label, by id.
    labels: Vec<String>,
    /// Call sites by the kernel's words for them (see `on_frames`).
    by_raw: HashMap<Box<[u64]>, u32>,
    /// The key being looked up, kept to look up without allocating.
    raw_key: Vec<u64>,
}

/// Raw stacks remembered before the memo starts over (a few MiB).
const MAX_RAW_STACKS: usize = 16384;

/// A stack copy's Python frames, as the kernel read them.
pub fn stack_python(ev: &StackEvent) -> &[PyFrameRef] {
    &ev.py[..(ev.py_depth as usize).min(ev.py.len())]
}

/// A kernel-unwound stack's native frames, and its Python frames.
pub fn frames_words(ev: &FramesEvent) -> (&[u64], Vec<PyFrameRef>) {
    let native = (ev.native_depth as usize).min(NATIVE_FRAMES);
    let python = ev.words[native..]
        .chunks_exact(2)
        .take(ev.py_depth as usize)
        .map(|w| PyFrameRef {
            code: w[0],
            instr: w[1],
        })
        .collect();
    (&ev.words[..native], python)
}

impl std::fmt::Debug for Attributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attributor")
            .field("sites", &self.sites.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Attributor {
    pub fn set_interpreter(&mut self, pid: u32, interp: Interpreter) {
        self.interpreters.insert(pid, interp);
    }

    pub fn remember_maps(&mut self, pid: u32, maps: Vec<crate::mapped::Mapping>) {
        self.native.remember_maps(pid, maps);
    }

    /// Reads what naming the first stack of `pid` needs, before its calls
    /// are traced (see `NativeUnwinder::warm_up`).
    pub fn warm_up(&mut self, pid: u32) {
        self.native.warm_up(pid);
    }

    /// A call site's whole chain (`CallSite::label`), made once per site:
    /// every lookup record carries it.
    pub fn site_label(&self, id: u32) -> String {
        self.labels[id as usize].clone()
    }

    pub fn site(&self, id: u32) -> &CallSite {
        &self.sites[id as usize]
    }

    /// Reads the code objects of a stack's Python frames into the cache.
    pub fn prefetch_python(&mut self, tgid: u32, py_status: u32, py: &[PyFrameRef]) {
        let Some(interp) = self.interpreters.get(&tgid).copied() else {
            return;
        };
        if py_status != PY_OK {
            return;
        }
        for f in py.iter().filter(|f| f.code != 0) {
            let _ = self.code.code(tgid, &interp, f.code);
        }
    }

    /// A stack copy, unwound here: the kernel had no tables for its
    /// process.
    pub fn on_stack(&mut self, ev: &StackEvent) {
        if self.tables_full.contains(&ev.tgid) {
            self.counts.unwound_here_tables_full += 1;
        } else {
            self.counts.unwound_here_no_tables_yet += 1;
        }
        let python = self.python_frames(ev.tgid, ev.py_status, stack_python(ev));
        let stack_len = (ev.stack_len as usize).min(ev.stack.len());
        let addrs = self
            .native
            .unwind(ev.tgid, ev.ip, ev.sp, ev.bp, &ev.stack[..stack_len]);
        let id = self.intern(ev.tgid, python, &addrs, false);
        self.wait_for_call(ev.tid, ev.key_ns, id);
    }

    /// A stack the kernel unwound.
    pub fn on_frames(&mut self, ev: &FramesEvent) {
        let leaf_only = ev.native_end == UNWOUND_NO_TABLES_YET;
        if leaf_only {
            self.counts.leaf_only_no_tables_yet += 1;
        } else {
            self.counts.unwound_in_kernel += 1;
        }
        if ev.native_end == UNWOUND_UNKNOWN_CODE {
            self.counts.stopped_at_unknown_code += 1;
            log::debug!(
                "PID {}: the kernel's unwind stopped at code it does not know: {:x?}",
                ev.tgid,
                &ev.words[..(ev.native_depth as usize).min(NATIVE_FRAMES)]
            );
        }
        // The same frames again are the same call site: a lookup, not a
        // symbolization (code objects are taken to stay where they are,
        // as `CodeReader`'s cache does).
        let words = ev.native_depth as usize + 2 * ev.py_depth as usize;
        // Key: process and Python status, native depth, then the words.
        self.raw_key.clear();
        self.raw_key.extend([
            u64::from(ev.tgid) << 32 | u64::from(ev.py_status),
            u64::from(leaf_only) << 32 | u64::from(ev.native_depth),
        ]);
        self.raw_key.extend_from_slice(&ev.words[..words]);
        if let Some(&id) = self.by_raw.get(self.raw_key.as_slice()) {
            self.counts.stacks += 1;
            if self.interpreters.contains_key(&ev.tgid) {
                if ev.py_status == PY_OK {
                    self.counts.python_stacks += 1;
                } else {
                    self.counts.python_thread_not_found += 1;
                }
            }
            self.wait_for_call(ev.tid, ev.key_ns, id);
            return;
        }
        let (native, python) = frames_words(ev);
        let python = self.python_frames(ev.tgid, ev.py_status, &python);
        // A return address is after its call: its line is the call's,
        // one byte back.
        let addrs: Vec<u64> = native
            .iter()
            .enumerate()
            .map(|(i, &a)| if i == 0 { a } else { a.wrapping_sub(1) })
            .collect();
        self.native.learn_addresses(ev.tgid, &addrs);
        let id = self.intern(ev.tgid, python, &addrs, leaf_only);
        if self.by_raw.len() >= MAX_RAW_STACKS {
            self.by_raw.clear();
        }
        self.by_raw.insert(self.raw_key.as_slice().into(), id);
        self.wait_for_call(ev.tid, ev.key_ns, id);
    }

    /// Processes whose stacks the kernel cannot unwind: its tables were
    /// full when theirs were to be written.
    pub fn note_tables_full(&mut self, pid: u32) {
        self.tables_full.insert(pid);
    }

    /// The call site of Python and native frames, interned. `leaf_only`:
    /// `addrs` is the leaf alone, its callers not unwound.
    fn intern(&mut self, pid: u32, python: Vec<Frame>, addrs: &[u64], leaf_only: bool) -> u32 {
        self.counts.stacks += 1;
        let mut frames = python;
        let native = self.native_frames(pid, !frames.is_empty(), addrs);
        if leaf_only {
            frames.push(Frame::callers_unknown());
        }
        frames.extend(native);
        match self.by_frames.get(&frames) {
            Some(&id) => id,
            None => {
                let id = self.sites.len() as u32;
                let site = CallSite {
                    id,
                    frames: frames.clone(),
                };
                self.labels.push(site.label());
                self.sites.push(site);
                self.by_frames.insert(frames, id);
                id
            }
        }
    }

    /// Keeps a call site for the event of the call it was taken at.
    fn wait_for_call(&mut self, tid: u32, key_ns: u64, id: u32) {
        // Unclaimed stacks (their event lost) must not pile up.
        if self.pending.len() > 65536 {
            self.pending.clear();
        }
        self.pending.insert((tid, key_ns), id);
    }

    /// The call site of the call that started at `start_ns` on `tid`.
    pub fn take(&mut self, tid: u32, start_ns: u64) -> Option<u32> {
        self.pending.remove(&(tid, start_ns))
    }

    /// The call site of a call still in progress (kept for its end).
    pub fn peek(&self, tid: u32, start_ns: u64) -> Option<u32> {
        self.pending.get(&(tid, start_ns)).copied()
    }

    /// For SSL calls, whose stacks are sampled: this call's own, else the
    /// thread's last one for the same kind of call.
    pub fn take_tls(&mut self, tid: u32, start_ns: u64, ssl: u64, class: usize) -> Option<u32> {
        match self.take(tid, start_ns) {
            Some(id) => {
                self.last_tls.insert((tid, ssl, class), id);
                Some(id)
            }
            None => self.last_tls.get(&(tid, ssl, class)).copied(),
        }
    }

    /// Forgets a thread that exited (its id may come back for another).
    pub fn forget_thread(&mut self, tid: u32) {
        self.last_tls.retain(|&(t, _, _), _| t != tid);
    }

    /// A traced process forked `child`: until it execs, its code is its
    /// parent's, and so is whether the kernel can unwind it (the kernel
    /// gave it the parent's tables).
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        self.native.inherit(parent, child);
        if self.tables_full.contains(&parent) {
            self.tables_full.insert(child);
        }
    }

    /// A process ran execve: what was known of its code is not its code,
    /// nor its interpreter (a code object's address in the old program
    /// names nothing in the new one). The new program's is set when it is
    /// probed.
    pub fn on_exec(&mut self, pid: u32) {
        self.native.forget(pid);
        self.tables_full.remove(&pid);
        self.by_raw.retain(|key, _| key[0] >> 32 != u64::from(pid));
        self.code.forget(pid);
        self.interpreters.remove(&pid);
    }

    /// A process exited: the same as an exec, with nothing to come.
    pub fn forget_process(&mut self, pid: u32) {
        self.on_exec(pid);
    }

    /// The Python frames of a stack, outermost first. Read first: their
    /// code objects are read from the live process, which may exit soon
    /// after its last call.
    fn python_frames(&mut self, pid: u32, py_status: u32, py: &[PyFrameRef]) -> Vec<Frame> {
        let interp = self.interpreters.get(&pid).copied();
        let mut python_frames = Vec::new();
        if let Some(interp) = interp {
            if py_status == PY_OK {
                self.counts.python_stacks += 1;
                for f in py {
                    if f.code == 0 {
                        continue; // a C-stack shim frame (3.12+)
                    }
                    python_frames.push(match self.code.code(pid, &interp, f.code) {
                        Some(code) => Frame {
                            python: true,
                            line: code.line(interp.layout, f.instr),
                            function: Some(code.qualname),
                            file: Some(code.filename),
                            module: None,
                            offset: None,
                        },
                        None => Frame {
                            python: true,
                            function: None,
                            file: None,
                            line: None,
                            module: None,
                            offset: None,
                        },
                    });
                }
                self.counts.stale_python_frames = self.code.stale;
            } else {
                self.counts.python_thread_not_found += 1;
            }
        }
        // Kernel order is innermost first; show the outermost caller first.
        python_frames.reverse();
        python_frames
    }

    /// The native frames below the Python ones (`addrs` leaf first), shown
    /// outermost first: from the call up to the first frame inside the
    /// interpreter itself when there are Python frames, else all.
    fn native_frames(&mut self, pid: u32, below_python: bool, addrs: &[u64]) -> Vec<Frame> {
        let interp_module = self.interpreters.get(&pid).map(|i| i.module);
        let mut native = Vec::new();
        for &addr in addrs {
            let in_interpreter = self
                .native
                .module_of(pid, addr)
                .is_some_and(|(_, _, file)| Some(file) == interp_module);
            if below_python && in_interpreter {
                break;
            }
            let frame = self.native.symbolize(pid, addr);
            native.push(Frame {
                python: false,
                function: frame.function,
                file: frame.source.as_ref().map(|s| s.0.clone()),
                line: frame.source.map(|s| s.1),
                module: Some(frame.module),
                offset: Some(frame.file_offset),
            });
        }
        native.reverse();
        native
    }
}

#[cfg(test)]
mod go_tests {
    use super::is_go_std_symbol;

    #[test]
    fn go_standard_library_functions_are_told_from_the_programs() {
        for std in [
            "net.(*Resolver).lookupIPAddr",
            "net/http.(*Transport).dialConn",
            "crypto/tls.(*Conn).Read",
            "runtime.goexit",
            "internal/poll.runtime_pollWait",
        ] {
            assert!(is_go_std_symbol(std), "{std}");
        }
        for own in [
            "main.lookup",
            "main.countingConn.Read",
            "github.com/acme/api/client.(*Client).Get",
            "getaddrinfo",
            "std::rt::lang_start",
        ] {
            assert!(!is_go_std_symbol(own), "{own}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(function: &str, module: &str) -> Frame {
        Frame {
            python: false,
            function: Some(function.to_string()),
            file: None,
            line: None,
            module: Some(module.to_string()),
            offset: None,
        }
    }

    #[test]
    fn the_summary_skips_runtime_code_linked_into_the_program() {
        let site = CallSite {
            id: 0,
            frames: vec![
                native("main", "/usr/bin/app"),
                native("app::fetch_user", "/usr/bin/app"),
                native("<std::net::TcpStream>::connect", "/usr/bin/app"),
                native("__libc_connect", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ],
        };
        assert_eq!(
            site.summary(),
            "app::fetch_user (app) → … → __libc_connect (libc.so.6)"
        );
    }

    #[inline(never)]
    fn a_leaf_function() -> u64 {
        std::hint::black_box(a_leaf_function as *const () as u64)
    }

    /// The kernel's record of one frame, `leaf`, in this process.
    fn frames_event(leaf: u64, native_end: u32, key_ns: u64) -> FramesEvent {
        // SAFETY: a plain-data record; all zeros is a valid one.
        let mut ev: FramesEvent = unsafe { std::mem::zeroed() };
        ev.tgid = std::process::id();
        ev.tid = 1;
        ev.key_ns = key_ns;
        ev.native_depth = 1;
        ev.native_end = native_end;
        ev.py_status = tracer_common::PY_NOT_PYTHON;
        ev.words[0] = leaf;
        ev
    }

    #[test]
    fn a_leaf_sent_without_its_callers_is_a_site_that_says_so() {
        let leaf = a_leaf_function();
        let mut a = Attributor::default();
        a.on_frames(&frames_event(leaf, UNWOUND_NO_TABLES_YET, 1));
        // The same word, unwound to the end: another site (the memo of
        // raw stacks must not return the first for it).
        a.on_frames(&frames_event(leaf, tracer_common::UNWOUND_END, 2));
        assert_eq!(a.counts.leaf_only_no_tables_yet, 1);
        assert_eq!(a.counts.unwound_in_kernel, 1);
        let (first, second) = (a.take(1, 1).unwrap(), a.take(1, 2).unwrap());
        let (leaf_only, unwound) = (a.site(first).clone(), a.site(second).clone());
        assert_eq!(leaf_only.frames.len(), 2, "{leaf_only:?}");
        assert!(leaf_only.frames[0].is_callers_unknown());
        assert_eq!(leaf_only.frames[1], unwound.frames[0]);
        assert!(
            unwound.frames[0]
                .function
                .as_deref()
                .is_some_and(|f| f.contains("a_leaf_function")),
            "{unwound:?}"
        );
        let label = leaf_only.label();
        assert!(
            label.starts_with("[callers not unwound: unwind tables loading] → ")
                && label.contains("a_leaf_function"),
            "{label}"
        );
        // Its summary keeps the marker when the leaf is a library's.
        let in_libc = CallSite {
            id: 0,
            frames: vec![
                Frame::callers_unknown(),
                native("__libc_connect", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ],
        };
        assert_eq!(
            in_libc.summary(),
            "[callers not unwound: unwind tables loading] → __libc_connect (libc.so.6)"
        );
    }
}
