//! Red-cell texture inside a vessel: dark cell blobs with plasma gaps, periodic along the
//! centre line so that it can be shifted by the flow displacement every frame.

use crate::rng::Rng;

/// Sampling step of the texture along the centre line (µm).
const STEP_UM: f32 = 0.5;
/// Width of one independent lane of cells across wide vessels (µm).
const LANE_UM: f32 = 4.0;

/// Periodic red-cell density `rho(s, cross)` with mean 1.
#[derive(Clone, Debug)]
pub struct CellTexture {
    period_um: f32,
    samples: usize,
    lanes: usize,
    radius_um: f32,
    data: Vec<f32>,
}

impl CellTexture {
    /// A texture for a vessel of centre-line length `length_um` and lumen radius `radius_um`;
    /// `plasma` (0..1) is the density between cells relative to the mean density 1 (lower =
    /// more granular).
    pub fn new(rng: &mut Rng, length_um: f64, radius_um: f64, plasma: f32) -> Self {
        let period_um = (length_um + 60.0).max(300.0) as f32;
        let samples = (period_um / STEP_UM).ceil() as usize;
        let period_um = samples as f32 * STEP_UM;
        let radius = radius_um as f32;
        let lanes = ((2.0 * radius / LANE_UM).ceil() as usize).max(1);
        let mut data = vec![0.0f32; samples * lanes];
        // Cell length ~7 µm, random gaps (capillary haematocrit is low and uneven).
        let cell_sigma = 2.3f32;
        let reach = (3.0 * cell_sigma / STEP_UM).ceil() as isize;
        for lane in 0..lanes {
            let row = &mut data[lane * samples..(lane + 1) * samples];
            let mut pos = rng.range(0.0, 8.0) as f32;
            while pos < period_um {
                let amp = rng.range(0.7, 1.3) as f32;
                let centre = pos / STEP_UM;
                let c = centre.round() as isize;
                for k in -reach..=reach {
                    let i = (c + k).rem_euclid(samples as isize) as usize;
                    let dx = ((c + k) as f32 - centre) * STEP_UM / cell_sigma;
                    row[i] += amp * (-0.5 * dx * dx).exp();
                }
                // Cell length plus an exponential plasma gap.
                pos += 6.5 + (-(1.0 - rng.uniform()).ln() * 6.0) as f32;
            }
            let mean = row.iter().sum::<f32>() / samples as f32;
            let scale = if mean > 0.0 {
                (1.0 - plasma) / mean
            } else {
                0.0
            };
            for v in row.iter_mut() {
                *v = plasma + *v * scale;
            }
        }
        CellTexture {
            period_um,
            samples,
            lanes,
            radius_um: radius,
            data,
        }
    }

    /// Length after which the texture repeats (µm).
    pub fn period_um(&self) -> f32 {
        self.period_um
    }

    /// Density at arclength `s_um` and signed cross position `cross_um` (both µm); mean 1.
    #[inline]
    pub fn sample(&self, s_um: f32, cross_um: f32) -> f32 {
        let pos = (s_um / STEP_UM).rem_euclid(self.samples as f32);
        let i0 = (pos as usize).min(self.samples - 1);
        let f = pos - i0 as f32;
        let i1 = if i0 + 1 == self.samples { 0 } else { i0 + 1 };
        let lane_at = |lane: usize| {
            let row = &self.data[lane * self.samples..];
            row[i0] + (row[i1] - row[i0]) * f
        };
        if self.lanes == 1 {
            return lane_at(0);
        }
        let u = ((cross_um + self.radius_um) / LANE_UM - 0.5).clamp(0.0, (self.lanes - 1) as f32);
        let l0 = (u as usize).min(self.lanes - 1);
        let l1 = (l0 + 1).min(self.lanes - 1);
        let g = u - l0 as f32;
        let a = lane_at(l0);
        a + (lane_at(l1) - a) * g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texture_has_unit_mean_and_granularity() {
        let mut rng = Rng::new(5);
        let t = CellTexture::new(&mut rng, 200.0, 4.0, 0.3);
        let n = 4000;
        let vals: Vec<f32> = (0..n)
            .map(|i| t.sample(i as f32 * t.period_um() / n as f32, 0.0))
            .collect();
        let mean = vals.iter().sum::<f32>() / n as f32;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        let min = vals.iter().cloned().fold(f32::MAX, f32::min);
        let max = vals.iter().cloned().fold(f32::MIN, f32::max);
        assert!(min < 0.6 && max > 1.3, "{min} {max}");
        // Periodic.
        assert!((t.sample(3.3, 0.0) - t.sample(3.3 + t.period_um(), 0.0)).abs() < 1e-3);
    }
}
