//! Observation and action spaces, as in Gymnasium 1.x (`gymnasium.spaces`): `Discrete`, `Box`
//! and `Tuple`.

use std::fmt;

use wick_core::rng::Rng;

/// A Gymnasium space.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// `Discrete(n, start)`: the integers `start, start+1, ..., start+n-1`.
    Discrete { n: usize, start: i64 },
    /// `Box(low, high, shape, float32)`: a float32 array, bounds per element (may be infinite).
    Box { low: Vec<f32>, high: Vec<f32>, shape: Vec<usize> },
    /// `Tuple(spaces)`: one element from each.
    Tuple(Vec<Space>),
}

impl Space {
    /// `Discrete(n)` starting at 0.
    pub fn discrete(n: usize) -> Space {
        Space::Discrete { n, start: 0 }
    }

    /// A one-dimensional float32 `Box`.
    pub fn box1(low: Vec<f32>, high: Vec<f32>) -> Space {
        let shape = vec![low.len()];
        Space::Box { low, high, shape }
    }

    /// `n` of a `Discrete` space.
    pub fn n(&self) -> Option<usize> {
        match self {
            Space::Discrete { n, .. } => Some(*n),
            _ => None,
        }
    }

    /// Number of scalars in one element (Discrete 1, Box its size, Tuple the sum).
    pub fn flat_len(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { shape, .. } => shape.iter().product(),
            Space::Tuple(v) => v.iter().map(Space::flat_len).sum(),
        }
    }

    /// Whether the discrete value `x` is in a `Discrete` space.
    pub fn contains_discrete(&self, x: i64) -> bool {
        matches!(self, Space::Discrete { n, start } if x >= *start && x < *start + *n as i64)
    }

    /// Whether a flat element (Discrete: one value; Box: its values; Tuple: the concatenation)
    /// is in the space.
    pub fn contains_flat(&self, x: &[f64]) -> bool {
        if x.len() != self.flat_len() {
            return false;
        }
        match self {
            Space::Discrete { .. } => x[0].fract() == 0.0 && self.contains_discrete(x[0] as i64),
            Space::Box { low, high, .. } => x
                .iter()
                .zip(low.iter().zip(high))
                .all(|(&v, (&l, &h))| (v as f32) >= l && (v as f32) <= h),
            Space::Tuple(v) => {
                let mut i = 0;
                v.iter().all(|s| {
                    let k = s.flat_len();
                    let ok = s.contains_flat(&x[i..i + k]);
                    i += k;
                    ok
                })
            }
        }
    }

    /// A uniform sample (Box: uniform on finite bounds, standard normal where both are infinite,
    /// shifted exponential where one is, as Gymnasium), flattened.
    pub fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.flat_len());
        self.sample_into(rng, &mut out);
        out
    }

    fn sample_into(&self, rng: &mut Rng, out: &mut Vec<f64>) {
        match self {
            Space::Discrete { n, start } => out.push((*start + rng.below(*n as u64) as i64) as f64),
            Space::Box { low, high, .. } => {
                for (&l, &h) in low.iter().zip(high) {
                    let (l, h) = (l as f64, h as f64);
                    let v = match (l.is_finite(), h.is_finite()) {
                        (true, true) => l + (h - l) * rng.uniform(),
                        (false, false) => rng.normal(),
                        (true, false) => l - (1.0 - rng.uniform()).ln(),
                        (false, true) => h + (1.0 - rng.uniform()).ln(),
                    };
                    out.push(v);
                }
            }
            Space::Tuple(v) => v.iter().for_each(|s| s.sample_into(rng, out)),
        }
    }
}

impl fmt::Display for Space {
    /// Gymnasium's repr: `Discrete(4)`, `Box(-inf, inf, (4,), float32)` (per-element bounds
    /// shortened to their range), `Tuple(Discrete(32), Discrete(11), Discrete(2))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Space::Discrete { n, start: 0 } => write!(f, "Discrete({n})"),
            Space::Discrete { n, start } => write!(f, "Discrete({n}, start={start})"),
            Space::Box { low, high, shape } => {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                let comma = if shape.len() == 1 { "," } else { "" };
                let bound = |v: &[f32]| {
                    if v.iter().all(|x| *x == v[0]) {
                        format!("{}", v[0])
                    } else {
                        let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
                        format!("[{}]", parts.join(" "))
                    }
                };
                write!(f, "Box({}, {}, ({}{comma}), float32)", bound(low), bound(high), dims.join(", "))
            }
            Space::Tuple(v) => {
                let parts: Vec<String> = v.iter().map(|s| s.to_string()).collect();
                write!(f, "Tuple({})", parts.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_contains() {
        let t = Space::Tuple(vec![Space::discrete(32), Space::discrete(11), Space::discrete(2)]);
        assert_eq!(t.to_string(), "Tuple(Discrete(32), Discrete(11), Discrete(2))");
        assert_eq!(t.flat_len(), 3);
        assert!(t.contains_flat(&[21.0, 10.0, 1.0]));
        assert!(!t.contains_flat(&[21.0, 11.0, 1.0]));
        let b = Space::box1(vec![-1.0, f32::NEG_INFINITY], vec![1.0, f32::INFINITY]);
        assert_eq!(b.to_string(), "Box([-1 -inf], [1 inf], (2,), float32)");
        assert!(b.contains_flat(&[0.5, 1e30]));
        assert!(!b.contains_flat(&[1.5, 0.0]));
        let mut r = Rng::stream(0, "t");
        for _ in 0..100 {
            assert!(t.contains_flat(&t.sample(&mut r)));
            assert!(b.contains_flat(&b.sample(&mut r)));
        }
        assert!(Space::discrete(4).contains_discrete(3) && !Space::discrete(4).contains_discrete(4));
    }
}
