//! Probability map → per-frame capillary measures (count, area fraction, density, mean probability).

use crate::components::{components, linked_components, Component};

/// Post-processing parameters, in physical units so they hold at any resolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricParams {
    /// Probability above which a pixel is capillary.
    pub threshold: f32,
    /// Hysteresis: pixels above this (and up to `threshold`) link pieces into one capillary, so a vessel the map
    /// breaks where it fades or crosses another counts once (see [`crate::components::label_linked`]). Equal to
    /// `threshold`: plain components.
    pub link_threshold: f32,
    /// Smallest component counted as a capillary, µm².
    pub min_area_um2: f64,
    /// Largest component counted as a capillary, µm² (bigger ones are venules, hairs or shadows).
    pub max_area_um2: f64,
}

impl MetricParams {
    /// Whether a component of `area_px` pixels of size `um_per_px` counts as a capillary: its area in µm² lies
    /// within `min_area_um2..=max_area_um2`. The one rule used for counting, in the pipeline and in evaluation.
    pub fn counts(&self, area_px: usize, um_per_px: f64) -> bool {
        let area = area_px as f64 * (um_per_px * um_per_px);
        area >= self.min_area_um2 && area <= self.max_area_um2
    }
}

/// Measures of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameMeasures {
    /// Counted capillaries.
    pub capillary_count: u32,
    /// Pixels of counted capillaries ÷ analysed pixels.
    pub area_fraction: f64,
    /// Counted capillaries per mm².
    pub density_per_mm2: f64,
    /// Mean probability over the pixels of counted capillaries (0 when none).
    pub mean_probability: f64,
    /// Analysed area, mm².
    pub field_area_mm2: f64,
}

/// The components of a probability map that count as capillaries, with the mask they come from.
pub fn capillaries(
    prob: &[f32],
    width: usize,
    height: usize,
    um_per_px: f64,
    params: &MetricParams,
) -> Vec<Component> {
    let all = if params.link_threshold < params.threshold {
        linked_components(prob, width, height, params.threshold, params.link_threshold)
    } else {
        let mask: Vec<bool> = prob.iter().map(|&p| p > params.threshold).collect();
        components(&mask, prob, width, height)
    };
    all.into_iter()
        .filter(|c| params.counts(c.area_px, um_per_px))
        .collect()
}

/// Measures a `width × height` probability map of pixel size `um_per_px`.
pub fn measure(
    prob: &[f32],
    width: usize,
    height: usize,
    um_per_px: f64,
    params: &MetricParams,
) -> FrameMeasures {
    let counted = capillaries(prob, width, height, um_per_px, params);
    let pixels: usize = counted.iter().map(|c| c.area_px).sum();
    let prob_sum: f64 = counted.iter().map(|c| c.prob_sum).sum();
    let total = (width * height).max(1) as f64;
    let field_area_mm2 = total * um_per_px * um_per_px / 1e6;
    FrameMeasures {
        capillary_count: counted.len() as u32,
        area_fraction: pixels as f64 / total,
        density_per_mm2: if field_area_mm2 > 0.0 {
            counted.len() as f64 / field_area_mm2
        } else {
            0.0
        },
        mean_probability: if pixels > 0 {
            prob_sum / pixels as f64
        } else {
            0.0
        },
        field_area_mm2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: MetricParams = MetricParams {
        threshold: 0.5,
        link_threshold: 0.5,
        min_area_um2: 4.0,
        max_area_um2: 40.0,
    };

    #[test]
    fn counts_components_within_the_area_range_in_physical_units() {
        // 10 x 10 map at 1 µm/px: a 2x2 blob (4 µm², counted), a single pixel (1 µm², too small),
        // and a 7x7 block (49 µm², too large).
        let (w, h) = (10, 10);
        let mut prob = vec![0.1f32; w * h];
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            prob[y * w + x] = 0.9;
        }
        prob[5] = 0.9;
        for y in 3..10 {
            for x in 3..10 {
                prob[y * w + x] = 0.7;
            }
        }
        let m = measure(&prob, w, h, 1.0, &PARAMS);
        assert_eq!(m.capillary_count, 1);
        assert!((m.area_fraction - 0.04).abs() < 1e-12);
        assert!((m.mean_probability - 0.9).abs() < 1e-6);
        assert!((m.field_area_mm2 - 1e-4).abs() < 1e-12);
        assert!((m.density_per_mm2 - 1e4).abs() < 1e-6);
        // At 2 µm/px the same blob is 16 µm² and the single pixel 4 µm²: both count.
        assert_eq!(measure(&prob, w, h, 2.0, &PARAMS).capillary_count, 2);
    }

    #[test]
    fn empty_frames_measure_zero() {
        let m = measure(&[0.0; 16], 4, 4, 2.2, &PARAMS);
        assert_eq!(m.capillary_count, 0);
        assert_eq!(m.area_fraction, 0.0);
        assert_eq!(m.mean_probability, 0.0);
    }
}
