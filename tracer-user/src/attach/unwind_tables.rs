//! The kernel's unwind tables (see `tracer_common::unwind`): each module's
//! rows, compiled from its `.eh_frame` once per file and shared by every
//! process that maps it, and each traced process's executable mappings.
//! A process whose tables do not fit keeps the stack copy, unwound in user
//! space, and the report counts its stacks.

use std::collections::HashMap as StdHashMap;

use aya::maps::{Array, HashMap};
use log::debug;
use tracer_common::{
    UNWIND_MAP_INTERPRETER, UNWIND_MAPPINGS_MAX, UNWIND_ROWS_MAX, UnwindMapping, UnwindMappings,
    UnwindRow,
};

use super::{ProbeNote, Probes};
use crate::mapped::{Mapping, load_bias};

/// Where each file's rows are in the shared array.
#[derive(Default)]
pub struct UnwindTables {
    /// Rows (start, length) by file (device, inode); length 0: the file
    /// has no CFI (frame pointers), or it could not be read.
    files: StdHashMap<(u64, u64), (u32, u32)>,
    /// The first free row.
    next_row: u32,
    /// The mappings written for each process, to write only changes.
    written: StdHashMap<u32, Vec<UnwindMapping>>,
}

/// Why a process's tables were not written.
enum NotWritten {
    Unchanged,
    Full(String),
    Failed(String),
}

impl Probes {
    /// Writes the tables of what `pid` maps, compiling the files not seen
    /// yet. `interpreter`: the file of its CPython, if it runs one.
    pub(super) fn write_unwind_tables(
        &mut self,
        pid: u32,
        maps: &[Mapping],
        interpreter: Option<(u64, u64)>,
    ) -> Option<ProbeNote> {
        match self.try_write_unwind_tables(pid, maps, interpreter) {
            Ok(()) | Err(NotWritten::Unchanged) => None,
            Err(NotWritten::Full(why)) => {
                // All of its stacks copied, rather than some unwound short.
                debug!("PID {pid}: stacks unwound in user space: {why}");
                self.forget_unwind_tables(pid);
                Some(ProbeNote::UnwindTablesFull(pid))
            }
            Err(NotWritten::Failed(why)) => Some(ProbeNote::Warning(format!(
                "PID {pid}: unwind tables: {why}"
            ))),
        }
    }

    fn try_write_unwind_tables(
        &mut self,
        pid: u32,
        maps: &[Mapping],
        interpreter: Option<(u64, u64)>,
    ) -> Result<(), NotWritten> {
        let mut mappings = Vec::new();
        for m in maps {
            let Some(bias) = load_bias(pid, m) else {
                continue;
            };
            let (rows_start, rows_len) = self.module_rows(pid, m)?;
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

    /// The rows of a mapped file, compiled and written on first sight.
    fn module_rows(&mut self, pid: u32, m: &Mapping) -> Result<(u32, u32), NotWritten> {
        let key = (m.dev, m.inode);
        if let Some(&rows) = self.unwind.files.get(&key) {
            return Ok(rows);
        }
        let rows = match compile_file(pid, m) {
            Ok(rows) => rows,
            Err(e) => {
                // Unwound by frame pointers, as user space would.
                debug!("{}: no unwind table: {e:#}", m.path);
                Vec::new()
            }
        };
        let start = self.unwind.next_row;
        let len = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        if start.saturating_add(len) > UNWIND_ROWS_MAX {
            return Err(NotWritten::Full(format!(
                "{} needs {len} rows; {} of {UNWIND_ROWS_MAX} are taken",
                m.path, start
            )));
        }
        let map = self
            .ebpf
            .map_mut("UNWIND_ROWS")
            .ok_or_else(|| NotWritten::Failed("map UNWIND_ROWS missing".into()))?;
        let mut array: Array<_, UnwindRow> =
            Array::try_from(map).map_err(|e| NotWritten::Failed(e.to_string()))?;
        for (i, row) in rows.iter().enumerate() {
            array
                .set(start + i as u32, row, 0)
                .map_err(|e| NotWritten::Failed(format!("writing rows of {}: {e}", m.path)))?;
        }
        self.unwind.next_row = start + len;
        self.unwind.files.insert(key, (start, len));
        Ok((start, len))
    }

    /// Forgets a process's mappings (the kernel drops its entry at exit;
    /// this drops it too, for a process whose tables no longer fit).
    pub(super) fn forget_unwind_tables(&mut self, pid: u32) {
        if self.unwind.written.remove(&pid).is_some()
            && let Some(map) = self.ebpf.map_mut("UNWIND_PROCS")
            && let Ok(mut procs) = HashMap::<_, u32, UnwindMappings>::try_from(map)
        {
            let _ = procs.remove(&pid);
        }
    }
}

fn compile_file(pid: u32, m: &Mapping) -> anyhow::Result<Vec<UnwindRow>> {
    let (path, file) = m.open(pid)?;
    // SAFETY: a read-only private mapping of a file we only read (see
    // `unwind`'s note on files replaced under us).
    let data = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| anyhow::anyhow!("mapping {}: {e}", path.display()))?;
    crate::unwind_table::compile(&data)
}
