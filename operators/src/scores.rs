//! Segmentation scores of a predicted mask against a truth mask: Dice, IoU and centre-line Dice (clDice).
//!
//! Masks are `width × height` row-major `bool` slices (`true` = capillary). Empty cases are defined so that
//! averaging over images stays meaningful: two empty masks agree perfectly (1), an empty mask against a non-empty
//! one scores 0.
//!
//! ```
//! use capflow_operators::scores::{dice, iou};
//!
//! // Prediction covers 2 pixels, truth 1 of them: Dice = 2·1 / (2 + 1) = 2/3, IoU = 1/2.
//! let pred = [true, true, false];
//! let truth = [true, false, false];
//! assert!((dice(&pred, &truth) - 2.0 / 3.0).abs() < 1e-12);
//! assert_eq!(iou(&pred, &truth), 0.5);
//! ```

fn count(mask: &[bool]) -> usize {
    mask.iter().filter(|&&m| m).count()
}

fn overlap(a: &[bool], b: &[bool]) -> usize {
    debug_assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(&x, &y)| x && y).count()
}

/// Dice coefficient `2|P ∩ T| / (|P| + |T|)`; 1 when both masks are empty.
pub fn dice(pred: &[bool], truth: &[bool]) -> f64 {
    let total = count(pred) + count(truth);
    if total == 0 {
        return 1.0;
    }
    2.0 * overlap(pred, truth) as f64 / total as f64
}

/// Intersection over union `|P ∩ T| / |P ∪ T|`; 1 when both masks are empty.
pub fn iou(pred: &[bool], truth: &[bool]) -> f64 {
    let inter = overlap(pred, truth);
    let union = count(pred) + count(truth) - inter;
    if union == 0 {
        return 1.0;
    }
    inter as f64 / union as f64
}

/// The one-pixel-wide, 8-connected skeleton of `mask` (pixels outside the image count as background): the same
/// Guo–Hall thinning the vessel measures use ([`crate::vessels::centre_line`]). Every connected component keeps at
/// least one pixel, so the skeleton is empty only when the mask is. (Zhang–Suen, used before, deletes diagonal bands
/// two pixels thick outright, so clDice under-scored 45° vessels.)
pub fn skeletonize(mask: &[bool], width: usize, height: usize) -> Vec<bool> {
    crate::vessels::centre_line(mask, width, height)
}

/// Centre-line Dice (Shit et al., 2021) from precomputed skeletons: topology precision
/// `Tprec = |S(P) ∩ T| / |S(P)|`, topology sensitivity `Tsens = |S(T) ∩ P| / |S(T)|`, and
/// `clDice = 2·Tprec·Tsens / (Tprec + Tsens)`.
///
/// Both masks empty → 1; exactly one empty → 0; `Tprec + Tsens = 0` → 0.
pub fn cldice_with_skeletons(
    pred: &[bool],
    truth: &[bool],
    pred_skeleton: &[bool],
    truth_skeleton: &[bool],
) -> f64 {
    let (sp, st) = (count(pred_skeleton), count(truth_skeleton));
    match (sp, st) {
        (0, 0) => return 1.0,
        (0, _) | (_, 0) => return 0.0,
        _ => {}
    }
    let tprec = overlap(pred_skeleton, truth) as f64 / sp as f64;
    let tsens = overlap(truth_skeleton, pred) as f64 / st as f64;
    if tprec + tsens == 0.0 {
        return 0.0;
    }
    2.0 * tprec * tsens / (tprec + tsens)
}

/// Centre-line Dice of two `width × height` masks, skeletonizing both with [`skeletonize`]; see
/// [`cldice_with_skeletons`].
pub fn cldice(pred: &[bool], truth: &[bool], width: usize, height: usize) -> f64 {
    let sp = skeletonize(pred, width, height);
    let st = skeletonize(truth, width, height);
    cldice_with_skeletons(pred, truth, &sp, &st)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn show(mask: &[bool], w: usize) -> Vec<String> {
        mask.chunks(w)
            .map(|r| r.iter().map(|&m| if m { '#' } else { '.' }).collect())
            .collect()
    }

    #[test]
    fn dice_and_iou_of_known_overlaps() {
        // 4 predicted pixels, 2 true pixels, 2 shared: Dice = 4/6, IoU = 2/4.
        let (p, _, _) = parse(&["####"]);
        let (t, _, _) = parse(&[".##."]);
        assert!((dice(&p, &t) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou(&p, &t), 0.5);
        assert_eq!(dice(&p, &p), 1.0);
        assert_eq!(iou(&t, &t), 1.0);
        let (none, _, _) = parse(&["...."]);
        assert_eq!(dice(&none, &none), 1.0);
        assert_eq!(iou(&none, &none), 1.0);
        assert_eq!(dice(&p, &none), 0.0);
        assert_eq!(iou(&none, &t), 0.0);
        let (disjoint, _, _) = parse(&["#..#"]);
        assert_eq!(dice(&disjoint, &t), 0.0);
    }

    #[test]
    fn thick_bar_thins_to_a_one_pixel_line() {
        let (mask, w, h) = parse(&[
            "..........",
            ".########.",
            ".########.",
            ".########.",
            "..........",
        ]);
        let skel = skeletonize(&mask, w, h);
        let rows = show(&skel, w);
        // A line along the bar's middle row, inside the bar, most of its length (thinning shortens the ends).
        assert!(skel.iter().zip(&mask).all(|(&s, &m)| !s || m), "{rows:#?}");
        let on: Vec<(usize, usize)> = (0..w * h)
            .filter(|&i| skel[i])
            .map(|i| (i % w, i / w))
            .collect();
        assert!(on.iter().all(|&(_, y)| y == 2), "{rows:#?}");
        assert!(on.len() >= 5, "{rows:#?}");
    }

    #[test]
    fn one_pixel_lines_are_their_own_skeleton_and_blobs_keep_a_pixel() {
        let (line, w, h) = parse(&[".....", "#####", "....."]);
        assert_eq!(show(&skeletonize(&line, w, h), w), show(&line, w));
        let (blobs, w, h) = parse(&["##...", "##...", ".....", "...#.", "....."]);
        let skel = skeletonize(&blobs, w, h);
        assert_eq!(
            skel.iter().filter(|&&s| s).count(),
            2,
            "{:?}",
            show(&skel, w)
        );
        assert!(skel[3 * w + 3]);
        assert!(skeletonize(&[false; 9], 3, 3).iter().all(|&s| !s));
    }

    #[test]
    fn cldice_known_values_and_empty_cases() {
        // Truth: a horizontal line of 5 pixels; prediction covers its left 3 pixels.
        let (t, w, h) = parse(&[".....", "#####", "....."]);
        let (p, _, _) = parse(&[".....", "###..", "....."]);
        // skel(P) = P lies in T → Tprec = 1; skel(T) = T, 3 of 5 in P → Tsens = 0.6; clDice = 1.2 / 1.6 = 0.75.
        assert!((cldice(&p, &t, w, h) - 0.75).abs() < 1e-12);
        assert_eq!(cldice(&t, &t, w, h), 1.0);
        let empty = vec![false; w * h];
        assert_eq!(cldice(&empty, &empty, w, h), 1.0);
        assert_eq!(cldice(&p, &empty, w, h), 0.0);
        assert_eq!(cldice(&empty, &t, w, h), 0.0);
        // Disjoint masks.
        let (far, _, _) = parse(&["#####", ".....", "....."]);
        assert_eq!(cldice(&far, &t, w, h), 0.0);
    }

    #[test]
    fn cldice_forgives_thickness_that_dice_punishes() {
        // A 3-pixel-thick prediction of a 1-pixel truth vessel: Dice is poor, the centre line is right.
        let (t, w, h) = parse(&[
            "..........",
            "..........",
            "##########",
            "..........",
            "..........",
        ]);
        let (p, _, _) = parse(&[
            "..........",
            "##########",
            "##########",
            "##########",
            "..........",
        ]);
        assert!(dice(&p, &t) < 0.6);
        assert!(cldice(&p, &t, w, h) > 0.95, "{}", cldice(&p, &t, w, h));
    }
}
