//! The records of one drain of the ring buffer: copied out into one
//! buffer, decoded in place into `Event`s (collect.rs reads the ring).

use std::mem::size_of;

use tracer_common::{
    ConnectEvent, DnsPacketEvent, DnsWaitEvent, EventKind, ExecMapEvent, FRAMES_HEADER,
    FdClosedEvent, FramesEvent, HandshakeEvent, LookupEvent, LookupStartEvent, NATIVE_FRAMES,
    RequestEndEvent, RequestLineEvent, SlowIoEvent, StackEvent, TaskEvent, TlsEvent, TlsWaitEvent,
};

/// One record from the ring buffer. The large ones are read in place, in
/// the drain's `Records`; the rest are copied out (they are a few words).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Connect(ConnectEvent),
    Handshake(HandshakeEvent),
    Task(TaskEvent),
    LookupStart(LookupStartEvent),
    Lookup(&'a LookupEvent),
    DnsPacket(&'a DnsPacketEvent),
    DnsWait(DnsWaitEvent),
    Tls(TlsEvent),
    TlsWait(TlsWaitEvent),
    ExecMap(ExecMapEvent),
    Stack(&'a StackEvent),
    Frames(&'a FramesEvent),
    SlowIo(SlowIoEvent),
    FdClosed(FdClosedEvent),
    RequestLine(&'a RequestLineEvent),
    RequestEnd(RequestEndEvent),
}

/// The records of one drain, copied out of the ring buffer into one buffer
/// kept from drain to drain: a record costs a copy, not an allocation (at
/// 10,000 lookups a second, a lookup's two boxed records and their frees
/// were a sixth of the collector's time).
#[derive(Debug, Default)]
pub struct Records {
    /// Each record from a word boundary (no event type is aligned to more
    /// than 8 bytes), its last word's unused bytes zero; a stack record
    /// (sent only as long as its frames) zero-filled to its type's size.
    words: Vec<u64>,
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    /// First word and one past the last.
    start: usize,
    end: usize,
    /// The record's length as the kernel sent it.
    len: usize,
}

impl Records {
    /// Copies a record in; false, and nothing kept, for one that does not
    /// decode (a newer kernel object, or a short read).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let is_frames = bytes
            .get(..4)
            .and_then(|k| EventKind::from_u32(u32::from_ne_bytes(k.try_into().ok()?)))
            .is_some_and(|k| matches!(k, EventKind::Frames));
        let room = if is_frames {
            bytes.len().max(size_of::<FramesEvent>())
        } else {
            bytes.len()
        };
        let start = self.words.len();
        let end = start + room.div_ceil(8);
        self.words.resize(end, 0);
        // SAFETY: `words[start..end]` is `room >= bytes.len()` bytes long,
        // zeroed by the resize; the record is copied over its head.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.words.as_mut_ptr().add(start).cast::<u8>(),
                bytes.len(),
            );
        }
        let span = Span {
            start,
            end,
            len: bytes.len(),
        };
        if self.decode(span).is_none() {
            self.words.truncate(start);
            return false;
        }
        self.spans.push(span);
        true
    }

    /// The records in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = Event<'_>> {
        self.spans.iter().filter_map(|&span| self.decode(span))
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Empties the buffer, keeping at most `words` words of its memory.
    pub(crate) fn clear(&mut self, words: usize) {
        self.words.clear();
        self.spans.clear();
        self.words.shrink_to(words);
        self.spans.shrink_to(words / 8);
    }

    fn decode(&self, span: Span) -> Option<Event<'_>> {
        decode(&self.words[span.start..span.end], span.len)
    }
}

/// Decodes a record that starts at a word boundary: `record` holds its
/// `len` bytes (and, for a stack record, zeros up to its type's size).
fn decode(record: &[u64], len: usize) -> Option<Event<'_>> {
    /// The record as a `T`, in place.
    fn view<T>(record: &[u64], len: usize) -> Option<&T> {
        const { assert!(align_of::<T>() <= align_of::<u64>()) };
        (len >= size_of::<T>() && size_of_val(record) >= size_of::<T>())
            // SAFETY: size checked, alignment asserted; T is a repr(C)
            // plain-data event type, valid for any bytes.
            .then(|| unsafe { &*record.as_ptr().cast::<T>() })
    }
    fn read<T: Copy>(record: &[u64], len: usize) -> Option<T> {
        view(record, len).copied()
    }
    /// A record sent only as long as its content: what came, the rest
    /// zero (see `Records::push`); None when the header says more than came.
    fn frames(record: &[u64], len: usize) -> Option<&FramesEvent> {
        if len < FRAMES_HEADER {
            return None;
        }
        let ev: &FramesEvent = view(record, size_of::<FramesEvent>())?;
        let words = ev.native_depth as usize + 2 * ev.py_depth as usize;
        (ev.native_depth as usize <= NATIVE_FRAMES && FRAMES_HEADER + words * 8 <= len)
            .then_some(ev)
    }
    if len < 4 {
        return None;
    }
    // The first 4 bytes in memory, whatever the byte order.
    let head = record.first()?.to_ne_bytes();
    let kind = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
    match EventKind::from_u32(kind)? {
        EventKind::Connect => read(record, len).map(Event::Connect),
        EventKind::Handshake => read(record, len).map(Event::Handshake),
        EventKind::Task => read(record, len).map(Event::Task),
        EventKind::LookupStart => read(record, len).map(Event::LookupStart),
        EventKind::Lookup => view(record, len).map(Event::Lookup),
        EventKind::DnsPacket => view(record, len).map(Event::DnsPacket),
        EventKind::DnsWait => read(record, len).map(Event::DnsWait),
        EventKind::Tls => read(record, len).map(Event::Tls),
        EventKind::TlsWait => read(record, len).map(Event::TlsWait),
        EventKind::ExecMap => read(record, len).map(Event::ExecMap),
        EventKind::Stack => view(record, len).map(Event::Stack),
        EventKind::Frames => frames(record, len).map(Event::Frames),
        EventKind::SlowIo => read(record, len).map(Event::SlowIo),
        EventKind::FdClosed => read(record, len).map(Event::FdClosed),
        EventKind::RequestLine => view(record, len).map(Event::RequestLine),
        EventKind::RequestEnd => read(record, len).map(Event::RequestEnd),
    }
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
        let mut records = Records::default();
        assert!(records.push(bytes));
        match records.iter().next() {
            Some(Event::Handshake(h)) => assert_eq!((h.skaddr, h.duration_ns), (0xdead, 7)),
            other => panic!("{other:?}"),
        }
        assert!(!records.push(&bytes[..10]));
        assert!(!records.push(&[9, 0, 0, 0, 1, 2]));
        assert!(!records.push(&[]));
        assert_eq!(records.iter().count(), 1, "a refused record is not kept");
    }

    fn bytes_of<T>(ev: &T) -> &[u8] {
        // SAFETY: a repr(C) event type of integers, read as its bytes.
        unsafe { std::slice::from_raw_parts((&raw const *ev).cast::<u8>(), size_of::<T>()) }
    }

    #[test]
    fn a_stack_record_sent_short_reads_as_zero_past_its_frames() {
        let frames = |depth: u32, word: u64| FramesEvent {
            kind: EventKind::Frames as u32,
            tgid: 1,
            tid: 2,
            reason: 0,
            key_ns: 3,
            native_depth: depth,
            native_end: 0,
            py_status: 0,
            py_depth: 0,
            words: [word; tracer_common::FRAME_WORDS],
        };
        let mut records = Records::default();
        // A full record of ones first, so that the buffer's memory, reused,
        // is not zero where the short record lands.
        let full = frames(NATIVE_FRAMES as u32, u64::MAX);
        assert!(records.push(bytes_of(&full)));
        records.clear(1024);
        let short = frames(2, 0x1234);
        // An odd length too: the kernel sends the header and two words,
        // and a record's last word may be partly filled.
        let sent = &bytes_of(&short)[..FRAMES_HEADER + 16];
        assert!(records.push(sent));
        assert!(
            !records.push(&sent[..FRAMES_HEADER + 12]),
            "a frame cut short"
        );
        let full_again = frames(1, 7);
        assert!(records.push(bytes_of(&full_again)));
        let got: Vec<&FramesEvent> = records
            .iter()
            .map(|ev| match ev {
                Event::Frames(f) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].words[..3], &[0x1234, 0x1234, 0]);
        assert!(got[0].words[2..].iter().all(|&w| w == 0));
        assert_eq!((got[1].native_depth, got[1].words[0]), (1, 7));
    }
}
