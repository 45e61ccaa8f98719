//! A log-linear latency histogram: constant memory, about 3 % precision, mergeable.
//!
//! Values below 32 have a bucket each; above, every power of two is split into 32 equal
//! buckets, so a bucket is at most 1/32 of its values wide whatever the magnitude. Recording is
//! a few instructions (no allocation), which keeps the subscriber's cost per message low, and
//! subscribers' histograms add up into one for the report.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for any u64.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Counts of values (nanoseconds, in the bench) by bucket.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        self.counts[index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// The number of values recorded; the report reads percentiles, only the tests count.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The value below which `quantile` (0..=1) of the values lie: the middle of the bucket that
    /// holds it, never above the maximum.
    pub fn quantile(&self, quantile: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // The rank of the value wanted, 1-based: p50 of 4 values is the 2nd.
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bounds(bucket);
                return Some((low + width / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// The bucket of `value`.
fn index(value: u64) -> usize {
    if value < SUB as u64 {
        return value as usize;
    }
    let top = 63 - value.leading_zeros(); // the highest set bit, at least SUB_BITS
    let shift = top - SUB_BITS;
    let power = (top - SUB_BITS + 1) as usize;
    power * SUB + ((value >> shift) as usize & (SUB - 1))
}

/// The lowest value of a bucket and its width.
fn bounds(bucket: usize) -> (u64, u64) {
    if bucket < SUB {
        return (bucket as u64, 1);
    }
    let power = (bucket / SUB) as u32;
    let sub = (bucket % SUB) as u64;
    let top = power + SUB_BITS - 1;
    let shift = top - SUB_BITS;
    ((1 << top) | (sub << shift), 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_inside_its_bucket() {
        let samples = [
            0,
            1,
            31,
            32,
            33,
            63,
            64,
            65,
            1000,
            123_456_789,
            u64::MAX / 3,
            u64::MAX,
        ];
        for value in samples {
            let (low, width) = bounds(index(value));
            assert!(low <= value, "{value}: bucket starts at {low}");
            assert!(value - low < width, "{value}: bucket [{low}, +{width})");
            assert!(
                width <= (value / 32).max(1),
                "{value}: bucket too wide ({width})"
            );
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_are_within_the_bucket_precision() {
        let mut histogram = Histogram::default();
        for value in 1..=10_000u64 {
            histogram.record(value * 1000);
        }
        let near = |got: Option<u64>, want: f64| {
            let got = got.expect("values recorded") as f64;
            assert!(
                (got - want).abs() / want < 0.04,
                "got {got}, want about {want}"
            );
        };
        near(histogram.quantile(0.5), 5_000_000.0);
        near(histogram.quantile(0.99), 9_900_000.0);
        assert_eq!(histogram.max(), Some(10_000_000));
        assert_eq!(histogram.quantile(1.0), Some(10_000_000));

        let mut other = Histogram::default();
        other.record(20_000_000);
        histogram.merge(&other);
        assert_eq!(histogram.count(), 10_001);
        assert_eq!(histogram.max(), Some(20_000_000));
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        assert_eq!(histogram.max(), None);
        assert_eq!(histogram.mean(), None);
    }
}
