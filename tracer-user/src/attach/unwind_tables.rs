//! The kernel's unwind tables (see `tracer_common::unwind`): each module's
//! rows, compiled from its `.eh_frame` once per file and shared by every
//! process that maps it, and each traced process's executable mappings.
//! A process whose tables do not fit keeps the stack copy, unwound in user
//! space, and the report counts its stacks.
//!
//! Files are compiled on a thread of their own, never on the way to a
//! probe: libcrypto's 86,000 rows took 0.35 s to compile and write, and a
//! command the tracer started did its TLS handshake in that time, before
//! its libssl was probed (fresh21). A process's mappings are written once
//! every file it maps is compiled; until then its stacks are copied, as
//! before it had tables. Rows are written into the array's memory, mapped
//! here (`BPF_F_MMAPABLE`), not one syscall per row.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fs,
    os::fd::AsRawFd as _,
    sync::{Arc, mpsc},
};

use aya::maps::{Array, HashMap, Map};
use log::debug;
use tokio::sync::Notify;
use tracer_common::{
    STACK_COPIES_ALWAYS, STACK_COPIES_WITHOUT_TABLES, UNWIND_MAP_INTERPRETER, UNWIND_MAPPINGS_MAX,
    UNWIND_ROWS_MAX, UnwindMapping, UnwindMappings, UnwindRow,
};

use super::{ProbeNote, Probes};
use crate::mapped::{Mapping, bias_of};

type FileKey = (u64, u64);

/// Where each file's rows are in the shared array, and the files being
/// compiled.
#[derive(Default)]
pub struct UnwindTables {
    /// Rows (start, length) by file (device, inode); length 0: the file
    /// has no CFI (frame pointers), or it could not be read.
    files: StdHashMap<FileKey, (u32, u32)>,
    /// The virtual address of each file's first segment (for its bias).
    first_vaddr: StdHashMap<FileKey, u64>,
    /// The first free row.
    next_row: u32,
    /// The mappings written for each process, to write only changes.
    written: StdHashMap<u32, Vec<UnwindMapping>>,
    /// Processes with a file still compiling: what they map, and their
    /// interpreter's file. Written when the last of their files is done.
    waiting: StdHashMap<u32, (Vec<Mapping>, Option<FileKey>)>,
    /// Files sent to the compiler and not back yet.
    compiling: HashSet<FileKey>,
    /// Files whose rows did not fit, with why: a process that maps one
    /// keeps the stack copy.
    too_big: StdHashMap<FileKey, String>,
    compiler: Option<Compiler>,
    /// Set once the rows array could not be mapped: rows are then
    /// written one by one.
    rows_unmappable: bool,
}

/// The thread that compiles files, and how its results come back.
struct Compiler {
    jobs: mpsc::Sender<(FileKey, String, fs::File)>,
    done: mpsc::Receiver<Compiled>,
    /// Woken when a file is done: the session then writes its rows.
    ready: Arc<Notify>,
}

struct Compiled {
    key: FileKey,
    path: String,
    rows: anyhow::Result<Vec<UnwindRow>>,
}

impl Compiler {
    fn start() -> anyhow::Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<(FileKey, String, fs::File)>();
        let (done_tx, done) = mpsc::channel();
        let ready = Arc::new(Notify::new());
        let wake = Arc::clone(&ready);
        std::thread::Builder::new()
            .name("unwind-tables".into())
            .spawn(move || {
                for (key, path, file) in job_rx {
                    let rows = compile_file(&file);
                    if done_tx.send(Compiled { key, path, rows }).is_err() {
                        break;
                    }
                    wake.notify_one();
                }
            })?;
        Ok(Self { jobs, done, ready })
    }
}

/// Stores `rows` from row `start` on into the array's memory through a
/// mapping of just the pages they fall on, unmapped at once: the array
/// (`BPF_F_MMAPABLE`) stays kernel memory, and a mapping of the whole of
/// it would count its 8 MiB in the tracer's resident set for the whole run.
fn store_mapped(map: &Map, start: u32, rows: &[UnwindRow]) -> anyhow::Result<()> {
    let Map::Array(data) = map else {
        anyhow::bail!("UNWIND_ROWS is not an array");
    };
    let row = std::mem::size_of::<UnwindRow>();
    let first = start as usize * row;
    let len = std::mem::size_of_val(rows);
    let end = first + len;
    anyhow::ensure!(
        end <= UNWIND_ROWS_MAX as usize * row,
        "rows past the array's end"
    );
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let offset = first - first % page;
    let bytes = end - offset;
    let fd = std::os::fd::AsFd::as_fd(data.fd()).as_raw_fd();
    // SAFETY: a shared mapping of the array's pages from a page-aligned
    // offset, within its size (checked above; the kernel checks it too).
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        anyhow::bail!("mmap: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `first - offset + len == bytes`, all within the
    // mapping; rows not yet referred to by any process's mappings, so no
    // program reads them meanwhile. Unmapped once, here.
    unsafe {
        std::ptr::copy_nonoverlapping(
            rows.as_ptr().cast::<u8>(),
            ptr.cast::<u8>().add(first - offset),
            len,
        );
        libc::munmap(ptr, bytes);
    }
    Ok(())
}

/// Why a process's tables were not written.
enum NotWritten {
    Unchanged,
    /// A file it maps is still compiling.
    Compiling,
    Full(String),
    Failed(String),
}

impl Probes {
    /// Writes the tables of what `pid` maps, or sends the files not seen
    /// yet to be compiled (written when they are done: see
    /// [`Probes::poll_unwind_tables`]). `interpreter`: the file of its
    /// CPython, if it runs one. `wait`: wait for the compiler here (at
    /// attach, before the process is said to be traced).
    pub(super) fn write_unwind_tables(
        &mut self,
        pid: u32,
        maps: &[Mapping],
        interpreter: Option<FileKey>,
        wait: bool,
    ) -> Vec<ProbeNote> {
        self.take_compiled(false);
        self.unwind
            .waiting
            .insert(pid, (maps.to_vec(), interpreter));
        if wait {
            for m in maps {
                if self.load_bias(pid, m).is_some() {
                    // Sends the files not seen yet to the compiler.
                    let _ = self.module_rows(pid, m);
                }
            }
            while !self.unwind.compiling.is_empty() {
                self.take_compiled(true);
            }
        }
        self.write_waiting()
    }

    /// The notify woken when a file's rows are ready: then call
    /// [`Probes::poll_unwind_tables`].
    /// None without call sites (no tables are made).
    pub fn unwind_tables_ready(&mut self) -> Option<Arc<Notify>> {
        if !self.call_sites {
            return None;
        }
        Some(Arc::clone(&self.compiler()?.ready))
    }

    /// The compiler thread, started on first use.
    fn compiler(&mut self) -> Option<&Compiler> {
        if self.unwind.compiler.is_none() {
            match Compiler::start() {
                Ok(c) => self.unwind.compiler = Some(c),
                Err(e) => debug!("no thread to compile unwind tables: {e}"),
            }
        }
        self.unwind.compiler.as_ref()
    }

    /// Writes the rows compiled since the last call, and the mappings of
    /// the processes that waited for them.
    pub fn poll_unwind_tables(&mut self) -> Vec<ProbeNote> {
        self.take_compiled(false);
        self.write_waiting()
    }

    /// Writes the mappings of the waiting processes whose files are all
    /// compiled now.
    fn write_waiting(&mut self) -> Vec<ProbeNote> {
        let pids: Vec<u32> = self.unwind.waiting.keys().copied().collect();
        let mut notes = Vec::new();
        for pid in pids {
            let Some((maps, interpreter)) = self.unwind.waiting.remove(&pid) else {
                continue;
            };
            match self.try_write_unwind_tables(pid, &maps, interpreter) {
                Ok(()) | Err(NotWritten::Unchanged) => {}
                Err(NotWritten::Compiling) => {
                    self.unwind.waiting.insert(pid, (maps, interpreter));
                }
                Err(NotWritten::Full(why)) => {
                    // All of its stacks copied, rather than some unwound short.
                    debug!("PID {pid}: stacks unwound in user space: {why}");
                    self.forget_unwind_tables(pid);
                    self.copy_stacks_always(pid);
                    notes.push(ProbeNote::UnwindTablesFull(pid));
                }
                Err(NotWritten::Failed(why)) => {
                    self.copy_stacks_always(pid);
                    notes.push(ProbeNote::Warning(format!(
                        "PID {pid}: unwind tables: {why}"
                    )));
                }
            }
        }
        notes
    }

    fn try_write_unwind_tables(
        &mut self,
        pid: u32,
        maps: &[Mapping],
        interpreter: Option<FileKey>,
    ) -> Result<(), NotWritten> {
        let mut mappings = Vec::new();
        let mut compiling = false;
        for m in maps {
            let Some(bias) = self.load_bias(pid, m) else {
                continue;
            };
            let Some((rows_start, rows_len)) = self.module_rows(pid, m) else {
                compiling = true;
                continue;
            };
            if let Some(why) = self.unwind.too_big.get(&(m.dev, m.inode)) {
                return Err(NotWritten::Full(why.clone()));
            }
            let flags = if interpreter == Some((m.dev, m.inode)) {
                UNWIND_MAP_INTERPRETER
            } else {
                0
            };
            for &(start, end, _) in &m.exec {
                mappings.push(UnwindMapping {
                    start,
                    end,
                    bias,
                    rows_start,
                    rows_len,
                    flags,
                    _pad: 0,
                });
            }
        }
        if compiling {
            return Err(NotWritten::Compiling);
        }
        mappings.sort_by_key(|m| m.start);
        if self.unwind.written.get(&pid) == Some(&mappings) {
            return Err(NotWritten::Unchanged);
        }
        if mappings.len() > UNWIND_MAPPINGS_MAX {
            return Err(NotWritten::Full(format!(
                "{} executable mappings, more than the {UNWIND_MAPPINGS_MAX} the kernel's table holds",
                mappings.len()
            )));
        }
        let mut value = UnwindMappings {
            len: mappings.len() as u32,
            _pad: 0,
            entries: [UnwindMapping::default(); UNWIND_MAPPINGS_MAX],
        };
        value.entries[..mappings.len()].copy_from_slice(&mappings);
        let map = self
            .ebpf
            .map_mut("UNWIND_PROCS")
            .ok_or_else(|| NotWritten::Failed("map UNWIND_PROCS missing".into()))?;
        let mut procs: HashMap<_, u32, UnwindMappings> =
            HashMap::try_from(map).map_err(|e| NotWritten::Failed(e.to_string()))?;
        procs
            .insert(pid, value, 0)
            .map_err(|e| NotWritten::Full(format!("processes' table: {e}")))?;
        self.unwind.written.insert(pid, mappings);
        Ok(())
    }

    /// What to add to an address in the file to get the address in the
    /// process (the file's first segment address read once per file).
    fn load_bias(&mut self, pid: u32, m: &Mapping) -> Option<u64> {
        m.base?;
        let key = (m.dev, m.inode);
        let vaddr = match self.unwind.first_vaddr.get(&key) {
            Some(&v) => v,
            None => {
                let v = crate::elf::first_load_vaddr(&m.file_path(pid).ok()?).ok()?;
                self.unwind.first_vaddr.insert(key, v);
                v
            }
        };
        bias_of(m, vaddr)
    }

    /// The rows of a mapped file; None while it compiles (sent to the
    /// compiler on first sight).
    fn module_rows(&mut self, pid: u32, m: &Mapping) -> Option<(u32, u32)> {
        let key = (m.dev, m.inode);
        if let Some(&rows) = self.unwind.files.get(&key) {
            return Some(rows);
        }
        if self.unwind.compiling.contains(&key) {
            return None;
        }
        // Opened here, while the process is known to be alive: the thread
        // reads the file even if the process is gone by then.
        let file = match m.open(pid) {
            Ok((_, file)) => file,
            Err(e) => {
                // Unwound by frame pointers, as user space would.
                debug!("{}: no unwind table: {e:#}", m.path);
                self.unwind.files.insert(key, (0, 0));
                return Some((0, 0));
            }
        };
        let sent = self
            .compiler()
            .is_some_and(|c| c.jobs.send((key, m.path.clone(), file)).is_ok());
        if !sent {
            self.unwind.files.insert(key, (0, 0));
            return Some((0, 0));
        }
        self.unwind.compiling.insert(key);
        None
    }

    /// Takes the compiler's results (waiting for one if `block`) and
    /// writes their rows.
    fn take_compiled(&mut self, block: bool) {
        let mut done = Vec::new();
        if let Some(c) = &self.unwind.compiler {
            if block && let Ok(first) = c.done.recv() {
                done.push(first);
            }
            done.extend(c.done.try_iter());
        }
        if block && done.is_empty() {
            // The thread is gone: what it had is not coming.
            for key in std::mem::take(&mut self.unwind.compiling) {
                self.unwind.files.insert(key, (0, 0));
            }
        }
        for compiled in done {
            self.unwind.compiling.remove(&compiled.key);
            let rows = compiled.rows.unwrap_or_else(|e| {
                debug!("{}: no unwind table: {e:#}", compiled.path);
                Vec::new()
            });
            let placed = self
                .store_rows(&compiled.path, &rows)
                .unwrap_or_else(|why| {
                    // Its processes are unwound in user space, counted.
                    self.unwind.too_big.insert(compiled.key, why);
                    (0, 0)
                });
            self.unwind.files.insert(compiled.key, placed);
        }
    }

    /// Stores a file's rows after the last file's; (start, length).
    fn store_rows(&mut self, path: &str, rows: &[UnwindRow]) -> Result<(u32, u32), String> {
        let start = self.unwind.next_row;
        let len = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        if start.saturating_add(len) > UNWIND_ROWS_MAX {
            return Err(format!(
                "{path} needs {len} rows; {start} of {UNWIND_ROWS_MAX} are taken"
            ));
        }
        if rows.is_empty() {
            return Ok((start, 0));
        }
        let map = self
            .ebpf
            .map_mut("UNWIND_ROWS")
            .ok_or_else(|| "map UNWIND_ROWS missing".to_string())?;
        if !self.unwind.rows_unmappable {
            match store_mapped(map, start, rows) {
                Ok(()) => {
                    self.unwind.next_row = start + len;
                    return Ok((start, len));
                }
                Err(e) => {
                    debug!("rows written one by one: {e}");
                    self.unwind.rows_unmappable = true;
                }
            }
        }
        let mut array: Array<_, UnwindRow> = Array::try_from(map).map_err(|e| e.to_string())?;
        for (i, row) in rows.iter().enumerate() {
            array
                .set(start + i as u32, row, 0)
                .map_err(|e| format!("writing rows of {path}: {e}"))?;
        }
        self.unwind.next_row = start + len;
        Ok((start, len))
    }

    /// A process ran execve, and the kernel dropped its tables: the new
    /// program's are written when it is probed, even if they are the same
    /// as the last ones written.
    pub(super) fn unwind_tables_dropped(&mut self, pid: u32) {
        self.unwind.written.remove(&pid);
    }

    /// Tells the kernel to copy every stack of a process whose tables will
    /// not be written, past the share of copies a process sends while its
    /// tables are being made (`STACK_COPIES_WITHOUT_TABLES`).
    fn copy_stacks_always(&mut self, pid: u32) {
        let Some(map) = self.ebpf.map_mut("STACK_COPIES") else {
            return;
        };
        if let Ok(mut copies) = HashMap::<_, u32, u32>::try_from(map)
            && let Err(e) = copies.insert(pid, STACK_COPIES_ALWAYS, 0)
        {
            debug!("PID {pid}: its stacks copied only {STACK_COPIES_WITHOUT_TABLES} times: {e}");
        }
    }

    /// Forgets a process's mappings (the kernel drops its entry at exit;
    /// this drops it too, for a process whose tables no longer fit).
    pub(super) fn forget_unwind_tables(&mut self, pid: u32) {
        self.unwind.waiting.remove(&pid);
        if self.unwind.written.remove(&pid).is_some()
            && let Some(map) = self.ebpf.map_mut("UNWIND_PROCS")
            && let Ok(mut procs) = HashMap::<_, u32, UnwindMappings>::try_from(map)
        {
            let _ = procs.remove(&pid);
        }
    }
}

fn compile_file(file: &fs::File) -> anyhow::Result<Vec<UnwindRow>> {
    // SAFETY: a read-only private mapping of a file we only read (see
    // `unwind`'s note on files replaced under us).
    let data = unsafe { memmap2::Mmap::map(file) }.map_err(|e| anyhow::anyhow!("mapping: {e}"))?;
    crate::unwind_table::compile(&data)
}
