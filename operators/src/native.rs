//! Model output back at a frame's native resolution: crop the valid region of the probability map, resize it
//! (linear interpolation when enlarging, as in preprocessing) to the frame's size, threshold it and keep the components that count as capillaries — the
//! pipeline's counting rule ([`MetricParams::counts`]) applied at the frame's own pixel size. Used to score a
//! model against truth masks drawn on the original images.

use crate::components::{label_components, label_linked, Component};
use crate::metrics::MetricParams;
use crate::preprocess::{resize, ModelInput};

/// The probability map of a model `input` (`input.height × input.width`, as the model returned it) cropped to
/// its valid region and resized to the native `width × height` of the frame it was made from.
pub fn native_probability(
    prob: &[f32],
    input: &ModelInput,
    width: usize,
    height: usize,
) -> Vec<f32> {
    let (vw, vh) = (input.valid_width, input.valid_height);
    let valid: Vec<f32> = prob
        .chunks_exact(input.width)
        .take(vh)
        .flat_map(|row| row[..vw].iter().copied())
        .collect();
    resize(&valid, vw, vh, width, height)
}

/// Keeps the 8-connected components of `mask` that count as capillaries at pixel size `um_per_px`
/// ([`MetricParams::counts`]); returns the mask of the kept pixels and the kept components (their `prob_sum`
/// sums `prob`).
pub fn keep_capillaries(
    mask: &[bool],
    prob: &[f32],
    width: usize,
    height: usize,
    um_per_px: f64,
    params: &MetricParams,
) -> (Vec<bool>, Vec<Component>) {
    let (labels, comps) = label_components(mask, prob, width, height);
    keep_labelled(labels, comps, um_per_px, params)
}

/// The components that pass the area rule, and the mask of their labelled pixels.
fn keep_labelled(
    labels: Vec<u32>,
    comps: Vec<Component>,
    um_per_px: f64,
    params: &MetricParams,
) -> (Vec<bool>, Vec<Component>) {
    let keep: Vec<bool> = comps
        .iter()
        .map(|c| params.counts(c.area_px, um_per_px))
        .collect();
    let kept_mask = labels
        .iter()
        .map(|&l| l > 0 && keep[l as usize - 1])
        .collect();
    let kept = comps
        .into_iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(c, _)| c)
        .collect();
    (kept_mask, kept)
}

/// The capillary mask and components of a native-resolution probability map: threshold at `params.threshold`
/// (strictly above; pieces linked through `params.link_threshold`, see [`label_linked`]), then the area rule of
/// [`keep_capillaries`].
pub fn capillary_mask(
    prob: &[f32],
    width: usize,
    height: usize,
    um_per_px: f64,
    params: &MetricParams,
) -> (Vec<bool>, Vec<Component>) {
    if params.link_threshold < params.threshold {
        let (labels, comps) =
            label_linked(prob, width, height, params.threshold, params.link_threshold);
        return keep_labelled(labels, comps, um_per_px, params);
    }
    let mask: Vec<bool> = prob.iter().map(|&p| p > params.threshold).collect();
    keep_capillaries(&mask, prob, width, height, um_per_px, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::capillaries;

    const PARAMS: MetricParams = MetricParams {
        threshold: 0.5,
        link_threshold: 0.5,
        min_area_um2: 4.0,
        max_area_um2: 40.0,
    };

    #[test]
    fn resize_round_trips_constants_and_doubles_blocks() {
        let out = resize(&[0.3; 6], 3, 2, 7, 5);
        assert!(out.iter().all(|v| (v - 0.3).abs() < 1e-6), "{out:?}");
        // A 2x1 map [0, 1] doubled to 4x1 interpolates between the pixel centres.
        let out = resize(&[0.0, 1.0], 2, 1, 4, 1);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn native_probability_crops_padding_then_resizes() {
        // 3x2 padded map whose valid region is the top-left 2x1.
        let input = ModelInput {
            data: vec![],
            height: 2,
            width: 3,
            valid_height: 1,
            valid_width: 2,
            um_per_px: 1.0,
        };
        let prob = [0.0, 1.0, 9.0, 9.0, 9.0, 9.0];
        assert_eq!(
            native_probability(&prob, &input, 4, 2),
            vec![0.0, 0.25, 0.75, 1.0, 0.0, 0.25, 0.75, 1.0]
        );
    }

    #[test]
    fn keeps_the_components_the_pipeline_counts() {
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
        for um in [1.0, 2.0] {
            let (mask, kept) = capillary_mask(&prob, w, h, um, &PARAMS);
            assert_eq!(kept, capillaries(&prob, w, h, um, &PARAMS));
            let kept_px: usize = kept.iter().map(|c| c.area_px).sum();
            assert_eq!(mask.iter().filter(|&&m| m).count(), kept_px);
        }
        let (mask, _) = capillary_mask(&prob, w, h, 1.0, &PARAMS);
        assert!(mask[0] && !mask[5] && !mask[9 * w + 9]);
    }
}
