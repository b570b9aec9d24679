//! The traced processes and their threads: their lives while traced (the
//! denominator of every share), and the folding of exited ones into rows
//! by name, so that a node's millions of short processes stay bounded.

use std::collections::{BTreeMap, HashMap};

use tracer_common::{
    NAME_ROW_BASE, SyscallKey, TASK_ADOPTED, TASK_EXEC, TASK_EXIT_PROCESS, TASK_EXIT_THREAD,
    TASK_NEW_PROCESS, TASK_NEW_THREAD, TaskEvent, ThreadEntry,
};

use super::{Aggregate, ThreadTime};

/// A thread's life while traced, in monotonic nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct ThreadSpan {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcessState {
    pub comm: String,
    /// The traced process that forked this one, if it was not named by the user.
    pub parent: Option<u32>,
    pub threads: HashMap<u32, ThreadSpan>,
    /// Threads that exited while the process went on, folded: how many,
    /// and their time while traced (a server that starts a thread per
    /// request would otherwise grow one entry per request).
    pub exited_threads: usize,
    pub exited_threads_ns: u64,
    pub exited_ns: Option<u64>,
    /// Its container and pod, from its cgroup (children inherit them).
    pub container: crate::container::ContainerInfo,
    /// For a row of processes by name and cgroup (keyed `NAME_ROW_BASE`
    /// and up): how many exited processes folded into it; 0 for a process.
    pub folded: usize,
    /// Its cgroup v2 id (0 if unknown): with the name, the row it folds
    /// into, as the kernel keys node mode's syscall stats.
    pub cgroup_id: u64,
    /// A Go program, its resolver or crypto/tls probed: its goroutines run
    /// on a pool of threads, so its busy time is not its threads' (see
    /// `Report::build`).
    pub go: bool,
}

/// Exited processes kept as rows of their own. Past this, exited processes
/// fold into the row of their name and cgroup (a node starts millions of
/// processes over its life: a row each would grow without end).
pub const MAX_EXITED_PROCESS_ROWS: usize = 256;

/// Whether a key of `Aggregate::processes` is a process, not a row of
/// processes by name and cgroup.
pub fn is_process(key: u32) -> bool {
    key < NAME_ROW_BASE
}

/// A process name as the kernel keeps it: at most 15 bytes, NUL-padded.
fn comm_bytes(comm: &str) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let len = comm.len().min(15);
    bytes[..len].copy_from_slice(&comm.as_bytes()[..len]);
    bytes
}

fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Per-thread rows kept before an exited thread's row is folded into its
/// process's `(exited threads)` row (tid 0): enough for `--by thread`,
/// bounded for a tracer that runs for days.
const MAX_THREAD_ROWS: usize = 1024;
/// Folds the row of a thread that exited into its process's `(exited
/// threads)` row, once there are many rows.
fn fold_thread_time(rows: &mut BTreeMap<(u32, u32), ThreadTime>, pid: u32, tid: u32) {
    if rows.len() <= MAX_THREAD_ROWS {
        return;
    }
    let Some(gone) = rows.remove(&(pid, tid)) else {
        return;
    };
    merge_thread_time(rows, pid, gone);
}
/// Adds a thread's row to its process's `(exited threads)` row (tid 0).
fn merge_thread_time(rows: &mut BTreeMap<(u32, u32), ThreadTime>, pid: u32, gone: ThreadTime) {
    let folded = rows.entry((pid, 0)).or_insert_with(|| ThreadTime {
        name: "(exited threads)".to_string(),
        kinds: BTreeMap::new(),
    });
    for (kind, (n, ns)) in gone.kinds {
        let k = folded.kinds.entry(kind).or_default();
        k.0 += n;
        k.1 += ns;
    }
}

impl Aggregate {
    /// Registers a process named by the user, with the threads it has now.
    pub fn add_target(&mut self, pid: u32, comm: String, threads: &[u32]) {
        self.make_room_for(pid);
        let start = self.start_ns;
        let containers = &mut self.containers_by_cgroup;
        let proc = self.processes.entry(pid).or_insert_with(|| {
            let (container, cgroup_id) = crate::container::of_process_with_id(pid);
            containers.insert(cgroup_id, container.clone());
            ProcessState {
                comm,
                container,
                cgroup_id,
                ..Default::default()
            }
        });
        for &tid in threads {
            proc.threads.entry(tid).or_insert(ThreadSpan {
                start_ns: start,
                end_ns: None,
            });
        }
    }
    pub(super) fn on_task(&mut self, t: TaskEvent) {
        let comm = comm_string(&t.comm);
        match t.what {
            TASK_NEW_THREAD => {
                if let Some(p) = self.processes.get_mut(&t.tgid) {
                    p.threads.entry(t.child).or_insert(ThreadSpan {
                        start_ns: t.ts_ns,
                        end_ns: None,
                    });
                }
            }
            TASK_NEW_PROCESS => {
                self.make_room_for(t.child);
                self.sites.on_fork(t.tgid, t.child);
                let mut threads = HashMap::new();
                threads.insert(
                    t.child,
                    ThreadSpan {
                        start_ns: t.ts_ns,
                        end_ns: None,
                    },
                );
                let (container, cgroup_id) = self
                    .processes
                    .get(&t.tgid)
                    .map(|p| (p.container.clone(), p.cgroup_id))
                    .unwrap_or_default();
                self.processes.entry(t.child).or_insert(ProcessState {
                    comm,
                    parent: Some(t.tgid),
                    threads,
                    container,
                    cgroup_id,
                    ..Default::default()
                });
            }
            TASK_EXEC => {
                // Named after the new program from its next call on; its
                // code is probed.
                if let Some(p) = self.processes.get_mut(&t.tgid) {
                    if !comm.is_empty() {
                        p.comm = comm;
                    }
                    // A container runtime forks its child in its own cgroup
                    // and moves it into the container's before the exec
                    // (runc): the child's container is known from here.
                    let (container, cgroup_id) = crate::container::of_process_with_id(t.tgid);
                    let known = container.id.is_some() || cgroup_id != 0;
                    if known && (cgroup_id, &container) != (p.cgroup_id, &p.container) {
                        self.containers_by_cgroup
                            .insert(cgroup_id, container.clone());
                        p.container = container;
                        p.cgroup_id = cgroup_id;
                    }
                }
                self.sites.on_exec(t.tgid);
                self.execed.push(t.tgid);
                self.mapped_new_code.insert(t.tgid);
            }
            TASK_ADOPTED => {
                // Known at once (the calls behind this record in the batch
                // are counted under its name and container); its threads
                // are listed by the session.
                self.add_target(t.tgid, comm.clone(), &[]);
                self.adopted.push((t.tgid, comm));
            }
            TASK_EXIT_THREAD | TASK_EXIT_PROCESS => {
                let Some(p) = self.processes.get_mut(&t.tgid) else {
                    return;
                };
                // The name at exit is the one after any exec (the main
                // thread's: another thread's name is its own).
                if !comm.is_empty() && t.tid == t.tgid {
                    p.comm = comm;
                }
                if t.what == TASK_EXIT_THREAD {
                    if let Some(span) = p.threads.remove(&t.tid) {
                        let start = span.start_ns.max(self.start_ns);
                        let end = span.end_ns.unwrap_or(t.ts_ns);
                        p.exited_threads += 1;
                        p.exited_threads_ns += end.saturating_sub(start);
                    }
                    fold_thread_time(&mut self.by_thread, t.tgid, t.tid);
                } else if let Some(span) = p.threads.get_mut(&t.tid) {
                    span.end_ns.get_or_insert(t.ts_ns);
                }
                self.dns.forget_thread(t.tid);
                self.sites.forget_thread(t.tid);
                if t.what == TASK_EXIT_PROCESS {
                    self.sites.forget_process(t.tgid);
                    self.http.forget_process(t.tgid);
                }
                if t.what == TASK_EXIT_PROCESS {
                    p.exited_ns = Some(t.ts_ns);
                    for span in p.threads.values_mut() {
                        span.end_ns.get_or_insert(t.ts_ns);
                    }
                }
            }
            _ => {}
        }
    }
    /// Marks a process as a Go program (see `ProcessState::go`).
    pub fn mark_go(&mut self, pid: u32) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.go = true;
        }
    }

    /// How long the process was traced: from its first thread's start (or
    /// the trace's) to its exit (or now).
    pub fn lifetime_ns(&self, pid: u32, now_ns: u64) -> u64 {
        let Some(p) = self.processes.get(&pid) else {
            return 0;
        };
        let start = p
            .threads
            .values()
            .map(|s| s.start_ns)
            .min()
            .unwrap_or(self.start_ns)
            .max(self.start_ns);
        p.exited_ns
            .unwrap_or(now_ns)
            .min(now_ns)
            .saturating_sub(start)
    }

    /// Takes the kernel's idle counters, and adds the waits listener
    /// threads are in right now.
    pub fn set_idle(
        &mut self,
        idle: HashMap<u32, u64>,
        in_flight: &[(u32, ThreadEntry)],
        now_ns: u64,
    ) {
        self.idle = idle.into_iter().collect();
        let owners = self.thread_owners();
        for (tid, e) in in_flight {
            if e.listener == 0 || !crate::syscall_names::is_wait_for_work(e.nr as u32) {
                continue;
            }
            if let Some(&pid) = owners.get(tid) {
                *self.idle.entry(pid).or_default() +=
                    now_ns.saturating_sub(e.start_ns.max(self.start_ns));
            }
        }
    }

    /// Marks a process gone that exited without us seeing the event (it
    /// exited between the PID check and the attach).
    pub fn mark_exited(&mut self, pid: u32, now_ns: u64) {
        if let Some(p) = self.processes.get_mut(&pid)
            && p.exited_ns.is_none()
        {
            p.exited_ns = Some(now_ns);
            for span in p.threads.values_mut() {
                span.end_ns.get_or_insert(now_ns);
            }
        }
    }
    /// Processes that have exited.
    pub fn exited_pids(&self) -> std::collections::HashSet<u32> {
        self.processes
            .iter()
            .filter(|&(&pid, p)| is_process(pid) && p.exited_ns.is_some())
            .map(|(&pid, _)| pid)
            .collect()
    }
    /// Once more than `MAX_EXITED_PROCESS_ROWS` exited processes have rows,
    /// folds every exited process into the row of its name and container:
    /// thread time, idle time, per-thread rows and TLS connections move
    /// there, and what is kept per PID is dropped. Returns which PID went
    /// to which row, for the syscall stats and idle time kept elsewhere.
    pub fn fold_exited_processes(&mut self) -> HashMap<u32, u32> {
        let exited: Vec<u32> = self
            .processes
            .iter()
            .filter(|&(&pid, p)| is_process(pid) && p.exited_ns.is_some())
            .map(|(&pid, _)| pid)
            .collect();
        let mut moved = std::mem::take(&mut self.reused_pids_folded);
        if exited.len() <= MAX_EXITED_PROCESS_ROWS {
            return moved;
        }
        for pid in exited {
            if let Some(row) = self.fold_process(pid) {
                moved.insert(pid, row);
            }
        }
        moved
    }
    /// Folds one exited process into the row of its name and container;
    /// returns the row.
    fn fold_process(&mut self, pid: u32) -> Option<u32> {
        let end_ns = self.processes.get(&pid)?.exited_ns?;
        let wall_ns = self.wall_ns(pid, end_ns);
        let p = self.processes.remove(&pid)?;
        let row = tracer_common::name_row(&comm_bytes(&p.comm), p.cgroup_id);
        let folded = self.processes.entry(row).or_insert_with(|| ProcessState {
            comm: p.comm.clone(),
            parent: p.parent,
            container: p.container.clone(),
            cgroup_id: p.cgroup_id,
            ..Default::default()
        });
        folded.folded += 1;
        folded.exited_threads += p.threads.len() + p.exited_threads;
        folded.exited_threads_ns += wall_ns;
        folded.exited_ns = folded.exited_ns.max(p.exited_ns);
        let tids: Vec<u32> = self
            .by_thread
            .range((pid, 0)..=(pid, u32::MAX))
            .map(|(&(_, tid), _)| tid)
            .collect();
        for tid in tids {
            if let Some(gone) = self.by_thread.remove(&(pid, tid)) {
                merge_thread_time(&mut self.by_thread, row, gone);
            }
        }
        self.tls.forget_process(pid);
        self.fd_peers.retain(|&(owner, _), _| owner != pid);
        self.sites.forget_process(pid);
        Some(row)
    }
    /// A new process took the PID of one that exited and still has its
    /// row: that row folds away first (the collector moves its syscall
    /// stats with the next `fold_exited_processes`).
    fn make_room_for(&mut self, pid: u32) {
        if self
            .processes
            .get(&pid)
            .is_some_and(|p| p.exited_ns.is_some())
            && let Some(row) = self.fold_process(pid)
        {
            self.reused_pids_folded.insert(pid, row);
        }
    }
    /// Node mode: rows for the kernel's syscall stats kept by process name
    /// and cgroup, named from the kernel's row table (`name_of`).
    pub fn add_name_rows<'a>(
        &mut self,
        keys: impl Iterator<Item = &'a SyscallKey>,
        name_of: impl Fn(u32) -> Option<tracer_common::RowName>,
    ) {
        for key in keys {
            if is_process(key.tgid) || self.processes.contains_key(&key.tgid) {
                continue;
            }
            let Some(name) = name_of(key.tgid) else {
                continue;
            };
            // A cgroup no process was seen in here (its process moved on or
            // exited first): found by its id, once.
            let container = self
                .containers_by_cgroup
                .entry(name.cgroup_id)
                .or_insert_with(|| {
                    crate::target::cgroup2_root()
                        .filter(|_| name.cgroup_id != 0)
                        .and_then(|root| crate::container::of_cgroup_id(&root, name.cgroup_id))
                        .unwrap_or_default()
                })
                .clone();
            self.processes.insert(
                key.tgid,
                ProcessState {
                    comm: comm_string(&name.comm),
                    container,
                    cgroup_id: name.cgroup_id,
                    ..Default::default()
                },
            );
        }
    }
    /// The process of each live thread.
    pub fn thread_owners(&self) -> HashMap<u32, u32> {
        self.processes
            .iter()
            .filter(|(_, p)| p.exited_ns.is_none())
            .flat_map(|(&pid, p)| p.threads.keys().map(move |&tid| (tid, pid)))
            .collect()
    }
    /// Re-reads the names of live processes (an exec changes them).
    pub fn refresh_names(&mut self) {
        for (&pid, p) in self.processes.iter_mut() {
            if is_process(pid)
                && p.exited_ns.is_none()
                && let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            {
                p.comm = comm.trim_end().to_string();
            }
        }
    }
    pub fn live_pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|&(&pid, p)| is_process(pid) && p.exited_ns.is_none())
            .map(|(&pid, _)| pid)
            .collect()
    }
    /// Sum of the traced threads' lifetimes while traced, per process.
    pub fn wall_ns(&self, pid: u32, now_ns: u64) -> u64 {
        let Some(p) = self.processes.get(&pid) else {
            return 0;
        };
        p.exited_threads_ns
            + p.threads
                .values()
                .map(|s| {
                    let start = s.start_ns.max(self.start_ns);
                    s.end_ns.unwrap_or(now_ns).min(now_ns).saturating_sub(start)
                })
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Event;

    #[test]
    fn wall_time_counts_each_thread_while_traced() {
        let mut agg = Aggregate::new(1_000);
        agg.add_target(10, "app".into(), &[10, 11]);
        agg.apply(Event::Task(TaskEvent {
            kind: 3,
            what: TASK_NEW_THREAD,
            tgid: 10,
            tid: 10,
            child: 12,
            _pad: 0,
            ts_ns: 2_000,
            comm: [0; 16],
        }));
        agg.apply(Event::Task(TaskEvent {
            kind: 3,
            what: TASK_EXIT_THREAD,
            tgid: 10,
            tid: 11,
            child: 0,
            _pad: 0,
            ts_ns: 3_000,
            comm: *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0",
        }));
        // thread 10: 1000..5000, 11: 1000..3000, 12: 2000..5000
        assert_eq!(agg.wall_ns(10, 5_000), 4_000 + 2_000 + 3_000);
        // The exited thread is folded: its time stays, its entry goes.
        let p = &agg.processes[&10];
        assert_eq!((p.threads.len(), p.exited_threads), (2, 1));
        assert!(!p.threads.contains_key(&11));
    }

    #[test]
    fn exited_processes_fold_by_name_once_there_are_many() {
        let task = |what, tgid, tid, child, ts_ns, name: &str| {
            let mut comm = [0u8; 16];
            comm[..name.len()].copy_from_slice(name.as_bytes());
            Event::Task(TaskEvent {
                kind: 3,
                what,
                tgid,
                tid,
                child,
                _pad: 0,
                ts_ns,
                comm,
            })
        };
        let mut agg = Aggregate::new(0);
        agg.add_target(1, "shell".into(), &[1]);
        let children = MAX_EXITED_PROCESS_ROWS as u32 + 44;
        for i in 0..children {
            let (pid, name) = (100 + i, if i % 2 == 0 { "sh" } else { "curl" });
            agg.apply(task(TASK_NEW_PROCESS, 1, 1, pid, 1_000, name));
            agg.apply(task(TASK_EXIT_PROCESS, pid, pid, 0, 1_500, name));
        }
        // Under the limit nothing folds: each child keeps its row.
        let mut few = Aggregate::new(0);
        few.add_target(1, "shell".into(), &[1]);
        few.apply(task(TASK_NEW_PROCESS, 1, 1, 7, 1_000, "sh"));
        few.apply(task(TASK_EXIT_PROCESS, 7, 7, 0, 1_500, "sh"));
        assert!(few.fold_exited_processes().is_empty());
        assert!(few.processes.contains_key(&7));

        let moved = agg.fold_exited_processes();
        assert_eq!(moved.len(), children as usize);
        // The live shell, and one row per name.
        assert_eq!(agg.processes.len(), 3);
        let rows: Vec<&ProcessState> = agg
            .processes
            .range(NAME_ROW_BASE..)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows.iter().map(|p| p.folded).sum::<usize>(),
            children as usize
        );
        // Each child lived 500 ns with one thread: the time is all kept.
        let folded_ns: u64 = agg
            .processes
            .range(NAME_ROW_BASE..)
            .map(|(&row, _)| agg.wall_ns(row, 10_000))
            .sum();
        assert_eq!(folded_ns, 500 * children as u64);
        assert!(moved.values().all(|&row| row >= NAME_ROW_BASE));
        // Folding again finds nothing new.
        assert!(agg.fold_exited_processes().is_empty());

        // A PID that comes back is a new, live process; the one that had
        // it folds away at once.
        few.apply(task(TASK_NEW_PROCESS, 1, 1, 7, 2_000, "sh"));
        assert_eq!(few.processes[&7].exited_ns, None);
        let moved = few.fold_exited_processes();
        let row = moved[&7];
        assert_eq!(few.processes[&row].folded, 1);
        assert_eq!(few.wall_ns(row, 10_000), 500);
    }
}
