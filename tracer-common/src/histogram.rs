//! Latency histogram kept in the kernel: log2 buckets, each split into 8
//! linear sub-buckets (as HdrHistogram does), so a percentile read back from
//! it is within 12.5% of the true value, not within a factor of two as with
//! plain log2 buckets. Values below 16 ns get a bucket each.
//!
//! The bucket function runs in the eBPF programs: no loops, no division.

/// log2 of the number of linear sub-buckets per power of two.
pub const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
/// Highest power of two with buckets of its own: 2^42 ns is 73 minutes;
/// longer calls land in the last bucket (their exact maximum is kept apart).
const TOP_MSB: u32 = 41;
/// Number of buckets: 16 exact ones, then 8 per power of two up to `TOP_MSB`.
pub const HIST_BUCKETS: usize = ((TOP_MSB - SUB_BUCKET_BITS + 2) as usize) << SUB_BUCKET_BITS;

/// Count, sum, maximum and histogram of one kind of call, in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LatencyStats {
    pub count: u64,
    pub total_ns: u64,
    /// Exact extremes: a percentile estimate is clamped between them, so a
    /// single call or identical calls read back exactly.
    pub min_ns: u64,
    pub max_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

impl LatencyStats {
    pub const ZERO: Self = Self {
        count: 0,
        total_ns: 0,
        min_ns: 0,
        max_ns: 0,
        hist: [0; HIST_BUCKETS],
    };

    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        if self.count == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.count += 1;
        self.total_ns += ns;
        if ns > self.max_ns {
            self.max_ns = ns;
        }
        let b = bucket_of(ns);
        if b < HIST_BUCKETS {
            self.hist[b] += 1;
        }
    }

    /// Adds another aggregate into this one (per-CPU values, or processes).
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min_ns < self.min_ns {
            self.min_ns = other.min_ns;
        }
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
        for (a, b) in self.hist.iter_mut().zip(other.hist.iter()) {
            *a += b;
        }
    }

    /// The `q`-quantile (0..=1) estimated from the histogram: interpolated
    /// inside its bucket, and clamped to the exact minimum and maximum.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return 0;
        }
        // Rank of the wanted sample, 1-based, as in "the p99 is the value
        // below which 99% of calls fall".
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (b, &n) in self.hist.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let (lo, hi) = bucket_bounds(b);
                let within = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
                let est = lo as f64 + within * (hi - lo) as f64;
                return (est as u64).clamp(self.min_ns, self.max_ns);
            }
            seen += n;
        }
        self.max_ns
    }
}

/// Index of the highest set bit; `v` must be non-zero. Written as a fixed
/// sequence of compares so the eBPF verifier sees straight-line code.
#[inline(always)]
fn msb(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket of a latency in nanoseconds.
#[inline(always)]
pub fn bucket_of(ns: u64) -> usize {
    if ns < 2 * SUB_BUCKETS {
        return ns as usize;
    }
    let m = msb(ns);
    if m > TOP_MSB {
        return HIST_BUCKETS - 1;
    }
    let shift = m - SUB_BUCKET_BITS;
    let sub = (ns >> shift) & (SUB_BUCKETS - 1);
    (((m - SUB_BUCKET_BITS + 1) as usize) << SUB_BUCKET_BITS) + sub as usize
}

/// Half-open range `[low, high)` of nanoseconds a bucket holds.
pub fn bucket_bounds(b: usize) -> (u64, u64) {
    if b < 2 * SUB_BUCKETS as usize {
        return (b as u64, b as u64 + 1);
    }
    let m = (b >> SUB_BUCKET_BITS) as u32 + SUB_BUCKET_BITS - 1;
    let sub = (b as u64) & (SUB_BUCKETS - 1);
    let shift = m - SUB_BUCKET_BITS;
    let low = (SUB_BUCKETS + sub) << shift;
    (low, low + (1 << shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_inside_its_bucket() {
        let mut v = 0u64;
        while v < (1u64 << (TOP_MSB + 1)) {
            let b = bucket_of(v);
            let (lo, hi) = bucket_bounds(b);
            assert!(lo <= v && v < hi, "v={v} bucket={b} [{lo},{hi})");
            v = v * 5 / 4 + 1;
        }
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for b in 1..HIST_BUCKETS {
            assert_eq!(bucket_bounds(b - 1).1, bucket_bounds(b).0, "gap before {b}");
        }
        assert_eq!(bucket_of(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn relative_bucket_width_is_at_most_one_eighth() {
        for b in 16..HIST_BUCKETS {
            let (lo, hi) = bucket_bounds(b);
            assert!((hi - lo) * 8 <= lo, "bucket {b} [{lo},{hi})");
        }
    }

    #[test]
    fn quantiles_of_known_samples() {
        let mut s = LatencyStats::ZERO;
        for _ in 0..90 {
            s.record(10_000_000);
        }
        for _ in 0..10 {
            s.record(50_000_000);
        }
        let p50 = s.quantile_ns(0.5) as f64;
        let p99 = s.quantile_ns(0.99) as f64;
        assert!((p50 / 10e6 - 1.0).abs() < 0.125, "p50 {p50}");
        assert!((p99 / 50e6 - 1.0).abs() < 0.125, "p99 {p99}");
        assert_eq!(s.quantile_ns(1.0), 50_000_000);
        assert_eq!(s.quantile_ns(0.0), 10_000_000);
        let mut one = LatencyStats::ZERO;
        one.record(123_456_789);
        assert_eq!(one.quantile_ns(0.5), 123_456_789);
        let mut merged = LatencyStats::ZERO;
        merged.merge(&LatencyStats::ZERO);
        merged.merge(&one);
        merged.merge(&s);
        assert_eq!(
            (merged.min_ns, merged.max_ns, merged.count),
            (10_000_000, 123_456_789, 101)
        );
        assert_eq!(s.count, 100);
        assert_eq!(s.total_ns, 90 * 10_000_000 + 10 * 50_000_000);
    }
}
