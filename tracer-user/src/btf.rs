//! The few kernel struct offsets the eBPF programs need, read from the
//! kernel's own BTF (/sys/kernel/btf/vmlinux): aya has no CO-RE field
//! relocation, so user space finds the offsets and hands them over.
//!
//! BTF is a flat list of type records: a 12-byte header per type (name,
//! info with kind and member count, size or type) and kind-specific data
//! after it. Only structs' members are read here.

use std::collections::HashMap;

use anyhow::{Context as _, bail};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// A struct member: its type id and its offset in bits.
#[derive(Debug, Clone, Copy)]
struct Member {
    type_id: u32,
    bit_offset: u32,
}

pub struct Btf {
    /// Struct (and union) members by struct name, then member name. Anonymous
    /// members are kept under "" so nested lookups can descend into them.
    structs: HashMap<String, Vec<(String, Member)>>,
    /// Type id -> struct name, for following a member's type.
    struct_names: HashMap<u32, String>,
    /// Type id -> (kind, referenced type) for typedefs/qualifiers to skip.
    refs: HashMap<u32, u32>,
}

fn u32_at(b: &[u8], off: usize) -> anyhow::Result<u32> {
    let bytes = b
        .get(off..off + 4)
        .with_context(|| format!("BTF truncated at {off}"))?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

impl Btf {
    pub fn from_sys() -> anyhow::Result<Self> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .context("reading /sys/kernel/btf/vmlinux (kernel BTF)")?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            bail!("not little-endian BTF");
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("BTF type section out of range")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF string section out of range")?;
        let name = |off: u32| -> String {
            let s = &strings[(off as usize).min(strings.len())..];
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };

        let mut btf = Btf {
            structs: HashMap::new(),
            struct_names: HashMap::new(),
            refs: HashMap::new(),
        };
        let mut pos = 0;
        let mut id = 1u32; // type 0 is void
        while pos + 12 <= types.len() {
            let name_off = u32_at(types, pos)?;
            let info = u32_at(types, pos + 4)?;
            let size_or_type = u32_at(types, pos + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            let extra = match kind {
                1 => 4,  // INT
                3 => 12, // ARRAY
                KIND_STRUCT | KIND_UNION => 12 * vlen,
                6 => 8 * vlen,   // ENUM
                13 => 8 * vlen,  // FUNC_PROTO
                14 => 4,         // VAR
                15 => 12 * vlen, // DATASEC
                17 => 4,         // DECL_TAG
                19 => 12 * vlen, // ENUM64
                _ => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let at = pos + 12 * m;
                    let offset = u32_at(types, at + 8)?;
                    members.push((
                        name(u32_at(types, at)?),
                        Member {
                            type_id: u32_at(types, at + 4)?,
                            // With kind_flag the top 8 bits are a bitfield size.
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        },
                    ));
                }
                let sname = name(name_off);
                if !sname.is_empty() {
                    btf.struct_names.insert(id, sname.clone());
                    btf.structs.entry(sname).or_insert(members.clone());
                } else {
                    // Anonymous struct/union: reachable only through members.
                    let anon = format!("<anon {id}>");
                    btf.struct_names.insert(id, anon.clone());
                    btf.structs.insert(anon, members);
                }
            } else if matches!(kind, 8..=11 | 18) {
                // typedef, volatile, const, restrict, type_tag: follow.
                btf.refs.insert(id, size_or_type);
            }
            pos += extra;
            id += 1;
        }
        Ok(btf)
    }

    fn resolve(&self, mut type_id: u32) -> u32 {
        for _ in 0..16 {
            match self.refs.get(&type_id) {
                Some(&next) => type_id = next,
                None => break,
            }
        }
        type_id
    }

    /// Byte offset of `member` in struct `name`, looking inside anonymous
    /// members; and the member's type id.
    fn member(&self, name: &str, member: &str) -> Option<(u32, u32)> {
        let members = self.structs.get(name)?;
        for (mname, m) in members {
            if mname == member {
                return Some((m.bit_offset / 8, m.type_id));
            }
        }
        for (mname, m) in members {
            if mname.is_empty()
                && let Some(inner) = self.struct_names.get(&self.resolve(m.type_id))
                && let Some((off, ty)) = self.member(inner, member)
            {
                return Some((m.bit_offset / 8 + off, ty));
            }
        }
        None
    }

    /// Byte offset of a member path such as `task_struct.thread.fsbase`.
    pub fn offset_of(&self, path: &str) -> anyhow::Result<u32> {
        let mut parts = path.split('.');
        let mut sname = parts.next().context("empty path")?.to_string();
        let mut total = 0;
        let mut rest = parts.peekable();
        while let Some(member) = rest.next() {
            let (off, ty) = self
                .member(&sname, member)
                .with_context(|| format!("no member {member} in struct {sname} (BTF)"))?;
            total += off;
            if rest.peek().is_some() {
                sname = self
                    .struct_names
                    .get(&self.resolve(ty))
                    .with_context(|| format!("{sname}.{member} is not a struct"))?
                    .clone();
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_fsbase_of_a_task_in_this_kernel() {
        let btf = Btf::from_sys().expect("kernel BTF");
        let thread = btf.offset_of("task_struct.thread").unwrap();
        let fsbase = btf.offset_of("task_struct.thread.fsbase").unwrap();
        assert!(
            fsbase > thread && fsbase < thread + 256,
            "{thread} {fsbase}"
        );
        // A member inside an anonymous union/struct is found too.
        assert!(btf.offset_of("sock.__sk_common.skc_dport").is_ok());
        assert!(btf.offset_of("task_struct.no_such_member").is_err());
    }
}
