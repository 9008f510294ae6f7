//! Seeded random streams.
//!
//! Candle's CPU generator cannot be seeded, so wick never draws from the backend: every
//! random consumer of a run (parameter init, data order, environment, policy sampling,
//! masks, augmentations, worker threads) owns a [`Rng`] derived from the run's `--seed`
//! and a stream name, optionally with an index (worker, batch, env copy):
//!
//! ```text
//! key   = splitmix64(seed ^ splitmix64(fnv1a64(name) ^ splitmix64(index + 1)))
//! state = the next four outputs of the SplitMix64 sequence started at key
//! ```
//!
//! The generator is xoshiro256++ (Blackman & Vigna 2019): 256 bits of state that a
//! checkpoint stores as four `u64`, so a resumed run continues every stream exactly.
//! Streams with different names or indices are statistically independent for all
//! practical purposes; the same (seed, name, index) always gives the same stream.

use rand::RngCore;

/// One step of SplitMix64 (Steele, Lea & Flood 2014) used as a 64-bit mixing function.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bit: a stable hash of a stream name (std's hashers are not stable across releases).
pub fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// xoshiro256++ generator; implements [`rand::RngCore`] so `rand` and `rand_distr` work on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The stream `name` of the run seeded with `seed`.
    pub fn stream(seed: u64, name: &str) -> Rng {
        Rng::stream_indexed(seed, name, 0)
    }

    /// The `index`-th sub-stream of `name` (worker i, batch k, env copy j ...).
    pub fn stream_indexed(seed: u64, name: &str, index: u64) -> Rng {
        let key = splitmix64(seed ^ splitmix64(fnv1a64(name) ^ splitmix64(index.wrapping_add(1))));
        let mut x = key;
        let mut s = [0u64; 4];
        for v in s.iter_mut() {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *v = splitmix64(x.wrapping_sub(0x9E37_79B9_7F4A_7C15));
        }
        if s == [0; 4] {
            s[0] = 1; // the all-zero state is the one fixed point; never reached in practice
        }
        Rng { s }
    }

    /// The generator's whole state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// Rebuild a generator from [`Rng::state`].
    pub fn from_state(s: [u64; 4]) -> Rng {
        Rng { s }
    }

    #[inline]
    fn next(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// The next 64 random bits (for a key of a counter-based stream of one's own).
    #[inline]
    pub fn bits(&mut self) -> u64 {
        self.next()
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (Lemire's multiply-shift with rejection: unbiased).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        loop {
            let x = self.next();
            let m = (x as u128) * (n as u128);
            let lo = m as u64;
            if lo >= n || lo >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Standard normal draw (Box–Muller on two uniforms; one value per call, deterministic).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        self.shuffle(&mut v);
        v
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.next()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let b = self.next().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = { let mut r = Rng::stream(7, "init"); (0..4).map(|_| r.next_u64()).collect() };
        let b: Vec<u64> = { let mut r = Rng::stream(7, "init"); (0..4).map(|_| r.next_u64()).collect() };
        assert_eq!(a, b);
        for other in [Rng::stream(8, "init"), Rng::stream(7, "data"), Rng::stream_indexed(7, "init", 1)] {
            let mut r = other;
            let c: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
            assert_ne!(a, c);
        }
    }

    #[test]
    fn state_round_trip_continues_the_stream() {
        let mut r = Rng::stream(1, "x");
        for _ in 0..10 { r.next_u64(); }
        let mut r2 = Rng::from_state(r.state());
        assert_eq!(r.next_u64(), r2.next_u64());
    }

    #[test]
    fn uniform_and_below_are_in_range_and_roughly_uniform() {
        let mut r = Rng::stream(3, "u");
        let mut counts = [0usize; 10];
        let mut mean = 0.0;
        for _ in 0..100_000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            mean += u;
            counts[r.below(10) as usize] += 1;
        }
        assert!((mean / 100_000.0 - 0.5).abs() < 0.01);
        for c in counts { assert!((9_500..10_500).contains(&c), "{counts:?}"); }
        let n: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
        let m = n.iter().sum::<f64>() / n.len() as f64;
        let v = n.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n.len() as f64;
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.02, "mean {m} var {v}");
    }

    #[test]
    fn documented_scheme_is_pinned() {
        // The value an independent Python transcription of the module-doc scheme gives for
        // (seed 0, "init", index 0): changing the derivation would silently change every result.
        let mut r = Rng::stream(0, "init");
        assert_eq!(r.next_u64(), 0x0ebf_22c1_4478_9306);
    }
}
