//! What a Go executable says of itself, stripped or not: its Go version
//! (`.go.buildinfo`), its functions with their bounds, files and lines
//! (`.gopclntab`, which `-ldflags='-s -w'` keeps), and the return
//! instructions of a function, where the tracer puts the probes that stand
//! for return probes (a uretprobe rewrites a return address on the
//! goroutine's stack, which Go moves and walks: the program crashes).
//!
//! The table layouts are Go's `runtime/symtab.go` (`pcHeader`, `_func`)
//! and `debug/buildinfo`, for the layout of Go 1.18 and later.

use std::{fs::File, ops::Range, path::Path};

use anyhow::{Context as _, anyhow, bail};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

/// `pcHeader.magic` of Go 1.18 and 1.19, and of Go 1.20 and later: the
/// same layout but for a field of `_func` that nothing here reads.
const PCLNTAB_MAGICS: [u32; 2] = [0xffff_fff0, 0xffff_fff1];

/// The oldest and newest Go whose layouts the probes were checked against
/// (the register ABI, `crypto/tls.Conn` to its fd, the resolver's
/// signatures): from 1.18, whose function table the reader knows, to 1.23.
const KNOWN_MINORS: std::ops::RangeInclusive<u32> = 18..=23;

/// A Go executable, read once.
pub struct GoBinary {
    data: memmap2::Mmap,
    /// `go1.22.12`, from `.go.buildinfo` (absent in some odd builds).
    pub version: Option<String>,
    /// Where `.gopclntab` is in the file, if its layout is one we read.
    pclntab: Option<Range<usize>>,
    /// (vaddr, file offset, size) of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
    /// `moduledata.gofunc`: the base of the function data offsets (the
    /// inline trees), found by the module data that points at the table.
    gofunc: Option<u64>,
}

/// One function of the table: its name and bounds (the end is the next
/// function's entry, padding included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    pub name: String,
    pub entry: u64,
    pub end: u64,
    /// Offset of its `_func` record in the table.
    func_off: usize,
}

/// Where a program counter is in Go source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl GoBinary {
    /// Reads `path`; `Ok(None)` when it is not a Go executable.
    pub fn open(path: &Path) -> anyhow::Result<Option<Self>> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: a read-only private mapping of a file we only read.
        let data = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let obj =
            object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
        let segments: Vec<(u64, u64, u64)> = obj
            .segments()
            .map(|s| (s.address(), s.file_range().0, s.file_range().1))
            .collect();
        let buildinfo = obj
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.file_range());
        let pcln = obj
            .section_by_name(".gopclntab")
            .or_else(|| obj.section_by_name(".data.rel.ro.gopclntab"));
        let pcln_vaddr = pcln.as_ref().map(|s| s.address());
        let pcln_section = pcln.and_then(|s| s.file_range());
        let writable: Vec<(u64, u64)> = obj
            .segments()
            .filter(|s| s.flags() == object::SegmentFlags::Elf { p_flags: 6 })
            .map(|s| s.file_range())
            .collect();
        if buildinfo.is_none() && pcln_section.is_none() {
            return Ok(None);
        }
        let version = buildinfo.and_then(|(off, size)| {
            let bytes = data.get(off as usize..(off + size) as usize)?;
            build_version(bytes, &data, &segments)
        });
        let pclntab = pcln_section.and_then(|(off, size)| {
            let range = off as usize..(off + size) as usize;
            let magic =
                u32::from_le_bytes(data.get(range.start..range.start + 4)?.try_into().ok()?);
            PCLNTAB_MAGICS.contains(&magic).then_some(range)
        });
        let mut go = Self {
            data,
            version,
            pclntab,
            segments,
            gofunc: None,
        };
        go.gofunc = pcln_vaddr.and_then(|va| go.find_gofunc(va, &writable));
        Ok(Some(go))
    }

    /// The minor version (22 for go1.22.12).
    pub fn minor(&self) -> Option<u32> {
        let v = self.version.as_deref()?.strip_prefix("go1.")?;
        v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }

    /// Why the tracer cannot probe this binary's Go functions, if it
    /// cannot: an unknown version or function table.
    pub fn unknown_layout(&self) -> Option<String> {
        let version = self.version.as_deref().unwrap_or("an unknown Go version");
        match self.minor() {
            _ if self.pclntab.is_none() => Some(format!(
                "{version}: its function table (.gopclntab) is missing or of a layout before Go 1.18"
            )),
            Some(m) if KNOWN_MINORS.contains(&m) => None,
            Some(_) => Some(format!(
                "{version}: the tracer knows the layouts of Go 1.{} to 1.{}",
                KNOWN_MINORS.start(),
                KNOWN_MINORS.end()
            )),
            None => Some(format!("{version}: no Go version in .go.buildinfo")),
        }
    }

    fn table(&self) -> anyhow::Result<Pclntab<'_>> {
        let range = self
            .pclntab
            .clone()
            .ok_or_else(|| anyhow!("no .gopclntab of a known layout"))?;
        Pclntab::new(&self.data[range])
    }

    /// The functions named in `names` that the binary has.
    pub fn functions(&self, names: &[&str]) -> anyhow::Result<Vec<GoFunction>> {
        let table = self.table()?;
        let mut found = Vec::new();
        for i in 0..table.nfunc {
            let func_off = table.func_off(i)?;
            let name = table.func_name(func_off)?;
            if names.contains(&name) {
                found.push(table.function(i, func_off, name)?);
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    /// The source line of a virtual address, as the code there says:
    /// inside code inlined into a function, the inlined code's file and
    /// line (what `go tool objdump` shows).
    pub fn line_of(&self, pc: u64) -> Option<GoFrame> {
        let table = self.table().ok()?;
        let i = table.find(pc)?;
        let func_off = table.func_off(i).ok()?;
        let function = table.func_name(func_off).ok()?.to_string();
        let f = table.function(i, func_off, &function).ok()?;
        Some(table.position(&f, pc, function))
    }

    /// The function of a virtual address and its line there, as a stack
    /// trace names it: the function the code was compiled in, at the line
    /// of the call that inlined the code (Go's inline tree, walked up to
    /// the function itself; without it, the inlined code's line).
    pub fn frame(&self, pc: u64) -> Option<GoFrame> {
        let table = self.table().ok()?;
        let i = table.find(pc)?;
        let func_off = table.func_off(i).ok()?;
        let function = table.func_name(func_off).ok()?.to_string();
        let f = table.function(i, func_off, &function).ok()?;
        let outer = self.outermost_pc(&table, &f, pc).unwrap_or(pc);
        Some(table.position(&f, outer, function))
    }

    /// Walks the inline tree from `pc` to a pc of `f`'s own code whose
    /// line is the outermost inlined call's.
    fn outermost_pc(&self, table: &Pclntab<'_>, f: &GoFunction, pc: u64) -> Option<u64> {
        let (tree_off, record, parent_pc_at) = table.inline_tree(f.func_off)?;
        let tree = self.gofunc? + u64::from(tree_off);
        let mut at = pc;
        // Inlining is at most a few levels deep: a bound for a bad table.
        for _ in 0..32 {
            let index = table.pc_value(
                table.pcdata(f.func_off, PCDATA_INL_TREE_INDEX)?,
                f.entry,
                at,
            );
            let Some(index) = index.filter(|&i| i >= 0) else {
                return Some(at);
            };
            let parent_pc = self.i32_at_vaddr(tree + index as u64 * record + parent_pc_at)?;
            at = f.entry + u64::try_from(parent_pc).ok()?;
        }
        None
    }

    fn i32_at_vaddr(&self, vaddr: u64) -> Option<i32> {
        let off = self.file_offset(vaddr)? as usize;
        Some(i32::from_le_bytes(
            self.data.get(off..off + 4)?.try_into().ok()?,
        ))
    }

    /// `moduledata.gofunc`: the module data is the word in a writable
    /// segment that points at the function table, followed by the
    /// function name table's address; gofunc is its word 38 (Go 1.18 and
    /// 1.19) or 40 (1.20 and later, after the coverage counters).
    fn find_gofunc(&self, pclntab_vaddr: u64, writable: &[(u64, u64)]) -> Option<u64> {
        let table = self.table().ok()?;
        let funcnames = pclntab_vaddr + table.funcnames as u64;
        let word_index = if table.old_func_layout { 38 } else { 40 };
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                self.data.get(at..at + 8)?.try_into().ok()?,
            ))
        };
        for &(start, size) in writable {
            let (start, end) = (start as usize, (start + size) as usize);
            let mut at = start;
            while at + 8 * (word_index + 1) <= end {
                if word(at) == Some(pclntab_vaddr) && word(at + 8) == Some(funcnames) {
                    let gofunc = word(at + 8 * word_index)?;
                    return self.file_offset(gofunc).map(|_| gofunc);
                }
                at += 8;
            }
        }
        None
    }

    /// The virtual address of a file offset (in a loadable segment).
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(_, off, size)| (*off..*off + *size).contains(&offset))
            .map(|(va, off, _)| offset - off + va)
    }

    /// Whether `pc` is the first instruction of a function.
    pub fn is_entry(&self, pc: u64) -> bool {
        self.table().ok().and_then(|t| t.entry(t.find(pc)?).ok()) == Some(pc)
    }

    /// The file offset of a virtual address.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(va, _, size)| (*va..*va + *size).contains(&vaddr))
            .map(|(va, off, _)| vaddr - va + off)
    }

    /// The file offsets of `f`'s return instructions, found by decoding
    /// it from its entry. Fails rather than guess when an instruction does
    /// not decode.
    pub fn return_offsets(&self, f: &GoFunction) -> anyhow::Result<Vec<u64>> {
        use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic};
        let start = self
            .file_offset(f.entry)
            .ok_or_else(|| anyhow!("{} is in no segment of the file", f.name))?;
        let bytes = self
            .data
            .get(start as usize..(start + (f.end - f.entry)) as usize)
            .ok_or_else(|| anyhow!("{} runs past the end of the file", f.name))?;
        let mut decoder = Decoder::with_ip(64, bytes, f.entry, DecoderOptions::NONE);
        let mut rets = Vec::new();
        for ins in &mut decoder {
            // The padding after the function is INT3s: nothing to see.
            if ins.code() == Code::INVALID {
                bail!("{}: no instruction at {:#x}", f.name, ins.ip());
            }
            if ins.mnemonic() == Mnemonic::Ret {
                rets.push(ins.ip() - f.entry + start);
            }
        }
        if rets.is_empty() {
            bail!("{}: no return instruction", f.name);
        }
        Ok(rets)
    }
}

// `_func` fields read here (the same offsets from Go 1.18 on).
const FUNC_NAME: usize = 4;
const FUNC_PCFILE: usize = 20;
const FUNC_PCLN: usize = 24;
const FUNC_NPCDATA: usize = 28;
const FUNC_CU: usize = 32;
/// `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree`.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;

/// `.gopclntab`, Go 1.18 and later.
struct Pclntab<'a> {
    data: &'a [u8],
    /// Go 1.18 and 1.19 (magic 0xfffffff0): `_func` has no startLine, and
    /// an inlined call's record is 20 bytes, not 16.
    old_func_layout: bool,
    nfunc: usize,
    text_start: u64,
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    /// The function table: `nfunc + 1` pairs (entry offset, `_func` offset).
    functab: usize,
}

impl<'a> Pclntab<'a> {
    fn new(data: &'a [u8]) -> anyhow::Result<Self> {
        if data.len() < 8 + 8 * 8 || data[6] != 1 || data[7] != 8 {
            bail!("not an amd64 function table");
        }
        let word = |i: usize| u64::from_le_bytes(data[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        let offset = |i: usize| -> anyhow::Result<usize> {
            let o = word(i) as usize;
            (o < data.len())
                .then_some(o)
                .ok_or_else(|| anyhow!("function table header word {i} out of range"))
        };
        let t = Self {
            data,
            old_func_layout: data[..4] == PCLNTAB_MAGICS[0].to_le_bytes(),
            nfunc: word(0) as usize,
            text_start: word(2),
            funcnames: offset(3)?,
            cutab: offset(4)?,
            filetab: offset(5)?,
            pctab: offset(6)?,
            functab: offset(7)?,
        };
        if t.functab + (t.nfunc + 1) * 8 > data.len() {
            bail!("function table runs past its section");
        }
        Ok(t)
    }

    fn u32_at(&self, at: usize) -> anyhow::Result<u32> {
        self.data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| anyhow!("offset {at:#x} past the function table"))
    }

    fn entry(&self, i: usize) -> anyhow::Result<u64> {
        Ok(self.text_start + u64::from(self.u32_at(self.functab + 8 * i)?))
    }

    fn func_off(&self, i: usize) -> anyhow::Result<usize> {
        Ok(self.functab + self.u32_at(self.functab + 8 * i + 4)? as usize)
    }

    fn c_str(&self, at: usize) -> Option<&'a str> {
        let rest = self.data.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    fn func_name(&self, func_off: usize) -> anyhow::Result<&'a str> {
        let name_off = self.u32_at(func_off + FUNC_NAME)? as usize;
        self.c_str(self.funcnames + name_off)
            .ok_or_else(|| anyhow!("bad function name at {name_off:#x}"))
    }

    fn function(&self, i: usize, func_off: usize, name: &str) -> anyhow::Result<GoFunction> {
        Ok(GoFunction {
            name: name.to_string(),
            entry: self.entry(i)?,
            end: self.entry(i + 1)?,
            func_off,
        })
    }

    /// The function holding `pc`: a binary search of the entries.
    fn find(&self, pc: u64) -> Option<usize> {
        if self.nfunc == 0 || pc < self.entry(0).ok()? || pc >= self.entry(self.nfunc).ok()? {
            return None;
        }
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.entry(mid).ok()? <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// Runs the pc-value program whose offset is at `field` for `pc`
    /// (runtime.pcvalue): pairs of a zig-zag value delta and a pc delta,
    /// from value -1 at the entry.
    fn pc_value(&self, field: usize, entry: u64, pc: u64) -> Option<i64> {
        let off = self.u32_at(field).ok()? as usize;
        if off == 0 {
            return None;
        }
        let mut p = self.pctab + off;
        let mut value: i64 = -1;
        let mut at = entry;
        let mut first = true;
        loop {
            let (uv, n) = varint(self.data.get(p..)?)?;
            p += n;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            let delta = if uv & 1 != 0 {
                !(uv >> 1) as i64
            } else {
                (uv >> 1) as i64
            };
            let (pc_delta, n) = varint(self.data.get(p..)?)?;
            p += n;
            value += delta;
            at += pc_delta;
            if pc < at {
                return Some(value);
            }
        }
    }

    /// The file and line of `pc`, in function `f` named `function`.
    fn position(&self, f: &GoFunction, pc: u64, function: String) -> GoFrame {
        let file_index = self.pc_value(f.func_off + FUNC_PCFILE, f.entry, pc);
        let line = self.pc_value(f.func_off + FUNC_PCLN, f.entry, pc);
        GoFrame {
            file: file_index.and_then(|n| self.file_name(f.func_off, n)),
            line: line.and_then(|l| u32::try_from(l).ok()),
            function,
        }
    }

    /// Size of `_func`'s fixed part: its pcdata offsets follow.
    fn func_size(&self) -> usize {
        if self.old_func_layout { 40 } else { 44 }
    }

    /// Where the offset of the function's `i`th pc-data table is.
    fn pcdata(&self, func_off: usize, i: u32) -> Option<usize> {
        let n = self.u32_at(func_off + FUNC_NPCDATA).ok()?;
        (i < n).then(|| func_off + self.func_size() + 4 * i as usize)
    }

    /// The function's inline tree: its offset from gofunc, the size of a
    /// record and where in it the parent's pc is; None if it has none.
    fn inline_tree(&self, func_off: usize) -> Option<(u32, u64, u64)> {
        let npcdata = self.u32_at(func_off + FUNC_NPCDATA).ok()? as usize;
        let nfuncdata = *self.data.get(func_off + self.func_size() - 1)? as u32;
        if FUNCDATA_INL_TREE >= nfuncdata {
            return None;
        }
        let at = func_off + self.func_size() + 4 * npcdata + 4 * FUNCDATA_INL_TREE as usize;
        let off = self.u32_at(at).ok()?;
        if off == u32::MAX {
            return None;
        }
        Some(if self.old_func_layout {
            (off, 20, 16)
        } else {
            (off, 16, 8)
        })
    }

    /// The name of the function's `n`th file (through its compilation
    /// unit's slice of the file table).
    fn file_name(&self, func_off: usize, n: i64) -> Option<String> {
        let cu = self.u32_at(func_off + FUNC_CU).ok()? as usize;
        let at = self.cutab + 4 * (cu + usize::try_from(n).ok()?);
        let file_off = self.u32_at(at).ok()?;
        if file_off == u32::MAX {
            return None;
        }
        self.c_str(self.filetab + file_off as usize)
            .map(str::to_string)
    }
}

/// An unsigned LEB128 number and its length.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The Go version in `.go.buildinfo`: "\xff Go buildinf:", the pointer
/// size, flags, then either the version inline (flag bit 1: a varint
/// length and the bytes, at 32) or, before Go 1.18, the address of a Go
/// string header at 16.
fn build_version(section: &[u8], file: &[u8], segments: &[(u64, u64, u64)]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !section.starts_with(MAGIC) || section.len() < 32 {
        return None;
    }
    let text = if section[15] & 2 != 0 {
        let (len, n) = varint(&section[32..])?;
        section.get(32 + n..32 + n + len as usize)?
    } else {
        let at_vaddr = |va: u64| -> Option<usize> {
            let (seg_va, off, _) = segments
                .iter()
                .find(|(s, _, size)| (*s..*s + *size).contains(&va))?;
            Some((va - seg_va + off) as usize)
        };
        let word =
            |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let header = at_vaddr(word(section, 16)?)?;
        let (ptr, len) = (word(file, header)?, word(file, header + 8)?);
        let start = at_vaddr(ptr)?;
        file.get(start..start + len as usize)?
    };
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_values() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x96, 0x01]), Some((150, 2)));
        assert_eq!(varint(&[0x80]), None);
    }

    #[test]
    fn a_binary_that_is_not_go_is_none() {
        let exe = std::env::current_exe().unwrap();
        assert!(GoBinary::open(&exe).unwrap().is_none());
    }

    /// Builds a small Go program with Debian's Go `minor` into a
    /// directory under target/, stripped or not.
    fn build_go(minor: u32, stripped: bool) -> std::path::PathBuf {
        let go = format!("/usr/lib/go-1.{minor}/bin/go");
        assert!(
            Path::new(&go).exists(),
            "{go} missing: `cargo xtask setup` installs Debian's golang-1.{minor}-go"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-unit");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("lookup.go");
        std::fs::write(
            &src,
            "package main\nimport (\"fmt\"; \"net\")\n\
             func main() { a, err := net.LookupHost(\"localhost\"); fmt.Println(a, err) }\n",
        )
        .unwrap();
        let out = dir.join(format!("lookup-{minor}-{stripped}"));
        let mut cmd = std::process::Command::new(&go);
        cmd.arg("build").arg("-o").arg(&out);
        if stripped {
            cmd.arg("-ldflags=-s -w");
        }
        let status = cmd
            .arg(&src)
            .env("GOCACHE", dir.join(format!("cache-{minor}")))
            .env("GOPATH", dir.join("gopath"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .status()
            .unwrap();
        assert!(status.success(), "{go} build failed");
        out
    }

    /// `go tool objdump -s FUNC` of an unstripped build: (address, file,
    /// line, whether a RET) per instruction.
    fn objdump(minor: u32, exe: &Path, func: &str) -> Vec<(u64, String, u32, bool)> {
        let out = std::process::Command::new(format!("/usr/lib/go-1.{minor}/bin/go"))
            .args(["tool", "objdump", "-s"])
            .arg(format!(
                "^{}$",
                func.replace('(', "\\(")
                    .replace(')', "\\)")
                    .replace('*', "\\*")
            ))
            .arg(exe)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| l.starts_with("  "))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (file, line) = f.next()?.rsplit_once(':')?;
                let addr = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
                let is_ret = l.contains("\tRET");
                Some((addr, file.to_string(), line.parse().ok()?, is_ret))
            })
            .collect()
    }

    /// Against Go's own disassembler, for the oldest and newest Go known:
    /// the stripped binary's version, function bounds, every return
    /// instruction and every instruction's file and line.
    #[test]
    fn agrees_with_go_tool_objdump_on_a_stripped_binary() {
        const FUNC: &str = "net.(*Resolver).lookupHost";
        for minor in [19, 23] {
            let full = build_go(minor, false);
            let truth = objdump(minor, &full, FUNC);
            assert!(truth.len() > 20, "go {minor}: objdump gave {truth:?}");
            let stripped = build_go(minor, true);
            let go = GoBinary::open(&stripped).unwrap().expect("a Go binary");
            assert!(
                go.version
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("go1.{minor}.")),
                "{:?}",
                go.version
            );
            assert_eq!(go.unknown_layout(), None);
            let f = go.functions(&[FUNC]).unwrap();
            assert_eq!(f.len(), 1, "{f:?}");
            let f = &f[0];
            assert_eq!(f.entry, truth[0].0);
            let rets: Vec<u64> = go.return_offsets(f).unwrap();
            let true_rets: Vec<u64> = truth
                .iter()
                .filter(|t| t.3)
                .map(|t| go.file_offset(t.0).unwrap())
                .collect();
            assert_eq!(rets, true_rets, "go {minor}");
            // As a stack trace names them: every instruction is in the
            // function's own file, inlined code at the line of its call.
            let own_file = go.frame(f.entry).unwrap().file.unwrap();
            assert!(own_file.ends_with("lookup_unix.go"), "{own_file}");
            assert!(
                truth.iter().any(|t| !t.1.ends_with("lookup_unix.go")),
                "no inlined code"
            );
            for (addr, ..) in &truth {
                let frame = go.frame(*addr).unwrap();
                assert_eq!(frame.function, FUNC);
                assert_eq!(
                    frame.file.as_deref(),
                    Some(own_file.as_str()),
                    "go {minor} at {addr:#x}"
                );
            }
            for (addr, file, line, _) in &truth {
                let frame = go.line_of(*addr).unwrap();
                assert_eq!(frame.function, FUNC);
                assert!(
                    file.ends_with(frame.file.as_deref().unwrap().rsplit('/').next().unwrap()),
                    "{frame:?} vs {file}"
                );
                assert_eq!(frame.line, Some(*line), "go {minor} at {addr:#x}");
            }
        }
    }

    #[test]
    fn the_inline_build_version_is_read() {
        let mut section = b"\xff Go buildinf:\x08\x02".to_vec();
        section.resize(32, 0);
        section.push(9);
        section.extend_from_slice(b"go1.22.12");
        assert_eq!(
            build_version(&section, &[], &[]).as_deref(),
            Some("go1.22.12")
        );
    }
}
