//! Records one after the other, each after its length (4 bytes, native
//! order): how the collector's intake keeps what it took from the ring
//! buffer, and how `TRACER_DUMP_RECORDS` writes it for the tests.

/// The records of `bytes`, in order; a record cut short at the end is
/// given as far as it went.
pub fn framed_records(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    core::iter::from_fn(move || {
        let (len, after) = rest.split_first_chunk::<4>()?;
        let len = (u32::from_ne_bytes(*len) as usize).min(after.len());
        let (record, after) = after.split_at(len);
        rest = after;
        Some(record)
    })
}
