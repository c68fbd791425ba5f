//! Count, mean and variance that merge: Welford's update and Chan et al.'s
//! pairwise combination (Chan, Golub & LeVeque, "Algorithms for computing the
//! sample variance", 1983). Merging is exact for the count and associative and
//! commutative up to floating-point rounding (property-tested to 1e-9).

use serde::{Deserialize, Serialize};

/// Running moments of finite values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Number of values.
    pub n: u64,
    /// Their mean (0 when `n == 0`).
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// Adds one value (callers pass finite values only).
    pub fn update(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds one value `count` times (Chan et al.'s combination with a block
    /// of `count` equal values, whose spread is zero).
    pub fn update_weighted(&mut self, x: f64, count: u64) {
        match count {
            0 => {}
            1 => self.update(x),
            _ => self.merge(&Moments {
                n: count,
                mean: x,
                m2: 0.0,
            }),
        }
    }

    /// Combines two sets of moments.
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let n = self.n + other.n;
        let (na, nb, nf) = (self.n as f64, other.n as f64, n as f64);
        let delta = other.mean - self.mean;
        self.mean += delta * nb / nf;
        self.m2 += other.m2 + delta * delta * na * nb / nf;
        self.n = n;
    }

    /// Population variance (ddof 0); `None` without values.
    pub fn variance_population(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2 / self.n as f64).max(0.0))
    }

    /// Sample variance (ddof 1); `None` with fewer than 2 values.
    pub fn variance_sample(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }

    /// Population standard deviation (ddof 0).
    pub fn std_population(&self) -> Option<f64> {
        self.variance_population().map(f64::sqrt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn of(values: &[f64]) -> Moments {
        let mut m = Moments::default();
        values.iter().for_each(|&v| m.update(v));
        m
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn known_values() {
        let m = of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.n, 8);
        assert_eq!(m.mean, 5.0);
        assert_eq!(m.variance_population(), Some(4.0));
        assert_eq!(m.std_population(), Some(2.0));
        assert!(close(m.variance_sample().unwrap(), 32.0 / 7.0));
        assert_eq!(Moments::default().variance_population(), None);
    }

    proptest! {
        #[test]
        fn merge_of_parts_equals_the_whole(
            values in proptest::collection::vec(-1e6f64..1e6, 0..200),
            cut1 in 0usize..200, cut2 in 0usize..200,
        ) {
            let (c1, c2) = (cut1.min(values.len()), cut2.min(values.len()));
            let (c1, c2) = (c1.min(c2), c1.max(c2));
            let (a, b, c) = (of(&values[..c1]), of(&values[c1..c2]), of(&values[c2..]));
            let whole = of(&values);
            let mut left = a; left.merge(&b); left.merge(&c);        // (a+b)+c
            let mut bc = b; bc.merge(&c);
            let mut right = a; right.merge(&bc);                     // a+(b+c)
            let mut swapped = c; swapped.merge(&a); swapped.merge(&b); // c+a+b
            for m in [left, right, swapped] {
                prop_assert_eq!(m.n, whole.n);
                prop_assert!(close(m.mean, whole.mean), "{} vs {}", m.mean, whole.mean);
                prop_assert!(close(m.m2, whole.m2), "{} vs {}", m.m2, whole.m2);
            }
        }
    }
}
