//! Blood flow per vessel segment from the temporal signal along its centre line: PPV, PVD, MFI.
//!
//! Red cells moving through a perfused vessel make the brightness along its centre line change from frame to frame
//! far more than sensor noise does; in a vessel without flow the (stuck) cells stay put and only noise remains. Over a
//! window of stabilised frames each piece of centre line has an *activity* (the median over its points of their mean
//! absolute frame-to-frame change, each sample a 3×3 mean). It flows in a sub-window when that activity exceeds both
//! the background's (sensor noise) and its own *still texture* (the pattern stuck cells leave in the window's mean,
//! which compression and residual drift make flicker):
//!
//! - flow in more than half of the sub-windows: continuous (3), or sluggish (2) when the measured red-cell speed is
//!   low;
//! - flow in half of them or fewer: intermittent (1), no flow at least half of the time (Boerma's MFI scale);
//! - no flow: none (0).
//!
//! PPV is the length share of sluggish + continuous segments (consensus definition), PVD = TVD × PPV, MFI the mean
//! over the four field quadrants of each quadrant's predominant class (by length). The red-cell speed is the lag that
//! best aligns consecutive centre-line profiles (a space-time-diagram slope); it aliases when cells move more than
//! about half their spacing per frame, so it is reported as experimental.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::vessels::VesselMap;

/// Flow-analysis settings: the `[flow]` table of the capflow config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Run the flow analysis (it costs time on every frame; off gives no PPV/PVD/MFI).
    pub enabled: bool,
    /// Frames per flow window (consensus clips are ≥ 5 s; 2 s at 25 fps already separates flow from no flow).
    pub window_frames: u32,
    /// Frames between the starts of consecutive (sliding) flow windows.
    pub hop_frames: u32,
    /// Sub-windows a flow window is split into to tell intermittent from continuous flow.
    pub sub_windows: u32,
    /// A segment flows in a sub-window when its activity exceeds this multiple of the background's (sensor noise)...
    pub flow_ratio: f64,
    /// ...and this multiple of its still texture: the pattern cells that stay put leave in the window's mean along
    /// the centre line. Compression and residual drift make a still, grainy vessel flicker in proportion to that
    /// pattern; moving cells wash it out.
    pub texture_ratio: f64,
    /// Flowing segments slower than this (µm/s) are sluggish rather than continuous.
    pub sluggish_below_um_s: f64,
    /// Fastest red-cell speed searched for, µm/s.
    pub max_velocity_um_s: f64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            enabled: true,
            window_frames: 50,
            hop_frames: 25,
            sub_windows: 4,
            flow_ratio: 2.0,
            texture_ratio: 0.5,
            sluggish_below_um_s: 100.0,
            max_velocity_um_s: 2000.0,
        }
    }
}

impl FlowConfig {
    /// Human-readable problems (empty = valid), each naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.window_frames < 4 {
            out.push(format!(
                "flow.window_frames = {} is too short: use at least 4 (50 = 2 s at 25 fps)",
                self.window_frames
            ));
        }
        if self.hop_frames == 0 || self.hop_frames > self.window_frames {
            out.push(format!(
                "flow.hop_frames = {} must be between 1 and flow.window_frames ({})",
                self.hop_frames, self.window_frames
            ));
        }
        if self.sub_windows == 0 || self.sub_windows * 2 > self.window_frames {
            out.push(format!(
                "flow.sub_windows = {} must be between 1 and half of flow.window_frames",
                self.sub_windows
            ));
        }
        if !(self.flow_ratio.is_finite() && self.flow_ratio > 1.0) {
            out.push(format!(
                "flow.flow_ratio = {} must be a number above 1 (activity relative to background noise)",
                self.flow_ratio
            ));
        }
        if !(self.texture_ratio.is_finite() && self.texture_ratio >= 0.0) {
            out.push(format!(
                "flow.texture_ratio = {} must be a number of at least 0 (activity relative to the still texture; 0 \
                 turns the check off)",
                self.texture_ratio
            ));
        }
        if !(self.sluggish_below_um_s >= 0.0 && self.max_velocity_um_s > self.sluggish_below_um_s) {
            out.push(format!(
                "flow.sluggish_below_um_s ({}) must be >= 0 and below flow.max_velocity_um_s ({})",
                self.sluggish_below_um_s, self.max_velocity_um_s
            ));
        }
        out
    }
}

/// Flow class of a vessel segment, valued as in the MFI score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowClass {
    /// No flow.
    None = 0,
    /// Flow in part of the window only.
    Intermittent = 1,
    /// Slow flow.
    Sluggish = 2,
    /// Normal continuous flow.
    Continuous = 3,
}

impl FlowClass {
    /// Whether the class counts as perfused (PPV, PVD).
    pub fn perfused(self) -> bool {
        self >= FlowClass::Sluggish
    }
}

/// What one flow window samples: a segmented frame's vessels plus background points, in its working pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowMap {
    /// Vessel centre lines of the segmented frame.
    pub vessels: VesselMap,
    /// Background points (far from any vessel), the noise reference.
    pub background: Vec<(u32, u32)>,
    /// Stabilisation shift of the segmented frame, working pixels (see `drift::Shift`).
    pub shift: [f64; 2],
}

/// Background points on a grid of `step` pixels, at least `margin` pixels from any mask pixel.
pub fn background_points(
    mask: &[bool],
    width: usize,
    height: usize,
    step: usize,
    margin: usize,
) -> Vec<(u32, u32)> {
    let step = step.max(1);
    let mut out = Vec::new();
    for y in (margin..height.saturating_sub(margin)).step_by(step) {
        'point: for x in (margin..width.saturating_sub(margin)).step_by(step) {
            for yy in y - margin..=y + margin {
                let row = &mask[yy * width..(yy + 1) * width];
                if row[x - margin..=x + margin].iter().any(|&m| m) {
                    continue 'point;
                }
            }
            out.push((x as u32, y as u32));
        }
    }
    out
}

/// Half-width (pixels) of the square each point's value is averaged over. Sensor noise is independent from pixel to
/// pixel while red cells span several pixels, so a 3×3 mean cuts the noise about threefold and keeps most of the
/// cells' signal: blurred skin loops, whose cells barely modulate the lumen, rose from about 1.7 to 2.9 times the
/// background's activity on generated clips, and no-flow vessels stayed at 1.0.
pub const SAMPLE_RADIUS_PX: i32 = 1;

/// Taps per axis of a patch mean at a fractional position: the square's 2 r + 1 columns, bilinearly shifted, touch
/// 2 r + 2.
const TAPS: usize = 2 * SAMPLE_RADIUS_PX as usize + 2;

/// Per-axis weights of a patch mean whose position has fractional part `f`.
fn patch_weights(f: f32) -> [f32; TAPS] {
    let mut w = [1.0f32; TAPS];
    w[0] = 1.0 - f;
    w[TAPS - 1] = f;
    w
}

/// The mean of bilinear samples over the (2 [`SAMPLE_RADIUS_PX`] + 1)² square of whole-pixel offsets around
/// (`cx` + fx, `cy` + fy), where `wx`/`wy` are [`patch_weights`] of fx/fy: one weighted sum of `TAPS`² pixels.
/// `NaN` when any of the square is outside the plane.
fn patch_mean(
    plane: &[f32],
    width: usize,
    height: usize,
    (cx, cy): (i64, i64),
    wx: &[f32; TAPS],
    wy: &[f32; TAPS],
) -> f32 {
    let r = SAMPLE_RADIUS_PX as i64;
    // The last tap is needed only with a fractional part; without one it stays on the plane's edge, weight 0.
    let last_x = cx + r + i64::from(wx[TAPS - 1] > 0.0);
    let last_y = cy + r + i64::from(wy[TAPS - 1] > 0.0);
    if cx - r < 0 || cy - r < 0 || last_x >= width as i64 || last_y >= height as i64 {
        return f32::NAN;
    }
    let (x0, y0) = ((cx - r) as usize, (cy - r) as usize);
    let mut sum = 0.0f32;
    for (j, wyj) in wy.iter().enumerate() {
        let row = &plane[(y0 + j).min(height - 1) * width..][..width];
        let mut acc = 0.0f32;
        for (i, wxi) in wx.iter().enumerate() {
            acc += wxi * row[(x0 + i).min(width - 1)];
        }
        sum += wyj * acc;
    }
    let n = (2 * r + 1) as f32;
    sum / (n * n)
}

/// [`patch_mean`] at a fractional position.
#[cfg(test)]
fn sample_mean(plane: &[f32], width: usize, height: usize, x: f64, y: f64) -> f32 {
    let (fx, fy) = (x - x.floor(), y - y.floor());
    let (wx, wy) = (patch_weights(fx as f32), patch_weights(fy as f32));
    patch_mean(
        plane,
        width,
        height,
        (x.floor() as i64, y.floor() as i64),
        &wx,
        &wy,
    )
}

/// Median of `values` (reordered), `None` when empty.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    Some(*values.select_nth_unstable_by(mid, f64::total_cmp).1)
}

/// A flowing piece is sluggish only when, besides its measured speed being low, consecutive frames along it look
/// alike: slow cells move a fraction of their size per frame (correlation 0.81 for 1 px per frame in the unit test),
/// while fast flow decorrelates from frame to frame, and the speed estimate, which aliases at high speeds, can read it
/// as slow (on the bundled demo clips the pieces it called sluggish read a median of 0.09, nine in ten below 0.37).
/// With this check, skin MFI on five generated clips went from 2.00 everywhere to 2.50-3.00, against the
/// generator's 2.25-3.00.
pub const SLUGGISH_MIN_FRAME_CORRELATION: f64 = 0.5;

/// Longest piece of centre line classified as one unit, µm: a segment of a mesh can run from a perfused vessel into
/// one without flow, so long segments are split and each piece is judged on its own.
pub const PIECE_UM: f64 = 40.0;

/// Flow of one piece of a segment (at most about [`PIECE_UM`] long) over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentFlow {
    /// Length of the piece, µm.
    pub length_um: f64,
    /// Middle point of the piece (map pixels), which decides its quadrant.
    pub midpoint: (u32, u32),
    /// Flow class.
    pub class: FlowClass,
    /// Activity ÷ background activity, over the whole window.
    pub activity_ratio: f64,
    /// Experimental red-cell speed, µm/s (`None` when the segment is too short or shows no flow).
    pub velocity_um_s: Option<f64>,
}

/// Flow of one window over all segments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowResult {
    /// Per piece of segment, in the order of the map.
    pub segments: Vec<SegmentFlow>,
    /// Proportion of perfused vessel length, %.
    pub ppv_percent: f64,
    /// Perfused vessel density, mm/mm².
    pub pvd_mm_per_mm2: f64,
    /// Microvascular flow index, 0..3.
    pub mfi: f64,
    /// Experimental: median speed over perfused segments with a speed, µm/s.
    pub rbc_velocity_um_s: Option<f64>,
}

/// The samples of one flow window: every frame's values at the map's points.
#[derive(Clone, Debug)]
pub struct FlowWindow {
    map: Arc<FlowMap>,
    /// Point count per frame: all segment points, then the background points.
    n_points: usize,
    values: Vec<f32>,
    frames: usize,
    /// Index of the first frame in its stream.
    pub first_frame: u64,
}

impl FlowWindow {
    /// An empty window sampling `map`, starting at stream frame `first_frame`.
    pub fn new(map: Arc<FlowMap>, first_frame: u64) -> Self {
        let n_points = map
            .vessels
            .segments
            .iter()
            .map(|s| s.points.len())
            .sum::<usize>()
            + map.background.len();
        FlowWindow {
            map,
            n_points,
            values: Vec::new(),
            frames: 0,
            first_frame,
        }
    }

    /// Frames sampled so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Samples one frame's working-resolution luma plane, displaced by `shift` (working pixels) from the stream's
    /// reference; the map's points are moved by the shift difference so they stay on the same vessels.
    pub fn push(&mut self, plane: &[f32], width: usize, height: usize, shift: [f64; 2]) {
        let (dx, dy) = (shift[0] - self.map.shift[0], shift[1] - self.map.shift[1]);
        // The points are whole pixels and the shift is one for all, so every patch has the same weights.
        let (ix, iy) = (dx.floor(), dy.floor());
        let (wx, wy) = (
            patch_weights((dx - ix) as f32),
            patch_weights((dy - iy) as f32),
        );
        let (ix, iy) = (ix as i64, iy as i64);
        let points = self
            .map
            .vessels
            .segments
            .iter()
            .flat_map(|s| s.points.iter())
            .copied()
            .chain(self.map.background.iter().copied());
        self.values.extend(points.map(|(x, y)| {
            patch_mean(
                plane,
                width,
                height,
                (x as i64 + ix, y as i64 + iy),
                &wx,
                &wy,
            )
        }));
        self.frames += 1;
    }

    fn value(&self, frame: usize, point: usize) -> f32 {
        self.values[frame * self.n_points + point]
    }

    /// Classifies every segment and summarises the window; `fps` converts frame lags to speeds.
    pub fn analyse(&self, fps: f64, config: &FlowConfig) -> FlowResult {
        let frames = self.frames;
        let segments = &self.map.vessels.segments;
        let background_start = self.n_points - self.map.background.len();
        if frames < 2 || segments.is_empty() {
            return FlowResult::default();
        }
        // Global brightness change per frame step, from the background, removed from every difference.
        let mut global = vec![0.0f64; frames];
        for (t, g) in global.iter_mut().enumerate().skip(1) {
            let (mut sum, mut n) = (0.0f64, 0usize);
            for p in background_start..self.n_points {
                let d = self.value(t, p) - self.value(t - 1, p);
                if d.is_finite() {
                    sum += d as f64;
                    n += 1;
                }
            }
            *g = if n > 0 { sum / n as f64 } else { 0.0 };
        }
        let subs = (config.sub_windows.max(1) as usize).min(frames - 1);
        // One point's mean absolute change over `steps`.
        let point_activity = |p: usize, steps: std::ops::Range<usize>| {
            let (mut sum, mut n) = (0.0f64, 0usize);
            for t in steps {
                let d = (self.value(t, p) - self.value(t - 1, p)) as f64 - global[t];
                if d.is_finite() {
                    sum += d.abs();
                    n += 1;
                }
            }
            (n > 0).then(|| sum / n as f64)
        };
        // Median over the points `range` of their activity: a piece crossing or grazing a perfused vessel changes
        // at a few of its points only, and the median ignores them.
        let activity = |range: std::ops::Range<usize>, steps: std::ops::Range<usize>| {
            let mut per_point: Vec<f64> = range
                .filter_map(|p| point_activity(p, steps.clone()))
                .collect();
            median(&mut per_point)
        };
        let sub_steps = |k: usize| {
            let lo = 1 + k * (frames - 1) / subs;
            let hi = 1 + (k + 1) * (frames - 1) / subs;
            lo..hi
        };
        // Quantisation alone gives ~0.3 grey levels, ~0.1 after the 3×3 mean; a floor keeps noiseless input (or a
        // background a codec froze) from dividing by zero.
        let floor = 0.15;
        let background = background_start..self.n_points;
        let noise_all = activity(background.clone(), 1..frames)
            .unwrap_or(floor)
            .max(floor);
        let noise_sub: Vec<f64> = (0..subs)
            .map(|k| {
                activity(background.clone(), sub_steps(k))
                    .unwrap_or(noise_all)
                    .max(floor)
            })
            .collect();
        // Each centre-line point's mean over the window: cells that stay put leave their pattern in it, moving cells
        // wash it out.
        let mean_value: Vec<f64> = (0..background_start)
            .map(|p| {
                let (mut sum, mut n) = (0.0f64, 0usize);
                for t in 0..frames {
                    let v = self.value(t, p) as f64;
                    if v.is_finite() {
                        sum += v;
                        n += 1;
                    }
                }
                if n > 0 {
                    sum / n as f64
                } else {
                    f64::NAN
                }
            })
            .collect();
        // Still texture of the points `range`: the median step of the mean along the centre line.
        let still_texture = |range: std::ops::Range<usize>| {
            let mut steps: Vec<f64> = (range.start + 1..range.end.saturating_sub(1))
                .map(|p| ((mean_value[p + 1] - mean_value[p - 1]) / 2.0).abs())
                .filter(|d| d.is_finite())
                .collect();
            median(&mut steps).unwrap_or(0.0)
        };
        // Correlation of consecutive frames over the points `range`, each point's mean taken out.
        let frame_correlation = |range: std::ops::Range<usize>| {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for p in range {
                for t in 1..frames {
                    let now = self.value(t, p) as f64 - mean_value[p];
                    let before = self.value(t - 1, p) as f64 - mean_value[p];
                    if now.is_finite() && before.is_finite() {
                        num += now * before;
                        den += now * now;
                    }
                }
            }
            if den > 0.0 {
                num / den
            } else {
                0.0
            }
        };
        let mut out = Vec::with_capacity(segments.len());
        let mut start = 0;
        for segment in segments {
            let n = segment.points.len();
            let whole = start..start + n;
            start = whole.end;
            let pieces = ((segment.length_um / PIECE_UM).round() as usize).clamp(1, n.max(1));
            // Speed is measured once over the whole segment: a longer profile allows longer lags.
            let spacing = segment.length_um / (n.max(2) - 1) as f64;
            let mut segment_speed: Option<Option<f64>> = None;
            for k in 0..pieces {
                let range = whole.start + k * n / pieces..whole.start + (k + 1) * n / pieces;
                if range.is_empty() {
                    continue;
                }
                let length_um = segment.length_um * range.len() as f64 / n as f64;
                let midpoint = segment.points[(range.start + range.end) / 2 - whole.start];
                let ratio = activity(range.clone(), 1..frames).unwrap_or(0.0) / noise_all;
                let texture = still_texture(range.clone());
                let flowing = (0..subs)
                    .filter(|&k| {
                        let a = activity(range.clone(), sub_steps(k)).unwrap_or(0.0);
                        a > config.flow_ratio * noise_sub[k] && a > config.texture_ratio * texture
                    })
                    .count();
                let velocity = if flowing > 0 {
                    *segment_speed.get_or_insert_with(|| {
                        let still = &mean_value[whole.clone()];
                        self.speed(whole.clone(), still, spacing, fps, config.max_velocity_um_s)
                    })
                } else {
                    None
                };
                // Intermittent: no flow for at least half of the window (Boerma's MFI scale).
                let class = if flowing == 0 {
                    FlowClass::None
                } else if 2 * flowing <= subs {
                    FlowClass::Intermittent
                } else if velocity.is_some_and(|v| v < config.sluggish_below_um_s)
                    && frame_correlation(range.clone()) > SLUGGISH_MIN_FRAME_CORRELATION
                {
                    FlowClass::Sluggish
                } else {
                    FlowClass::Continuous
                };
                out.push(SegmentFlow {
                    length_um,
                    midpoint,
                    class,
                    activity_ratio: ratio,
                    velocity_um_s: velocity,
                });
            }
        }
        summarise(&self.map.vessels, out)
    }

    /// Red-cell speed along one segment: the lag (in points) that best correlates consecutive profiles.
    /// `still` holds the points' means over the window.
    fn speed(
        &self,
        range: std::ops::Range<usize>,
        still: &[f64],
        spacing_um: f64,
        fps: f64,
        max_um_s: f64,
    ) -> Option<f64> {
        let n = range.len();
        if n < 8 || spacing_um <= 0.0 || fps <= 0.0 {
            return None;
        }
        let max_lag = ((max_um_s / fps / spacing_um).ceil() as usize).min(n / 3);
        if max_lag == 0 {
            return None;
        }
        // Each point's mean over the window is taken out first: what stays put along the vessel (its shape, cells
        // that do not move) correlates best at lag 0 and would hide the moving cells' lag.
        let profile = |t: usize| -> Vec<f64> {
            let v: Vec<f64> = range
                .clone()
                .zip(still)
                .map(|(p, m)| self.value(t, p) as f64 - m)
                .collect();
            let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            let mean = finite.iter().sum::<f64>() / finite.len().max(1) as f64;
            v.into_iter()
                .map(|x| if x.is_finite() { x - mean } else { 0.0 })
                .collect()
        };
        let mut scores = vec![0.0f64; 2 * max_lag + 1];
        let mut prev = profile(0);
        for t in 1..self.frames {
            let next = profile(t);
            for (k, score) in scores.iter_mut().enumerate() {
                let lag = k as isize - max_lag as isize;
                let (mut s, mut m) = (0.0, 0usize);
                for (i, &a) in prev.iter().enumerate() {
                    let j = i as isize + lag;
                    if j >= 0 && (j as usize) < n {
                        s += a * next[j as usize];
                        m += 1;
                    }
                }
                if m > 0 {
                    *score += s / m as f64;
                }
            }
            prev = next;
        }
        let (best, &value) = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        (value > 0.0).then(|| (best as f64 - max_lag as f64).abs() * spacing_um * fps)
    }
}

/// PPV, PVD and MFI of the classified pieces of `map`'s segments.
pub fn summarise(map: &VesselMap, segments: Vec<SegmentFlow>) -> FlowResult {
    let total: f64 = segments.iter().map(|s| s.length_um).sum();
    if segments.is_empty() || total <= 0.0 {
        return FlowResult {
            segments,
            ..Default::default()
        };
    }
    let perfused: f64 = segments
        .iter()
        .filter(|f| f.class.perfused())
        .map(|f| f.length_um)
        .sum();
    let ppv = 100.0 * perfused / total;
    let field_mm2 = map.width as f64 * map.height as f64 * map.um_per_px * map.um_per_px / 1e6;
    let tvd = if field_mm2 > 0.0 {
        total / 1e3 / field_mm2
    } else {
        0.0
    };
    // Length of each class per quadrant, by piece midpoint.
    let mut quadrants = [[0.0f64; 4]; 4];
    for f in &segments {
        let (x, y) = f.midpoint;
        let q = usize::from(2 * x as usize >= map.width)
            + 2 * usize::from(2 * y as usize >= map.height);
        quadrants[q][f.class as usize] += f.length_um;
    }
    let scored: Vec<f64> = quadrants
        .iter()
        .filter(|q| q.iter().sum::<f64>() > 0.0)
        .map(|q| {
            // Predominant class; ties go to the better flow.
            let mut best = 0;
            for c in 1..4 {
                if q[c] >= q[best] {
                    best = c;
                }
            }
            best as f64
        })
        .collect();
    let mfi = scored.iter().sum::<f64>() / scored.len().max(1) as f64;
    let mut speeds: Vec<f64> = segments
        .iter()
        .filter(|f| f.class.perfused())
        .filter_map(|f| f.velocity_um_s)
        .collect();
    speeds.sort_by(f64::total_cmp);
    let rbc = (!speeds.is_empty()).then(|| {
        let m = speeds.len() / 2;
        if speeds.len() % 2 == 1 {
            speeds[m]
        } else {
            0.5 * (speeds[m - 1] + speeds[m])
        }
    });
    FlowResult {
        segments,
        ppv_percent: ppv,
        pvd_mm_per_mm2: tvd * ppv / 100.0,
        mfi,
        rbc_velocity_um_s: rbc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vessels::VesselSegment;

    /// A tiny deterministic generator (xorshift), so the tests need no crate.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 10_000) as f32 / 10_000.0 - 0.5
        }
    }

    /// A 64×64 field at 2 µm/px with three horizontal vessels (rows 10, 30, 50), 40 px long each.
    fn map() -> Arc<FlowMap> {
        let segment = |y: u32| VesselSegment {
            points: (10..50).map(|x| (x, y)).collect(),
            length_um: 80.0,
            diameter_um: 8.0,
        };
        let mut background = Vec::new();
        for y in (4..64).step_by(8) {
            for x in (4..64).step_by(8) {
                if ![10, 30, 50].iter().any(|&v: &i32| (y as i32 - v).abs() < 3) {
                    background.push((x, y));
                }
            }
        }
        Arc::new(FlowMap {
            vessels: VesselMap {
                width: 64,
                height: 64,
                um_per_px: 2.0,
                segments: vec![segment(10), segment(30), segment(50)],
            },
            background,
            shift: [0.0, 0.0],
        })
    }

    /// Frames where the vessel at row 10 carries cells moving 3 px per frame, row 30 has cells moving only during
    /// the first third (stopped for two thirds of the window: intermittent), and row 50 holds still cells; sensor noise everywhere.
    fn frames(n: usize, noise_sigma: f32) -> Vec<Vec<f32>> {
        let mut rng = Noise(42);
        let cells: Vec<f32> = (0..400)
            .map(|i| if (i / 4) % 3 == 0 { 60.0 } else { 0.0 })
            .collect();
        (0..n)
            .map(|t| {
                let mut plane = vec![150.0f32; 64 * 64];
                for x in 0..64usize {
                    plane[10 * 64 + x] -= cells[x + 3 * t];
                    let t30 = t.min(n / 3);
                    plane[30 * 64 + x] -= cells[x + 3 * t30];
                    plane[50 * 64 + x] -= cells[x];
                }
                for v in plane.iter_mut() {
                    *v += noise_sigma * 2.0 * rng.next();
                }
                plane
            })
            .collect()
    }

    #[test]
    fn moving_cells_flow_still_cells_do_not_and_a_stop_is_intermittent() {
        let config = FlowConfig::default();
        let mut window = FlowWindow::new(map(), 0);
        for plane in frames(40, 3.0) {
            window.push(&plane, 64, 64, [0.0, 0.0]);
        }
        let result = window.analyse(25.0, &config);
        let classes: Vec<FlowClass> = result.segments.iter().map(|s| s.class).collect();
        // Each 80 µm vessel is judged in two 40 µm pieces.
        assert_eq!(
            classes,
            [
                FlowClass::Continuous,
                FlowClass::Continuous,
                FlowClass::Intermittent,
                FlowClass::Intermittent,
                FlowClass::None,
                FlowClass::None
            ],
            "{result:?}"
        );
        assert!((result.ppv_percent - 100.0 / 3.0).abs() < 1e-9);
        // 240 µm of vessel in a 128 × 128 µm field: TVD 14.6 mm/mm², a third of it perfused.
        let tvd = 0.240 / (0.128 * 0.128);
        assert!((result.pvd_mm_per_mm2 - tvd / 3.0).abs() < 1e-9);
        // Quadrants (pieces at x 10-29 left, 30-49 right): the top ones hold rows 10 and 30 (continuous and
        // intermittent, equal length: the better flow wins), the bottom ones row 50 (none): MFI = (3 + 3 + 0 + 0) / 4.
        assert_eq!(result.mfi, 1.5);
        // 3 px per frame at 2 µm/px and 25 fps: 150 µm/s (the point spacing is taken from the segment length).
        let v = result.segments[0]
            .velocity_um_s
            .expect("a speed for the flowing vessel");
        assert!((v - 150.0).abs() < 0.05 * 150.0, "{v}");
    }

    #[test]
    fn drift_is_followed_through_the_shift() {
        // The same scene moved by (+2, +1) px each frame, with the shifts reported: the classes do not change.
        let config = FlowConfig::default();
        let mut window = FlowWindow::new(map(), 0);
        for (t, plane) in frames(40, 3.0).into_iter().enumerate() {
            let (dx, dy) = ((t % 3) as isize, (t % 2) as isize);
            let mut moved = vec![150.0f32; 64 * 64];
            for y in 0..64isize {
                for x in 0..64isize {
                    let (sx, sy) = (x - dx, y - dy);
                    if (0..64).contains(&sx) && (0..64).contains(&sy) {
                        moved[(y * 64 + x) as usize] = plane[(sy * 64 + sx) as usize];
                    }
                }
            }
            window.push(&moved, 64, 64, [dx as f64, dy as f64]);
        }
        let classes: Vec<FlowClass> = window
            .analyse(25.0, &config)
            .segments
            .iter()
            .map(|s| s.class)
            .collect();
        assert_eq!(classes[..2], [FlowClass::Continuous; 2]);
        assert_eq!(classes[4..], [FlowClass::None; 2]);
    }

    /// A 64×64 field at 2 µm/px with a background grid and the given centre lines (each 80 µm: two pieces).
    fn map_of(segments: Vec<Vec<(u32, u32)>>) -> Arc<FlowMap> {
        let on_vessel = |x: u32, y: u32| {
            segments
                .iter()
                .flatten()
                .any(|&(vx, vy)| vx.abs_diff(x) < 3 && vy.abs_diff(y) < 3)
        };
        let background = (4..64)
            .step_by(8)
            .flat_map(|y| (4..64).step_by(8).map(move |x| (x, y)))
            .filter(|&(x, y)| !on_vessel(x, y))
            .collect();
        let segments = segments
            .into_iter()
            .map(|points| VesselSegment {
                length_um: 2.0 * points.len() as f64,
                points,
                diameter_um: 2.0,
            })
            .collect();
        Arc::new(FlowMap {
            vessels: VesselMap {
                width: 64,
                height: 64,
                um_per_px: 2.0,
                segments,
            },
            background,
            shift: [0.0, 0.0],
        })
    }

    /// Adds uniform noise of the given full width to every pixel, pushes the plane, unshifted.
    fn push_noisy(window: &mut FlowWindow, mut plane: Vec<f32>, rng: &mut Noise, width: f32) {
        for v in plane.iter_mut() {
            *v += width * rng.next();
        }
        window.push(&plane, 64, 64, [0.0, 0.0]);
    }

    /// Red-cell darkening at position `i` along a vessel: 4 px cells every 12 px.
    fn cells(i: usize) -> f32 {
        if (i / 4).is_multiple_of(3) {
            60.0
        } else {
            0.0
        }
    }

    /// A window over two horizontal vessels, rows 10 and 50 from x 10 to 49.
    fn rows_10_and_50() -> FlowWindow {
        FlowWindow::new(
            map_of(vec![
                (10..50).map(|x| (x, 10)).collect(),
                (10..50).map(|x| (x, 50)).collect(),
            ]),
            0,
        )
    }

    /// The classes of a window's pieces, in map order.
    fn classes_of(window: &FlowWindow) -> Vec<FlowClass> {
        let result = window.analyse(25.0, &FlowConfig::default());
        result.segments.iter().map(|s| s.class).collect()
    }

    #[test]
    fn a_still_vessel_crossed_by_a_flowing_one_stays_still() {
        // Row 30 holds a still, evenly filled vessel; columns 19-21 carry moving cells straight across it. The mean
        // change of row 30's first piece (x 10-29) would be dominated by its few crossing points.
        let mut rng = Noise(7);
        let mut window = FlowWindow::new(
            map_of(vec![
                (10..50).map(|x| (x, 30)).collect(),
                (4..44).map(|y| (20, y)).collect(),
            ]),
            0,
        );
        for t in 0..40 {
            let mut plane = vec![150.0f32; 64 * 64];
            for x in 0..64 {
                plane[30 * 64 + x] -= 30.0;
            }
            for y in 0..64 {
                for x in 19..=21 {
                    plane[y * 64 + x] = 150.0 - cells(y + 3 * t);
                }
            }
            push_noisy(&mut window, plane, &mut rng, 6.0);
        }
        assert_eq!(
            classes_of(&window),
            [
                FlowClass::None,
                FlowClass::None,
                FlowClass::Continuous,
                FlowClass::Continuous
            ]
        );
    }

    #[test]
    fn slow_cells_are_sluggish() {
        // Row 10: cells moving 1 px per frame (2 µm/px at 25 fps: 50 µm/s, below the 100 µm/s default); row 50:
        // 4 px per frame (200 µm/s).
        let mut rng = Noise(3);
        let mut window = rows_10_and_50();
        for t in 0..50 {
            let mut plane = vec![150.0f32; 64 * 64];
            for x in 0..64 {
                plane[10 * 64 + x] -= cells(x + 200 - t);
                plane[50 * 64 + x] -= cells(x + 200 - 4 * t);
            }
            push_noisy(&mut window, plane, &mut rng, 6.0);
        }
        assert_eq!(
            classes_of(&window),
            [
                FlowClass::Sluggish,
                FlowClass::Sluggish,
                FlowClass::Continuous,
                FlowClass::Continuous
            ]
        );
        let result = window.analyse(25.0, &FlowConfig::default());
        let speeds: Vec<f64> = result
            .segments
            .iter()
            .map(|s| s.velocity_um_s.unwrap())
            .collect();
        assert!((speeds[0] - 50.0).abs() < 5.0, "{speeds:?}");
        assert!((speeds[2] - 200.0).abs() < 20.0, "{speeds:?}");
    }

    #[test]
    fn a_grainy_still_vessel_flickering_under_compression_is_not_flow() {
        // A codec froze the background (no noise at all), but the still vessel at row 50 flickers: its grainy cell
        // pattern is redrawn a fraction of a pixel off every frame. Row 10 carries the same pattern, moving.
        let pattern = |x: f64| 30.0 * (x * std::f64::consts::TAU / 8.0).sin();
        let mut rng = Noise(11);
        let mut window = rows_10_and_50();
        for t in 0..40 {
            let jitter = 0.4 * rng.next() as f64;
            let mut plane = vec![150.0f32; 64 * 64];
            for x in 0..64 {
                plane[10 * 64 + x] = (100.0 + pattern(x as f64 + 3.0 * t as f64)) as f32;
                plane[50 * 64 + x] = (100.0 + pattern(x as f64 + jitter)) as f32;
            }
            window.push(&plane, 64, 64, [0.0, 0.0]);
        }
        let classes = |config: &FlowConfig| -> Vec<FlowClass> {
            let result = window.analyse(25.0, config);
            result.segments.iter().map(|s| s.class).collect()
        };
        assert_eq!(
            classes(&FlowConfig::default()),
            [
                FlowClass::Continuous,
                FlowClass::Continuous,
                FlowClass::None,
                FlowClass::None
            ]
        );
        // Against the frozen background alone the flicker reads as flow: the still-texture check is what tells.
        let noise_only = FlowConfig {
            texture_ratio: 0.0,
            ..FlowConfig::default()
        };
        assert_eq!(classes(&noise_only)[2..], [FlowClass::Continuous; 2]);
    }

    /// Bilinear sample of `plane` at (`x`, `y`); `NaN` outside.
    fn sample(plane: &[f32], width: usize, height: usize, x: f64, y: f64) -> f32 {
        if !(x >= 0.0 && y >= 0.0 && x <= (width - 1) as f64 && y <= (height - 1) as f64) {
            return f32::NAN;
        }
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
        let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
        let at = |xx: usize, yy: usize| plane[yy * width + xx];
        let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
        let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
        top + (bottom - top) * fy
    }

    #[test]
    fn a_sample_is_the_mean_of_its_3x3_patch() {
        let plane: Vec<f32> = (0..25).map(|i| i as f32).collect();
        // Around (2, 2) of a 5×5 ramp: the mean of rows 1-3, columns 1-3 is the centre value.
        assert_eq!(sample_mean(&plane, 5, 5, 2.0, 2.0), 12.0);
        // Half a pixel right: every bilinear sample moves by 0.5.
        assert_eq!(sample_mean(&plane, 5, 5, 2.5, 2.0), 12.5);
        // A patch reaching outside the plane has no value.
        assert!(sample_mean(&plane, 5, 5, 0.0, 2.0).is_nan());
        // Up to the last whole pixel, but not past it with a fraction.
        assert!(!sample_mean(&plane, 5, 5, 3.0, 3.0).is_nan());
        assert!(sample_mean(&plane, 5, 5, 3.0, 3.25).is_nan());
    }

    #[test]
    fn a_patch_mean_is_the_mean_of_nine_bilinear_samples() {
        let mut rng = Noise(5);
        let (w, h) = (13, 11);
        let plane: Vec<f32> = (0..w * h).map(|_| 100.0 * rng.next()).collect();
        for _ in 0..500 {
            let x = (rng.next() as f64 + 0.5) * (w + 2) as f64 - 1.0;
            let y = (rng.next() as f64 + 0.5) * (h + 2) as f64 - 1.0;
            let nine: f32 = (-1..=1)
                .flat_map(|oy| (-1..=1).map(move |ox| (ox, oy)))
                .map(|(ox, oy)| sample(&plane, w, h, x + ox as f64, y + oy as f64))
                .sum::<f32>()
                / 9.0;
            let fast = sample_mean(&plane, w, h, x, y);
            assert!(
                (nine.is_nan() && fast.is_nan()) || (nine - fast).abs() < 1e-3,
                "({x}, {y}): {nine} vs {fast}"
            );
        }
    }

    #[test]
    fn empty_maps_and_bad_configs() {
        let empty = Arc::new(FlowMap {
            vessels: VesselMap {
                width: 8,
                height: 8,
                um_per_px: 1.0,
                segments: Vec::new(),
            },
            background: Vec::new(),
            shift: [0.0, 0.0],
        });
        let mut window = FlowWindow::new(empty, 0);
        window.push(&[0.0; 64], 8, 8, [0.0, 0.0]);
        window.push(&[0.0; 64], 8, 8, [0.0, 0.0]);
        assert_eq!(
            window.analyse(25.0, &FlowConfig::default()),
            FlowResult::default()
        );
        let bad = FlowConfig {
            window_frames: 2,
            hop_frames: 0,
            flow_ratio: 0.5,
            ..Default::default()
        };
        let problems = bad.problems();
        for key in ["flow.window_frames", "flow.hop_frames", "flow.flow_ratio"] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key}: {problems:?}"
            );
        }
        assert!(FlowConfig::default().problems().is_empty());
    }

    #[test]
    fn background_points_keep_away_from_vessels() {
        let mut mask = vec![false; 32 * 32];
        for x in 0..32 {
            mask[16 * 32 + x] = true;
        }
        let points = background_points(&mask, 32, 32, 4, 3);
        assert!(!points.is_empty());
        assert!(points.iter().all(|&(_, y)| (y as i32 - 16).abs() > 3));
    }
}
