//! Finding functions in ELF files to put uprobes on: one parse per file for
//! all the symbols wanted (a libssl has seven, node's symbol table a
//! million entries), rather than one per symbol.

use std::{collections::HashMap, fs::File, path::Path};

use anyhow::Context as _;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

fn map(path: &Path) -> anyhow::Result<memmap2::Mmap> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: read-only private mapping of a file we only read; a library
    // being replaced under us could change its bytes, which at worst gives
    // a wrong offset for one probe.
    unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))
}

/// Whether the file asks for a dynamic loader (PT_INTERP): a process that
/// maps it alone is one its kernel has not finished exec'ing.
pub fn asks_for_loader(path: &Path) -> anyhow::Result<bool> {
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let data = map(path)?;
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&*data)
        .with_context(|| format!("parsing {}", path.display()))?;
    let endian = header.endian()?;
    Ok(header
        .program_headers(endian, &*data)?
        .iter()
        .any(|p| p.p_type(endian) == object::elf::PT_INTERP))
}

/// The virtual address of the loadable segment that starts the file (0 for
/// shared libraries and PIE executables, 0x400000 for a classic one).
pub fn first_load_vaddr(path: &Path) -> anyhow::Result<u64> {
    use object::ObjectSegment as _;
    let data = map(path)?;
    let obj = object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
    obj.segments()
        .find(|s| s.file_range().0 == 0)
        .map(|s| s.address())
        .with_context(|| format!("{} has no segment at file offset 0", path.display()))
}

/// Virtual addresses of the defined data or code symbols among `names`
/// (`_PyRuntime`, `PyCode_Type`), from either symbol table.
pub fn symbol_addresses(path: &Path, names: &[&str]) -> anyhow::Result<HashMap<String, u64>> {
    let data = map(path)?;
    let obj = object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
    let mut found = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if found.len() == names.len() {
            break;
        }
        if !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let name = name.split('@').next().unwrap_or(name);
        if names.contains(&name) && !found.contains_key(name) {
            found.insert(name.to_string(), sym.address());
        }
    }
    Ok(found)
}

/// File offsets of the defined functions among `names` in the ELF file at
/// `path` (the dynamic symbol table first, then the full one). Missing
/// names are simply absent from the result.
pub fn function_offsets(path: &Path, names: &[&str]) -> anyhow::Result<HashMap<String, u64>> {
    let data = map(path)?;
    let obj = object::File::parse(&*data).with_context(|| format!("parsing {}", path.display()))?;
    let mut found = HashMap::new();
    let tables = [obj.dynamic_symbols(), obj.symbols()];
    for table in tables {
        for sym in table {
            if found.len() == names.len() {
                return Ok(found);
            }
            if !sym.is_definition() || sym.kind() != object::SymbolKind::Text {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            // Versioned dynamic names look like `SSL_read@@OPENSSL_3.0.0`.
            let name = name.split('@').next().unwrap_or(name);
            if !names.contains(&name) || found.contains_key(name) {
                continue;
            }
            let Some(index) = sym.section_index() else {
                continue;
            };
            let Ok(section) = obj.section_by_index(index) else {
                continue;
            };
            let Some((file_offset, _)) = section.file_range() else {
                continue;
            };
            // The kernel wants an offset in the file, not a virtual address.
            let offset = sym.address() - section.address() + file_offset;
            found.insert(name.to_string(), offset);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exported_functions_of_our_own_libc() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("libc.so"))
            .expect("tests run against a dynamic glibc");
        let offsets = function_offsets(
            Path::new(libc),
            &["getaddrinfo", "gethostbyname", "no_such_fn"],
        )
        .unwrap();
        assert!(offsets.contains_key("getaddrinfo"), "{offsets:?}");
        assert!(offsets.contains_key("gethostbyname"));
        assert!(!offsets.contains_key("no_such_fn"));
        assert!(offsets["getaddrinfo"] > 0);
    }
}
