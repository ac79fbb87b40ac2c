//! Drift compensation: how far a handheld microscope's field has moved since a stream's first frame.
//!
//! Flow analysis compares the same vessel pixel over many frames, so every frame's displacement must be known.
//! [`PhaseCorrelator`] measures the shift between two planes by phase correlation: the phase difference of two
//! shifted images' spectra is a plane wave whose inverse transform peaks at the shift, whatever the content,
//! contrast or brightness. [`DriftTracker`] turns those measurements into a stream's cumulative drift against a
//! keyframe that only moves when it must, so sub-pixel errors do not pile up frame after frame.
//!
//! Sign convention ([`Shift`]): content at `(x, y)` in the reference appears at `(x + dx, y + dy)` in the frame.
//! When the field of view moves right over the tissue, the content moves left: `dx < 0`.
//!
//! ```
//! use capflow_operators::drift::DriftTracker;
//!
//! // A smooth texture, then the same texture moved 3 px right and 2 px up.
//! let (w, h) = (128, 96);
//! let texture = |x: f64, y: f64| ((x * 0.31).sin() * (y * 0.17).cos() + (x * 0.07 + y * 0.23).sin()) as f32;
//! let plane = |dx: f64, dy: f64| -> Vec<f32> {
//!     (0..w * h).map(|i| texture((i % w) as f64 - dx, (i / w) as f64 - dy)).collect()
//! };
//! let mut tracker = DriftTracker::new(w, h, 128);
//! assert_eq!(tracker.track(&plane(0.0, 0.0)).dx, 0.0);
//! let s = tracker.track(&plane(3.0, -2.0));
//! assert!((s.dx - 3.0).abs() < 0.2 && (s.dy + 2.0).abs() < 0.2, "{s:?}");
//! ```

use std::f64::consts::PI;
use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// Displacement of a frame's content relative to a reference, in pixels of the plane given.
///
/// Convention: content at `(x, y)` in the reference appears at `(x + dx, y + dy)` in the frame, so subtracting
/// `(dx, dy)` from a frame coordinate gives the reference coordinate of the same tissue.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shift {
    /// Horizontal displacement, pixels (positive: content moved right).
    pub dx: f64,
    /// Vertical displacement, pixels (positive: content moved down).
    pub dy: f64,
    /// Normalised correlation peak, 0..1: the confidence of the estimate. It is how well the frequencies'
    /// phases agree with the estimated shift (weighted by their strength), above the agreement unrelated
    /// content reaches by chance: 0 for unrelated content, about 0.9 for consecutive sharp frames, 1 for
    /// identical content; noise, blur, artefacts and tissue leaving the window lower it.
    pub peak: f64,
}

/// Spatial standard deviation (working-window pixels) of the Gaussian the correlation surface is smoothed with.
///
/// A Gaussian low-pass on the cross-power spectrum suppresses the noise-only frequencies near Nyquist and makes
/// the peak smooth and nearly Gaussian, so a three-point Gaussian fit starts close to its maximum.
const PEAK_SIGMA: f64 = 1.0;

/// Frequencies below about this many cycles per working window are suppressed (smooth high-pass).
///
/// The lowest frequencies are dominated by the window's own shape and by illumination fixed to the camera
/// (vignetting, uneven lighting), both of which pull the peak towards zero shift.
const LOW_CUT_CYCLES: f64 = 1.5;

/// How many standard deviations of the chance agreement `sqrt(Σa²)/Σa` (over the frequencies' weights `a`)
/// are subtracted from a measured agreement to give [`Shift::peak`].
///
/// Unrelated content reaches 4-6 (the maximum over the surface of a noise whose neighbouring frequencies the
/// Hann window correlates): 6 puts it at about 0.
const CHANCE_SIGMAS: f64 = 6.0;

/// Share of each side of the plane the working window covers at most.
///
/// The rest is room to move the frame's window along with the content ([`PhaseCorrelator::shift_near`]), so
/// both windows see the same tissue: a window that stays put while the content moves shares less of it, and
/// the Hann weighting then biases the estimate towards zero (about 1 % of the shift).
const COVER: f64 = 0.8;

/// Phase correlation between planes of one fixed size (FFT plans and scratch reused; one per stream).
///
/// A plane is reduced to a working window first: an integer box downsampling (so that the window's short side
/// spans 80 % of the plane's within `max_side` pixels), a crop, a weighted mean removal and a Hann window
/// against the edge discontinuities a periodic FFT would otherwise see as strong edges that never move. The
/// reference's window is centred; a frame's window can follow the content ([`PhaseCorrelator::shift_near`]).
/// Shifts are found modulo the window, so the part not followed must stay below half of it.
pub struct PhaseCorrelator {
    width: usize,
    height: usize,
    /// Downsampling factor (plane pixels per working-window pixel, per axis).
    factor: usize,
    /// Top-left corner of the centred window, plane pixels.
    x0: usize,
    y0: usize,
    /// Working window size, pixels.
    nw: usize,
    nh: usize,
    hann_x: Vec<f32>,
    hann_y: Vec<f32>,
    /// Band-pass weight of every frequency, in the transposed spectrum layout (`u * nh + v`).
    weight: Vec<f32>,
    /// `Σa` and `√Σa²` of the weights `a` of the last measurement's frequencies, for [`Shift::peak`].
    strength: (f64, f64),
    /// Window offset of the last measurement, plane pixels.
    last_offset: (isize, isize),
    row_fft: Arc<dyn Fft<f32>>,
    row_ifft: Arc<dyn Fft<f32>>,
    col_fft: Arc<dyn Fft<f32>>,
    col_ifft: Arc<dyn Fft<f32>>,
    scratch: Vec<Complex32>,
    /// Downsampled window, `nh × nw`.
    down: Vec<f32>,
    /// One row of the window at plane resolution, `nw × factor`: the sum of `factor` plane rows.
    row_sum: Vec<f32>,
    /// Spatial domain, `nh × nw` rows.
    work: Vec<Complex32>,
    /// Frequency domain, transposed: `nw × nh` rows.
    spectrum: Vec<Complex32>,
    /// Weighted cross-power spectrum of the last measurement (layout of `spectrum`), kept to evaluate the
    /// peak at the sub-pixel shift.
    phase: Vec<Complex32>,
    /// Per-column and per-row phase ramps for that evaluation (`e^{iω·shift}`).
    ramp_x: Vec<Complex32>,
    ramp_y: Vec<Complex32>,
    /// Angular frequency (radians per window pixel) of each row of the transposed spectrum.
    omega_y: Vec<f32>,
    /// Spectrum of the reference (same layout as `spectrum`), `None` until one is set.
    reference: Option<Vec<Complex32>>,
}

impl std::fmt::Debug for PhaseCorrelator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseCorrelator")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("factor", &self.factor)
            .field("window", &(self.nw, self.nh))
            .field("has_reference", &self.reference.is_some())
            .finish()
    }
}

/// Largest even 5-smooth number (`2^a 3^b 5^c`, a fast FFT length) not above `n`, at least 2.
fn fft_size(n: usize) -> usize {
    (2..=n.max(2))
        .rev()
        .find(|&m| {
            let mut r = m;
            for p in [2, 3, 5] {
                while r % p == 0 {
                    r /= p;
                }
            }
            r == 1 && m % 2 == 0
        })
        .unwrap_or(2)
}

/// Symmetric Hann window of `n` samples (never exactly zero, so every pixel counts a little).
fn hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0.5 - 0.5 * (2.0 * PI * (i as f64 + 0.5) / n as f64).cos()) as f32)
        .collect()
}

/// Signed index of bin `k` of an `n`-point transform: the frequency in cycles per window, or the shift of a
/// periodic correlation in samples.
fn signed(k: usize, n: usize) -> f64 {
    if k <= n / 2 {
        k as f64
    } else {
        k as f64 - n as f64
    }
}

/// Copies `src` (`rows × cols`) into `dst` as its transpose (`cols × rows`), in cache-sized tiles.
fn transpose(src: &[Complex32], dst: &mut [Complex32], rows: usize, cols: usize) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let row = &src[r * cols + c0..r * cols + c1];
                for (c, v) in (c0..c1).zip(row) {
                    dst[c * rows + r] = *v;
                }
            }
        }
    }
}

/// Sub-sample offset (-0.5..=0.5) of the maximum through three samples around it: a Gaussian fit (exact for
/// a Gaussian peak), or a parabola where a sample is not positive.
fn refine(minus: f64, centre: f64, plus: f64) -> f64 {
    let (a, b, c) = if minus > 0.0 && centre > 0.0 && plus > 0.0 {
        (minus.ln(), centre.ln(), plus.ln())
    } else {
        (minus, centre, plus)
    };
    let curvature = a - 2.0 * b + c;
    if curvature < 0.0 {
        (0.5 * (a - c) / curvature).clamp(-0.5, 0.5)
    } else {
        0.0
    }
}

/// `e^{2πi·k·t/n}` for the signed bins `k` of an `n`-point transform.
fn fill_ramp(ramp: &mut [Complex32], t: f64) {
    let n = ramp.len();
    for (k, r) in ramp.iter_mut().enumerate() {
        let a = 2.0 * PI * signed(k, n) * t / n as f64;
        *r = Complex32::new(a.cos() as f32, a.sin() as f32);
    }
}

impl PhaseCorrelator {
    /// For planes of `width × height`; internally works on a centred FFT-friendly (5-smooth) window of at most
    /// `max_side` px per side, downsampling by an integer factor first if the plane is larger, with a Hann
    /// window against edge effects.
    ///
    /// The factor is the smallest that fits 80 % of the plane's short side into `max_side`: a larger one
    /// would blur away the capillary texture and the sub-pixel precision with it (errors scale with the
    /// factor), a smaller one would see only a small central part of the field. 256 is a good `max_side`
    /// (well under a millisecond per frame).
    ///
    /// # Panics
    /// If `width` or `height` is below 16 or `max_side` below 8.
    pub fn new(width: usize, height: usize, max_side: usize) -> Self {
        assert!(
            width >= 16 && height >= 16 && max_side >= 8,
            "PhaseCorrelator needs planes of at least 16x16 and a window of at least 8 \
             (got {width}x{height}, max_side {max_side})"
        );
        let cover = |side: usize| (side as f64 * COVER) as usize;
        let factor = cover(width.min(height)).div_ceil(max_side).max(1);
        let nw = fft_size((cover(width) / factor).min(max_side));
        let nh = fft_size((cover(height) / factor).min(max_side));
        let x0 = (width - nw * factor) / 2;
        let y0 = (height - nh * factor) / 2;

        // Gaussian low-pass times a smooth high-pass, per frequency (cycles per window pixel).
        let sigma2 = 2.0 * PI * PI * PEAK_SIGMA * PEAK_SIGMA;
        let low = LOW_CUT_CYCLES / nw.min(nh) as f64;
        let mut weight = Vec::with_capacity(nw * nh);
        for u in 0..nw {
            let fx = signed(u, nw) / nw as f64;
            for v in 0..nh {
                let fy = signed(v, nh) / nh as f64;
                let r2 = fx * fx + fy * fy;
                let w = (-sigma2 * r2).exp() * (1.0 - (-0.5 * r2 / (low * low)).exp());
                weight.push(w as f32);
            }
        }

        let mut planner = FftPlanner::<f32>::new();
        let row_fft = planner.plan_fft_forward(nw);
        let row_ifft = planner.plan_fft_inverse(nw);
        let col_fft = planner.plan_fft_forward(nh);
        let col_ifft = planner.plan_fft_inverse(nh);
        let scratch_len = [&row_fft, &row_ifft, &col_fft, &col_ifft]
            .iter()
            .map(|f| f.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        let zero = Complex32::new(0.0, 0.0);
        PhaseCorrelator {
            width,
            height,
            factor,
            x0,
            y0,
            nw,
            nh,
            hann_x: hann(nw),
            hann_y: hann(nh),
            weight,
            strength: (0.0, 0.0),
            last_offset: (0, 0),
            row_fft,
            row_ifft,
            col_fft,
            col_ifft,
            scratch: vec![zero; scratch_len],
            down: vec![0.0; nw * nh],
            row_sum: vec![0.0; nw * factor],
            work: vec![zero; nw * nh],
            spectrum: vec![zero; nw * nh],
            phase: vec![zero; nw * nh],
            ramp_x: vec![zero; nw],
            ramp_y: vec![zero; nh],
            omega_y: (0..nh)
                .map(|v| (2.0 * PI * signed(v, nh) / nh as f64) as f32)
                .collect(),
            reference: None,
        }
    }

    /// Working window size `(width, height)` in window pixels.
    pub fn window(&self) -> (usize, usize) {
        (self.nw, self.nh)
    }

    /// Downsampling factor: plane pixels per window pixel along each axis.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Sets the reference plane (luma values, f32, `width × height` row-major); its window is centred.
    ///
    /// # Panics
    /// If `plane` does not hold `width × height` values.
    pub fn set_reference(&mut self, plane: &[f32]) {
        self.forward(plane, (0, 0));
        match self.reference.as_mut() {
            Some(r) => r.copy_from_slice(&self.spectrum),
            None => self.reference = Some(self.spectrum.clone()),
        }
    }

    /// Shift of `plane` relative to the reference, in plane pixels, with sub-pixel refinement (a Gaussian fit
    /// around the sampled peak of the smoothed correlation surface, then a Newton step on the continuous
    /// surface): [`PhaseCorrelator::shift_near`] without a guess.
    ///
    /// # Panics
    /// If `plane` does not hold `width × height` values.
    pub fn shift(&mut self, plane: &[f32]) -> Shift {
        self.shift_near(plane, (0.0, 0.0))
    }

    /// Like [`PhaseCorrelator::shift`], with the frame's window moved by `guess` (plane pixels, rounded and
    /// kept inside the plane) so that it covers the reference window's tissue: only the difference to the
    /// guess is measured by correlation, without the bias and the lost overlap of a large shift. Without a
    /// reference, `plane` becomes the reference and the shift is zero with peak 1.
    ///
    /// # Panics
    /// If `plane` does not hold `width × height` values.
    pub fn shift_near(&mut self, plane: &[f32], guess: (f64, f64)) -> Shift {
        if self.reference.is_none() {
            self.set_reference(plane);
            return Shift {
                dx: 0.0,
                dy: 0.0,
                peak: 1.0,
            };
        }
        let offset = self.offset(guess);
        let first = self.measure(plane, offset);
        // Far from the guess: measure again with the window on the estimate, if it can move there.
        let better = self.offset((first.dx, first.dy));
        let k = self.factor as isize;
        if (better.0 - offset.0).abs() > k || (better.1 - offset.1).abs() > k {
            self.measure(plane, better)
        } else {
            first
        }
    }

    /// One correlation of `plane`, its window moved by `offset` plane pixels, against the reference.
    fn measure(&mut self, plane: &[f32], offset: (isize, isize)) -> Shift {
        self.last_offset = offset;
        self.forward(plane, offset);
        let reference = self.reference.as_deref().unwrap_or_default();
        // Cross-power spectrum C = F·conj(R), band-pass weighted and divided by sqrt|C|: halfway between pure
        // phase correlation (C/|C|: every frequency counts alike, so the many where sensor noise outweighs the
        // tissue scatter the peak: 0.3 px at a noise of 3 grey levels on the tests' texture) and plain cross-correlation (C: the strong
        // low frequencies dominate, the peak is broad and the window pulls it towards zero).
        let nh = self.nh;
        let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
        for ((sc, rc), wc) in self
            .spectrum
            .chunks_exact_mut(nh)
            .zip(reference.chunks_exact(nh))
            .zip(self.weight.chunks_exact(nh))
        {
            let (mut column_sum, mut column_sq) = (0.0f32, 0.0f32);
            for ((s, r), &w) in sc.iter_mut().zip(rc).zip(wc) {
                let c = *s * r.conj();
                // sqrt|C|, kept off zero (a zero C stays zero).
                let root = c.norm_sqr().sqrt().sqrt().max(1e-15);
                *s = c * (w / root);
                let a = w * root;
                column_sum += a;
                column_sq += a * a;
            }
            sum += column_sum as f64;
            sum_sq += column_sq as f64;
        }
        self.strength = (sum, sum_sq.sqrt());
        self.phase.copy_from_slice(&self.spectrum);
        self.col_ifft
            .process_with_scratch(&mut self.spectrum, &mut self.scratch);
        transpose(&self.spectrum, &mut self.work, self.nw, self.nh);
        self.row_ifft
            .process_with_scratch(&mut self.work, &mut self.scratch);

        let (nw, nh) = (self.nw, self.nh);
        let (mut best, mut max) = (0, f32::MIN);
        for (i, c) in self.work.iter().enumerate() {
            if c.re > max {
                (best, max) = (i, c.re);
            }
        }
        let (ix, iy) = (best % nw, best / nw);
        let at = |x: usize, y: usize| self.work[y * nw + x].re as f64;
        let sx = refine(
            at((ix + nw - 1) % nw, iy),
            max as f64,
            at((ix + 1) % nw, iy),
        );
        let sy = refine(
            at(ix, (iy + nh - 1) % nh),
            max as f64,
            at(ix, (iy + 1) % nh),
        );
        let (rx, ry, peak) = self.polish(signed(ix, nw) + sx, signed(iy, nh) + sy);
        let k = self.factor as f64;
        Shift {
            dx: offset.0 as f64 + rx * k,
            dy: offset.1 as f64 + ry * k,
            peak,
        }
    }

    /// The frame window's offset from the centred one for `guess`: rounded, inside the plane.
    fn offset(&self, guess: (f64, f64)) -> (isize, isize) {
        let clamp = |g: f64, start: usize, span: usize, side: usize| {
            (g.round() as isize).clamp(-(start as isize), (side - start - span) as isize)
        };
        let k = self.factor;
        (
            clamp(guess.0, self.x0, self.nw * k, self.width),
            clamp(guess.1, self.y0, self.nh * k, self.height),
        )
    }

    /// Whether the frame's window can move by `guess` without leaving the plane.
    fn can_follow(&self, guess: (f64, f64)) -> bool {
        self.offset(guess) == (guess.0.round() as isize, guess.1.round() as isize)
    }

    /// Refines a peak found at `(rx, ry)` window pixels on the continuous correlation surface and returns it
    /// with its [`Shift::peak`].
    ///
    /// The surface between samples is the trigonometric sum `A(x, y) = Re Σ p·e^{i(ωx·x + ωy·y)}` over the
    /// kept cross-power spectrum `p`; one Newton step from the three-point fit lands on its maximum. The
    /// three-point fit alone assumes a Gaussian peak, which content whose spectrum falls steeply does not
    /// give (0.05 px of bias).
    ///
    /// The peak is the maximum's strength-weighted phase agreement `A / Σ|p|` (1 when every frequency agrees
    /// with the shift), less the chance agreement ([`CHANCE_SIGMAS`]), rescaled to 0..1. Unlike the sampled
    /// maximum it does not drop for sub-pixel shifts, and the chance part accounts for the content: a spectrum
    /// concentrated on few frequencies (oriented texture, a small window) agrees by chance more easily.
    fn polish(&mut self, rx: f64, ry: f64) -> (f64, f64, f64) {
        let (sum, root_sum_sq) = self.strength;
        if sum <= 0.0 {
            return (rx, ry, 0.0);
        }
        fill_ramp(&mut self.ramp_x, rx);
        fill_ramp(&mut self.ramp_y, ry);
        let nw = self.nw;
        let zero = Complex32::new(0.0, 0.0);
        // Value, gradient and Hessian of A at (rx, ry); each derivative brings down i·ω.
        let (mut a, mut gx, mut gy, mut hxx, mut hyy, mut hxy) = (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (u, (column, ax)) in self
            .phase
            .chunks_exact(self.nh)
            .zip(&self.ramp_x)
            .enumerate()
        {
            let wx = 2.0 * PI * signed(u, nw) / nw as f64;
            let (mut s0, mut s1, mut s2) = (zero, zero, zero);
            for ((p, by), &wy) in column.iter().zip(&self.ramp_y).zip(&self.omega_y) {
                let t = p * by;
                s0 += t;
                s1 += t * wy;
                s2 += t * (wy * wy);
            }
            let (t0, t1, t2) = (s0 * ax, s1 * ax, s2 * ax);
            a += t0.re as f64;
            gx -= wx * t0.im as f64;
            gy -= t1.im as f64;
            hxx -= wx * wx * t0.re as f64;
            hyy -= t2.re as f64;
            hxy -= wx * t1.re as f64;
        }
        let det = hxx * hyy - hxy * hxy;
        let (mut x, mut y) = (rx, ry);
        if hxx < 0.0 && det > 0.0 {
            let step_x = (-(hyy * gx - hxy * gy) / det).clamp(-0.5, 0.5);
            let step_y = (-(hxx * gy - hxy * gx) / det).clamp(-0.5, 0.5);
            // The quadratic model's value at its maximum.
            a += 0.5 * (gx * step_x + gy * step_y);
            x += step_x;
            y += step_y;
        }
        let chance = CHANCE_SIGMAS * root_sum_sq / sum;
        let peak = if chance < 1.0 {
            ((a / sum - chance) / (1.0 - chance)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (x, y, peak)
    }

    /// Downsamples, windows and transforms `plane` into `self.spectrum`, with the window moved by `offset`
    /// plane pixels from the centred one.
    fn forward(&mut self, plane: &[f32], offset: (isize, isize)) {
        assert_eq!(
            plane.len(),
            self.width * self.height,
            "plane must hold {}x{} values",
            self.width,
            self.height
        );
        let (nw, k) = (self.nw, self.factor);
        let x0 = self.x0.saturating_add_signed(offset.0);
        let y0 = self.y0.saturating_add_signed(offset.1);
        for (oy, out) in self.down.chunks_exact_mut(nw).enumerate() {
            let first = (y0 + oy * k) * self.width + x0;
            let row = |j: usize| &plane[first + j * self.width..first + j * self.width + nw * k];
            match k {
                1 => out.copy_from_slice(row(0)),
                2 => {
                    for ((o, a), b) in out
                        .iter_mut()
                        .zip(row(0).chunks_exact(2))
                        .zip(row(1).chunks_exact(2))
                    {
                        *o = a[0] + a[1] + b[0] + b[1];
                    }
                }
                _ => {
                    // Rows first (contiguous, vectorised), then the columns of each block.
                    let acc = &mut self.row_sum;
                    acc.copy_from_slice(row(0));
                    for j in 1..k {
                        for (a, v) in acc.iter_mut().zip(row(j)) {
                            *a += v;
                        }
                    }
                    for (o, c) in out.iter_mut().zip(acc.chunks_exact(k)) {
                        *o = c.iter().sum();
                    }
                }
            }
        }
        // Remove the Hann-weighted mean so the window's own shape carries no energy.
        let mut num = 0.0f64;
        for (row, &hy) in self.down.chunks_exact(nw).zip(&self.hann_y) {
            let s: f32 = row.iter().zip(&self.hann_x).map(|(v, hx)| v * hx).sum();
            num += (hy * s) as f64;
        }
        let sx: f32 = self.hann_x.iter().sum();
        let sy: f32 = self.hann_y.iter().sum();
        let mean = (num / (sx as f64 * sy as f64)) as f32;
        for ((out, row), &hy) in self
            .work
            .chunks_exact_mut(nw)
            .zip(self.down.chunks_exact(nw))
            .zip(&self.hann_y)
        {
            for ((o, v), hx) in out.iter_mut().zip(row).zip(&self.hann_x) {
                *o = Complex32::new((v - mean) * hx * hy, 0.0);
            }
        }
        self.row_fft
            .process_with_scratch(&mut self.work, &mut self.scratch);
        transpose(&self.work, &mut self.spectrum, self.nh, nw);
        self.col_fft
            .process_with_scratch(&mut self.spectrum, &mut self.scratch);
    }
}

/// Below this [`Shift::peak`] a frame's estimate is not trusted: [`DriftTracker::track`] reuses the last good
/// estimate and keeps its keyframe.
///
/// Measured on generated clips: unrelated content and noise peak at 0-0.02; the same field at 0.85-0.97 when
/// sharp, at 0.4-0.9 with 6 px of blur, 30 px of motion blur, or hairs, bubbles and glare.
pub const MIN_PEAK: f64 = 0.1;

/// [`DriftTracker`] moves its keyframe when the part of the shift its window could not follow leaves less
/// than this share of the keyframe's window in common: the unshared part biases the estimate towards zero.
pub const REKEY_OVERLAP: f64 = 0.9;

/// Trusted frames peaking below this are poor keyframes: [`DriftTracker`] moves its keyframe to one only when
/// [`REKEY_LOW_RUN`] of them come in a row (the tissue or focus changed since the keyframe, not one blurred
/// frame), and otherwise postpones a move the window's room asks for.
pub const REKEY_PEAK: f64 = 0.4;

/// Consecutive trusted frames below [`REKEY_PEAK`] after which [`DriftTracker`] moves its keyframe.
pub const REKEY_LOW_RUN: u32 = 3;

/// Consecutive untrusted frames (one second at 25 fps) after which [`DriftTracker`] gives up on its keyframe
/// and re-anchors on the current frame.
///
/// Without it a stream whose first frames are blank (the light coming on), or whose probe moved to another
/// site, would never be tracked again. The displacement across the gap is lost: tracking resumes from the
/// last good estimate, and [`DriftTracker::breaks`] counts such gaps.
pub const REANCHOR_AFTER: u32 = 25;

/// Tracks a stream's cumulative drift: phase correlation of each frame against a keyframe, accumulated over
/// keyframes, relative to the first frame.
///
/// Comparing each frame with its predecessor would add every frame's sub-pixel error (a random walk that
/// grows with the stream's length); a keyframe carries one error until it moves. Each frame's window follows
/// the content, predicted from the last estimate and velocity, so both windows see the same tissue. The
/// keyframe moves to the current frame when the next frame's window could not follow any more (it would leave
/// the plane; postponed while the peak is below [`REKEY_PEAK`]), when the part not followed leaves less than
/// [`REKEY_OVERLAP`] in common, or after [`REKEY_LOW_RUN`] frames in a row below [`REKEY_PEAK`]. Keyframes thus
/// move on frames measured at their best, and the error grows with the distance travelled across the field,
/// not with time.
#[derive(Debug)]
pub struct DriftTracker {
    correlator: PhaseCorrelator,
    /// Displacement of the keyframe relative to the first frame, `None` before the first frame.
    key: Option<(f64, f64)>,
    /// Last trusted estimate, relative to the first frame.
    last: Shift,
    /// Displacement between the last two trusted frames, plane pixels per frame.
    velocity: (f64, f64),
    /// Consecutive trusted frames below [`REKEY_PEAK`].
    low_run: u32,
    /// Consecutive untrusted frames.
    weak_run: u32,
    /// Re-anchorings after [`REANCHOR_AFTER`] untrusted frames.
    breaks: u32,
    /// Extent of the working window in plane pixels, for the overlap.
    extent: (f64, f64),
}

impl DriftTracker {
    /// For a stream of `width × height` planes; `max_side` as in [`PhaseCorrelator::new`].
    ///
    /// # Panics
    /// As [`PhaseCorrelator::new`].
    pub fn new(width: usize, height: usize, max_side: usize) -> Self {
        let correlator = PhaseCorrelator::new(width, height, max_side);
        let (nw, nh) = correlator.window();
        let k = correlator.factor() as f64;
        DriftTracker {
            correlator,
            key: None,
            last: Shift::default(),
            velocity: (0.0, 0.0),
            low_run: 0,
            weak_run: 0,
            breaks: 0,
            extent: (nw as f64 * k, nh as f64 * k),
        }
    }

    /// How often the track was re-anchored after [`REANCHOR_AFTER`] untrusted frames in a row: displacements
    /// before and after such a break are not comparable to better than the motion during the gap.
    pub fn breaks(&self) -> u32 {
        self.breaks
    }

    /// Feeds the next frame's luma plane; returns its displacement relative to the stream's first frame (first
    /// frame: 0,0, peak 1).
    ///
    /// Frames whose peak is below [`MIN_PEAK`] (blurred, occluded, the probe lifted) reuse the last good
    /// estimate's displacement, with their own low peak so callers can tell, and keep the keyframe, so one bad
    /// frame does not corrupt the track; after [`REANCHOR_AFTER`] of them in a row the current frame becomes
    /// the keyframe at the last good estimate.
    ///
    /// # Panics
    /// If `plane` does not hold `width × height` values.
    pub fn track(&mut self, plane: &[f32]) -> Shift {
        let Some((kx, ky)) = self.key else {
            self.correlator.set_reference(plane);
            self.key = Some((0.0, 0.0));
            self.last = Shift {
                dx: 0.0,
                dy: 0.0,
                peak: 1.0,
            };
            return self.last;
        };
        let (vx, vy) = self.velocity;
        let guess = (self.last.dx + vx - kx, self.last.dy + vy - ky);
        let s = self.correlator.shift_near(plane, guess);
        if s.peak < MIN_PEAK {
            self.weak_run += 1;
            if self.weak_run >= REANCHOR_AFTER {
                self.correlator.set_reference(plane);
                self.key = Some((self.last.dx, self.last.dy));
                self.velocity = (0.0, 0.0);
                (self.weak_run, self.low_run) = (0, 0);
                self.breaks += 1;
            }
            return Shift {
                peak: s.peak,
                ..self.last
            };
        }
        self.weak_run = 0;
        let total = Shift {
            dx: kx + s.dx,
            dy: ky + s.dy,
            peak: s.peak,
        };
        self.velocity = (total.dx - self.last.dx, total.dy - self.last.dy);
        self.last = total;
        // The part of the shift the window did not follow.
        let (ox, oy) = self.correlator.last_offset;
        let overlap = (1.0 - (s.dx - ox as f64).abs() / self.extent.0).max(0.0)
            * (1.0 - (s.dy - oy as f64).abs() / self.extent.1).max(0.0);
        let next = (s.dx + self.velocity.0, s.dy + self.velocity.1);
        self.low_run = if s.peak < REKEY_PEAK {
            self.low_run + 1
        } else {
            0
        };
        if overlap < REKEY_OVERLAP
            || self.low_run >= REKEY_LOW_RUN
            || (s.peak >= REKEY_PEAK && !self.correlator.can_follow(next))
        {
            self.correlator.set_reference(plane);
            self.key = Some((total.dx, total.dy));
            self.low_run = 0;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capflow_synth::{Renderer, SynthSpec};

    /// Small deterministic PRNG (splitmix64) for textures and noise.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `lo..hi`.
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box-Muller).
        fn normal(&mut self) -> f64 {
            let u = self.range(1e-12, 1.0);
            let v = self.range(0.0, 1.0);
            (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
        }
    }

    /// A smooth random texture defined at every real coordinate, so sub-pixel shifts are exact: a sum of
    /// sinusoids (random frequencies up to 0.2 cycles/px) plus Gaussian blobs like capillary cross-sections.
    struct Texture {
        waves: Vec<[f64; 4]>,
        blobs: Vec<[f64; 4]>,
    }

    impl Texture {
        fn new(seed: u64, w: f64, h: f64) -> Self {
            let mut rng = Rng(seed);
            let waves = (0..24)
                .map(|_| {
                    let f = rng.range(0.01, 0.2);
                    let a = rng.range(0.0, 2.0 * PI);
                    [f * a.cos(), f * a.sin(), rng.range(0.0, 2.0 * PI), 0.02 / f]
                })
                .collect();
            let blobs = (0..(w * h / 600.0) as usize)
                .map(|_| {
                    [
                        rng.range(-40.0, w + 40.0),
                        rng.range(-40.0, h + 40.0),
                        rng.range(1.5, 5.0),
                        rng.range(-1.0, 1.0),
                    ]
                })
                .collect();
            Texture { waves, blobs }
        }

        fn at(&self, x: f64, y: f64) -> f64 {
            let mut v = 0.0;
            for [fx, fy, phase, amp] in &self.waves {
                v += amp * (2.0 * PI * (fx * x + fy * y) + phase).sin();
            }
            for [bx, by, s, amp] in &self.blobs {
                let d2 = (x - bx) * (x - bx) + (y - by) * (y - by);
                if d2 < 16.0 * s * s {
                    v += amp * (-0.5 * d2 / (s * s)).exp();
                }
            }
            v
        }

        /// The texture displaced by `(dx, dy)`: content at `(x, y)` moves to `(x + dx, y + dy)`.
        fn plane(&self, w: usize, h: usize, dx: f64, dy: f64) -> Vec<f32> {
            (0..w * h)
                .map(|i| (100.0 + 20.0 * self.at((i % w) as f64 - dx, (i / w) as f64 - dy)) as f32)
                .collect()
        }
    }

    fn assert_close(s: Shift, dx: f64, dy: f64, tol: f64) {
        assert!(
            (s.dx - dx).abs() < tol && (s.dy - dy).abs() < tol,
            "expected ({dx}, {dy}) ±{tol}, got {s:?}"
        );
    }

    #[test]
    fn windows_are_fft_friendly_and_leave_room() {
        assert_eq!(fft_size(256), 256);
        assert_eq!(fft_size(241), 240);
        assert_eq!(fft_size(232), 216);
        assert_eq!(fft_size(193), 192);
        for (w, h, factor, window) in [
            (640, 480, 2, (256, 192)),
            (1033, 581, 2, (256, 216)),
            (1920, 1080, 4, (256, 216)),
            (200, 100, 1, (160, 80)),
        ] {
            let c = PhaseCorrelator::new(w, h, 256);
            assert_eq!((c.factor(), c.window()), (factor, window), "{w}x{h}");
        }
    }

    #[test]
    fn recovers_integer_and_subpixel_shifts() {
        let (w, h) = (256, 256);
        let tex = Texture::new(7, w as f64, h as f64);
        let mut c = PhaseCorrelator::new(w, h, 256);
        c.set_reference(&tex.plane(w, h, 0.0, 0.0));
        let mut worst = 0.0f64;
        for (dx, dy) in [
            (0.0, 0.0),
            (3.0, -5.0),
            (-17.0, 9.0),
            (0.3, -0.7),
            (2.5, 1.25),
            (-6.6, -0.4),
            (40.2, 31.8),
        ] {
            let s = c.shift(&tex.plane(w, h, dx, dy));
            assert_close(s, dx, dy, 0.2);
            assert!(s.peak > 0.2, "{s:?}");
            worst = worst.max((s.dx - dx).abs()).max((s.dy - dy).abs());
        }
        eprintln!("256x256 texture: worst axis error {worst:.3} px");
    }

    #[test]
    fn sign_convention_content_moving_right_and_down_is_positive() {
        // The frame is the reference with every pixel copied 5 px right and 2 px down.
        let (w, h) = (160, 120);
        let reference = Texture::new(13, w as f64, h as f64).plane(w, h, 0.0, 0.0);
        let frame: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w).saturating_sub(5), (i / w).saturating_sub(2));
                reference[y * w + x]
            })
            .collect();
        let mut c = PhaseCorrelator::new(w, h, 256);
        c.set_reference(&reference);
        assert_close(c.shift(&frame), 5.0, 2.0, 0.1);
        // And back.
        c.set_reference(&frame);
        assert_close(c.shift(&reference), -5.0, -2.0, 0.1);
    }

    #[test]
    fn a_guess_moves_the_window_and_is_clamped_to_the_plane() {
        let (w, h) = (320, 240);
        let tex = Texture::new(17, w as f64, h as f64);
        let mut c = PhaseCorrelator::new(w, h, 256);
        c.set_reference(&tex.plane(w, h, 0.0, 0.0));
        let frame = tex.plane(w, h, 23.4, -17.8);
        assert_eq!(
            (c.factor(), c.window(), (c.x0, c.y0)),
            (1, (256, 192), (32, 24))
        );
        let near = c.shift_near(&frame, (22.0, -18.0));
        assert_eq!(c.last_offset, (22, -18));
        // A guess far off the estimate is corrected by a second pass with the window on the estimate.
        let plain = c.shift(&frame);
        assert_eq!(c.last_offset, (23, -18));
        // Guesses beyond the plane are clamped to it.
        assert_eq!(c.offset((1e9, f64::NAN)), (32, 0));
        assert_eq!(c.offset((-1e9, -1e9)), (-32, -24));
        let wild = c.shift_near(&frame, (1e9, -1e9));
        for s in [near, plain, wild] {
            assert_close(s, 23.4, -17.8, 0.1);
        }
    }

    #[test]
    fn downsampled_planes_keep_subpixel_accuracy() {
        let (w, h) = (640, 480);
        let tex = Texture::new(11, w as f64, h as f64);
        let mut c = PhaseCorrelator::new(w, h, 256);
        assert_eq!(c.factor(), 2);
        c.set_reference(&tex.plane(w, h, 0.0, 0.0));
        for (dx, dy) in [(7.0, -4.0), (7.3, -4.6), (-21.5, 12.25), (0.8, 0.4)] {
            assert_close(c.shift(&tex.plane(w, h, dx, dy)), dx, dy, 0.2);
        }
    }

    #[test]
    fn noise_robustness() {
        let (w, h) = (256, 256);
        let tex = Texture::new(3, w as f64, h as f64);
        let mut rng = Rng(99);
        // Independent noise in both planes, 6 grey levels: twice a microscope's 2-3.
        let mut noisy = |p: Vec<f32>| -> Vec<f32> {
            p.into_iter()
                .map(|v| v + 6.0 * rng.normal() as f32)
                .collect()
        };
        let mut c = PhaseCorrelator::new(w, h, 256);
        c.set_reference(&noisy(tex.plane(w, h, 0.0, 0.0)));
        for (dx, dy) in [(4.0, -3.0), (-2.4, 6.7), (0.5, 0.5), (-11.2, -9.9)] {
            let s = c.shift(&noisy(tex.plane(w, h, dx, dy)));
            assert_close(s, dx, dy, 0.2);
            assert!(s.peak > MIN_PEAK, "{s:?}");
        }
        // Pure noise against the texture: a weak peak.
        let s = c.shift(&noisy(vec![100.0; w * h]));
        assert!(s.peak < 0.05, "{s:?}");
    }

    #[test]
    fn tracker_skips_weak_frames_and_keeps_its_keyframe() {
        let (w, h) = (256, 192);
        let tex = Texture::new(5, w as f64, h as f64);
        let mut rng = Rng(1);
        let mut t = DriftTracker::new(w, h, 256);
        let first = t.track(&tex.plane(w, h, 0.0, 0.0));
        assert_eq!(
            first,
            Shift {
                dx: 0.0,
                dy: 0.0,
                peak: 1.0
            }
        );
        let good = t.track(&tex.plane(w, h, 1.5, -0.5));
        assert_close(good, 1.5, -0.5, 0.2);
        // A frame with nothing but noise: the last estimate comes back with the frame's own low peak.
        let noise: Vec<f32> = (0..w * h)
            .map(|_| 100.0 + 20.0 * rng.normal() as f32)
            .collect();
        let weak = t.track(&noise);
        assert!(weak.peak < MIN_PEAK, "{weak:?}");
        assert_eq!((weak.dx, weak.dy), (good.dx, good.dy));
        // The track resumes as if the bad frame never came.
        assert_close(t.track(&tex.plane(w, h, 3.0, -1.0)), 3.0, -1.0, 0.2);
    }

    #[test]
    fn tracker_reanchors_after_a_run_of_weak_frames() {
        // The light comes on after the first frame: a blank keyframe matches nothing.
        let (w, h) = (160, 120);
        let tex = Texture::new(8, w as f64, h as f64);
        let mut t = DriftTracker::new(w, h, 256);
        t.track(&vec![0.0; w * h]);
        let start = REANCHOR_AFTER + 1;
        for i in 1..start + 10 {
            let dx = 0.5 * i as f64;
            let s = t.track(&tex.plane(w, h, dx, 0.0));
            if i < start {
                assert!(s.peak < MIN_PEAK && s.dx == 0.0, "frame {i}: {s:?}");
            } else {
                // Re-anchored on frame `REANCHOR_AFTER` at the last good estimate (0, 0).
                assert_close(s, dx - 0.5 * REANCHOR_AFTER as f64, 0.0, 0.1);
            }
        }
        assert_eq!(t.breaks(), 1);
    }

    #[test]
    fn tracker_follows_a_long_walk_through_keyframes() {
        // 60 px in 2.5 px steps across a 128-px window: the keyframe must move several times.
        let (w, h) = (128, 128);
        let tex = Texture::new(21, w as f64, h as f64);
        let mut t = DriftTracker::new(w, h, 128);
        let mut worst = 0.0f64;
        for i in 0..=24 {
            let (dx, dy) = (2.5 * i as f64, -1.1 * i as f64);
            let s = t.track(&tex.plane(w, h, dx, dy));
            worst = worst.max((s.dx - dx).hypot(s.dy - dy));
        }
        eprintln!("128x128 walk of 60 px: worst error {worst:.3} px");
        assert!(worst < 0.5, "worst error {worst}");
    }

    /// Tracks a rendered clip; returns (max error, final error, min peak), errors in frame pixels.
    ///
    /// The renderer crops frame `i` from the scene at `max_offset - drift_offset(i)`: the field moves by
    /// `-drift_offset(i)` over the tissue, so content moves by `+drift_offset(i)` in the frame, which is
    /// exactly [`Shift`]'s convention.
    fn track_clip(spec: &SynthSpec, max_side: usize) -> (f64, f64, f64) {
        let mut renderer = Renderer::new(spec).unwrap();
        let (w, h) = (spec.width as usize, spec.height as usize);
        let mut tracker = DriftTracker::new(w, h, max_side);
        let (mut max_err, mut last_err, mut min_peak) = (0.0f64, 0.0, 1.0f64);
        for i in 0..spec.frames {
            let frame = renderer.render(i);
            let green: Vec<f32> = frame.rgb.chunks_exact(3).map(|p| p[1] as f32).collect();
            let s = tracker.track(&green);
            let [tx, ty] = spec.drift_offset(i);
            last_err = (s.dx - tx as f64).hypot(s.dy - ty as f64);
            max_err = max_err.max(last_err);
            min_peak = min_peak.min(s.peak);
        }
        (max_err, last_err, min_peak)
    }

    #[test]
    fn tracks_generated_sublingual_and_skin_clips() {
        for name in ["sublingual", "skin"] {
            let mut spec = SynthSpec::preset(name).unwrap();
            spec.frames = 60;
            spec.drift_px_per_frame = [0.8, -0.5];
            let (max_err, last_err, min_peak) = track_clip(&spec, 256);
            eprintln!(
                "{name} {}x{}: max error {max_err:.3} px, final {last_err:.3} px, min peak {min_peak:.3}",
                spec.width, spec.height
            );
            assert!(last_err < 1.5, "{name}: final error {last_err}");
            assert!(max_err < 1.5, "{name}: max error {max_err}");
            assert!(min_peak > MIN_PEAK, "{name}: a frame was not trusted");
        }
    }

    #[test]
    fn follows_drift_beyond_half_the_field() {
        // 4 px/frame for 90 frames: 356 px across a 640-px field, the keyframe moving every 16 frames.
        let mut spec = SynthSpec::preset("sublingual").unwrap();
        spec.frames = 90;
        spec.drift_px_per_frame = [4.0, 0.0];
        assert!(spec.drift_offset(spec.frames - 1)[0] > spec.width as i64 / 2);
        let (max_err, last_err, min_peak) = track_clip(&spec, 256);
        eprintln!(
            "sublingual 4 px/frame over 90 frames: max error {max_err:.3} px, final {last_err:.3} px, \
             min peak {min_peak:.3}"
        );
        assert!(max_err < 1.0, "max error {max_err}");
        assert!(min_peak > MIN_PEAK, "a frame was not trusted");
    }

    /// Per-frame time in release, for a stream drifting 0.8, -0.5 px/frame:
    /// `cargo test --release -p capflow-operators --lib drift_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run in release by hand"]
    fn drift_timing() {
        for (w, h) in [(640, 480), (1033, 581), (1920, 1080)] {
            let margin = 64;
            let big_w = w + 2 * margin;
            let big = Texture::new(2, big_w as f64, (h + 2 * margin) as f64).plane(
                big_w,
                h + 2 * margin,
                0.0,
                0.0,
            );
            let frames: Vec<Vec<f32>> = (0..60)
                .map(|i| {
                    let ox = margin - (0.8 * i as f64).round() as usize;
                    let oy = margin + (0.5 * i as f64).round() as usize;
                    (0..w * h)
                        .map(|j| big[(oy + j / w) * big_w + ox + j % w])
                        .collect()
                })
                .collect();
            let mut t = DriftTracker::new(w, h, 256);
            t.track(&frames[0]);
            let start = std::time::Instant::now();
            let mut last = Shift::default();
            for f in &frames[1..] {
                last = t.track(std::hint::black_box(f));
            }
            let per = start.elapsed().as_secs_f64() / (frames.len() - 1) as f64;
            eprintln!(
                "{w}x{h} (factor {}, window {:?}): {:.3} ms per frame, last {last:?}",
                t.correlator.factor(),
                t.correlator.window(),
                per * 1e3
            );
            // Frame 59 shows the texture moved by round(0.8 * 59), -round(0.5 * 59).
            assert_close(last, 47.0, -30.0, 0.3);
        }
    }
}
