//! Domain randomisation: a [`SynthSpec`] drawn from wide plausible ranges for a look, so a
//! segmentation network trained on the frames sees many sizes, scales, contrasts, blurs,
//! noise levels, illuminations and artefacts.

use crate::rng::Rng;
use crate::spec::{Artefacts, Look, SynthSpec};

/// A random spec for `look`, a pure function of `(look, seed)` (the spec's own `seed` is
/// `seed` too). Frames are at most 1920x1080; every drawn spec validates.
///
/// Ranges: skin 640x480..1920x1080 at 1.8-3.0 µm/px, sublingual 640x480, 720x576 or 1280x960
/// at 0.7-2.0 µm/px, nailfold 800x600..1280x1024 at 0.9-2.0 µm/px; vessel density, contrast
/// (0.6-1.5; skin 0.45-1.4), skin vessel size (x0.9-2.4), perfused fraction (0.3-1), blur, noise (1-8 grey levels) and every artefact
/// (each may be absent) vary too.
pub fn randomized(look: Look, seed: u64) -> SynthSpec {
    let mut rng = Rng::derive(seed, &[0x2A4D, look as u64]);
    let pick = |rng: &mut Rng, sizes: &[(u32, u32)]| sizes[rng.below(sizes.len() as u64) as usize];
    let (width, height) = match look {
        Look::Skin => pick(
            &mut rng,
            &[
                (640, 480),
                (800, 600),
                (1024, 768),
                (1280, 720),
                (1280, 960),
                (1600, 900),
                (1920, 1080),
            ],
        ),
        Look::Sublingual => pick(&mut rng, &[(640, 480), (720, 576), (1280, 960)]),
        Look::Nailfold => pick(
            &mut rng,
            &[(800, 600), (1024, 768), (1280, 960), (1280, 1024)],
        ),
    };
    let um_per_px = match look {
        Look::Skin => rng.range(1.8, 3.0),
        Look::Sublingual => rng.range(0.7, 2.0),
        Look::Nailfold => rng.range(0.9, 2.0),
    };
    let field_mm2 = width as f64 * height as f64 * um_per_px * um_per_px * 1e-6;
    let per_mm2 = match look {
        Look::Skin => rng.range(1.5, 9.0),
        Look::Sublingual => rng.range(25.0, 140.0),
        // Loops are placed in rows; this is only a budget (rows end at the frame edge).
        Look::Nailfold => rng.range(10.0, 60.0),
    };
    // Skin vessels from small sharp dots to the large blurred loops of the HDMIA frames (fewer
    // of them when larger, as in those frames).
    let vessel_scale = match look {
        Look::Skin => rng.range(0.9, 2.4),
        _ => 1.0,
    };
    let per_mm2 = per_mm2 / vessel_scale.powf(1.5);
    let capillaries = ((per_mm2 * field_mm2).round() as u32).clamp(3, 3000);
    let blur_sigma_px = match look {
        Look::Skin => rng.range(1.2, 4.5),
        Look::Sublingual => rng.range(0.5, 2.0),
        Look::Nailfold => rng.range(0.6, 2.5),
    };
    let noise_sigma = rng.range(1.0, 8.0);
    // Real skin loops are often faint: skin reaches lower contrasts than the other looks.
    let contrast = match look {
        Look::Skin => rng.range(0.45, 1.4),
        _ => rng.range(0.6, 1.5),
    };
    let perfused_fraction = rng.range(0.3, 1.0);
    let drift_px_per_frame = [rng.range(-0.3, 0.3), rng.range(-0.3, 0.3)];

    let mut a = Artefacts::default();
    let count = |rng: &mut Rng, p: f64, lo: u64, hi: u64| {
        if rng.chance(p) {
            (lo + rng.below(hi - lo + 1)) as u32
        } else {
            0
        }
    };
    a.hairs = match look {
        Look::Skin => count(&mut rng, 0.6, 1, 6),
        Look::Nailfold => count(&mut rng, 0.15, 1, 2),
        Look::Sublingual => 0,
    };
    a.bubbles = count(&mut rng, 0.35, 1, 4);
    a.glare = match look {
        Look::Sublingual => count(&mut rng, 0.15, 1, 3),
        _ => count(&mut rng, 0.35, 1, 5),
    };
    if rng.chance(0.7) {
        a.vignetting = rng.range(0.0, 0.6);
    }
    if rng.chance(0.7) {
        a.uneven_illumination = rng.range(0.0, 0.4);
    }
    if rng.chance(0.5) {
        a.defocus_px = rng.range(0.5, 6.0);
    }
    let (p_motion, max_motion) = match look {
        Look::Sublingual => (0.4, 15.0),
        _ => (0.1, 6.0),
    };
    if rng.chance(p_motion) {
        a.motion_blur_px = rng.range(1.0, max_motion);
        a.motion_blur_angle_deg = rng.range(0.0, 180.0);
    }
    if look != Look::Sublingual && rng.chance(0.7) {
        // Mild white-balance / exposure jitter (stronger tints look unlike any device).
        let exposure = rng.range(0.85, 1.2);
        a.tint = [
            exposure * rng.range(0.96, 1.08),
            exposure * rng.range(0.95, 1.04),
            exposure * rng.range(0.90, 1.02),
        ];
    }
    SynthSpec {
        look,
        width,
        height,
        um_per_px,
        fps: 25,
        frames: 1,
        seed,
        capillaries,
        perfused_fraction,
        drift_px_per_frame,
        noise_sigma,
        blur_sigma_px,
        contrast,
        vessel_scale,
        artefacts: a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomized_specs_are_valid_and_deterministic() {
        for look in Look::all() {
            for seed in 0..200 {
                let spec = randomized(look, seed);
                spec.validate().expect("randomized spec validates");
                assert_eq!(spec, randomized(look, seed));
                assert!(spec.width <= 1920 && spec.height <= 1080 || look == Look::Nailfold);
                assert!(spec.width <= 1920 && spec.height <= 1080);
                assert_eq!(spec.look, look);
            }
            assert_ne!(randomized(look, 1), randomized(look, 2));
        }
    }
}
