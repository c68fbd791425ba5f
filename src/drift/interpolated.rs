//! Piecewise-linear CDFs for the sketched Wasserstein distance (issue 17).
//!
//! A quantile sketch's item of weight `w` stands for `w` values *around* it,
//! not `w` values *at* it. Integrating the gap between two sketches' step
//! CDFs treats every item as a point mass, so two sketches of the same
//! distribution, whose items fall at different places, differ by up to an
//! item's weight between every pair of items, and that adds to the
//! distance (identical normal samples of 10⁵ values, 8 seeds, k = 4,096: the
//! mean error against the exact distance is 5.0 % with steps, 3.8 % with
//! spread items; at k = 1,024 one seed went from 0.00647 to 0.00606 against
//! an exact 0.00487). Here each sketch item's weight is
//! spread linearly from the middle of the gap before it to the middle of the
//! gap after it — the CDF runs through each item's centre rank and is
//! linear in between — while exact points (exact values, small-domain
//! counts, exact tails) keep their steps, so an exact side gives the same
//! integral as before.
//!
//! **Bound.** Between two consecutive knots `a < b` of a side, the true
//! empirical CDF lies within the step CDF's own bound `δ` of `S(a)` (the
//! step CDF is flat there), and the linear CDF stays within
//! `[S(a) − s_a/2n, S(a) + s_b/2n]` (`s` the spread weight at a knot). So
//! the linear CDF is within `δ + s_max/2n` of the truth, and only on the
//! stretches next to a spread knot does the extra term apply:
//! `∫|L − F| ≤ ∫|S − F| bound + s_max/2n · (length of those stretches)`.
//! [`Cdf::spread_bound`] returns the second term.

use std::cmp::Ordering;

/// A weighted point of a numeric distribution: its value, its weight, and
/// how much of the weight stands for values around it (0 for an exact
/// point; at most the weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub(crate) value: f64,
    pub(crate) weight: f64,
    pub(crate) spread: f64,
}

impl Point {
    /// An exact point: all its weight sits at its value.
    pub(crate) fn exact(value: f64, weight: f64) -> Self {
        Self {
            value,
            weight,
            spread: 0.0,
        }
    }

    /// A sketch item standing for `weight` values around `value`.
    pub(crate) fn spread(value: f64, weight: f64) -> Self {
        Self {
            value,
            weight,
            spread: weight,
        }
    }
}

/// One distinct value of a side: its CDF just before and just after it.
#[derive(Debug, Clone, Copy)]
struct Knot {
    x: f64,
    below: f64,
    above: f64,
    spread: bool,
}

/// A piecewise-linear CDF: steps at its knots, linear between them.
#[derive(Debug, Clone)]
pub(crate) struct Cdf {
    knots: Vec<Knot>,
    /// The largest spread weight over the total weight.
    max_spread: f64,
}

impl Cdf {
    /// The CDF of points sorted by value (`f64::total_cmp`); `None` when the
    /// points weigh nothing.
    pub(crate) fn new(points: &[Point]) -> Option<Self> {
        let total: f64 = points.iter().map(|p| p.weight).sum();
        if total.partial_cmp(&0.0) != Some(Ordering::Greater) {
            return None;
        }
        let mut knots: Vec<Knot> = Vec::new();
        let (mut cum, mut max_spread, mut i) = (0.0, 0.0f64, 0);
        while i < points.len() {
            let x = points[i].value;
            let (mut w, mut s) = (0.0, 0.0f64);
            while i < points.len() && points[i].value.total_cmp(&x).is_eq() {
                w += points[i].weight;
                s = s.max(points[i].spread.clamp(0.0, points[i].weight));
                i += 1;
            }
            max_spread = max_spread.max(s);
            // Half the spread weight lies in the gap before the value, half
            // in the gap after it; the rest is a step at the value.
            knots.push(Knot {
                x,
                below: (cum + s / 2.0) / total,
                above: (cum + w - s / 2.0) / total,
                spread: s > 0.0,
            });
            cum += w;
        }
        // Nothing lies below the smallest value or above the largest: the
        // outer halves of their spread stay at them.
        if let Some(first) = knots.first_mut() {
            first.below = 0.0;
        }
        if let Some(last) = knots.last_mut() {
            last.above = 1.0;
        }
        Some(Self {
            knots,
            max_spread: max_spread / total,
        })
    }

    /// What spreading can add to `∫|L − F|` beyond the step CDF's bound:
    /// half the largest spread share times the length of the stretches
    /// next to a spread knot.
    pub(crate) fn spread_bound(&self) -> f64 {
        let stretch: f64 = self
            .knots
            .windows(2)
            .filter(|k| k[0].spread || k[1].spread)
            .map(|k| k[1].x - k[0].x)
            .sum();
        self.max_spread / 2.0 * stretch
    }
}

/// Walks one CDF along increasing `x`.
struct Walker<'a> {
    knots: &'a [Knot],
    next: usize,
}

impl Walker<'_> {
    /// The CDF just before and just after `x` (non-decreasing calls).
    fn at(&mut self, x: f64) -> (f64, f64) {
        while self.next < self.knots.len() && self.knots[self.next].x < x {
            self.next += 1;
        }
        match (
            self.next.checked_sub(1).map(|i| self.knots[i]),
            self.knots.get(self.next),
        ) {
            (_, Some(k)) if k.x == x => (k.below, k.above),
            (None, _) => (0.0, 0.0),
            (Some(_), None) => (1.0, 1.0),
            (Some(a), Some(b)) => {
                let v = a.above + (b.below - a.above) * (x - a.x) / (b.x - a.x);
                (v, v)
            }
        }
    }
}

/// `∫|L_a − L_b| dx` over the real line: the first Wasserstein distance
/// between the two piecewise-linear CDFs, exactly.
pub(crate) fn gap_integral(a: &Cdf, b: &Cdf) -> f64 {
    let mut xs: Vec<f64> = a.knots.iter().chain(&b.knots).map(|k| k.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let (mut wa, mut wb) = (
        Walker {
            knots: &a.knots,
            next: 0,
        },
        Walker {
            knots: &b.knots,
            next: 0,
        },
    );
    let mut total = 0.0;
    let mut previous: Option<(f64, f64)> = None;
    for &x in &xs {
        let ((a_below, a_above), (b_below, b_above)) = (wa.at(x), wb.at(x));
        if let Some((x0, d0)) = previous {
            total += linear_abs_integral(d0, a_below - b_below, x - x0);
        }
        previous = Some((x, a_above - b_above));
    }
    total
}

/// `∫₀ʰ |d0 + (d1 − d0)·t/h| dt`.
fn linear_abs_integral(d0: f64, d1: f64, h: f64) -> f64 {
    if d0 * d1 >= 0.0 {
        h * (d0.abs() + d1.abs()) / 2.0
    } else {
        h * (d0 * d0 + d1 * d1) / (2.0 * (d0.abs() + d1.abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(values: &[f64]) -> Cdf {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let points: Vec<Point> = v.iter().map(|&x| Point::exact(x, 1.0)).collect();
        Cdf::new(&points).expect("non-empty")
    }

    /// `∫|F_a − F_b|` of two samples' step CDFs, by brute force over the
    /// merged values.
    fn step_integral(a: &[f64], b: &[f64]) -> f64 {
        let cdf = |v: &[f64], x: f64| v.iter().filter(|&&y| y <= x).count() as f64 / v.len() as f64;
        let mut xs: Vec<f64> = a.iter().chain(b).copied().collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        xs.windows(2)
            .map(|w| (cdf(a, w[0]) - cdf(b, w[0])).abs() * (w[1] - w[0]))
            .sum()
    }

    #[test]
    fn exact_points_give_scipys_wasserstein_distance() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0
        let d = gap_integral(&exact(&[0.0, 1.0, 3.0]), &exact(&[5.0, 6.0, 8.0]));
        assert!((d - 5.0).abs() < 1e-12, "{d}");
        // scipy.stats.wasserstein_distance([0, 1], [0.5]) == 0.5
        let d = gap_integral(&exact(&[0.0, 1.0]), &exact(&[0.5]));
        assert!((d - 0.5).abs() < 1e-12, "{d}");
    }

    #[test]
    fn a_spread_item_is_uniform_between_its_neighbours_centres() {
        // Items at 0, 1, 2 of weight 2 each; the outer halves of the end
        // items' spread stay at them, so L(0+) = 1/6, L(1) = 1/2,
        // L(2−) = 5/6: a step of 1/6 at each end and a ramp between.
        let points = [
            Point::spread(0.0, 2.0),
            Point::spread(1.0, 2.0),
            Point::spread(2.0, 2.0),
        ];
        let cdf = Cdf::new(&points).expect("non-empty");
        // Against a point mass at 1: ∫₀¹ L + ∫₁² (1 − L), L linear 1/6 → 5/6.
        let d = gap_integral(&cdf, &exact(&[1.0]));
        let expected = (1.0 / 6.0 + 1.0 / 2.0) / 2.0 + (1.0 / 2.0 + 1.0 / 6.0) / 2.0;
        assert!((d - expected).abs() < 1e-12, "{d} vs {expected}");
        // Largest spread share 2/6, stretches of length 2 next to spread knots.
        assert!((cdf.spread_bound() - (1.0 / 3.0) / 2.0 * 2.0).abs() < 1e-12);
    }

    #[test]
    fn a_sign_change_inside_a_stretch_is_integrated_as_two_triangles() {
        // d goes from 1 to −1 over a length of 2: two triangles of area 1/2.
        assert!((linear_abs_integral(1.0, -1.0, 2.0) - 1.0).abs() < 1e-15);
        assert!((linear_abs_integral(0.5, 0.5, 2.0) - 1.0).abs() < 1e-15);
    }

    proptest! {
        /// Exact points: the integral is the step CDFs' one, computed the
        /// plain way on the merged support.
        #[test]
        fn exact_points_equal_the_step_integral(
            a in prop::collection::vec(-100i32..100, 1..40),
            b in prop::collection::vec(-100i32..100, 1..40),
        ) {
            let (fa, fb): (Vec<f64>, Vec<f64>) = (
                a.iter().map(|&x| f64::from(x)).collect(),
                b.iter().map(|&x| f64::from(x)).collect(),
            );
            let plain = step_integral(&fa, &fb);
            let d = gap_integral(&exact(&fa), &exact(&fb));
            prop_assert!((d - plain).abs() <= 1e-9 * plain.max(1.0), "{d} vs {plain}");
        }

        /// Symmetric, zero on itself, and within the spread bounds of the
        /// step integral for any spread.
        #[test]
        fn spreading_moves_the_distance_by_at_most_the_spread_bounds(
            a in prop::collection::vec((-1000i32..1000, 1u32..64), 1..60),
            b in prop::collection::vec((-1000i32..1000, 1u32..64), 1..60),
        ) {
            let to_points = |v: &[(i32, u32)], spread: bool| {
                let mut p: Vec<Point> = v
                    .iter()
                    .map(|&(x, w)| {
                        if spread {
                            Point::spread(f64::from(x), f64::from(w))
                        } else {
                            Point::exact(f64::from(x), f64::from(w))
                        }
                    })
                    .collect();
                p.sort_by(|p, q| p.value.total_cmp(&q.value));
                p
            };
            let (sa, sb) = (
                Cdf::new(&to_points(&a, true)).expect("weighted"),
                Cdf::new(&to_points(&b, true)).expect("weighted"),
            );
            let (ea, eb) = (
                Cdf::new(&to_points(&a, false)).expect("weighted"),
                Cdf::new(&to_points(&b, false)).expect("weighted"),
            );
            let (d, step) = (gap_integral(&sa, &sb), gap_integral(&ea, &eb));
            prop_assert!((d - gap_integral(&sb, &sa)).abs() <= 1e-9 * d.max(1.0));
            prop_assert!(gap_integral(&sa, &sa).abs() <= 1e-12);
            let bound = sa.spread_bound() + sb.spread_bound();
            prop_assert!((d - step).abs() <= bound + 1e-9, "{d} vs {step} ± {bound}");
        }
    }
}
