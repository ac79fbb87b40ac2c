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
/// Runs joined by union-find: no recursion or stack that grows with a vessel's size.
pub fn components(mask: &[bool], prob: &[f32], width: usize, height: usize) -> Vec<Component> {
    label_runs(mask, prob, width, height, |_, _, _| {})
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
    let comps = label_runs(mask, prob, width, height, |row, xs, comp| {
        labels[row + xs.start..row + xs.end].fill(comp as u32 + 1);
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
    let mut runs = Vec::new();
    let (out, renumber) = linked_cores(prob, width, height, threshold, link, |row, xs, k| {
        runs.push((row, xs, k));
    });
    let mut labels = vec![0u32; prob.len()];
    for (row, xs, k) in runs {
        let id = renumber[k];
        if id == 0 {
            continue;
        }
        for (label, &p) in labels[row + xs.start..row + xs.end]
            .iter_mut()
            .zip(&prob[row + xs.start..row + xs.end])
        {
            if p > threshold {
                *label = id;
            }
        }
    }
    (labels, out)
}

/// The components of [`label_linked`] without the per-pixel labels: what counting needs, at a fraction of the
/// cost (no frame-sized label plane to fill and renumber).
pub fn linked_components(
    prob: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
    link: f32,
) -> Vec<Component> {
    linked_cores(prob, width, height, threshold, link, |_, _, _| {}).0
}

/// The mask of the 8-connected components of `mask` that `keep` accepts (measured as [`label_components`] measures
/// them, with `prob`), built from the components' runs rather than a label per pixel.
pub fn kept_components(
    mask: &[bool],
    prob: &[f32],
    width: usize,
    height: usize,
    keep: impl Fn(&Component) -> bool,
) -> Vec<bool> {
    let mut runs = Vec::new();
    let comps = label_runs(mask, prob, width, height, |row, xs, k| {
        runs.push((row, xs, k))
    });
    let mut out = vec![false; mask.len()];
    for (row, xs, k) in runs {
        if keep(&comps[k]) {
            out[row + xs.start..row + xs.end].fill(true);
        }
    }
    out
}

/// The linked components of [`label_linked`] (core pixels measured in raster order, pieces without a core pixel
/// dropped) and, per component of `prob > link`, its number among them (`k + 1`, 0 when dropped). `visit` sees
/// every run of `prob > link` with its component there, as [`label_runs`] gives them.
fn linked_cores(
    prob: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
    link: f32,
    mut visit: impl FnMut(usize, std::ops::Range<usize>, usize),
) -> (Vec<Component>, Vec<u32>) {
    let low: Vec<bool> = prob.iter().map(|&p| p > link.min(threshold)).collect();
    let mut core: Vec<Component> = Vec::new();
    label_runs(&low, prob, width, height, |row, xs, k| {
        if k == core.len() {
            core.push(Component::EMPTY);
        }
        let y = row / width;
        for x in xs.clone() {
            let p = prob[row + x];
            if p > threshold {
                core[k].add(x, y, p);
            }
        }
        visit(row, xs, k);
    });
    // Renumber: linked pieces without a core pixel are not components.
    let mut renumber = vec![0u32; core.len()];
    let mut out = Vec::new();
    for (k, c) in core.into_iter().enumerate() {
        if c.area_px > 0 {
            out.push(c);
            renumber[k] = out.len() as u32;
        }
    }
    (out, renumber)
}

/// A horizontal run of foreground pixels: row `y`, columns `x0..x1`.
#[derive(Clone, Copy)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
}

/// Root of run `i` in the union-find forest, halving the path on the way.
fn root(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let up = parent[parent[i as usize] as usize];
        parent[i as usize] = up;
        i = up;
    }
    i
}

/// The labelling behind [`components`] and [`label_components`]: runs of each row are joined by union-find with the
/// runs of the row above that touch them (8-connected: overlapping, or diagonal at an end). Components are numbered
/// in the raster order of their first pixel and measured in raster order, so the result does not depend on how the
/// runs were joined. `visit(row start index, x0..x1, component)` sees every run once. Work is per run, not per
/// pixel, which matters where vessel meshes cover a fifth of the frame (sublingual).
fn label_runs(
    mask: &[bool],
    prob: &[f32],
    width: usize,
    height: usize,
    mut visit: impl FnMut(usize, std::ops::Range<usize>, usize),
) -> Vec<Component> {
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<u32> = Vec::new();
    let mut above = 0..0;
    for y in 0..height {
        let row = &mask[y * width..(y + 1) * width];
        let here = runs.len();
        // Runs of the row above that end before the current run starts cannot touch it or any later run.
        let mut first_above = above.start;
        let mut x = 0;
        while x < width {
            if !row[x] {
                x += 1;
                continue;
            }
            let x0 = x;
            while x < width && row[x] {
                x += 1;
            }
            let id = runs.len() as u32;
            runs.push(Run {
                y: y as u32,
                x0: x0 as u32,
                x1: x as u32,
            });
            parent.push(id);
            while first_above < above.end && (runs[first_above].x1 as usize) < x0 {
                first_above += 1;
            }
            let mut j = first_above;
            while j < above.end && runs[j].x0 as usize <= x {
                let (a, b) = (root(&mut parent, id), root(&mut parent, j as u32));
                if a != b {
                    // The older run's root wins, so roots stay early in raster order.
                    let (keep, join) = (a.min(b), a.max(b));
                    parent[join as usize] = keep;
                }
                j += 1;
            }
        }
        above = here..runs.len();
    }
    let mut component_of = vec![u32::MAX; runs.len()];
    let mut out: Vec<Component> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let r = root(&mut parent, i as u32) as usize;
        if component_of[r] == u32::MAX {
            component_of[r] = out.len() as u32;
            out.push(Component::EMPTY);
        }
        let k = component_of[r] as usize;
        let (y, x0, x1) = (run.y as usize, run.x0 as usize, run.x1 as usize);
        let c = &mut out[k];
        c.area_px += x1 - x0;
        for &p in &prob[y * width + x0..y * width + x1] {
            c.prob_sum += p as f64;
        }
        c.bbox = [
            c.bbox[0].min(x0),
            c.bbox[1].min(y),
            c.bbox[2].max(x1 - 1),
            c.bbox[3].max(y),
        ];
        visit(y * width, x0..x1, k);
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

    /// xorshift64: random test cases without a dependency.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// The per-pixel depth-first flood fill the run labelling replaced, as the reference: components in the
    /// raster order of their first pixel, labels, areas and boxes.
    fn reference(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<(usize, [usize; 4])>) {
        let mut labels = vec![0u32; mask.len()];
        let mut out = Vec::new();
        for start in 0..mask.len() {
            if !mask[start] || labels[start] > 0 {
                continue;
            }
            let id = out.len() as u32 + 1;
            labels[start] = id;
            let mut stack = vec![start];
            let mut c = Component::EMPTY;
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                c.add(x, y, 0.0);
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        let j = ny * w + nx;
                        if mask[j] && labels[j] == 0 {
                            labels[j] = id;
                            stack.push(j);
                        }
                    }
                }
            }
            out.push((c.area_px, c.bbox));
        }
        (labels, out)
    }

    #[test]
    fn run_labelling_matches_a_pixel_flood_fill_on_random_masks() {
        // Random masks from sparse specks to dense meshes, including U shapes whose arms join rows later (the
        // case union-find exists for) and sizes of one row or one column.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for case in 0..300 {
            let (w, h) = (1 + (next() % 40) as usize, 1 + (next() % 30) as usize);
            let density = [0.1, 0.3, 0.5, 0.7][case % 4];
            let mask: Vec<bool> = (0..w * h)
                .map(|_| (next() % 1000) as f64 / 1000.0 < density)
                .collect();
            let prob: Vec<f32> = (0..w * h).map(|i| (i % 7) as f32 / 7.0).collect();
            let (labels, comps) = label_components(&mask, &prob, w, h);
            let (want_labels, want) = reference(&mask, w, h);
            assert_eq!(labels, want_labels, "case {case}: {w}x{h}");
            let got: Vec<_> = comps.iter().map(|c| (c.area_px, c.bbox)).collect();
            assert_eq!(got, want, "case {case}: {w}x{h}");
            for (k, c) in comps.iter().enumerate() {
                // Summed in raster order.
                let sum = (0..w * h)
                    .filter(|&i| labels[i] == k as u32 + 1)
                    .fold(0.0, |s, i| s + prob[i] as f64);
                assert_eq!(c.prob_sum, sum, "case {case}");
            }
        }
    }

    /// [`label_linked`] as it was first written, per pixel over the labels of the faint mask: the reference for the
    /// run-based version and for [`linked_components`].
    fn linked_reference(
        prob: &[f32],
        w: usize,
        h: usize,
        threshold: f32,
        link: f32,
    ) -> (Vec<u32>, Vec<Component>) {
        let low: Vec<bool> = prob.iter().map(|&p| p > link.min(threshold)).collect();
        let (mut labels, linked) = label_components(&low, prob, w, h);
        let mut core = vec![Component::EMPTY; linked.len()];
        for (i, label) in labels.iter_mut().enumerate() {
            if *label == 0 {
                continue;
            }
            if prob[i] <= threshold {
                *label = 0;
                continue;
            }
            core[*label as usize - 1].add(i % w, i / w, prob[i]);
        }
        // Pieces without a core pixel are dropped and the rest numbered in order.
        let kept: Vec<usize> = (0..core.len()).filter(|&k| core[k].area_px > 0).collect();
        for label in labels.iter_mut().filter(|l| **l > 0) {
            let k = *label as usize - 1;
            *label = kept
                .iter()
                .position(|&j| j == k)
                .map_or(0, |i| i as u32 + 1);
        }
        (labels, kept.iter().map(|&k| core[k]).collect())
    }

    #[test]
    fn linked_and_kept_components_match_per_pixel_labelling_on_random_maps() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let (w, h) = (1 + (next() % 40) as usize, 1 + (next() % 30) as usize);
            // Probabilities with plenty of pixels on both sides of both thresholds.
            let prob: Vec<f32> = (0..w * h)
                .map(|_| (next() % 1000) as f32 / 1000.0)
                .collect();
            let (threshold, link) = [(0.5, 0.07), (0.7, 0.3), (0.5, 0.5), (0.3, 0.6)][case % 4];
            let want = linked_reference(&prob, w, h, threshold, link);
            assert_eq!(
                label_linked(&prob, w, h, threshold, link),
                want,
                "case {case}: {w}x{h}"
            );
            assert_eq!(
                linked_components(&prob, w, h, threshold, link),
                want.1,
                "case {case}"
            );

            let mask: Vec<bool> = prob.iter().map(|&p| p > threshold).collect();
            let min = 1 + case % 5;
            let (labels, comps) = label_components(&mask, &prob, w, h);
            let kept: Vec<bool> = labels
                .iter()
                .map(|&l| l > 0 && comps[l as usize - 1].area_px >= min)
                .collect();
            assert_eq!(
                kept_components(&mask, &prob, w, h, |c| c.area_px >= min),
                kept,
                "case {case}"
            );
        }
    }

    #[test]
    fn empty_mask_has_no_components() {
        assert!(components(&[false; 9], &[0.0; 9], 3, 3).is_empty());
    }
}
