//! The native unwinder against our own stack and libc's.

use super::*;

/// Registers and stack bytes, as the kernel takes them.
type Snapshot = (u64, u64, u64, Vec<u8>);

mod tests_support {
    /// Registers and a copy of our own stack, as the kernel would take them.
    #[inline(never)]
    pub fn snapshot() -> (u64, u64, u64, Vec<u8>) {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers.
        unsafe {
            std::arch::asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) ip,
                sp = out(reg) sp,
                bp = out(reg) bp,
            );
        }
        // SAFETY: the 8 KiB above our stack pointer are our own live stack
        // (the test thread's stack is far larger).
        let stack = unsafe { std::slice::from_raw_parts(sp as *const u8, 8192) }.to_vec();
        (ip, sp, bp, stack)
    }
}

mod own_stack {
    use super::{tests_support::snapshot, *};

    #[test]
    fn files_of_exited_processes_are_let_go_past_the_cache_size() {
        let mut unwinder = NativeUnwinder::default();
        for ino in 0..MAX_CACHED_FILES as u64 + 10 {
            unwinder.files.insert((1, ino), None);
            unwinder
                .open_files
                .insert((1, ino), std::fs::File::open("/dev/null").unwrap());
            unwinder.symbols.insert((1, ino, 0), (None, None));
        }
        // A live process whose unwinder maps one of them.
        let maps = vec![Mapping {
            path: "/lib/in-use.so".into(),
            dev: 1,
            inode: 3,
            base: None,
            exec: Vec::new(),
        }];
        unwinder.processes.insert(
            7,
            ProcessModules {
                unwinder: UnwinderX86_64::new(),
                maps,
            },
        );
        unwinder.forget(8);
        assert_eq!(unwinder.files.len(), 1);
        assert!(unwinder.open_files.contains_key(&(1, 3)));
        assert_eq!((unwinder.open_files.len(), unwinder.symbols.len()), (1, 1));
    }

    #[inline(never)]
    fn level3() -> (u64, u64, u64, Vec<u8>) {
        std::hint::black_box(snapshot())
    }
    #[inline(never)]
    fn level2() -> (u64, u64, u64, Vec<u8>) {
        std::hint::black_box(level3())
    }
    #[inline(never)]
    fn level1() -> (u64, u64, u64, Vec<u8>) {
        std::hint::black_box(level2())
    }

    #[test]
    fn unwinds_and_names_our_own_stack() {
        let (ip, sp, bp, stack) = level1();
        let mut u = NativeUnwinder::default();
        let pid = std::process::id();
        let frames = u.unwind(pid, ip, sp, bp, &stack);
        let names: Vec<String> = frames
            .iter()
            .map(|&a| u.symbolize(pid, a).function.unwrap_or_default())
            .collect();
        let pos = |f: &str| names.iter().position(|n| n.contains(f));
        let (s, l3, l2, l1) = (pos("snapshot"), pos("level3"), pos("level2"), pos("level1"));
        assert!(
            s.is_some() && s < l3 && l3 < l2 && l2 < l1,
            "frames leaf first: {names:#?}"
        );
    }
}

mod libc_tests {
    use super::*;
    use std::cell::RefCell;

    use tracer_common::{Step, UnwindRegs, find_row, unwind_step};

    use crate::mapped::load_bias;

    thread_local! {
        static SNAP: RefCell<Option<super::Snapshot>> = const { RefCell::new(None) };
    }

    extern "C" fn compare(a: *const libc::c_void, b: *const libc::c_void) -> i32 {
        SNAP.with_borrow_mut(|g| {
            if g.is_none() {
                *g = Some(std::hint::black_box(super::tests_support::snapshot()));
            }
        });
        unsafe { (*(a as *const i32)).cmp(&*(b as *const i32)) as i32 }
    }

    /// A snapshot taken in qsort's comparator: our frames, glibc's (no
    /// frame pointers), then ours again.
    #[inline(never)]
    fn sort_through_libc() -> super::Snapshot {
        let mut v = [3i32, 1, 2, 9, 4];
        unsafe { libc::qsort(v.as_mut_ptr().cast(), v.len(), 4, Some(compare)) };
        SNAP.take().unwrap()
    }

    /// Unwinds a snapshot of this process by the tables compiled for the
    /// kernel, as its unwinder does: frame addresses, return addresses
    /// moved back into their calls.
    fn unwind_by_tables((ip, sp, bp, stack): &super::Snapshot) -> Vec<u64> {
        let pid = std::process::id();
        let modules: Vec<_> = executable_mappings(pid)
            .into_iter()
            .filter_map(|m| {
                let bias = load_bias(pid, &m)?;
                let data = std::fs::read(m.file_path(pid).ok()?).ok()?;
                Some((
                    m.exec.clone(),
                    bias,
                    crate::unwind_table::compile(&data).unwrap(),
                ))
            })
            .collect();
        let word = |addr: u64| -> Option<u64> {
            let off = usize::try_from(addr.checked_sub(*sp)?).ok()?;
            Some(u64::from_ne_bytes(
                stack.get(off..off + 8)?.try_into().ok()?,
            ))
        };
        let mut regs = UnwindRegs {
            pc: *ip,
            sp: *sp,
            bp: *bp,
        };
        let mut frames = vec![*ip];
        loop {
            // The code a caller's frame is in: its call instruction.
            let pc = if frames.len() == 1 {
                regs.pc
            } else {
                regs.pc - 1
            };
            let Some((bias, rows)) = modules.iter().find_map(|(exec, bias, rows)| {
                exec.iter()
                    .any(|&(s, e, _)| (s..e).contains(&pc))
                    .then_some((bias, rows))
            }) else {
                break;
            };
            let at = u32::try_from(pc - bias).unwrap();
            let row = find_row(rows.len() as u32, at, |i| rows.get(i as usize).copied());
            if unwind_step(row.as_ref(), &mut regs, word) != Step::Caller {
                break;
            }
            frames.push(regs.pc - 1);
        }
        frames
    }

    #[test]
    fn the_kernels_tables_unwind_through_libc_as_framehop_does() {
        let snap = sort_through_libc();
        let (ip, sp, bp, stack) = &snap;
        let by_framehop =
            NativeUnwinder::default().unwind(std::process::id(), *ip, *sp, *bp, stack);
        assert!(by_framehop.len() >= 6, "{by_framehop:x?}");
        assert_eq!(unwind_by_tables(&snap), by_framehop);
    }

    #[test]
    fn unwinds_through_libc() {
        let (ip, sp, bp, stack) = sort_through_libc();
        let mut u = NativeUnwinder::default();
        let pid = std::process::id();
        let frames = u.unwind(pid, ip, sp, bp, &stack);
        let names: Vec<String> = frames
            .iter()
            .map(|&a| {
                let f = u.symbolize(pid, a);
                format!("{} {}", f.function.unwrap_or_default(), f.module)
            })
            .collect();
        assert!(
            names.iter().any(|n| n.contains("sort_through_libc")),
            "{names:#?}"
        );
    }
}

/// Warming up names our libc's `getaddrinfo` and keeps the name: the first
/// stack of a lookup then costs a look in the cache, not blazesym's first
/// read of libc.
#[test]
fn warming_up_names_getaddrinfo_of_the_process_libc_ahead() {
    let mut u = NativeUnwinder::default();
    u.warm_up(std::process::id());
    let names: Vec<String> = u.symbols.values().filter_map(|(f, _)| f.clone()).collect();
    assert!(names.iter().any(|n| n.contains("getaddrinfo")), "{names:?}");
}
