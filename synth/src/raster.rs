//! Rasterises the scene geometry once per clip: lumen mask, per-pixel dominant vessel with
//! arclength and cross-section position, and the background darkening of halos/ghosts.

use crate::scene::{polyline_length, Halo, Scene};

/// Sentinel for "no vessel here".
pub const NO_VESSEL: u32 = u32::MAX;

/// Per-scene-pixel rasterised geometry.
#[derive(Clone, Debug)]
pub struct Raster {
    /// Lumen mask (255 where the pixel centre is within the radius of a centre line).
    pub mask: Vec<u8>,
    /// Green-channel absorbance added to the background (halos, ghosts).
    pub background_absorbance: Vec<f32>,
    /// Absorbance of the dominant vessel at mean red-cell density (0 = none).
    pub absorbance: Vec<f32>,
    /// Index of the dominant vessel, or [`NO_VESSEL`].
    pub vessel: Vec<u32>,
    /// Arclength of the nearest centre-line point, in µm.
    pub arclength_um: Vec<f32>,
    /// Signed distance to the centre line, in µm.
    pub cross_um: Vec<f32>,
}

/// `erf` by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
pub fn erf(x: f64) -> f64 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    sign * y
}

/// Cross-section absorption profile of a tube of radius `r` seen through a Gaussian blur of
/// `sigma`, at distance `d` from its centre line (1 at the centre of a wide tube).
pub fn tube_profile(d: f64, r: f64, sigma: f64) -> f64 {
    let k = 1.0 / (std::f64::consts::SQRT_2 * sigma);
    let band = 0.5 * (erf((r - d) * k) + erf((r + d) * k));
    // Thicker path through the middle of a cylinder.
    let q = (1.0 - (d / r).powi(2)).max(0.0).sqrt();
    band * (0.7 + 0.3 * q)
}

/// Nearest-point record of one vessel over its bounding box.
struct Local {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    dist: Vec<f32>,
    s: Vec<f32>,
    cross: Vec<f32>,
}

/// Distance field of a polyline over its bounding box expanded by `margin` (clipped to the scene).
fn local_field(points: &[[f64; 2]], margin: f64, width: usize, height: usize) -> Option<Local> {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in points {
        for c in 0..2 {
            lo[c] = lo[c].min(p[c]);
            hi[c] = hi[c].max(p[c]);
        }
    }
    let x0 = (lo[0] - margin).floor().max(0.0);
    let y0 = (lo[1] - margin).floor().max(0.0);
    let x1 = (hi[0] + margin).ceil().min(width as f64 - 1.0);
    let y1 = (hi[1] + margin).ceil().min(height as f64 - 1.0);
    if x1 < x0 || y1 < y0 {
        return None;
    }
    let (x0, y0, x1, y1) = (x0 as usize, y0 as usize, x1 as usize, y1 as usize);
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let mut local = Local {
        x0,
        y0,
        w,
        h,
        dist: vec![f32::MAX; w * h],
        s: vec![0.0; w * h],
        cross: vec![0.0; w * h],
    };
    let mut s0 = 0.0;
    for seg in points.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len2 = dx * dx + dy * dy;
        let len = len2.sqrt();
        if len < 1e-9 {
            continue;
        }
        let sx0 = ((a[0].min(b[0]) - margin).floor().max(x0 as f64)) as usize;
        let sy0 = ((a[1].min(b[1]) - margin).floor().max(y0 as f64)) as usize;
        let sx1 = ((a[0].max(b[0]) + margin).ceil().min(x1 as f64)) as isize;
        let sy1 = ((a[1].max(b[1]) + margin).ceil().min(y1 as f64)) as isize;
        for py in sy0 as isize..=sy1 {
            let ry = py as f64 - a[1];
            let row = (py as usize - y0) * w;
            for px in sx0 as isize..=sx1 {
                let rx = px as f64 - a[0];
                let t = ((rx * dx + ry * dy) / len2).clamp(0.0, 1.0);
                let (ex, ey) = (rx - t * dx, ry - t * dy);
                let d = (ex * ex + ey * ey).sqrt() as f32;
                let i = row + (px as usize - x0);
                if d < local.dist[i] {
                    local.dist[i] = d;
                    local.s[i] = (s0 + t * len) as f32;
                    let side = dx * ry - dy * rx;
                    local.cross[i] = if side < 0.0 { -d } else { d };
                }
            }
        }
        s0 += len;
    }
    Some(local)
}

fn add_halo(background: &mut [f32], scene_w: usize, local: &Local, halo: &Halo) {
    let inv = 1.0 / halo.radius_px as f32;
    let strength = halo.strength as f32;
    for ly in 0..local.h {
        for lx in 0..local.w {
            let d = local.dist[ly * local.w + lx];
            if d == f32::MAX {
                continue;
            }
            let q = d * inv;
            if q < 3.0 {
                background[(local.y0 + ly) * scene_w + local.x0 + lx] += strength * (-q * q).exp();
            }
        }
    }
}

/// Thins a densely sampled polyline so that kept points are about `step` apart (first and
/// last points are always kept). Halos and wide vessels do not need sub-pixel sampling.
fn decimate(points: &[[f64; 2]], step: f64) -> Vec<[f64; 2]> {
    let mut out: Vec<[f64; 2]> = Vec::with_capacity(points.len());
    let mut since = 0.0;
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            let q = points[i - 1];
            since += ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
        }
        if i == 0 || i + 1 == points.len() || since >= step {
            out.push(*p);
            since = 0.0;
        }
    }
    out
}

/// Rasterises `scene`: `blur_sigma_px` softens the lumen edge (floored at 0.5 px for
/// anti-aliasing), `um_per_px` converts arclengths to µm.
pub fn rasterise(scene: &Scene, blur_sigma_px: f64, um_per_px: f64) -> Raster {
    let (w, h) = (scene.width, scene.height);
    let n = w * h;
    let mut r = Raster {
        mask: vec![0; n],
        background_absorbance: vec![0.0; n],
        absorbance: vec![0.0; n],
        vessel: vec![NO_VESSEL; n],
        arclength_um: vec![0.0; n],
        cross_um: vec![0.0; n],
    };
    let sigma = blur_sigma_px.max(0.5);
    let um = um_per_px as f32;
    let halos = scene.ghosts.iter().map(|g| (&g.points, &g.halo)).chain(
        scene
            .vessels
            .iter()
            .filter_map(|v| v.halo.as_ref().map(|h| (&v.points, h))),
    );
    for (points, halo) in halos {
        let coarse = decimate(points, (halo.radius_px / 2.0).max(0.5));
        if let Some(local) = local_field(&coarse, 3.0 * halo.radius_px, w, h) {
            add_halo(&mut r.background_absorbance, w, &local, halo);
        }
    }
    for v in &scene.vessels {
        let sigma = (sigma * sigma + v.depth_blur_px * v.depth_blur_px).sqrt();
        let r_max = v.max_radius_px();
        let edge_margin = r_max + 3.0 * sigma + 1.0;
        let points = decimate(&v.points, (v.radius_px.min(v.radius_end_px) / 4.0).max(0.5));
        let Some(local) = local_field(&points, edge_margin, w, h) else {
            continue;
        };
        let uniform = v.radius_px == v.radius_end_px;
        let inv_len = 1.0 / polyline_length(&points).max(1e-9);
        for ly in 0..local.h {
            for lx in 0..local.w {
                let li = ly * local.w + lx;
                let d = local.dist[li];
                if d as f64 > edge_margin {
                    continue;
                }
                let gi = (local.y0 + ly) * w + local.x0 + lx;
                let radius = if uniform {
                    v.radius_px
                } else {
                    v.radius_at(local.s[li] as f64 * inv_len)
                };
                let inside = if uniform {
                    d <= v.radius_px as f32
                } else {
                    d as f64 <= radius
                };
                if inside {
                    r.mask[gi] = 255;
                }
                let a = (v.absorbance * tube_profile(d as f64, radius, sigma)) as f32;
                if a > 1e-3 && a > r.absorbance[gi] {
                    r.absorbance[gi] = a;
                    r.vessel[gi] = v.id;
                    r.arclength_um[gi] = local.s[li] * um;
                    r.cross_um[gi] = local.cross[li] * um;
                }
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate() {
        assert!((erf(0.0)).abs() < 1e-7);
        assert!((erf(1.0) - 0.842_700_79).abs() < 1e-6);
        assert!((erf(-2.0) + 0.995_322_27).abs() < 1e-6);
    }

    #[test]
    fn profile_is_one_in_the_middle_of_a_wide_tube() {
        assert!((tube_profile(0.0, 20.0, 1.0) - 1.0).abs() < 1e-6);
        assert!(tube_profile(25.0, 20.0, 1.0) < 1e-3);
        assert!((tube_profile(20.0, 20.0, 1.0) - 0.35).abs() < 0.01);
    }
}
