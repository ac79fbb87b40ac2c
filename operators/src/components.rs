//! 8-connected components of a binary mask: the capillary candidates a frame's count is built from.

/// One connected component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Component {
    /// Pixels in the component.
    pub area_px: usize,
    /// Sum of the model probability over its pixels.
    pub prob_sum: f64,
    /// Bounding box: min x, min y, max x, max y (inclusive).
    pub bbox: [usize; 4],
}

impl Component {
    const EMPTY: Component = Component {
        area_px: 0,
        prob_sum: 0.0,
        bbox: [usize::MAX, usize::MAX, 0, 0],
    };

    /// Adds the pixel at `(x, y)` with probability `p`.
    fn add(&mut self, x: usize, y: usize, p: f32) {
        self.area_px += 1;
        self.prob_sum += p as f64;
        self.bbox = [
            self.bbox[0].min(x),
            self.bbox[1].min(y),
            self.bbox[2].max(x),
            self.bbox[3].max(y),
        ];
    }
}

/// Labels the 8-connected components of `mask` (`true` = foreground) of size `width × height`.
///
/// Iterative flood fill with an explicit stack: no recursion depth limits on large vessels.
pub fn components(mask: &[bool], prob: &[f32], width: usize, height: usize) -> Vec<Component> {
    flood(mask, prob, width, height, |_, _| {})
}

/// Like [`components`], and also returns a label per pixel: 0 for background, `k + 1` for the pixels of the
/// `k`-th returned component (so a subset of components can be turned back into a mask).
pub fn label_components(
    mask: &[bool],
    prob: &[f32],
    width: usize,
    height: usize,
) -> (Vec<u32>, Vec<Component>) {
    let mut labels = vec![0u32; mask.len()];
    let comps = flood(mask, prob, width, height, |pixel, comp| {
        labels[pixel] = comp as u32 + 1;
    });
    (labels, comps)
}

/// Components linked by hysteresis, as Canny links edges: the 8-connected components of `prob > link` that hold at
/// least one pixel above `threshold`, each measured over those core pixels only (area, probability, box). Labels
/// mark core pixels (`k + 1` for the `k`-th component, 0 elsewhere), so area fractions and masks are the ones a
/// plain threshold gives; only which pieces belong together changes. A model's map breaks thin vessels where they
/// fade or cross, and counting each piece would count one vessel several times.
pub fn label_linked(
    prob: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
    link: f32,
) -> (Vec<u32>, Vec<Component>) {
    let low: Vec<bool> = prob.iter().map(|&p| p > link.min(threshold)).collect();
    let (mut labels, linked) = label_components(&low, prob, width, height);
    let mut core = vec![Component::EMPTY; linked.len()];
    for (i, label) in labels.iter_mut().enumerate() {
        if *label == 0 {
            continue;
        }
        if prob[i] <= threshold {
            *label = 0;
            continue;
        }
        core[*label as usize - 1].add(i % width, i / width, prob[i]);
    }
    // Renumber: linked pieces without a core pixel are not components.
    let mut renumber = vec![0u32; core.len()];
    let mut out = Vec::new();
    for (k, c) in core.into_iter().enumerate() {
        if c.area_px > 0 {
            out.push(c);
            renumber[k] = out.len() as u32;
        }
    }
    for label in labels.iter_mut().filter(|l| **l > 0) {
        *label = renumber[*label as usize - 1];
    }
    (labels, out)
}

/// The flood fill behind [`components`] and [`label_components`]; `visit(pixel, component index)` sees every
/// foreground pixel once.
fn flood(
    mask: &[bool],
    prob: &[f32],
    width: usize,
    height: usize,
    mut visit: impl FnMut(usize, usize),
) -> Vec<Component> {
    let mut seen = vec![false; mask.len()];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut comp = Component::EMPTY;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            visit(i, out.len());
            comp.add(x, y, prob[i]);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(comp);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_joins_pieces_through_faint_pixels_and_measures_only_the_core() {
        // Two strong pieces joined by a faint stretch, a separate strong dot, and a faint blob with no core.
        let w = 9;
        #[rustfmt::skip]
        let prob = [
            0.9, 0.9, 0.2, 0.2, 0.9, 0.9, 0.0, 0.0, 0.9,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.0,
        ];
        let (labels, comps) = label_linked(&prob, w, 3, 0.5, 0.1);
        assert_eq!(comps.len(), 2);
        assert_eq!((comps[0].area_px, comps[0].bbox), (4, [0, 0, 5, 0]));
        assert_eq!((comps[1].area_px, comps[1].bbox), (1, [8, 0, 8, 0]));
        assert_eq!(&labels[..9], &[1, 1, 0, 0, 1, 1, 0, 0, 2]);
        assert!(labels[9..].iter().all(|&l| l == 0));
        // Without linking (link = threshold), the same map has three pieces.
        assert_eq!(label_linked(&prob, w, 3, 0.5, 0.5).1.len(), 3);
    }

    fn parse(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let w = rows[0].len();
        (
            rows.iter()
                .flat_map(|r| r.chars().map(|c| c == '#'))
                .collect(),
            w,
            rows.len(),
        )
    }

    #[test]
    fn diagonal_pixels_connect_and_separate_blobs_do_not() {
        let (mask, w, h) = parse(&["#...#", ".#..#", "..#..", ".....", "##..."]);
        let prob = vec![0.5; w * h];
        let mut comps = components(&mask, &prob, w, h);
        comps.sort_by_key(|c| c.area_px);
        let areas: Vec<_> = comps.iter().map(|c| c.area_px).collect();
        assert_eq!(areas, [2, 2, 3]);
        let diag = comps.iter().find(|c| c.area_px == 3).unwrap();
        assert_eq!(diag.bbox, [0, 0, 2, 2]);
        assert!((diag.prob_sum - 1.5).abs() < 1e-9);
    }

    #[test]
    fn labels_match_the_components() {
        let (mask, w, h) = parse(&["#...#", ".#..#", "..#..", ".....", "##..."]);
        let prob = vec![0.5; w * h];
        let (labels, comps) = label_components(&mask, &prob, w, h);
        assert_eq!(comps, components(&mask, &prob, w, h));
        for (k, c) in comps.iter().enumerate() {
            let n = labels.iter().filter(|&&l| l == k as u32 + 1).count();
            assert_eq!(n, c.area_px);
        }
        assert!(labels.iter().zip(&mask).all(|(&l, &m)| (l > 0) == m));
    }

    #[test]
    fn empty_mask_has_no_components() {
        assert!(components(&[false; 9], &[0.0; 9], 3, 3).is_empty());
    }
}
