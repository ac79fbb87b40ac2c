//! The static tissue background of a scene (before vessels): colour, illumination,
//! blotches, streaks, fine texture, halos, blur.

use crate::noise::Fbm;
use crate::rng::{mix, Rng};
use crate::spec::{Look, SynthSpec};

/// Relative absorbance of (R, G, B) for haemoglobin-like darkening (green strongest).
pub fn channel_absorption(look: Look) -> [f32; 3] {
    match look {
        Look::Skin => [0.40, 1.0, 0.62],
        Look::Sublingual => [1.0, 1.0, 1.0],
        Look::Nailfold => [0.22, 1.0, 0.75],
    }
}

/// Renders the background of a `width` x `height` scene as interleaved RGB `f32` (0..255).
/// `extra_absorbance` (green-channel units, one per pixel) darkens it before the blur.
pub fn render_background(
    spec: &SynthSpec,
    width: usize,
    height: usize,
    extra_absorbance: &[f32],
) -> Vec<f32> {
    let mut rng = Rng::derive(spec.seed, &[0xB6]);
    let um = spec.um_per_px as f32;
    let seed = |tag: u64| mix(&[spec.seed, 0xB6, tag]);
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let (hw, hh) = (spec.width as f32 / 2.0, spec.height as f32 / 2.0);
    let grad_angle = rng.range(0.0, std::f64::consts::TAU) as f32;
    let (gx, gy) = (grad_angle.cos(), grad_angle.sin());
    let k = channel_absorption(spec.look);
    let mut out = vec![0.0f32; width * height * 3];
    match spec.look {
        Look::Skin | Look::Nailfold => {
            let colour = if spec.look == Look::Skin {
                let g = rng.range(130.0, 138.0) as f32;
                [
                    g + rng.range(0.5, 3.0) as f32,
                    g,
                    g - rng.range(0.0, 2.5) as f32,
                ]
            } else {
                // Pale pink/yellowish nailfold skin under oil.
                let g = rng.range(165.0, 195.0) as f32;
                [
                    (g + rng.range(30.0, 50.0) as f32).min(250.0),
                    g,
                    g - rng.range(5.0, 30.0) as f32,
                ]
            };
            let vignette = rng.range(0.10, 0.16) as f32;
            let gradient = rng.range(0.02, 0.06) as f32;
            let blotch = Fbm::new(seed(1), 4, 0.55, 450.0 / um, 450.0 / um, 0.0);
            let tint = Fbm::new(seed(2), 3, 0.5, 300.0 / um, 300.0 / um, 0.0);
            let streak_angle = rng.range(0.0, std::f64::consts::PI) as f32;
            let streak = Fbm::new(seed(3), 3, 0.6, 500.0 / um, 90.0 / um, streak_angle);
            let fine = Fbm::new(seed(4), 2, 0.6, 9.0 / um, 9.0 / um, 0.0);
            // Smooth fields (features >= ~40 µm) on a coarse grid, interpolated per pixel.
            let grid = SmoothGrid::new(width, height, |xf, yf| {
                let nx = (xf - cx) / hw;
                let ny = (yf - cy) / hh;
                let light = (1.0 - vignette * 0.5 * (nx * nx + ny * ny))
                    * (1.0 + gradient * (nx * gx + ny * gy))
                    * (1.0 + 0.12 * blotch.sample(xf, yf))
                    * (1.0 + 0.04 * streak.sample(xf, yf));
                let pink = (0.04 * (tint.sample(xf, yf) + 0.1)).max(0.0);
                [light, pink]
            });
            let mut fine_row = vec![0.0f32; width];
            for y in 0..height {
                fine.sample_row(y as f32, &mut fine_row);
                for x in 0..width {
                    let [light, pink] = grid.at(x, y);
                    let light = light * (1.0 + 0.035 * fine_row[x]);
                    let a = pink + extra_absorbance[y * width + x];
                    let i = (y * width + x) * 3;
                    for c in 0..3 {
                        out[i + c] = colour[c] * light * (-k[c] * a).exp();
                    }
                }
            }
        }
        Look::Sublingual => {
            let grey = rng.range(150.0, 175.0) as f32;
            let vignette = rng.range(0.15, 0.25) as f32;
            let gradient = rng.range(0.03, 0.08) as f32;
            let blotch = Fbm::new(seed(1), 4, 0.55, 350.0 / um, 350.0 / um, 0.0);
            let fine = Fbm::new(seed(4), 3, 0.6, 12.0 / um, 12.0 / um, 0.0);
            let grid = SmoothGrid::new(width, height, |xf, yf| {
                let nx = (xf - cx) / hw;
                let ny = (yf - cy) / hh;
                let light = (1.0 - vignette * 0.5 * (nx * nx + ny * ny))
                    * (1.0 + gradient * (nx * gx + ny * gy))
                    * (1.0 + 0.16 * blotch.sample(xf, yf));
                [light, 0.0]
            });
            let mut fine_row = vec![0.0f32; width];
            for y in 0..height {
                fine.sample_row(y as f32, &mut fine_row);
                for x in 0..width {
                    let [light, _] = grid.at(x, y);
                    let light = light * (1.0 + 0.06 * fine_row[x]);
                    let v = grey * light * (-extra_absorbance[y * width + x]).exp();
                    let i = (y * width + x) * 3;
                    out[i..i + 3].fill(v);
                }
            }
        }
    }
    if spec.blur_sigma_px >= BOX_BLUR_FROM {
        crate::artefacts::box_blur_gaussian(&mut out, width, height, spec.blur_sigma_px);
    } else {
        gaussian_blur_rgb(&mut out, width, height, spec.blur_sigma_px);
    }
    out
}

/// From this blur sigma on, the background is blurred by three box passes (cost independent
/// of sigma) instead of an exact Gaussian.
const BOX_BLUR_FROM: f64 = 2.0;

/// Grid spacing (pixels) of the smooth background fields.
const GRID: usize = 4;

/// Two smooth fields sampled every [`GRID`] pixels and bilinearly interpolated.
pub(crate) struct SmoothGrid {
    gw: usize,
    values: Vec<[f32; 2]>,
}

impl SmoothGrid {
    pub(crate) fn new(width: usize, height: usize, f: impl Fn(f32, f32) -> [f32; 2]) -> Self {
        let gw = width / GRID + 2;
        let gh = height / GRID + 2;
        let mut values = Vec::with_capacity(gw * gh);
        for gy in 0..gh {
            for gx in 0..gw {
                values.push(f((gx * GRID) as f32, (gy * GRID) as f32));
            }
        }
        SmoothGrid { gw, values }
    }

    #[inline]
    pub(crate) fn at(&self, x: usize, y: usize) -> [f32; 2] {
        let (gx, gy) = (x / GRID, y / GRID);
        let tx = (x % GRID) as f32 / GRID as f32;
        let ty = (y % GRID) as f32 / GRID as f32;
        let i = gy * self.gw + gx;
        let (a, b, c, d) = (
            self.values[i],
            self.values[i + 1],
            self.values[i + self.gw],
            self.values[i + self.gw + 1],
        );
        let mut out = [0.0; 2];
        for (k, o) in out.iter_mut().enumerate() {
            let top = a[k] + (b[k] - a[k]) * tx;
            let bottom = c[k] + (d[k] - c[k]) * tx;
            *o = top + (bottom - top) * ty;
        }
        out
    }
}

/// In-place separable Gaussian blur of interleaved RGB `f32` (edges clamped).
pub fn gaussian_blur_rgb(img: &mut [f32], width: usize, height: usize, sigma: f64) {
    if sigma < 0.2 || width == 0 || height == 0 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut line = vec![0.0f32; width.max(height) * 3];
    // Horizontal pass.
    for y in 0..height {
        let row = &mut img[y * width * 3..(y + 1) * width * 3];
        line[..width * 3].copy_from_slice(row);
        let r = radius as usize;
        for x in 0..width {
            let mut acc = [0.0f32; 3];
            if x >= r && x + r < width {
                // Interior: no clamping (same sums in the same order as below).
                let window = &line[(x - r) * 3..(x + r + 1) * 3];
                for (kv, px) in kernel.iter().zip(window.chunks_exact(3)) {
                    acc[0] += kv * px[0];
                    acc[1] += kv * px[1];
                    acc[2] += kv * px[2];
                }
            } else {
                for (j, kv) in kernel.iter().enumerate() {
                    let sx =
                        (x as isize + j as isize - radius).clamp(0, width as isize - 1) as usize;
                    for c in 0..3 {
                        acc[c] += kv * line[sx * 3 + c];
                    }
                }
            }
            row[x * 3..x * 3 + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass: whole rows at a time (cache friendly), reading from a copy.
    let src = img.to_vec();
    let row_len = width * 3;
    for y in 0..height {
        let out = &mut img[y * row_len..(y + 1) * row_len];
        out.fill(0.0);
        for (j, kv) in kernel.iter().enumerate() {
            let sy = (y as isize + j as isize - radius).clamp(0, height as isize - 1) as usize;
            let input = &src[sy * row_len..(sy + 1) * row_len];
            for (o, v) in out.iter_mut().zip(input) {
                *o += kv * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_preserves_constant_images_and_mass() {
        let (w, h) = (17, 9);
        let mut img = vec![50.0f32; w * h * 3];
        gaussian_blur_rgb(&mut img, w, h, 1.5);
        assert!(img.iter().all(|v| (v - 50.0).abs() < 1e-3));
        let mut spike = vec![0.0f32; w * h * 3];
        spike[(4 * w + 8) * 3 + 1] = 100.0;
        gaussian_blur_rgb(&mut spike, w, h, 1.0);
        let sum: f32 = spike.iter().sum();
        assert!((sum - 100.0).abs() < 1e-2);
        assert!(spike[(4 * w + 8) * 3 + 1] < 20.0);
    }
}
