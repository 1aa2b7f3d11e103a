//! Small statistics: medians, ratios, and the average/minimum/maximum across ranks.

/// The median of `xs` (mean of the two middle values for an even count);
/// `None` when `xs` is empty or holds a NaN.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `a / b`, or `None` when `b` is zero or either is not finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    if !a.is_finite() || !b.is_finite() || b == 0.0 {
        return None;
    }
    Some(a / b)
}

/// Average, minimum and maximum of per-rank values (OSU's `-f` columns).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Mean over ranks.
    pub avg: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs`; `None` when empty.
    pub fn of(xs: &[f64]) -> Option<Spread> {
        if xs.is_empty() {
            return None;
        }
        let sum: f64 = xs.iter().sum();
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread {
            avg: sum / xs.len() as f64,
            min,
            max,
        })
    }

    /// A single measurement (point-to-point benchmarks report rank 0's).
    pub fn single(x: f64) -> Spread {
        Spread {
            avg: x,
            min: x,
            max: x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
    }

    #[test]
    fn spread() {
        let s = Spread::of(&[1.0, 2.0, 6.0]).unwrap();
        assert_eq!(
            s,
            Spread {
                avg: 3.0,
                min: 1.0,
                max: 6.0
            }
        );
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::single(2.0).max, 2.0);
    }
}
