//! Native call stacks: the registers and stack copy the kernel took, unwound
//! with each module's DWARF call frame information (`.eh_frame`) by
//! framehop, and symbolized (function, file:line, demangled) by blazesym.
//! Modules are opened through /proc/PID/root, so containers work.

use std::{
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use blazesym::symbolize::{Input, Symbolized, Symbolizer, source};
use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use crate::mapped::{Mapping, executable_mappings};

/// The maps every stack goes through (several lookups per frame): foldhash
/// (seeded per process) instead of SipHash, which took a tenth of the
/// collector's time; the keys are addresses and symbols of the traced
/// programs.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Deepest native stack unwound.
const MAX_FRAMES: usize = 64;
/// Module files kept loaded (and open) before those of exited processes go.
const MAX_CACHED_FILES: usize = 512;

/// One native frame, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeFrame {
    /// Absolute address (the call instruction for return addresses).
    pub addr: u64,
    /// The file it is in, and the offset in that file.
    pub module: String,
    pub file_offset: u64,
    pub function: Option<String>,
    pub source: Option<(String, u32)>,
}

/// A section's bytes, in a read-only mapping of its file: a file is
/// never copied onto the heap (one librustc_driver is 150 MB, and node mode
/// meets every program on the machine); the pages are the page cache's,
/// read in as unwinding touches them.
/// (The default, no file, is empty: framehop builds its section table
/// from a default.)
#[derive(Clone, Default)]
struct SectionData {
    file: Option<Arc<memmap2::Mmap>>,
    range: Range<usize>,
}

impl std::ops::Deref for SectionData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.file {
            Some(file) => &file[self.range.clone()],
            None => &[],
        }
    }
}

/// What a code address resolved to: the function, and the source line.
type Symbol = (Option<String>, Option<(String, u32)>);

/// Unwind data of one file, loaded once and shared by every process
/// mapping it.
struct ModuleFile {
    sections: ExplicitModuleSectionInfo<SectionData>,
}

fn load_module_file(handle: &std::fs::File, path: &Path) -> anyhow::Result<ModuleFile> {
    // SAFETY: a read-only private mapping of a file we only read. A library
    // is replaced by a new file (a new inode), not rewritten in place; one
    // truncated under us would fault the read, as for any reader.
    let data = Arc::new(
        unsafe { memmap2::Mmap::map(handle) }
            .with_context(|| format!("mapping {}", path.display()))?,
    );
    let obj =
        object::File::parse(&**data).with_context(|| format!("parsing {}", path.display()))?;
    // The bytes of a file range, where the file has them.
    let bytes = |range: Option<(u64, u64)>| -> Option<SectionData> {
        let (start, size) = range?;
        let start = usize::try_from(start).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        (end <= data.len()).then(|| SectionData {
            file: Some(data.clone()),
            range: start..end,
        })
    };
    let section = |name: &str| -> (Option<Range<u64>>, Option<SectionData>) {
        match obj.section_by_name(name) {
            Some(s) => (
                Some(s.address()..s.address() + s.size()),
                bytes(s.file_range()),
            ),
            None => (None, None),
        }
    };
    let base_svma = obj
        .segments()
        .find(|s| s.file_range().0 == 0)
        .map_or(0, |s| s.address());
    let (text_svma, text) = section(".text");
    let (eh_frame_svma, eh_frame) = section(".eh_frame");
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr");
    let (_, debug_frame) = section(".debug_frame");
    // The executable segment, for prologue/epilogue analysis.
    let exec_segment = text_svma.as_ref().and_then(|t| {
        obj.segments()
            .find(|s| s.address() <= t.start && t.start < s.address() + s.size())
    });
    let (text_segment_svma, text_segment) = match exec_segment {
        Some(s) => (
            Some(s.address()..s.address() + s.size()),
            bytes(Some(s.file_range())),
        ),
        None => (None, None),
    };
    Ok(ModuleFile {
        sections: ExplicitModuleSectionInfo {
            base_svma,
            text_svma,
            text,
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            debug_frame,
            text_segment_svma,
            text_segment,
            ..Default::default()
        },
    })
}

/// What one process maps, ready to unwind.
struct ProcessModules {
    unwinder: UnwinderX86_64<SectionData>,
    maps: Vec<Mapping>,
}

impl ProcessModules {
    fn find(&self, addr: u64) -> Option<(&Mapping, u64)> {
        self.maps.iter().find_map(|m| {
            m.exec
                .iter()
                .find(|(s, e, _)| addr >= *s && addr < *e)
                .map(|(s, _, off)| (m, addr - s + off))
        })
    }
}

#[derive(Default)]
pub struct NativeUnwinder {
    files: HashMap<(u64, u64), Option<Arc<ModuleFile>>>,
    /// Each file, kept open from when its process was alive: symbolizing
    /// goes through /proc/self/fd, which works after the process is gone.
    open_files: HashMap<(u64, u64), std::fs::File>,
    /// The last maps seen of each process, for stacks that arrive after it
    /// exited.
    known_maps: HashMap<u32, Vec<Mapping>>,
    /// Forked children not unwound yet, with their parent's maps (theirs
    /// until they exec): a child that calls once and exits needs no read
    /// of its own maps, which it may no longer have when its stack comes.
    forked: HashMap<u32, Vec<Mapping>>,
    processes: HashMap<u32, ProcessModules>,
    symbolizer: Option<Symbolizer>,
    symbols: HashMap<(u64, u64, u64), Symbol>,
    /// Go executables by file, read on their first frame without a
    /// symbol (a stripped Go binary keeps its function table).
    go_files: HashMap<(u64, u64), Option<crate::golang::GoBinary>>,
    /// framehop's unwind rules by address, kept from one stack to the next:
    /// parsing the CFI again for every stack was a tenth of the collector's
    /// time at 10,000 lookups a second. Entries carry the generation of
    /// the unwinder that made them (unique across unwinders), so one cache
    /// serves every process.
    rules: Option<CacheX86_64>,
}

impl NativeUnwinder {
    fn process(&mut self, pid: u32, ip: u64) -> Option<&ProcessModules> {
        // (Re)build when the process is new or the address is in code we do
        // not know yet (a library loaded since).
        let known = self
            .processes
            .get(&pid)
            .is_some_and(|p| p.find(ip).is_some());
        if !known {
            // A child's own maps once it runs code its parent did not map.
            // Else what the process mapped when it was last probed, if
            // that has the address: a stack is read here a moment after
            // its call, and by then the process may have exec'd (its exec
            // is taken in order, after this stack, and forgets them).
            let mut maps = match self.forked.remove(&pid) {
                Some(parents) if parents.iter().any(|m| m.contains(ip)) => parents,
                _ => match self.known_maps.get(&pid) {
                    Some(known) if known.iter().any(|m| m.contains(ip)) => known.clone(),
                    _ => executable_mappings(pid),
                },
            };
            if maps.is_empty() {
                maps = self.known_maps.get(&pid)?.clone();
            }
            let mut unwinder = UnwinderX86_64::new();
            for m in &maps {
                let key = (m.dev, m.inode);
                if !self.files.contains_key(&key) {
                    let loaded = m.open(pid).and_then(|(path, handle)| {
                        let file = load_module_file(&handle, &path)?;
                        self.open_files.insert(key, handle);
                        Ok(file)
                    });
                    let loaded = loaded
                        .map_err(|e| log::debug!("no unwind data: {e:#}"))
                        .ok()
                        .map(Arc::new);
                    self.files.insert(key, loaded);
                }
                let file = self.files[&key].clone();
                let (Some(file), Some(base)) = (file, m.base) else {
                    continue;
                };
                let start = m.exec.iter().map(|r| r.0).min().unwrap_or(0);
                let end = m.exec.iter().map(|r| r.1).max().unwrap_or(0);
                unwinder.add_module(Module::new(
                    m.path.clone(),
                    start..end,
                    base,
                    file.sections.clone(),
                ));
            }
            self.processes
                .insert(pid, ProcessModules { unwinder, maps });
        }
        self.processes.get(&pid)
    }

    /// Unwinds a stack copy; returns the frame addresses, leaf first
    /// (return addresses already moved back into their call instruction).
    pub fn unwind(&mut self, pid: u32, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Vec<u64> {
        let mut cache = self.rules.take().unwrap_or_default();
        // At the entry of a Go function (a probe there) the frame is not
        // made yet: the return address is at sp and rbp is the caller's.
        let at_go_entry = self.process(pid, ip).is_some()
            && self
                .go_binary(pid, ip)
                .is_some_and(|(go, vaddr)| go.is_entry(vaddr));
        let frames = if at_go_entry {
            self.go_frames(pid, ip, sp, bp, stack)
        } else {
            self.unwind_with(&mut cache, pid, ip, sp, bp, stack)
        };
        self.rules = Some(cache);
        frames
    }

    /// A goroutine's stack from the entry of a Go function, by its frame
    /// pointers: the return address at sp, then each frame's saved rbp and
    /// return address above it, until the chain leaves the copy or the
    /// code. Not framehop's: Go code has no CFI, and framehop's stacks
    /// from here stopped at the caller in Debian's Prometheus (Go 1.19.8,
    /// cgo), for a reason not found (the test fixture, built with cgo and
    /// linked by gcc the same way, unwound whole).
    fn go_frames(&mut self, pid: u32, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> Vec<u64> {
        let word = |addr: u64| -> Option<u64> {
            let off = usize::try_from(addr.checked_sub(sp)?).ok()?;
            let bytes = stack.get(off..off.checked_add(8)?)?;
            Some(u64::from_ne_bytes(bytes.try_into().ok()?))
        };
        let Some(p) = self.process(pid, ip) else {
            return vec![ip];
        };
        let mut frames = vec![ip];
        // A return address is after its call: its line is the call's, one
        // byte back.
        let mut ret = word(sp);
        let mut bp = bp;
        while let Some(ra) = ret.filter(|&ra| ra != 0 && p.find(ra).is_some()) {
            frames.push(ra - 1);
            if frames.len() >= MAX_FRAMES || bp == 0 {
                break;
            }
            ret = word(bp + 8);
            // The outermost frame (runtime.goexit's caller) saved a 0.
            bp = word(bp).filter(|&next| next > bp).unwrap_or(0);
        }
        frames
    }

    fn unwind_with(
        &mut self,
        cache: &mut CacheX86_64,
        pid: u32,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
    ) -> Vec<u64> {
        let Some(p) = self.process(pid, ip) else {
            return vec![ip];
        };
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(off..off + 8).ok_or(())?;
            Ok(u64::from_ne_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut frames = Vec::new();
        let mut iter = p.unwinder.iter_frames(ip, regs, cache, &mut read_stack);
        loop {
            let frame = match iter.next() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    log::debug!(
                        "unwinding PID {pid} (ip {ip:#x} sp {sp:#x}, {} stack bytes) stopped \
                         after {} frames: {e}",
                        stack.len(),
                        frames.len()
                    );
                    break;
                }
            };
            let addr = match frame {
                FrameAddress::InstructionPointer(a) => a,
                FrameAddress::ReturnAddress(a) => a.get() - 1,
            };
            // An address in no module: the unwind went past the copied
            // stack into garbage. Stop rather than show it.
            if !frames.is_empty() && p.find(addr).is_none() {
                break;
            }
            frames.push(addr);
            if frames.len() >= MAX_FRAMES {
                break;
            }
        }
        if frames.is_empty() {
            frames.push(ip);
        }
        frames
    }

    /// The file an address is in, and where in it.
    pub fn module_of(&self, pid: u32, addr: u64) -> Option<(String, u64, (u64, u64))> {
        let p = self.processes.get(&pid)?;
        let (m, off) = p.find(addr)?;
        Some((m.path.clone(), off, (m.dev, m.inode)))
    }

    /// Names `getaddrinfo` in the C library of `pid`, ahead of its first
    /// stack: the first name asked of a file makes blazesym read its
    /// symbols and, for libc, the DWARF of its debug file (some 40 to 100
    /// ms, 10 MB decompressed), which the collector would otherwise spend
    /// while the ring buffer fills. Names are kept by file, so this serves
    /// every process that maps the same libc.
    pub fn warm_up(&mut self, pid: u32) {
        let maps = executable_mappings(pid);
        let Some(libc) = maps.iter().find(|m| crate::mapped::is_libc(&m.path)) else {
            return;
        };
        let offset = libc.file_path(pid).ok().and_then(|path| {
            crate::elf::function_offsets(&path, &["getaddrinfo"])
                .ok()?
                .get("getaddrinfo")
                .copied()
        });
        let addr = offset.and_then(|off| {
            libc.exec
                .iter()
                .find(|&&(start, end, file_off)| off >= file_off && off - file_off < end - start)
                .map(|&(start, _, file_off)| start + (off - file_off))
        });
        if let Some(addr) = addr
            && self.process(pid, addr).is_some()
        {
            let _ = self.symbolize(pid, addr);
        }
    }

    /// Remembers what a process maps (seen while it was alive).
    pub fn remember_maps(&mut self, pid: u32, maps: Vec<Mapping>) {
        self.known_maps.insert(pid, maps);
    }

    /// Names a native frame: function and source line where the file has
    /// them; module+offset where it is stripped.
    /// Makes a process's modules known for naming frames the kernel
    /// unwound: its maps are read again when one of `addrs` is in code
    /// not known yet (a library loaded since), once.
    pub fn learn_addresses(&mut self, pid: u32, addrs: &[u64]) {
        let unknown = addrs
            .iter()
            .copied()
            .find(|&a| self.processes.get(&pid).is_none_or(|p| p.find(a).is_none()));
        if let Some(addr) = unknown {
            let _ = self.process(pid, addr);
        }
    }

    pub fn symbolize(&mut self, pid: u32, addr: u64) -> NativeFrame {
        let Some((module, file_offset, file)) = self.module_of(pid, addr) else {
            return NativeFrame {
                addr,
                module: "?".into(),
                file_offset: addr,
                function: None,
                source: None,
            };
        };
        let key = (file.0, file.1, file_offset);
        if !self.symbols.contains_key(&key) {
            let path = self
                .file_path(pid, addr, file)
                .unwrap_or_else(|| PathBuf::from(&module));
            let symbolizer = self.symbolizer.get_or_insert_with(Symbolizer::new);
            let src = source::Source::Elf(source::Elf::new(path.clone()));
            let result = symbolizer.symbolize_single(&src, Input::FileOffset(file_offset));
            if let Err(e) = &result {
                log::debug!("symbolizing {module}+{file_offset:#x}: {e:#}");
            }
            let resolved = match result {
                Ok(Symbolized::Sym(sym)) => (
                    Some(sym.name.to_string()),
                    sym.code_info.as_ref().and_then(|ci| {
                        let file = Path::new(&ci.file)
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())?;
                        Some((file, ci.line?))
                    }),
                ),
                _ => (None, None),
            };
            let resolved = match resolved {
                (None, _) => self.go_symbol(file, &path, file_offset),
                named => named,
            };
            self.symbols.insert(key, resolved);
        }
        let (function, source) = self.symbols[&key].clone();
        NativeFrame {
            addr,
            module,
            file_offset,
            function,
            source,
        }
    }

    /// The Go executable an address of a process is in, if it is one, and
    /// the address as a virtual address of that file.
    fn go_binary(&mut self, pid: u32, addr: u64) -> Option<(&crate::golang::GoBinary, u64)> {
        let (_, file_offset, file) = self.module_of(pid, addr)?;
        let path = self.file_path(pid, addr, file)?;
        let go = self.go_file(file, &path)?;
        Some((go, go.vaddr_of_offset(file_offset)?))
    }

    /// A path to read a process's mapped file by: its descriptor kept open,
    /// else through /proc.
    fn file_path(&self, pid: u32, addr: u64, file: (u64, u64)) -> Option<PathBuf> {
        match self.open_files.get(&file) {
            Some(f) => {
                use std::os::fd::AsRawFd as _;
                Some(PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())))
            }
            None => self
                .processes
                .get(&pid)
                .and_then(|p| p.find(addr))
                .and_then(|(m, _)| m.file_path(pid).ok()),
        }
    }

    /// A file as a Go executable, read once (None: not one).
    fn go_file(&mut self, file: (u64, u64), path: &Path) -> Option<&crate::golang::GoBinary> {
        self.go_files
            .entry(file)
            .or_insert_with(|| {
                crate::golang::GoBinary::open(path)
                    .map_err(|e| log::debug!("{}: {e:#}", path.display()))
                    .ok()
                    .flatten()
            })
            .as_ref()
    }

    /// Names an address of a Go executable from its function table.
    fn go_symbol(&mut self, file: (u64, u64), path: &Path, file_offset: u64) -> Symbol {
        let Some(frame) = self
            .go_file(file, path)
            .and_then(|go| go.frame(go.vaddr_of_offset(file_offset)?))
        else {
            return (None, None);
        };
        let source = frame.file.zip(frame.line).map(|(file, line)| {
            let base = file.rsplit('/').next().unwrap_or(&file).to_string();
            (base, line)
        });
        (Some(frame.function), source)
    }

    /// Forgets a process that exited; past `MAX_CACHED_FILES`, also the
    /// files no remaining process maps (node mode meets every program a
    /// machine runs: each kept file is a descriptor).
    /// A traced process forked `child`: it maps what `parent` maps.
    pub fn inherit(&mut self, parent: u32, child: u32) {
        let maps = self
            .processes
            .get(&parent)
            .map(|p| &p.maps)
            .or_else(|| self.known_maps.get(&parent));
        if let Some(maps) = maps {
            self.forked.insert(child, maps.clone());
        }
    }

    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
        self.known_maps.remove(&pid);
        self.forked.remove(&pid);
        if self.files.len() <= MAX_CACHED_FILES {
            return;
        }
        let in_use: std::collections::HashSet<(u64, u64)> = self
            .processes
            .values()
            .flat_map(|p| p.maps.iter().map(|m| (m.dev, m.inode)))
            .collect();
        self.files.retain(|key, _| in_use.contains(key));
        self.go_files.retain(|key, _| in_use.contains(key));
        let files = &self.files;
        self.open_files.retain(|key, _| files.contains_key(key));
        self.symbols
            .retain(|(dev, ino, _), _| files.contains_key(&(*dev, *ino)));
        // The symbolizer caches by path, /proc/self/fd/N: a closed
        // descriptor's number comes back for another file.
        self.symbolizer = None;
    }
}

#[cfg(test)]
mod tests;
