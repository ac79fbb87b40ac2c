//! Rendering properties: determinism, truth consistency, flow, drift, validation.

use capflow_synth::{count_components, Look, Renderer, SynthError, SynthSpec};

fn small(look: Look) -> SynthSpec {
    let base = match look {
        Look::Skin => SynthSpec::default(),
        Look::Sublingual => SynthSpec::preset("sublingual").unwrap(),
        Look::Nailfold => SynthSpec::preset("nailfold").unwrap(),
    };
    SynthSpec {
        width: 320,
        height: 180,
        frames: 12,
        capillaries: match look {
            Look::Skin => 14,
            Look::Sublingual => 10,
            Look::Nailfold => 10,
        },
        ..base
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    for look in Look::all() {
        let spec = small(look);
        let mut a = Renderer::new(&spec).unwrap();
        let mut b = Renderer::new(&spec).unwrap();
        for i in [0, 3, 7] {
            let (fa, fb) = (a.render(i), b.render(i));
            assert_eq!(
                fa, fb,
                "{look:?} frame {i} differs between identical renderers"
            );
        }
        assert_eq!(a.vessels(), b.vessels());
        // Rendering out of order gives the same bytes (no hidden per-frame state).
        assert_eq!(a.render(3), Renderer::new(&spec).unwrap().render(3));
        let mut c = Renderer::new(&SynthSpec {
            seed: spec.seed + 1,
            ..spec.clone()
        })
        .unwrap();
        let (f0, g0) = (a.render(0), c.render(0));
        assert_ne!(f0.rgb, g0.rgb);
        assert_ne!(f0.mask, g0.mask);
    }
}

#[test]
fn truth_matches_the_mask() {
    for look in Look::all() {
        let spec = SynthSpec {
            drift_px_per_frame: [1.5, -0.7],
            ..small(look)
        };
        let (w, h) = (spec.width, spec.height);
        let mut r = Renderer::new(&spec).unwrap();
        let mut counts = Vec::new();
        for i in 0..spec.frames {
            let f = r.render(i);
            assert_eq!(f.rgb.len(), (w * h * 3) as usize);
            assert_eq!(f.mask.len(), (w * h) as usize);
            assert!(f.mask.iter().all(|&m| m == 0 || m == 255));
            let components = count_components(&f.mask, w, h, 1);
            assert_eq!(f.truth.capillary_count, components, "{look:?} frame {i}");
            let on = f.mask.iter().filter(|&&m| m == 255).count();
            assert_eq!(f.truth.area_fraction, on as f64 / (w * h) as f64);
            assert_eq!(f.truth.frame_index, i);
            assert_eq!(f.truth.pts_ns, i as u64 * 1_000_000_000 / spec.fps as u64);
            assert!(f.truth.centerline_length_um > 0.0);
            counts.push(components);
        }
        assert!(counts.iter().all(|&c| c > 0), "{look:?}: {counts:?}");
    }
}

#[test]
fn skin_count_equals_visible_vessels_without_drift() {
    // Vessels never touch, so with every vessel fully inside the frame the count is the
    // number of vessels; border vessels may add or remove components, hence the tolerance.
    let spec = SynthSpec {
        width: 640,
        height: 360,
        capillaries: 20,
        drift_px_per_frame: [0.0, 0.0],
        ..SynthSpec::default()
    };
    let mut r = Renderer::new(&spec).unwrap();
    let f = r.render(0);
    let n = r.vessels().len() as i64;
    assert_eq!(n, 20);
    let c = f.truth.capillary_count as i64;
    assert!((c - n).abs() <= 4, "count {c} vs {n} vessels");
}

#[test]
fn skin_vessels_are_darker_mainly_in_green() {
    let spec = SynthSpec {
        width: 640,
        height: 360,
        capillaries: 25,
        noise_sigma: 0.0,
        drift_px_per_frame: [0.0, 0.0],
        ..SynthSpec::default()
    };
    let f = Renderer::new(&spec).unwrap().render(0);
    let (w, h) = (spec.width as usize, spec.height as usize);
    // Compare lumen pixels with background pixels 8..14 px away (a local ring).
    let mut inside = [0f64; 3];
    let mut ring = [0f64; 3];
    let (mut ni, mut nr) = (0.0, 0.0);
    for y in 14..h - 14 {
        for x in 14..w - 14 {
            let i = y * w + x;
            if f.mask[i] == 255 {
                for (c, acc) in inside.iter_mut().enumerate() {
                    *acc += f.rgb[i * 3 + c] as f64;
                }
                ni += 1.0;
                for (dx, dy) in [(12i64, 0i64), (-12, 0), (0, 12), (0, -12)] {
                    let j = ((y as i64 + dy) as usize) * w + (x as i64 + dx) as usize;
                    if f.mask[j] == 0 {
                        for (c, acc) in ring.iter_mut().enumerate() {
                            *acc += f.rgb[j * 3 + c] as f64;
                        }
                        nr += 1.0;
                    }
                }
            }
        }
    }
    let contrast: Vec<f64> = (0..3)
        .map(|c| 1.0 - (inside[c] / ni) / (ring[c] / nr))
        .collect();
    assert!(
        contrast[1] > contrast[0] && contrast[1] > contrast[2],
        "{contrast:?}"
    );
    assert!(
        (0.12..=0.40).contains(&contrast[1]),
        "green contrast {contrast:?}"
    );
}

#[test]
fn perfused_vessels_move_static_ones_do_not() {
    let base = SynthSpec {
        noise_sigma: 0.0,
        drift_px_per_frame: [0.0, 0.0],
        ..small(Look::Skin)
    };
    // Nothing perfused: frames are identical.
    let still = SynthSpec {
        perfused_fraction: 0.0,
        ..base.clone()
    };
    let mut r = Renderer::new(&still).unwrap();
    assert_eq!(r.render(0).rgb, r.render(5).rgb);
    // Everything perfused: lumen pixels change, pixels far from vessels do not.
    let flowing = SynthSpec {
        perfused_fraction: 1.0,
        ..base
    };
    let mut r = Renderer::new(&flowing).unwrap();
    let (a, b) = (r.render(0), r.render(1));
    assert_eq!(a.mask, b.mask, "mask must not depend on flow");
    let (mut changed_in, mut lumen) = (0, 0);
    for (i, &m) in a.mask.iter().enumerate() {
        if m == 255 {
            lumen += 1;
            if a.rgb[i * 3 + 1] != b.rgb[i * 3 + 1] {
                changed_in += 1;
            }
        }
    }
    assert!(
        changed_in * 4 > lumen,
        "only {changed_in} of {lumen} lumen pixels changed"
    );
    let w = flowing.width as usize;
    let far = |i: usize| {
        let (x, y) = ((i % w) as i64, (i / w) as i64);
        (-15..=15).all(|dy| {
            (-15..=15).all(|dx| {
                let (nx, ny) = (x + dx, y + dy);
                nx < 0
                    || ny < 0
                    || nx >= w as i64
                    || ny >= flowing.height as i64
                    || a.mask[ny as usize * w + nx as usize] == 0
            })
        })
    };
    for i in (0..a.mask.len()).step_by(7).filter(|&i| far(i)) {
        assert_eq!(
            a.rgb[i * 3..i * 3 + 3],
            b.rgb[i * 3..i * 3 + 3],
            "pixel {i} changed"
        );
    }
}

#[test]
fn drift_moves_mask_and_image() {
    let spec = SynthSpec {
        noise_sigma: 0.0,
        perfused_fraction: 0.0,
        drift_px_per_frame: [2.0, 1.0],
        ..small(Look::Skin)
    };
    let (w, h) = (spec.width as usize, spec.height as usize);
    let mut r = Renderer::new(&spec).unwrap();
    let (f0, f5) = (r.render(0), r.render(5));
    assert_ne!(f0.mask, f5.mask);
    let (dx, dy) = (10usize, 5usize);
    let margin = 8;
    let mut on = 0;
    for y in margin..h - dy - margin {
        for x in margin..w - dx - margin {
            let (i0, i5) = (y * w + x, (y + dy) * w + x + dx);
            assert_eq!(f0.mask[i0], f5.mask[i5], "mask at ({x},{y})");
            assert_eq!(f0.rgb[i0 * 3..i0 * 3 + 3], f5.rgb[i5 * 3..i5 * 3 + 3]);
            on += usize::from(f0.mask[i0] == 255);
        }
    }
    assert!(on > 0, "comparison region holds no vessel");
}

#[test]
fn invalid_specs_are_rejected_with_the_field_name() {
    let spec = SynthSpec {
        width: 63,
        ..SynthSpec::default()
    };
    let err = Renderer::new(&spec).unwrap_err();
    assert!(
        matches!(err, SynthError::InvalidSpec { field: "width", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("width must be >= 64"), "{err}");
    let spec = SynthSpec {
        perfused_fraction: -0.1,
        ..SynthSpec::default()
    };
    let err = Renderer::new(&spec).unwrap_err();
    assert!(err.to_string().contains("perfused_fraction"), "{err}");
}

#[test]
fn empty_scene_renders() {
    let spec = SynthSpec {
        capillaries: 0,
        ..small(Look::Skin)
    };
    let mut r = Renderer::new(&spec).unwrap();
    let f = r.render(0);
    assert_eq!(f.truth.capillary_count, 0);
    assert_eq!(f.truth.area_fraction, 0.0);
    assert!(r.vessels().is_empty());
    // Frames past the clip are fine (drift clamped).
    let _ = r.render(10_000);
}
