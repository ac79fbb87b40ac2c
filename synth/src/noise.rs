//! Smooth deterministic noise fields (value noise, fBm) and the per-frame Gaussian noise table.

use crate::rng::{mix, Rng};

/// Lattice value noise: a random value in `[-1, 1]` at every integer lattice point,
/// interpolated with a quintic fade. Pure function of `(seed, x, y)`.
#[derive(Clone, Copy, Debug)]
pub struct ValueNoise {
    seed: u64,
}

impl ValueNoise {
    /// A noise field keyed by `seed`.
    pub fn new(seed: u64) -> Self {
        ValueNoise { seed }
    }

    #[inline]
    fn lattice(&self, ix: i64, iy: i64) -> f32 {
        // A cheap integer hash (cheaper than `mix`, still well distributed).
        let mut h = self.seed
            ^ (ix as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (iy as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 29)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 32;
        (h as u32) as f32 * (2.0 / u32::MAX as f32) - 1.0
    }

    /// Noise value at `(x, y)` in lattice units, within `[-1, 1]`.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let fx = fast_floor(x);
        let fy = fast_floor(y);
        let (ix, iy) = (fx as i64, fy as i64);
        let tx = fade(x - fx);
        let ty = fade(y - fy);
        let a = self.lattice(ix, iy);
        let b = self.lattice(ix + 1, iy);
        let c = self.lattice(ix, iy + 1);
        let d = self.lattice(ix + 1, iy + 1);
        let top = a + (b - a) * tx;
        let bottom = c + (d - c) * tx;
        top + (bottom - top) * ty
    }
}

#[inline]
fn fade(t: f32) -> f32 {
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

/// Fractal sum of value-noise octaves with an anisotropic, rotated coordinate frame.
#[derive(Clone, Debug)]
pub struct Fbm {
    octaves: Vec<(ValueNoise, f32)>,
    /// Rotation (cos, sin) applied before scaling.
    rot: (f32, f32),
    /// Feature size along the rotated x axis, in pixels.
    scale_u: f32,
    /// Feature size along the rotated y axis, in pixels.
    scale_v: f32,
}

impl Fbm {
    /// `octaves` octaves, each half the size and `gain` times the amplitude of the previous one.
    /// `scale_u`/`scale_v` are the largest feature sizes (pixels) along/across `angle`.
    pub fn new(seed: u64, octaves: u32, gain: f32, scale_u: f32, scale_v: f32, angle: f32) -> Self {
        let mut amp = 1.0;
        let mut total = 0.0;
        let mut list = Vec::new();
        for o in 0..octaves {
            list.push((ValueNoise::new(mix(&[seed, o as u64])), amp));
            total += amp;
            amp *= gain;
        }
        for entry in &mut list {
            entry.1 /= total;
        }
        Fbm {
            octaves: list,
            rot: (angle.cos(), angle.sin()),
            scale_u: scale_u.max(1e-3),
            scale_v: scale_v.max(1e-3),
        }
    }

    /// `out[x] = self.sample(x as f32, y)` for a whole row, bit for bit, but much cheaper for
    /// unrotated fields (lattice values are reused along the row).
    pub fn sample_row(&self, y: f32, out: &mut [f32]) {
        if self.rot != (1.0, 0.0) {
            for (x, o) in out.iter_mut().enumerate() {
                *o = self.sample(x as f32, y);
            }
            return;
        }
        out.fill(0.0);
        let v = (-0.0 + y) / self.scale_v;
        let mut f = 1.0;
        for (n, a) in &self.octaves {
            let vy = v * f;
            let fy = fast_floor(vy);
            let iy = fy as i64;
            let ty = fade(vy - fy);
            let mut cached = i64::MIN;
            let (mut la, mut lb, mut lc, mut ld) = (0.0, 0.0, 0.0, 0.0);
            for (x, o) in out.iter_mut().enumerate() {
                let ux = (x as f32 + y * 0.0) / self.scale_u * f;
                let fx = fast_floor(ux);
                let ix = fx as i64;
                if ix != cached {
                    la = n.lattice(ix, iy);
                    lb = n.lattice(ix + 1, iy);
                    lc = n.lattice(ix, iy + 1);
                    ld = n.lattice(ix + 1, iy + 1);
                    cached = ix;
                }
                let tx = fade(ux - fx);
                let top = la + (lb - la) * tx;
                let bottom = lc + (ld - lc) * tx;
                *o += a * (top + (bottom - top) * ty);
            }
            f *= 2.0;
        }
    }

    /// Value at pixel `(x, y)`, roughly within `[-1, 1]` (typically ±0.5).
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let u = (x * self.rot.0 + y * self.rot.1) / self.scale_u;
        let v = (-x * self.rot.1 + y * self.rot.0) / self.scale_v;
        let mut sum = 0.0;
        let mut f = 1.0;
        for (n, a) in &self.octaves {
            sum += a * n.sample(u * f, v * f);
            f *= 2.0;
        }
        sum
    }
}

/// `x.floor()` for the finite, moderate values used here, without a libm call (`floorf`
/// is not inlined on baseline x86-64).
#[inline]
fn fast_floor(x: f32) -> f32 {
    let t = x as i32 as f32;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// Number of entries in [`GaussTable`] (a power of two).
pub const GAUSS_TABLE_LEN: usize = 1 << 12;

/// A fixed table of standard-normal deviates scaled by sigma, indexed by random bits;
/// far cheaper per pixel than Box-Muller and still deterministic.
#[derive(Clone, Debug)]
pub struct GaussTable {
    values: Vec<f32>,
}

impl GaussTable {
    /// A table of `sigma`-scaled normal deviates (the table itself depends only on sigma).
    pub fn new(sigma: f64) -> Self {
        let mut rng = Rng::new(0x6761_7573_735F_7462);
        let mut values: Vec<f32> = (0..GAUSS_TABLE_LEN).map(|_| rng.normal() as f32).collect();
        // Normalise the finite sample to exactly zero mean and unit variance.
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let k = sigma as f32 / var.sqrt();
        for v in &mut values {
            *v = (*v - mean) * k;
        }
        GaussTable { values }
    }

    /// Entry `i & (GAUSS_TABLE_LEN - 1)`.
    #[inline]
    pub fn get(&self, i: u64) -> f32 {
        self.values[(i as usize) & (GAUSS_TABLE_LEN - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_noise_is_bounded_and_continuous() {
        let n = ValueNoise::new(3);
        let mut prev = n.sample(0.0, 0.5);
        for i in 1..1000 {
            let v = n.sample(i as f32 * 0.01, 0.5);
            assert!((-1.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.1);
            prev = v;
        }
    }

    #[test]
    fn row_sampling_matches_point_sampling() {
        for angle in [0.0, 0.7] {
            let fbm = Fbm::new(42, 3, 0.6, 9.0, 7.0, angle);
            for y in [0.0f32, 3.0, 17.0, 200.0] {
                let mut row = vec![0.0; 300];
                fbm.sample_row(y, &mut row);
                for (x, v) in row.iter().enumerate() {
                    assert_eq!(v.to_bits(), fbm.sample(x as f32, y).to_bits(), "{x},{y}");
                }
            }
        }
    }

    #[test]
    fn gauss_table_has_requested_sigma() {
        let t = GaussTable::new(2.5);
        let n = GAUSS_TABLE_LEN as f32;
        let mean: f32 = (0..GAUSS_TABLE_LEN as u64).map(|i| t.get(i)).sum::<f32>() / n;
        let var: f32 = (0..GAUSS_TABLE_LEN as u64)
            .map(|i| t.get(i).powi(2))
            .sum::<f32>()
            / n;
        assert!(mean.abs() < 1e-4);
        assert!((var.sqrt() - 2.5).abs() < 1e-3);
    }
}
