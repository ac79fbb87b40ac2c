//! Ground truth: per-frame measurements derived from the mask and geometry, and per-vessel facts.

use serde::{Deserialize, Serialize};

/// Exact ground truth of one rendered frame.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FrameTruth {
    /// Frame number, from 0.
    pub frame_index: u32,
    /// Presentation timestamp: `frame_index * 1e9 / fps` nanoseconds.
    pub pts_ns: u64,
    /// Number of 8-connected components of the frame's mask (components under
    /// [`MIN_COMPONENT_PIXELS`] are removed from the mask itself, so this equals the plain count).
    pub capillary_count: u32,
    /// Mask pixels ÷ all pixels of the frame.
    pub area_fraction: f64,
    /// Total length of vessel centre lines inside the frame, in µm.
    pub centerline_length_um: f64,
}

/// Facts about one vessel of the clip (constant over the clip).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VesselTruth {
    /// Vessel number, from 0 (stable for a given spec).
    pub vessel_id: u32,
    /// Shape family: `"dot"`, `"comma"`, `"loop"`, `"capillary"` or `"venule"`.
    pub kind: String,
    /// Whether red cells flow in it.
    pub perfused: bool,
    /// Full centre-line length in µm (also the parts outside the field).
    pub length_um: f64,
    /// Lumen diameter in µm.
    pub diameter_um: f64,
    /// Red-cell speed along the centre line in µm/s (0 when not perfused).
    pub velocity_um_s: f64,
}

/// Mask components smaller than this (pixels) are erased from the mask.
pub const MIN_COMPONENT_PIXELS: usize = 4;

/// Reusable scratch space for component labelling.
#[derive(Default, Debug, Clone)]
pub struct Labeller {
    seen: Vec<bool>,
    stack: Vec<usize>,
    members: Vec<usize>,
}

impl Labeller {
    /// Erases 8-connected components smaller than `min_pixels` from `mask` (values 0 or 255)
    /// and returns `(components kept, mask pixels kept)`.
    pub fn clean_and_count(
        &mut self,
        mask: &mut [u8],
        width: usize,
        height: usize,
        min_pixels: usize,
    ) -> (u32, u64) {
        debug_assert_eq!(mask.len(), width * height);
        self.seen.clear();
        self.seen.resize(mask.len(), false);
        let mut count = 0u32;
        let mut pixels = 0u64;
        for start in 0..mask.len() {
            if mask[start] == 0 || self.seen[start] {
                continue;
            }
            self.members.clear();
            self.stack.clear();
            self.stack.push(start);
            self.seen[start] = true;
            while let Some(i) = self.stack.pop() {
                self.members.push(i);
                let (x, y) = (i % width, i / width);
                let x_lo = x.saturating_sub(1);
                let x_hi = (x + 1).min(width - 1);
                let y_lo = y.saturating_sub(1);
                let y_hi = (y + 1).min(height - 1);
                for ny in y_lo..=y_hi {
                    for nx in x_lo..=x_hi {
                        let j = ny * width + nx;
                        if mask[j] != 0 && !self.seen[j] {
                            self.seen[j] = true;
                            self.stack.push(j);
                        }
                    }
                }
            }
            if self.members.len() < min_pixels {
                for &i in &self.members {
                    mask[i] = 0;
                }
            } else {
                count += 1;
                pixels += self.members.len() as u64;
            }
        }
        (count, pixels)
    }
}

/// Number of 8-connected components of non-zero pixels with at least `min_pixels` pixels.
pub fn count_components(mask: &[u8], width: u32, height: u32, min_pixels: u32) -> u32 {
    let mut copy = mask.to_vec();
    Labeller::default()
        .clean_and_count(
            &mut copy,
            width as usize,
            height as usize,
            min_pixels as usize,
        )
        .0
}

/// Length of the part of a polyline inside the axis-aligned box `[x0, x1] x [y0, y1]`.
pub fn clipped_length(points: &[[f64; 2]], x0: f64, y0: f64, x1: f64, y1: f64) -> f64 {
    let mut total = 0.0;
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        // Liang-Barsky clipping of the segment parameter range.
        let (mut t0, mut t1) = (0.0f64, 1.0f64);
        let mut inside = true;
        for (p, q) in [
            (-dx, a[0] - x0),
            (dx, x1 - a[0]),
            (-dy, a[1] - y0),
            (dy, y1 - a[1]),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    inside = false;
                    break;
                }
            } else {
                let r = q / p;
                if p < 0.0 {
                    t0 = t0.max(r);
                } else {
                    t1 = t1.min(r);
                }
            }
        }
        if inside && t1 > t0 {
            total += (t1 - t0) * (dx * dx + dy * dy).sqrt();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_eight_connected_and_small_ones_erased() {
        #[rustfmt::skip]
        let mut mask = vec![
            255, 0,   0,   0,   255, 255,
            0,   255, 0,   0,   255, 255,
            0,   0,   255, 0,   0,   0,
            0,   0,   0,   0,   0,   255,
        ];
        assert_eq!(count_components(&mask, 6, 4, 1), 3);
        let (count, pixels) = Labeller::default().clean_and_count(&mut mask, 6, 4, 4);
        assert_eq!((count, pixels), (1, 4));
        assert_eq!(mask[23], 0);
        assert_eq!(mask[0], 0);
    }

    #[test]
    fn clipping_lengths() {
        let line = [[-5.0, 1.0], [5.0, 1.0]];
        assert!((clipped_length(&line, 0.0, 0.0, 10.0, 10.0) - 5.0).abs() < 1e-9);
        assert_eq!(clipped_length(&line, 0.0, 2.0, 10.0, 10.0), 0.0);
        let diag = [[0.0, 0.0], [3.0, 4.0]];
        assert!((clipped_length(&diag, -1.0, -1.0, 10.0, 10.0) - 5.0).abs() < 1e-9);
    }
}
