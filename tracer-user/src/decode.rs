//! Decode: the records of one drain, as the reader thread took them, as
//! `Event`s. A large record (a lookup, a DNS message, a stack copy, a
//! call site, a request line) is copied into the decoder's one scratch
//! and lent to the collector until the next record, not boxed: before,
//! each took a malloc and a free, and a call site a 1 KiB calloc for a
//! record of a hundred bytes or so.

use std::mem::size_of;

use tracer_common::{
    ConnectEvent, DnsPacketEvent, DnsWaitEvent, EventKind, ExecMapEvent, FRAMES_HEADER,
    FdClosedEvent, FramesEvent, HandshakeEvent, LookupEvent, LookupStartEvent, NATIVE_FRAMES,
    PY_FRAMES, PyFrameRef, RequestEndEvent, RequestLineEvent, SlowIoEvent, StackEvent, TaskEvent,
    TlsEvent, TlsWaitEvent, framed_records,
};

/// One record from the ring buffer; a large one lent by the `Decoder`.
#[derive(Debug, Clone, Copy)]
pub enum Event<'r> {
    Connect(ConnectEvent),
    Handshake(HandshakeEvent),
    Task(TaskEvent),
    LookupStart(LookupStartEvent),
    Lookup(&'r LookupEvent),
    DnsPacket(&'r DnsPacketEvent),
    DnsWait(DnsWaitEvent),
    Tls(TlsEvent),
    TlsWait(TlsWaitEvent),
    ExecMap(ExecMapEvent),
    Stack(&'r StackEvent),
    Frames(&'r FramesEvent),
    SlowIo(SlowIoEvent),
    FdClosed(FdClosedEvent),
    RequestLine(&'r RequestLineEvent),
    RequestEnd(RequestEndEvent),
}

/// The largest record, for the scratch's size.
const SCRATCH_BYTES: usize = {
    let sizes = [
        size_of::<LookupEvent>(),
        size_of::<DnsPacketEvent>(),
        size_of::<StackEvent>(),
        size_of::<FramesEvent>(),
        size_of::<RequestLineEvent>(),
    ];
    let mut max = 0;
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] > max {
            max = sizes[i];
        }
        i += 1;
    }
    max
};

// The scratch is of u64s: a lent record may need 8-byte alignment, no more.
const _: () = assert!(
    align_of::<LookupEvent>() <= 8
        && align_of::<DnsPacketEvent>() <= 8
        && align_of::<StackEvent>() <= 8
        && align_of::<FramesEvent>() <= 8
        && align_of::<RequestLineEvent>() <= 8
);

/// Decodes records one at a time, lending the large ones from its scratch.
pub struct Decoder {
    scratch: Box<[u64]>,
    /// Every byte of the scratch from here on is zero (a call site is sent
    /// only as long as its frames, and lent with the rest zero).
    dirty: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            scratch: vec![0; SCRATCH_BYTES.div_ceil(8)].into_boxed_slice(),
            dirty: 0,
        }
    }
}

impl Decoder {
    /// Decodes a ring buffer record; `None` for a record we do not know (a
    /// newer kernel object, or a short read), which is counted by the
    /// caller.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Event<'_>> {
        fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
            read_at(bytes, 0)
        }
        let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
        Some(match EventKind::from_u32(kind)? {
            EventKind::Connect => Event::Connect(read(bytes)?),
            EventKind::Handshake => Event::Handshake(read(bytes)?),
            EventKind::Task => Event::Task(read(bytes)?),
            EventKind::LookupStart => Event::LookupStart(read(bytes)?),
            EventKind::Lookup => Event::Lookup(self.lend_whole(bytes)?),
            EventKind::DnsPacket => Event::DnsPacket(self.lend_whole(bytes)?),
            EventKind::DnsWait => Event::DnsWait(read(bytes)?),
            EventKind::Tls => Event::Tls(read(bytes)?),
            EventKind::TlsWait => Event::TlsWait(read(bytes)?),
            EventKind::ExecMap => Event::ExecMap(read(bytes)?),
            EventKind::Stack => Event::Stack(self.lend_whole(bytes)?),
            EventKind::Frames => {
                let ev: &FramesEvent = self.lend(bytes, FRAMES_HEADER)?;
                // What the header says must have come.
                let words = ev.native_depth as usize + 2 * ev.py_depth as usize;
                let sent = bytes.len().min(size_of::<FramesEvent>());
                if ev.native_depth as usize > NATIVE_FRAMES || FRAMES_HEADER + words * 8 > sent {
                    return None;
                }
                Event::Frames(ev)
            }
            EventKind::SlowIo => Event::SlowIo(read(bytes)?),
            EventKind::FdClosed => Event::FdClosed(read(bytes)?),
            EventKind::RequestLine => Event::RequestLine(self.lend_whole(bytes)?),
            EventKind::RequestEnd => Event::RequestEnd(read(bytes)?),
        })
    }

    /// A whole `T` copied from `bytes` into the scratch and lent.
    fn lend_whole<T: Copy>(&mut self, bytes: &[u8]) -> Option<&T> {
        self.lend(bytes, size_of::<T>())
    }

    /// A `T` copied from `bytes` into the scratch and lent, when at least
    /// `least` bytes came; what did not come reads zero.
    fn lend<T: Copy>(&mut self, bytes: &[u8], least: usize) -> Option<&T> {
        let size = size_of::<T>();
        if bytes.len() < least {
            return None;
        }
        let n = bytes.len().min(size);
        let scratch = as_bytes_mut(&mut self.scratch);
        scratch[..n].copy_from_slice(&bytes[..n]);
        // Zero what an earlier, longer record left within this one.
        let stale = self.dirty.min(size);
        if n < stale {
            scratch[n..stale].fill(0);
        }
        if self.dirty <= size {
            self.dirty = n;
        }
        // SAFETY: the scratch is at least `size` bytes (SCRATCH_BYTES),
        // 8-aligned (u64s; T needs no more, asserted above) and all
        // initialized; T is a repr(C) plain-data event type, valid for
        // any bytes. The borrow of `self` keeps it until the next record.
        Some(unsafe { &*self.scratch.as_ptr().cast::<T>() })
    }
}

/// The scratch as bytes.
fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: u8 has no alignment and every bit pattern is valid either
    // way; the length covers the same memory.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

/// The records of one drain, as the reader took them. Each is decoded as
/// it is applied, into the one scratch, which nothing allocates or frees.
pub struct Batch<'a> {
    bytes: &'a [u8],
    decoder: &'a mut Decoder,
    undecodable: u64,
}

impl<'a> Batch<'a> {
    /// The records in `bytes` (`framed_records`, as `intake` leaves
    /// them), decoded with `decoder`.
    pub fn new(bytes: &'a [u8], decoder: &'a mut Decoder) -> Self {
        Self {
            bytes,
            decoder,
            undecodable: 0,
        }
    }

    /// Records of this batch that could not be decoded, so far.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Hands each record, decoded, to `apply` in the kernel's order; a
    /// record we do not know is counted and skipped. Once per batch.
    pub fn for_each_event(&mut self, mut apply: impl FnMut(Event<'_>)) {
        for record in framed_records(self.bytes) {
            match self.decoder.decode(record) {
                Some(ev) => apply(ev),
                None => self.undecodable += 1,
            }
        }
    }

    /// The Python frames of each stack in the batch, with its process and
    /// the kernel's status of them, read where they lie in the record.
    pub fn python_frames(&self) -> impl Iterator<Item = (u32, u32, Vec<PyFrameRef>)> + '_ {
        framed_records(self.bytes).filter_map(python_frames_of)
    }
}

/// A `T` read from `bytes` at `offset`, if they hold one there.
fn read_at<T: Copy>(bytes: &[u8], offset: usize) -> Option<T> {
    let bytes = bytes.get(offset..offset.checked_add(size_of::<T>())?)?;
    // SAFETY: length checked; T is a repr(C) plain-data event type or an
    // integer, valid for any bytes.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A stack record's process, Python status and Python frames, when it has
/// any, read from the record's bytes (the frames' layout as
/// `attribute::frames_words` and `attribute::stack_python` read a decoded
/// one): no 1 KiB record decoded for a prefetch.
fn python_frames_of(record: &[u8]) -> Option<(u32, u32, Vec<PyFrameRef>)> {
    use std::mem::offset_of;
    let (tgid, status, depth, frames, stride) = match EventKind::from_u32(read_at(record, 0)?)? {
        EventKind::Frames => {
            let native: u32 = read_at(record, offset_of!(FramesEvent, native_depth))?;
            (
                read_at(record, offset_of!(FramesEvent, tgid))?,
                read_at(record, offset_of!(FramesEvent, py_status))?,
                read_at::<u32>(record, offset_of!(FramesEvent, py_depth))?,
                FRAMES_HEADER + 8 * (native as usize).min(NATIVE_FRAMES),
                16,
            )
        }
        EventKind::Stack => (
            read_at(record, offset_of!(StackEvent, tgid))?,
            read_at(record, offset_of!(StackEvent, py_status))?,
            read_at::<u32>(record, offset_of!(StackEvent, py_depth))?.min(PY_FRAMES as u32),
            offset_of!(StackEvent, py),
            size_of::<PyFrameRef>(),
        ),
        _ => return None,
    };
    if depth == 0 {
        return None;
    }
    let python = (0..depth as usize)
        .map_while(|i| {
            let at = frames + i * stride;
            Some(PyFrameRef {
                code: read_at(record, at)?,
                instr: read_at(record, at + 8)?,
            })
        })
        .collect();
    Some((tgid, status, python))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_records_and_refuses_short_ones() {
        let ev = HandshakeEvent {
            kind: EventKind::Handshake as u32,
            tgid: 1,
            tid: 2,
            new_state: 1,
            skaddr: 0xdead,
            start_ns: 5,
            duration_ns: 7,
        };
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<HandshakeEvent>())
        };
        let mut decoder = Decoder::default();
        match decoder.decode(bytes) {
            Some(Event::Handshake(h)) => assert_eq!((h.skaddr, h.duration_ns), (0xdead, 7)),
            other => panic!("{other:?}"),
        }
        assert!(decoder.decode(&bytes[..10]).is_none());
        assert!(decoder.decode(&[9, 0, 0, 0, 1, 2]).is_none());
        assert!(decoder.decode(&[]).is_none());
    }

    /// A batch as the reader leaves it: a stack of 2 native and 1 Python
    /// frames sent only as long as its content, then a record of no kind.
    #[test]
    fn a_batch_reads_python_frames_in_place_and_counts_what_it_cannot_decode() {
        let mut ev: FramesEvent = unsafe { std::mem::zeroed() };
        (ev.kind, ev.tgid, ev.py_status) = (EventKind::Frames as u32, 7, 0);
        (ev.native_depth, ev.py_depth) = (2, 1);
        ev.words[..4].copy_from_slice(&[0x10, 0x20, 0xc0de, 3]);
        let len = FRAMES_HEADER + 4 * 8;
        let mut bytes = Vec::new();
        for record in [
            unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), len) },
            &[9, 0, 0, 0],
        ] {
            bytes.extend_from_slice(&(record.len() as u32).to_ne_bytes());
            bytes.extend_from_slice(record);
        }
        let mut decoder = Decoder::default();
        let mut batch = Batch::new(&bytes, &mut decoder);
        let python: Vec<_> = batch.python_frames().collect();
        assert_eq!(python.len(), 1);
        let (tgid, status, frames) = &python[0];
        assert_eq!((*tgid, *status, frames.len()), (7, 0, 1));
        assert_eq!((frames[0].code, frames[0].instr), (0xc0de, 3));
        let mut frames = Vec::new();
        batch.for_each_event(|ev| match ev {
            Event::Frames(f) => frames.push((f.words[2], f.words[4])),
            other => panic!("{other:?}"),
        });
        assert_eq!(frames, [(0xc0de, 0)]);
        assert_eq!(batch.undecodable(), 1);
    }

    /// A call site is sent only as long as its frames: lent after a longer
    /// record, the words it did not send read zero, not that record's.
    #[test]
    fn a_short_record_after_a_long_one_reads_zero_past_its_end() {
        let mut decoder = Decoder::default();
        let mut stack = vec![0xffu8; size_of::<StackEvent>()];
        stack[..4].copy_from_slice(&(EventKind::Stack as u32).to_ne_bytes());
        assert!(matches!(decoder.decode(&stack), Some(Event::Stack(s)) if s.key_ns == u64::MAX));
        let mut frames = vec![0u8; FRAMES_HEADER + 8];
        frames[..4].copy_from_slice(&(EventKind::Frames as u32).to_ne_bytes());
        frames[std::mem::offset_of!(FramesEvent, native_depth)] = 1;
        frames[FRAMES_HEADER..].copy_from_slice(&0x4321u64.to_ne_bytes());
        for _ in 0..2 {
            match decoder.decode(&frames) {
                Some(Event::Frames(f)) => {
                    assert_eq!(f.words[0], 0x4321);
                    assert!(f.words[1..].iter().all(|&w| w == 0));
                    assert_eq!((f.py_depth, f.key_ns), (0, 0));
                }
                other => panic!("{other:?}"),
            }
        }
        // A header that says more than came is refused.
        frames[std::mem::offset_of!(FramesEvent, native_depth)] = 2;
        assert!(decoder.decode(&frames).is_none());
    }
}
