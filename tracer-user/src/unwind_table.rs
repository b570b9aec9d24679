//! A module's compact unwind table for the kernel's unwinder, compiled
//! from its `.eh_frame` with gimli: one `UnwindRow` wherever the rule to
//! find the caller changes, sorted by address, with a "no information"
//! row wherever no CFI covers the code (see `tracer_common::unwind`).

use anyhow::{Context as _, bail};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, LittleEndian, RegisterRule, UnwindContext,
    UnwindSection as _, X86_64,
};
use object::{Object as _, ObjectSection as _};
use tracer_common::{
    UNWIND_CFA_RBP, UNWIND_CFA_RSP, UNWIND_END, UNWIND_NONE, UNWIND_PLT, UNWIND_RBP_SAVED,
    UNWIND_UNSUPPORTED, UnwindRow,
};

/// The rows of one module, from its file's bytes. An empty table: the
/// module has no `.eh_frame` (frame pointers, as Go code).
pub fn compile(data: &[u8]) -> anyhow::Result<Vec<UnwindRow>> {
    let obj = object::File::parse(data).context("parsing the module")?;
    let Some(section) = obj.section_by_name(".eh_frame") else {
        return Ok(Vec::new());
    };
    let bytes = section.data().context("reading .eh_frame")?;
    let eh_frame = EhFrame::new(bytes, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(section.address());
    if let Some(text) = obj.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    // (start, end, row) of every row of every FDE.
    let mut spans: Vec<(u64, u64, UnwindRow)> = Vec::new();
    let mut ctx = UnwindContext::new();
    let mut entries = eh_frame.entries(&bases);
    while let Some(entry) = entries.next().context("reading .eh_frame")? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        // One bad FDE (a vendor's hand-written CFI) leaves its code to
        // frame pointers, not the whole module.
        let Ok(fde) =
            partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
        else {
            continue;
        };
        let Ok(mut table) = fde.rows(&eh_frame, &bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            let (start, end) = (row.start_address(), row.end_address());
            if start >= end {
                continue;
            }
            let rule = rule_of(row, &eh_frame);
            spans.push((start, end, rule));
        }
    }
    spans.sort_by_key(|&(start, _, _)| start);
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(spans.len() + 1);
    let mut covered_to = 0u64;
    for (start, end, mut row) in spans {
        if !rows.is_empty() && covered_to < start {
            push(&mut rows, none_at(covered_to)?);
        }
        row.pc = pc32(start)?;
        push(&mut rows, row);
        covered_to = covered_to.max(end);
    }
    if !rows.is_empty() {
        push(&mut rows, none_at(covered_to)?);
    }
    Ok(rows)
}

/// Appends a row, unless it says what the row before says (then the
/// row before simply goes on) or starts where it does (then it wins).
fn push(rows: &mut Vec<UnwindRow>, row: UnwindRow) {
    match rows.last_mut() {
        Some(last) if last.pc == row.pc => *last = row,
        Some(last) if same_rule(last, &row) => {}
        _ => rows.push(row),
    }
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.rule, a.cfa_offset, a.rbp_offset) == (b.rule, b.cfa_offset, b.rbp_offset)
}

fn none_at(pc: u64) -> anyhow::Result<UnwindRow> {
    Ok(UnwindRow {
        pc: pc32(pc)?,
        rule: UNWIND_NONE,
        ..UnwindRow::default()
    })
}

fn pc32(pc: u64) -> anyhow::Result<u32> {
    match u32::try_from(pc) {
        Ok(pc) => Ok(pc),
        Err(_) => bail!("code at {pc:#x}, above the 4 GiB a table row can say"),
    }
}

/// One CFI row as the kernel's unwinder can follow it.
fn rule_of(
    row: &gimli::UnwindTableRow<usize>,
    eh_frame: &EhFrame<gimli::EndianSlice<'_, LittleEndian>>,
) -> UnwindRow {
    let unsupported = UnwindRow {
        rule: UNWIND_UNSUPPORTED,
        ..UnwindRow::default()
    };
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => {
            return UnwindRow {
                rule: UNWIND_END,
                ..UnwindRow::default()
            };
        }
        Some(RegisterRule::Offset(-8)) => {}
        _ => return unsupported,
    }
    let (rule, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let rule = match *register {
                X86_64::RSP => UNWIND_CFA_RSP,
                X86_64::RBP => UNWIND_CFA_RBP,
                _ => return unsupported,
            };
            match eighths::<u16>(*offset) {
                Some(offset) => (rule, offset),
                None => return unsupported,
            }
        }
        CfaRule::Expression(expr) => {
            let threshold = expr
                .get(eh_frame)
                .ok()
                .and_then(|e| plt_threshold(e.0.slice()));
            return match threshold {
                Some(t) => UnwindRow {
                    rule: UNWIND_PLT,
                    rbp_offset: t,
                    ..UnwindRow::default()
                },
                None => unsupported,
            };
        }
    };
    let (saved, rbp_offset) = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => (0, 0),
        Some(RegisterRule::Offset(at)) => match eighths::<i8>(at) {
            Some(at) => (UNWIND_RBP_SAVED, at),
            None => return unsupported,
        },
        Some(_) => return unsupported,
    };
    UnwindRow {
        pc: 0,
        cfa_offset,
        rule: rule | saved,
        rbp_offset,
    }
}

/// `bytes` / 8 when it is a multiple of 8 that fits `T`.
fn eighths<T: TryFrom<i64>>(bytes: i64) -> Option<T> {
    if bytes % 8 != 0 {
        return None;
    }
    T::try_from(bytes / 8).ok()
}

/// The CFA expression every x86_64 PLT carries (binutils, lld): rsp plus
/// 8, plus 8 more from byte 10 or 11 of each 16-byte entry on. Returns
/// that byte, or None for any other expression.
fn plt_threshold(expr: &[u8]) -> Option<i8> {
    // DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<N>;
    // DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus
    match expr {
        [
            0x77,
            0x08,
            0x80,
            0x00,
            0x3f,
            0x1a,
            lit @ 0x30..=0x3f,
            0x2a,
            0x33,
            0x24,
            0x22,
        ] => Some((lit - 0x30) as i8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::plt_threshold;

    #[test]
    fn the_plt_expression_is_known_and_others_are_not() {
        let plt = [
            0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
        ];
        assert_eq!(plt_threshold(&plt), Some(11));
        assert_eq!(plt_threshold(&plt[..10]), None);
    }
}
