//! Latency buckets: log-linear (four buckets per power of two) from 1 µs to 17 s.
//!
//! Finding a bucket is a few shifts, so recording a latency is one more sharded counter add. The
//! fine buckets give the status page its percentiles (within 12.5%); `/metrics` exports them
//! merged at every power of two of nanoseconds, as a Prometheus histogram.

/// Values below this many nanoseconds share bucket 0.
const MIN_OCTAVE: u32 = 10;
/// Octaves covered: 2^10 ns (1 µs) to 2^34 ns (17 s).
const OCTAVES: u32 = 24;
/// Buckets per octave.
const SUB: u32 = 4;
/// Buckets: one below 1 µs, four per octave, one overflow.
pub const BUCKETS: usize = (1 + OCTAVES * SUB + 1) as usize;
/// Counters one histogram takes: its buckets and the sum of its values (ns).
pub const WIDTH: usize = BUCKETS + 1;
/// Index of the sum among a histogram's counters.
pub const SUM: usize = BUCKETS;

/// The bucket of a duration in nanoseconds.
#[inline]
pub fn bucket(nanos: u64) -> usize {
    if nanos < (1 << MIN_OCTAVE) {
        return 0;
    }
    let octave = 63 - nanos.leading_zeros();
    if octave >= MIN_OCTAVE + OCTAVES {
        return BUCKETS - 1;
    }
    let sub = (nanos >> (octave - 2)) & (SUB as u64 - 1);
    (1 + (octave - MIN_OCTAVE) * SUB) as usize + sub as usize
}

/// The values bucket `index` holds, in nanoseconds: `[lower, upper)`.
pub fn bounds(index: usize) -> (u64, u64) {
    if index == 0 {
        return (0, 1 << MIN_OCTAVE);
    }
    if index >= BUCKETS - 1 {
        return (1 << (MIN_OCTAVE + OCTAVES), u64::MAX);
    }
    let k = (index - 1) as u32;
    let octave = MIN_OCTAVE + k / SUB;
    let sub = u64::from(k % SUB);
    ((4 + sub) << (octave - 2), (5 + sub) << (octave - 2))
}

/// The `q` quantile (0..1) of bucket counts, in nanoseconds, interpolated inside its bucket;
/// `None` when the counts are all zero.
pub fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().take(BUCKETS).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).max(1.0);
    let mut seen = 0u64;
    for (index, &count) in counts.iter().take(BUCKETS).enumerate() {
        if count > 0 && (seen + count) as f64 >= rank {
            let (lower, upper) = bounds(index);
            let upper = if upper == u64::MAX { lower * 2 } else { upper };
            let within = (rank - seen as f64) / count as f64;
            return Some(lower as f64 + within * (upper - lower) as f64);
        }
        seen += count;
    }
    None
}

/// Buckets for Prometheus: `(upper bound in seconds, count of values in this bucket alone)` at
/// every power of two of nanoseconds from 1 µs to 17 s, then `+Inf`; the encoder makes them
/// cumulative.
pub fn prometheus_buckets(counts: &[u64]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(OCTAVES as usize + 2);
    out.push(((1u64 << MIN_OCTAVE) as f64 / 1e9, counts[0]));
    for octave in 0..OCTAVES {
        let first = 1 + (octave * SUB) as usize;
        let n = counts[first..first + SUB as usize].iter().sum::<u64>();
        out.push(((1u64 << (MIN_OCTAVE + octave + 1)) as f64 / 1e9, n));
    }
    out.push((f64::INFINITY, counts[BUCKETS - 1]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values() {
        for nanos in [0, 1, 1023, 1024, 1279, 1280, 5000, 123_456, 9_999_999, 1 << 33, (1 << 34) - 1] {
            let (lower, upper) = bounds(bucket(nanos));
            assert!(lower <= nanos && nanos < upper, "{nanos} in [{lower}, {upper})");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for index in 1..BUCKETS - 1 {
            assert_eq!(bucket(bounds(index).0), index);
            assert_eq!(bounds(index).1, bounds(index + 1).0);
        }
    }

    #[test]
    fn quantiles_and_prometheus_buckets() {
        let mut counts = vec![0u64; WIDTH];
        for nanos in (1..=1000).map(|i| i * 1000) {
            counts[bucket(nanos)] += 1;
        }
        let p50 = quantile(&counts, 0.5).unwrap();
        assert!((440_000.0..560_000.0).contains(&p50), "{p50}");
        let p99 = quantile(&counts, 0.99).unwrap();
        assert!((870_000.0..1_130_000.0).contains(&p99), "{p99}");
        let buckets = prometheus_buckets(&counts);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 1000);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(quantile(&vec![0; WIDTH], 0.5), None);
    }
}
