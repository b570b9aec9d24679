//! CPython: which version a process runs and where its interpreter keeps its
//! frames (for the kernel's frame walk), and, in user space, the names and
//! lines behind the code objects the kernel found.
//!
//! Offsets are per version, read from the interpreters' own debug info
//! (gdb `ptype/o` on pyenv's libpython 3.10.13, 3.11.7, 3.12.1, 3.13.0;
//! Debian's 3.11.2 has 3.11.7's layout). See ../shared/PLATFORM.md.

use std::collections::HashMap;

use tracer_common::{PY_FRAME_DIRECT, PY_FRAME_VIA_CFRAME, PyProcess};

use crate::{elf, mapped::Mapping, target::read_memory};

/// What the kernel walk and the user-space decoding need of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub version: (u8, u8),
    runtime_interp_head: u32,
    interp_threads_head: u32,
    tstate_thread_id: u32,
    frame_mode: u32,
    tstate_frame: u32,
    cframe_current: u32,
    frame_code: u32,
    frame_previous: u32,
    frame_instr: u32,
    frame_owner: u32,
    code_firstlineno: u32,
    code_filename: u32,
    code_name: u32,
    /// 3.10 has no co_qualname: co_name it is.
    code_qualname: Option<u32>,
    code_linetable: u32,
    /// Start of the bytecode in the code object (3.11+).
    code_adaptive: Option<u32>,
    /// Where a compact ASCII string's characters start (sizeof PyASCIIObject).
    ascii_data: u32,
    /// ... and a compact non-ASCII string's (sizeof PyCompactUnicodeObject).
    compact_data: u32,
}

const NO_OWNER: u32 = u32::MAX;

const LAYOUTS: &[Layout] = &[
    Layout {
        version: (3, 10),
        runtime_interp_head: 32,
        interp_threads_head: 8,
        tstate_thread_id: 176,
        frame_mode: PY_FRAME_DIRECT,
        tstate_frame: 24, // PyFrameObject *frame
        cframe_current: 0,
        frame_code: 32,     // f_code
        frame_previous: 24, // f_back
        frame_instr: 96,    // int f_lasti
        frame_owner: NO_OWNER,
        code_firstlineno: 40,
        code_filename: 104,
        code_name: 112,
        code_qualname: None,
        code_linetable: 120,
        code_adaptive: None,
        ascii_data: 48,
        compact_data: 72,
    },
    Layout {
        version: (3, 11),
        runtime_interp_head: 40,
        interp_threads_head: 16,
        tstate_thread_id: 152,
        frame_mode: PY_FRAME_VIA_CFRAME,
        tstate_frame: 56,
        cframe_current: 8,
        frame_code: 32,
        frame_previous: 48,
        frame_instr: 56, // prev_instr
        // 3.11's frames have no C-stack shims to skip.
        frame_owner: NO_OWNER,
        code_firstlineno: 72,
        code_filename: 112,
        code_name: 120,
        code_qualname: Some(128),
        code_linetable: 136,
        code_adaptive: Some(184),
        ascii_data: 48,
        compact_data: 72,
    },
    Layout {
        version: (3, 12),
        runtime_interp_head: 40,
        interp_threads_head: 72,
        tstate_thread_id: 136,
        frame_mode: PY_FRAME_VIA_CFRAME,
        tstate_frame: 56,
        cframe_current: 0,
        frame_code: 0,
        frame_previous: 8,
        frame_instr: 56, // prev_instr
        frame_owner: 70,
        code_firstlineno: 68,
        code_filename: 112,
        code_name: 120,
        code_qualname: Some(128),
        code_linetable: 136,
        code_adaptive: Some(192),
        ascii_data: 40,
        compact_data: 56,
    },
    Layout {
        version: (3, 13),
        runtime_interp_head: 632,
        interp_threads_head: 7344,
        tstate_thread_id: 152,
        frame_mode: PY_FRAME_DIRECT,
        tstate_frame: 72, // current_frame
        cframe_current: 0,
        frame_code: 0, // f_executable
        frame_previous: 8,
        frame_instr: 56, // instr_ptr
        frame_owner: 70,
        code_firstlineno: 68,
        code_filename: 112,
        code_name: 120,
        code_qualname: Some(128),
        code_linetable: 136,
        code_adaptive: Some(200),
        ascii_data: 40,
        compact_data: 56,
    },
];

pub fn layout_for(version: (u8, u8)) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.version == version)
}

/// A CPython process: its layout and where `_PyRuntime` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interpreter {
    pub layout: &'static Layout,
    pub runtime: u64,
    /// Address of `PyCode_Type`: a code object is checked against it, so a
    /// freed and reused one is noticed rather than shown wrong.
    pub code_type: u64,
    /// The file the interpreter's code is in (libpython, or the python
    /// executable), as (device, inode): native frames in it are the
    /// interpreter's own machinery, shown as Python frames instead.
    pub module: (u64, u64),
}

impl Interpreter {
    pub fn kernel_config(&self) -> PyProcess {
        let l = self.layout;
        PyProcess {
            runtime: self.runtime,
            runtime_interp_head: l.runtime_interp_head,
            interp_threads_head: l.interp_threads_head,
            tstate_next: 8,
            tstate_thread_id: l.tstate_thread_id,
            frame_mode: l.frame_mode,
            tstate_frame: l.tstate_frame,
            cframe_current: l.cframe_current,
            frame_code: l.frame_code,
            frame_previous: l.frame_previous,
            frame_instr: l.frame_instr,
            frame_owner: l.frame_owner,
            instr_is_index: u32::from(l.version == (3, 10)),
        }
    }
}

/// `python3.11` or `libpython3.11.so.1.0` -> (3, 11).
fn version_from_name(path: &str) -> Option<(u8, u8)> {
    let base = path.rsplit('/').next()?;
    let rest = base
        .strip_prefix("libpython")
        .or_else(|| base.strip_prefix("python"))?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What `detect` found.
pub enum Detected {
    NotPython,
    Python(Interpreter),
    /// A CPython we have no layout for: native stacks only.
    Unsupported(String),
}

/// Finds the interpreter in a process: `_PyRuntime` in its libpython, or in
/// its executable when libpython is linked in (Debian's /usr/bin/python3.11).
pub fn detect(pid: u32, maps: &[Mapping]) -> Detected {
    let candidates = maps.iter().filter(|m| version_from_name(&m.path).is_some());
    for m in candidates {
        let version = version_from_name(&m.path).expect("filtered");
        let Ok(path) = m.file_path(pid) else {
            continue;
        };
        let Ok(symbols) = elf::symbol_addresses(&path, &["_PyRuntime", "PyCode_Type"]) else {
            continue;
        };
        let (Some(&runtime), Some(&code_type)) =
            (symbols.get("_PyRuntime"), symbols.get("PyCode_Type"))
        else {
            continue;
        };
        let Some(bias) = crate::mapped::load_bias(pid, m) else {
            continue;
        };
        let Some(layout) = layout_for(version) else {
            return Detected::Unsupported(format!(
                "PID {pid} runs Python {}.{}, which this tracer has no frame layout for: its \
                 call sites are native stacks only",
                version.0, version.1
            ));
        };
        return Detected::Python(Interpreter {
            layout,
            runtime: runtime.wrapping_add(bias),
            code_type: code_type.wrapping_add(bias),
            module: (m.dev, m.inode),
        });
    }
    Detected::NotPython
}

/// A code object, resolved.
#[derive(Debug, Clone)]
pub struct Code {
    pub qualname: String,
    pub filename: String,
    pub firstlineno: u32,
    linetable: Vec<u8>,
    /// Address of the first instruction (3.11+).
    bytecode: u64,
}

/// Reads code objects out of a process, with a cache: a program's hot
/// paths run the same few hundred code objects.
#[derive(Default)]
pub struct CodeReader {
    cache: HashMap<(u32, u64), Option<Code>>,
    /// Code objects that did not check out (freed and reused since the
    /// kernel saw them): shown as unknown, never wrong.
    pub stale: u64,
}

impl CodeReader {
    pub fn code(&mut self, pid: u32, interp: &Interpreter, addr: u64) -> Option<Code> {
        if let Some(c) = self.cache.get(&(pid, addr)) {
            return c.clone();
        }
        let code = read_code(pid, interp, addr);
        if code.is_none() {
            self.stale += 1;
        }
        self.cache.insert((pid, addr), code.clone());
        code
    }

    /// Forgets a process's code objects (it exited; its addresses will mean
    /// something else in the next process with its PID).
    pub fn forget(&mut self, pid: u32) {
        self.cache.retain(|(p, _), _| *p != pid);
    }
}

fn read_u64(pid: u32, addr: u64) -> Option<u64> {
    let b = read_memory(pid, addr, 8)?;
    Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
}

fn read_u32(pid: u32, addr: u64) -> Option<u32> {
    let b = read_memory(pid, addr, 4)?;
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn read_code(pid: u32, interp: &Interpreter, addr: u64) -> Option<Code> {
    let l = interp.layout;
    // ob_type is at 8 in every PyObject.
    if read_u64(pid, addr + 8)? != interp.code_type {
        return None;
    }
    let str_at = |off: u32| read_u64(pid, addr + off as u64).and_then(|p| read_str(pid, l, p));
    let filename = str_at(l.code_filename)?;
    let qualname = str_at(l.code_qualname.unwrap_or(l.code_name))?;
    let firstlineno = read_u32(pid, addr + l.code_firstlineno as u64)?;
    let linetable =
        read_u64(pid, addr + l.code_linetable as u64).and_then(|p| read_bytes(pid, p))?;
    Some(Code {
        qualname,
        filename,
        firstlineno,
        linetable,
        bytecode: l.code_adaptive.map_or(0, |o| addr + o as u64),
    })
}

/// A `str` object's text (compact strings: what code objects hold).
fn read_str(pid: u32, l: &Layout, obj: u64) -> Option<String> {
    let length = read_u64(pid, obj + 16)? as usize;
    let state = read_u32(pid, obj + 32)?;
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact || length > 4096 {
        return None;
    }
    if ascii {
        let b = read_memory(pid, obj + l.ascii_data as u64, length)?;
        return String::from_utf8(b).ok();
    }
    let width = match kind {
        1 | 2 | 4 => kind as usize,
        _ => return None,
    };
    let b = read_memory(pid, obj + l.compact_data as u64, length * width)?;
    let chars = b.chunks(width).map(|c| {
        let mut v = [0u8; 4];
        v[..width].copy_from_slice(c);
        char::from_u32(u32::from_le_bytes(v)).unwrap_or('?')
    });
    Some(chars.collect())
}

/// A `bytes` object's content (ob_size at 16, ob_sval at 32).
fn read_bytes(pid: u32, obj: u64) -> Option<Vec<u8>> {
    let len = read_u64(pid, obj + 16)? as usize;
    if len > 1 << 20 {
        return None;
    }
    read_memory(pid, obj + 32, len)
}

impl Code {
    /// The line being executed: `instr` is what the kernel read from the
    /// frame (3.11+: address of an instruction; 3.10: index of one).
    pub fn line(&self, layout: &Layout, instr: u64) -> Option<u32> {
        match layout.version {
            (3, 10) => {
                // f_lasti counts 2-byte code units; the 3.10 table uses bytes.
                let offset = (instr as i64).checked_mul(2)?;
                line_310(
                    &self.linetable,
                    self.firstlineno,
                    u64::try_from(offset).ok()?,
                )
            }
            (3, 13) => {
                // instr_ptr: the instruction being executed.
                let unit = instr.checked_sub(self.bytecode)? / 2;
                line_311(&self.linetable, self.firstlineno, unit)
            }
            _ => {
                // prev_instr: the last instruction started (the call).
                let unit = instr.checked_sub(self.bytecode)? / 2;
                line_311(&self.linetable, self.firstlineno, unit)
            }
        }
    }
}

/// 3.10's co_linetable: (bytecode length in bytes, signed line delta)
/// pairs; a delta of -128 means "no line" for that range.
fn line_310(table: &[u8], first: u32, offset: u64) -> Option<u32> {
    let mut line = first as i64;
    let mut end = 0u64;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += pair[0] as u64;
        let delta = pair[1] as i8;
        let here = if delta == -128 {
            None
        } else {
            line += delta as i64;
            Some(line)
        };
        if offset >= start && offset < end {
            return here.and_then(|l| u32::try_from(l).ok());
        }
    }
    None
}

/// 3.11+'s location table (Objects/locations.md): entries of a header byte
/// (1, 4-bit code, 3-bit length - 1 in code units) and code-specific data.
/// Only the start line matters here.
fn line_311(table: &[u8], first: u32, unit: u64) -> Option<u32> {
    let mut i = 0;
    let mut line = first as i64;
    let mut addr = 0u64;
    let next = |i: &mut usize| -> Option<u8> {
        let b = *table.get(*i)?;
        *i += 1;
        Some(b)
    };
    let varint = |i: &mut usize| -> Option<u64> {
        let mut b = next(i)?;
        let mut val = (b & 63) as u64;
        let mut shift = 0;
        while b & 64 != 0 {
            b = next(i)?;
            shift += 6;
            if shift > 60 {
                return None;
            }
            val |= ((b & 63) as u64) << shift;
        }
        Some(val)
    };
    let svarint = |i: &mut usize| -> Option<i64> {
        let u = varint(i)?;
        Some(if u & 1 == 1 {
            -((u >> 1) as i64)
        } else {
            (u >> 1) as i64
        })
    };
    while i < table.len() {
        let head = next(&mut i)?;
        if head & 0x80 == 0 {
            return None; // not at an entry start: corrupt or stale
        }
        let code = (head >> 3) & 15;
        let len = (head & 7) as u64 + 1;
        let here = match code {
            15 => None,
            14 => {
                line += svarint(&mut i)?;
                varint(&mut i)?; // end line delta
                varint(&mut i)?; // column + 1
                varint(&mut i)?; // end column + 1
                Some(line)
            }
            13 => {
                line += svarint(&mut i)?;
                Some(line)
            }
            10..=12 => {
                // One-line forms: the line moves by 0, 1 or 2.
                line += (code - 10) as i64;
                next(&mut i)?;
                next(&mut i)?;
                Some(line)
            }
            _ => {
                next(&mut i)?; // short form: column data
                Some(line)
            }
        };
        if unit >= addr && unit < addr + len {
            return here.and_then(|l| u32::try_from(l).ok());
        }
        addr += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::*};

    proptest! {
        // Line tables are read from the target's memory: any bytes at all.
        #[test]
        fn line_tables_of_any_bytes_never_panic(
            table in vec(any::<u8>(), 0..400),
            first in any::<u32>(),
            at in any::<u64>(),
        ) {
            let _ = line_310(&table, first, at % 1024);
            let _ = line_311(&table, first, at % 1024);
            let _ = line_311(&table, first, at);
        }
    }

    use super::*;

    #[test]
    fn a_code_object_that_does_not_check_out_is_counted_not_shown() {
        // Memory whose ob_type (at 8) is not PyCode_Type: a code object
        // freed and reused since the kernel saw its address.
        let fake = [0u64; 32];
        let interp = Interpreter {
            layout: layout_for((3, 11)).unwrap(),
            runtime: 0,
            code_type: 0xdead_beef,
            module: (0, 0),
        };
        let mut reader = CodeReader::default();
        let me = std::process::id();
        assert!(reader.code(me, &interp, fake.as_ptr() as u64).is_none());
        assert_eq!(reader.stale, 1);
        // Unreadable memory is not a code object either.
        assert!(reader.code(me, &interp, 8).is_none());
        assert_eq!(reader.stale, 2);
    }

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(
            version_from_name("/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"),
            Some((3, 12))
        );
        assert_eq!(version_from_name("/usr/lib/libssl.so.3"), None);
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert!(layout_for((3, 13)).is_some() && layout_for((3, 14)).is_none());
    }

    #[test]
    fn the_311_location_table() {
        // Built by hand, one entry per form.
        let table = [
            0x80 | (13 << 3),
            0, // 1 unit, no-column form, +0 -> 10
            0x80 | (13 << 3) | 1,
            2, // 2 units, +1 (svarint 2) -> 11
            0x80 | (11 << 3) | 1,
            4,
            9,                // 2 units, one-line form +1 -> 12
            0x80 | (15 << 3), // 1 unit, no location
            0x80 | (14 << 3),
            0x4a,
            0x00,
            0,
            1,
            5, // long form, svarint 10 as two varint chunks: +5 -> 17
        ];
        assert_eq!(line_311(&table, 10, 0), Some(10));
        assert_eq!(line_311(&table, 10, 1), Some(11));
        assert_eq!(line_311(&table, 10, 2), Some(11));
        assert_eq!(line_311(&table, 10, 3), Some(12));
        assert_eq!(line_311(&table, 10, 5), None);
        assert_eq!(line_311(&table, 10, 6), Some(17));
        assert_eq!(line_311(&table, 10, 99), None);
    }

    #[test]
    fn the_310_line_table() {
        // 6 bytes at line first+1, 4 bytes with no line, 8 bytes at +2 more.
        let table = [6, 1, 4, 0x80, 8, 2];
        assert_eq!(line_310(&table, 20, 0), Some(21));
        assert_eq!(line_310(&table, 20, 5), Some(21));
        assert_eq!(line_310(&table, 20, 7), None);
        assert_eq!(line_310(&table, 20, 10), Some(23));
        assert_eq!(line_310(&table, 20, 18), None);
    }
}
