//! Imaging artefacts drawn on top of a rendered frame: hairs, air bubbles, glare, vignetting,
//! uneven illumination, tint, spatially varying defocus and motion blur.
//!
//! They act on the image only, in frame (not scene) coordinates; the lumen mask is never
//! touched. Hairs are semi-transparent so vessels under them stay faintly visible.

use crate::background::SmoothGrid;
use crate::noise::Fbm;
use crate::raster::erf;
use crate::rng::{mix, Rng};
use crate::spec::{Artefacts, SynthSpec};

/// Precomputed artefact layer of one clip: `pixel = pixel * mul + add`, then blurs.
#[derive(Debug)]
pub(crate) struct ArtefactLayer {
    width: usize,
    height: usize,
    /// Per-pixel, per-channel gain (`width * height * 3`).
    mul: Vec<f32>,
    /// Per-pixel, per-channel offset (`width * height * 3`).
    add: Vec<f32>,
    /// Share of the defocused image per pixel (`width * height`), with the defocus sigma.
    defocus: Option<(Vec<f32>, f64)>,
    /// Motion blur `(length px, angle rad)`.
    motion: Option<(f64, f64)>,
    /// Whole-frame blur sigma (px).
    focus: Option<f64>,
}

impl ArtefactLayer {
    /// The layer for `spec`, or `None` when it asks for no artefacts.
    pub(crate) fn new(spec: &SynthSpec) -> Option<Self> {
        let a = &spec.artefacts;
        if a.is_none() {
            return None;
        }
        let (w, h) = (spec.width as usize, spec.height as usize);
        let mut layer = ArtefactLayer {
            width: w,
            height: h,
            mul: vec![1.0; w * h * 3],
            add: vec![0.0; w * h * 3],
            defocus: None,
            motion: None,
            focus: (a.focus_blur_px >= 0.3).then_some(a.focus_blur_px),
        };
        let mut rng = Rng::derive(spec.seed, &[0xA27E]);
        layer.illumination(spec, a, &mut rng);
        for _ in 0..a.bubbles {
            layer.bubble(spec, &mut rng);
        }
        for _ in 0..a.hairs {
            layer.hair(spec, &mut rng);
        }
        for _ in 0..a.glare {
            layer.glare(spec, &mut rng);
        }
        if a.defocus_px >= 0.3 {
            let field = Fbm::new(
                mix(&[spec.seed, 0xDEF0C5]),
                2,
                0.5,
                w.max(h) as f32 * 0.4,
                w.max(h) as f32 * 0.4,
                0.0,
            );
            let bias = rng.range(-0.3, 0.3) as f32;
            let grid = SmoothGrid::new(w, h, |x, y| {
                [(0.5 + bias + 1.4 * field.sample(x, y)).clamp(0.0, 1.0), 0.0]
            });
            let mut weight = vec![0.0f32; w * h];
            for y in 0..h {
                for x in 0..w {
                    weight[y * w + x] = grid.at(x, y)[0];
                }
            }
            layer.defocus = Some((weight, a.defocus_px));
        }
        if a.motion_blur_px >= 1.0 {
            layer.motion = Some((a.motion_blur_px, a.motion_blur_angle_deg.to_radians()));
        }
        Some(layer)
    }

    /// Vignetting, low-frequency illumination and tint: multiplicative gains.
    fn illumination(&mut self, spec: &SynthSpec, a: &Artefacts, rng: &mut Rng) {
        let (w, h) = (self.width, self.height);
        let strength = a.uneven_illumination as f32;
        let vignette = a.vignetting as f32;
        let big = w.max(h) as f32;
        let blobs = Fbm::new(
            mix(&[spec.seed, 0x111F]),
            3,
            0.5,
            big * rng.range(0.25, 0.6) as f32,
            big * rng.range(0.25, 0.6) as f32,
            rng.range(0.0, 3.2) as f32,
        );
        let angle = rng.range(0.0, std::f64::consts::TAU) as f32;
        let (gx, gy) = (angle.cos(), angle.sin());
        let grad = rng.range(-1.0, 1.0) as f32;
        let (cx, cy) = (
            w as f32 * (0.5 + rng.range(-0.15, 0.15) as f32),
            h as f32 * (0.5 + rng.range(-0.15, 0.15) as f32),
        );
        let (hw, hh) = (w as f32 / 2.0, h as f32 / 2.0);
        let grid = SmoothGrid::new(w, h, |x, y| {
            let nx = (x - cx) / hw;
            let ny = (y - cy) / hh;
            let v = (1.0 - vignette * 0.5 * (nx * nx + ny * ny)).max(0.05);
            let u = (1.0
                + strength * (1.6 * blobs.sample(x, y) + 0.5 * grad * (nx * gx + ny * gy)))
                .max(0.1);
            [v * u, 0.0]
        });
        let tint = a.tint.map(|g| g as f32);
        for y in 0..h {
            for x in 0..w {
                let g = grid.at(x, y)[0];
                let i = (y * w + x) * 3;
                for (m, t) in self.mul[i..i + 3].iter_mut().zip(tint) {
                    *m *= g * t;
                }
            }
        }
    }

    /// Alpha-blends colour `col` with opacity `alpha` at pixel index `i`.
    #[inline]
    fn blend(&mut self, i: usize, alpha: f32, col: [f32; 3]) {
        let span = i * 3..i * 3 + 3;
        for ((m, a), c) in self.mul[span.clone()]
            .iter_mut()
            .zip(&mut self.add[span])
            .zip(col)
        {
            *m *= 1.0 - alpha;
            *a = *a * (1.0 - alpha) + alpha * c;
        }
    }

    fn hair(&mut self, spec: &SynthSpec, rng: &mut Rng) {
        let (w, h) = (self.width as f64, self.height as f64);
        let um = spec.um_per_px;
        let radius = rng.range(15.0, 60.0) / um;
        let dark = rng.range(8.0, 45.0);
        let col = [dark * 1.3, dark, dark * 0.8].map(|v| v as f32);
        let opacity = rng.range(0.55, 0.9) as f32;
        // Focus changes along the hair (it rises out of the focal plane).
        let soft0 = rng.range(0.5, 2.0) * radius.min(20.0) / 4.0 + 0.8;
        let soft1 = soft0 * rng.range(1.0, 4.0);
        let len = (w * w + h * h).sqrt() * rng.range(0.5, 1.3);
        let start = [rng.range(-0.1 * w, 1.1 * w), rng.range(-0.1 * h, 1.1 * h)];
        let mut heading = rng.range(0.0, std::f64::consts::TAU);
        let curve = rng.range(-1.0, 1.0) / len;
        let step = 12.0;
        let mut pts = vec![start];
        let mut p = start;
        let mut s = 0.0;
        while s < len {
            heading += curve * step;
            p = [p[0] + heading.cos() * step, p[1] + heading.sin() * step];
            pts.push(p);
            s += step;
        }
        // Start half of the hairs outside the field so they cross it.
        let shift = [
            -(pts[pts.len() / 2][0] - start[0]) * rng.range(0.0, 1.0),
            0.0,
        ];
        for q in &mut pts {
            q[0] += shift[0];
        }
        let reach = radius + 3.0 * soft1;
        self.stroke(&pts, reach, |d, t| {
            let soft = soft0 + (soft1 - soft0) * t;
            let k = 1.0 / (std::f64::consts::SQRT_2 * soft);
            let band = 0.5 * (erf((radius - d) * k) + erf((radius + d) * k));
            (band as f32 * opacity, col)
        });
    }

    /// Visits every pixel within `reach` of the polyline with its distance and arclength
    /// fraction, and blends what `f` returns.
    fn stroke(&mut self, pts: &[[f64; 2]], reach: f64, f: impl Fn(f64, f64) -> (f32, [f32; 3])) {
        let (w, h) = (self.width, self.height);
        let total: f64 = pts
            .windows(2)
            .map(|s| ((s[1][0] - s[0][0]).powi(2) + (s[1][1] - s[0][1]).powi(2)).sqrt())
            .sum::<f64>()
            .max(1e-9);
        // Nearest distance and arclength per pixel in the stroke's bounding box.
        let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
        for p in pts {
            for c in 0..2 {
                lo[c] = lo[c].min(p[c]);
                hi[c] = hi[c].max(p[c]);
            }
        }
        let x0 = (lo[0] - reach).floor().max(0.0) as usize;
        let y0 = (lo[1] - reach).floor().max(0.0) as usize;
        let x1 = ((hi[0] + reach).ceil().min(w as f64 - 1.0)).max(-1.0);
        let y1 = ((hi[1] + reach).ceil().min(h as f64 - 1.0)).max(-1.0);
        if x1 < x0 as f64 || y1 < y0 as f64 {
            return;
        }
        let (x1, y1) = (x1 as usize, y1 as usize);
        let bw = x1 - x0 + 1;
        let mut best = vec![(f64::MAX, 0.0f64); bw * (y1 - y0 + 1)];
        let mut s0 = 0.0;
        for seg in pts.windows(2) {
            let (a, b) = (seg[0], seg[1]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len2 = dx * dx + dy * dy;
            let len = len2.sqrt();
            if len < 1e-9 {
                continue;
            }
            let sx0 = (a[0].min(b[0]) - reach).floor().max(x0 as f64) as usize;
            let sy0 = (a[1].min(b[1]) - reach).floor().max(y0 as f64) as usize;
            let sx1 = (a[0].max(b[0]) + reach).ceil().min(x1 as f64);
            let sy1 = (a[1].max(b[1]) + reach).ceil().min(y1 as f64);
            if sx1 < sx0 as f64 || sy1 < sy0 as f64 {
                s0 += len;
                continue;
            }
            for py in sy0..=sy1 as usize {
                let ry = py as f64 - a[1];
                for px in sx0..=sx1 as usize {
                    let rx = px as f64 - a[0];
                    let t = ((rx * dx + ry * dy) / len2).clamp(0.0, 1.0);
                    let (ex, ey) = (rx - t * dx, ry - t * dy);
                    let d2 = ex * ex + ey * ey;
                    let cell = &mut best[(py - y0) * bw + px - x0];
                    if d2 < cell.0 {
                        *cell = (d2, (s0 + t * len) / total);
                    }
                }
            }
            s0 += len;
        }
        for (k, &(d2, t)) in best.iter().enumerate() {
            if d2 == f64::MAX {
                continue;
            }
            let d = d2.sqrt();
            if d > reach {
                continue;
            }
            let (alpha, col) = f(d, t);
            if alpha > 1e-3 {
                let (x, y) = (x0 + k % bw, y0 + k / bw);
                self.blend(y * w + x, alpha, col);
            }
        }
    }

    fn bubble(&mut self, spec: &SynthSpec, rng: &mut Rng) {
        let (w, h) = (self.width, self.height);
        let um = spec.um_per_px;
        let r = rng.range(25.0, 200.0) / um;
        let c = [rng.range(0.0, w as f64), rng.range(0.0, h as f64)];
        let rim = (r * rng.range(0.04, 0.1)).max(1.5);
        let rim_dark = rng.range(0.35, 0.75) as f32;
        let bright = rng.range(0.06, 0.25) as f32;
        let highlight = rng.range(0.0, 0.35) as f32;
        let x0 = (c[0] - r - 3.0 * rim).floor().max(0.0) as usize;
        let y0 = (c[1] - r - 3.0 * rim).floor().max(0.0) as usize;
        let x1 = ((c[0] + r + 3.0 * rim).ceil() as usize).min(w - 1);
        let y1 = ((c[1] + r + 3.0 * rim).ceil() as usize).min(h - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let d = ((x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2)).sqrt();
                let q = (d - r) / rim;
                let ring = (-q * q).exp() as f32;
                let inner = if d < r {
                    1.0 + bright * (1.0 - (d / r).powi(2)) as f32
                } else {
                    1.0
                };
                // A thin bright refraction ring just inside the rim.
                let q2 = (d - (r - 2.5 * rim)) / (0.6 * rim);
                let glint = highlight * (-q2 * q2).exp() as f32;
                let g = (1.0 - rim_dark * ring) * (inner + glint);
                let i = (y * w + x) * 3;
                for ch in 0..3 {
                    self.mul[i + ch] *= g;
                }
            }
        }
    }

    fn glare(&mut self, spec: &SynthSpec, rng: &mut Rng) {
        let (w, h) = (self.width, self.height);
        let um = spec.um_per_px;
        let major = rng.range(8.0, 120.0) / um;
        let minor = major * rng.range(0.1, 1.0);
        let angle = rng.range(0.0, std::f64::consts::PI);
        let (s, co) = angle.sin_cos();
        let c = [rng.range(0.0, w as f64), rng.range(0.0, h as f64)];
        let peak = rng.range(120.0, 400.0) as f32;
        let reach = 3.0 * major;
        let x0 = (c[0] - reach).floor().max(0.0) as usize;
        let y0 = (c[1] - reach).floor().max(0.0) as usize;
        let x1 = ((c[0] + reach).ceil().max(0.0) as usize).min(w - 1);
        let y1 = ((c[1] + reach).ceil().max(0.0) as usize).min(h - 1);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = (x as f64 - c[0], y as f64 - c[1]);
                let u = (dx * co + dy * s) / major;
                let v = (-dx * s + dy * co) / minor;
                let g = (-(u * u + v * v)).exp() as f32;
                if g > 1e-3 {
                    let i = (y * w + x) * 3;
                    for ch in 0..3 {
                        self.add[i + ch] += peak * g;
                    }
                }
            }
        }
    }

    /// Applies the layer to an interleaved RGB `f32` frame of the layer's size.
    pub(crate) fn apply(&self, frame: &mut [f32]) {
        let (w, h) = (self.width, self.height);
        if let Some((weight, sigma)) = &self.defocus {
            let mut blurred = frame.to_vec();
            box_blur_gaussian(&mut blurred, w, h, *sigma);
            for (i, wt) in weight.iter().enumerate() {
                for c in 0..3 {
                    let k = i * 3 + c;
                    frame[k] += (blurred[k] - frame[k]) * wt;
                }
            }
        }
        if let Some((len, angle)) = self.motion {
            motion_blur(frame, w, h, len, angle);
        }
        if let Some(sigma) = self.focus {
            box_blur_gaussian(frame, w, h, sigma);
        }
        for ((v, m), a) in frame.iter_mut().zip(&self.mul).zip(&self.add) {
            *v = *v * m + a;
        }
    }
}

/// Approximate Gaussian blur of interleaved RGB by three box blurs (cost independent of sigma).
pub(crate) fn box_blur_gaussian(img: &mut [f32], w: usize, h: usize, sigma: f64) {
    // Box width for three passes: w_box = sqrt(12 sigma^2 / 3 + 1).
    let r = (((4.0 * sigma * sigma + 1.0).sqrt() - 1.0) / 2.0).round() as usize;
    if r == 0 {
        return;
    }
    let mut line = vec![0.0f32; w * 3];
    let row_len = w * 3;
    let norm = 1.0 / (2 * r + 1) as f32;
    let mut acc = vec![0.0f32; row_len];
    for _ in 0..3 {
        for y in 0..h {
            let row = &mut img[y * row_len..(y + 1) * row_len];
            box_line(row, w, 3, r, &mut line);
        }
        // Vertical: a running sum of whole rows (cache friendly), reading from a copy.
        let src = img.to_vec();
        let src_row = |y: isize| {
            let y = y.clamp(0, h as isize - 1) as usize;
            &src[y * row_len..(y + 1) * row_len]
        };
        acc.fill(0.0);
        for k in -(r as isize)..=r as isize {
            for (a, v) in acc.iter_mut().zip(src_row(k)) {
                *a += v;
            }
        }
        for y in 0..h {
            for (o, a) in img[y * row_len..(y + 1) * row_len].iter_mut().zip(&acc) {
                *o = a * norm;
            }
            let (add, sub) = (
                src_row(y as isize + r as isize + 1),
                src_row(y as isize - r as isize),
            );
            for ((a, p), m) in acc.iter_mut().zip(add).zip(sub) {
                *a += p - m;
            }
        }
    }
}

/// Running-mean box filter of radius `r` over `n` pixels of `ch` interleaved channels
/// (edges clamped).
fn box_line(data: &mut [f32], n: usize, ch: usize, r: usize, scratch: &mut [f32]) {
    scratch[..n * ch].copy_from_slice(&data[..n * ch]);
    let src = &scratch[..n * ch];
    let norm = 1.0 / (2 * r + 1) as f32;
    let clamp = |i: isize| i.clamp(0, n as isize - 1) as usize * ch;
    let mut acc = [0.0f32; 4];
    let acc = &mut acc[..ch];
    for i in -(r as isize)..=r as isize {
        let p = clamp(i);
        for (c, a) in acc.iter_mut().enumerate() {
            *a += src[p + c];
        }
    }
    for i in 0..n {
        let (add, sub) = if i + r + 1 < n && i >= r {
            ((i + r + 1) * ch, (i - r) * ch)
        } else {
            (
                clamp(i as isize + r as isize + 1),
                clamp(i as isize - r as isize),
            )
        };
        let out = &mut data[i * ch..(i + 1) * ch];
        for c in 0..ch {
            out[c] = acc[c] * norm;
            acc[c] += src[add + c] - src[sub + c];
        }
    }
}

/// Directional blur: mean of samples along a `len`-pixel line at `angle` (nearest pixel).
fn motion_blur(img: &mut [f32], w: usize, h: usize, len: f64, angle: f64) {
    let n = (len.ceil() as usize + 1).clamp(2, 24);
    let (dx, dy) = (angle.cos(), angle.sin());
    let offsets: Vec<(isize, isize)> = (0..n)
        .map(|k| {
            let t = (k as f64 / (n - 1) as f64 - 0.5) * len;
            ((t * dx).round() as isize, (t * dy).round() as isize)
        })
        .collect();
    let src = img.to_vec();
    let norm = 1.0 / n as f32;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for &(ox, oy) in &offsets {
                let sx = (x as isize + ox).clamp(0, w as isize - 1) as usize;
                let sy = (y as isize + oy).clamp(0, h as isize - 1) as usize;
                let i = (sy * w + sx) * 3;
                acc[0] += src[i];
                acc[1] += src[i + 1];
                acc[2] += src[i + 2];
            }
            let o = (y * w + x) * 3;
            for c in 0..3 {
                img[o + c] = acc[c] * norm;
            }
        }
    }
}
