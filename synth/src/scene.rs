//! Vessel geometry: where every vessel runs, how wide it is and how it behaves.
//!
//! Everything here is in *scene* pixel coordinates: the scene (canvas) is the union of all
//! positions the field of view takes while drifting. Pixel centres sit on integer coordinates.

use crate::rng::Rng;
use crate::spec::{Look, SynthSpec};

/// Shape family of a vessel (written into `VesselTruth::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VesselKind {
    /// Skin: papillary loop seen end-on (a short blob).
    Dot,
    /// Skin: a curved stub.
    Comma,
    /// Skin: a hairpin loop (two limbs joined by a U-turn).
    Loop,
    /// Sublingual: a capillary network segment.
    Capillary,
    /// Sublingual: a large collecting venule.
    Venule,
}

impl VesselKind {
    /// Lower-case name used in the truth files.
    pub fn as_str(self) -> &'static str {
        match self {
            VesselKind::Dot => "dot",
            VesselKind::Comma => "comma",
            VesselKind::Loop => "loop",
            VesselKind::Capillary => "capillary",
            VesselKind::Venule => "venule",
        }
    }
}

/// Soft background darkening around a centre line (halo, out-of-focus vessel).
#[derive(Clone, Debug)]
pub struct Halo {
    /// Gaussian radius in pixels: darkening = `strength * exp(-(d / radius)^2)`.
    pub radius_px: f64,
    /// Green-channel absorbance at the centre line.
    pub strength: f64,
}

/// One vessel of the scene.
#[derive(Clone, Debug)]
pub struct Vessel {
    /// Index in the scene's vessel list.
    pub id: u32,
    /// Shape family.
    pub kind: VesselKind,
    /// Centre line in scene pixels, densely sampled.
    pub points: Vec<[f64; 2]>,
    /// Lumen radius in pixels at the start of the centre line.
    pub radius_px: f64,
    /// Lumen radius in pixels at the end of the centre line (equal to `radius_px` for a
    /// uniform tube; nailfold loops go from the thinner arterial to the wider venous limb).
    /// The radius changes smoothly around the middle of the centre line.
    pub radius_end_px: f64,
    /// Whether red cells flow.
    pub perfused: bool,
    /// Red-cell speed along the centre line (µm/s), 0 when not perfused.
    pub velocity_um_s: f64,
    /// Green-channel absorbance of the lumen centre at mean red-cell density.
    pub absorbance: f64,
    /// Optional darker halo drawn into the background.
    pub halo: Option<Halo>,
    /// Extra blur of this vessel in pixels (depth below the focal plane), on top of the optics.
    pub depth_blur_px: f64,
}

impl Vessel {
    /// Largest lumen radius in pixels.
    pub fn max_radius_px(&self) -> f64 {
        self.radius_px.max(self.radius_end_px)
    }

    /// Mean lumen radius in pixels.
    pub fn mean_radius_px(&self) -> f64 {
        0.5 * (self.radius_px + self.radius_end_px)
    }

    /// Lumen radius at fraction `t` (0..1) of the centre line.
    pub fn radius_at(&self, t: f64) -> f64 {
        let u = ((t - 0.35) / 0.3).clamp(0.0, 1.0);
        let smooth = u * u * (3.0 - 2.0 * u);
        self.radius_px + (self.radius_end_px - self.radius_px) * smooth
    }

    /// Centre-line length in pixels.
    pub fn length_px(&self) -> f64 {
        polyline_length(&self.points)
    }
}

/// A background-only feature: a centre line blurred into the background, never in the mask.
#[derive(Clone, Debug)]
pub struct Ghost {
    /// Centre line in scene pixels.
    pub points: Vec<[f64; 2]>,
    /// How it darkens the background.
    pub halo: Halo,
}

/// The static geometry of a clip.
#[derive(Clone, Debug)]
pub struct Scene {
    /// Scene width in pixels.
    pub width: usize,
    /// Scene height in pixels.
    pub height: usize,
    /// Vessels (all appear in the mask).
    pub vessels: Vec<Vessel>,
    /// Out-of-focus features (background only).
    pub ghosts: Vec<Ghost>,
}

/// Length of a polyline.
pub fn polyline_length(points: &[[f64; 2]]) -> f64 {
    points
        .windows(2)
        .map(|w| ((w[1][0] - w[0][0]).powi(2) + (w[1][1] - w[0][1]).powi(2)).sqrt())
        .sum()
}

/// Builds the scene for `spec` on a `width` x `height` canvas. Pure and deterministic.
pub fn build_scene(spec: &SynthSpec, width: usize, height: usize) -> Scene {
    let area_ratio = (width * height) as f64 / (spec.width as f64 * spec.height as f64);
    let count = (spec.capillaries as f64 * area_ratio).round() as usize;
    let mut rng = Rng::derive(spec.seed, &[0x5CE7E]);
    let (mut vessels, ghosts) = match spec.look {
        Look::Skin => skin_vessels(spec, width, height, count, &mut rng),
        Look::Sublingual => sublingual_vessels(spec, width, height, count, &mut rng),
        Look::Nailfold => nailfold_vessels(spec, width, height, count, &mut rng),
    };
    for v in &mut vessels {
        v.absorbance *= spec.contrast;
    }
    assign_flow(spec, &mut vessels, &mut rng);
    Scene {
        width,
        height,
        vessels,
        ghosts,
    }
}

fn assign_flow(spec: &SynthSpec, vessels: &mut [Vessel], rng: &mut Rng) {
    let n = vessels.len();
    let n_perfused = ((spec.perfused_fraction * n as f64).round() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    for (rank, &i) in order.iter().enumerate() {
        let v = &mut vessels[i];
        v.perfused = rank < n_perfused;
        let (lo, hi) = match v.kind {
            VesselKind::Venule => (400.0, 1000.0),
            _ => (200.0, 1000.0),
        };
        let speed = rng.range(lo, hi);
        v.velocity_um_s = if v.perfused { speed } else { 0.0 };
    }
}

/// Resamples a polyline so that consecutive points are at most `step` apart.
fn densify(points: &[[f64; 2]], step: f64) -> Vec<[f64; 2]> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        let n = (len / step).ceil().max(1.0) as usize;
        for k in 0..n {
            let t = k as f64 / n as f64;
            out.push([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]);
        }
    }
    if let Some(last) = points.last() {
        out.push(*last);
    }
    out
}

/// Skin shapes in a local µm frame around the origin.
fn skin_shape(rng: &mut Rng) -> (VesselKind, Vec<[f64; 2]>, f64) {
    let pick = rng.uniform();
    if pick < 0.3 {
        let r = rng.range(6.0, 8.0);
        let len = rng.range(3.0, 14.0);
        (
            VesselKind::Dot,
            vec![[-len / 2.0, 0.0], [len / 2.0, 0.0]],
            r,
        )
    } else if pick < 0.6 {
        let r = rng.range(4.5, 7.5);
        let len = rng.range(30.0, 80.0);
        let turn = rng.range(1.0, 3.4) * if rng.chance(0.5) { 1.0 } else { -1.0 };
        let n = 24;
        let mut pts = Vec::with_capacity(n + 1);
        let (mut x, mut y, mut h) = (0.0, 0.0, 0.0f64);
        pts.push([x, y]);
        for k in 0..n {
            // Curvature grows towards the head of the comma.
            let frac = (k as f64 + 0.5) / n as f64;
            h += turn * 2.0 * frac / n as f64;
            x += h.cos() * len / n as f64;
            y += h.sin() * len / n as f64;
            pts.push([x, y]);
        }
        (VesselKind::Comma, center(pts), r)
    } else {
        let r = rng.range(4.5, 7.5);
        let sep = 2.0 * r + rng.range(0.0, 3.0);
        let limb_a = rng.range(25.0, 70.0);
        let limb_b = limb_a * rng.range(0.75, 1.0);
        let wobble = rng.range(0.0, 1.5);
        let phase = rng.range(0.0, std::f64::consts::TAU);
        let mut pts = Vec::new();
        let n_limb = 16;
        for k in 0..=n_limb {
            let t = k as f64 / n_limb as f64;
            let y = limb_a * (1.0 - t);
            pts.push([-sep / 2.0 + wobble * (phase + t * 5.0).sin(), -y]);
        }
        let n_arc = 16;
        for k in 1..n_arc {
            let a = std::f64::consts::PI * (1.0 - k as f64 / n_arc as f64);
            pts.push([sep / 2.0 * a.cos(), sep / 2.0 * a.sin() * 1.15]);
        }
        for k in 0..=n_limb {
            let t = k as f64 / n_limb as f64;
            pts.push([
                sep / 2.0 + wobble * (phase + 2.0 + t * 5.0).sin(),
                -limb_b * t,
            ]);
        }
        (VesselKind::Loop, center(pts), r)
    }
}

fn center(mut pts: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in &pts {
        for c in 0..2 {
            lo[c] = lo[c].min(p[c]);
            hi[c] = hi[c].max(p[c]);
        }
    }
    let mid = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    for p in &mut pts {
        p[0] -= mid[0];
        p[1] -= mid[1];
    }
    pts
}

/// Places a local µm shape into the scene: rotate, scale to pixels, translate.
fn place(local_um: &[[f64; 2]], angle: f64, um_per_px: f64, at: [f64; 2]) -> Vec<[f64; 2]> {
    let (s, c) = angle.sin_cos();
    local_um
        .iter()
        .map(|p| {
            [
                at[0] + (p[0] * c - p[1] * s) / um_per_px,
                at[1] + (p[0] * s + p[1] * c) / um_per_px,
            ]
        })
        .collect()
}

fn skin_vessels(
    spec: &SynthSpec,
    width: usize,
    height: usize,
    count: usize,
    rng: &mut Rng,
) -> (Vec<Vessel>, Vec<Ghost>) {
    let um = spec.um_per_px;
    let gap_px = 3.0;
    let step = 0.5;
    let mut placed: Vec<([f64; 2], f64)> = Vec::new();
    let mut vessels = Vec::with_capacity(count);
    let k = spec.vessel_scale;
    for _ in 0..count {
        let (kind, local, r_um) = skin_shape(rng);
        let (local, r_um) = (
            local
                .iter()
                .map(|p| [p[0] * k, p[1] * k])
                .collect::<Vec<_>>(),
            r_um * k,
        );
        let angle = rng.range(0.0, std::f64::consts::TAU);
        let shape = place(&local, angle, um, [0.0, 0.0]);
        let r_px = r_um / um;
        let extent = shape
            .iter()
            .map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt())
            .fold(0.0, f64::max)
            + r_px;
        let mut spot = None;
        for _ in 0..200 {
            let at = [rng.range(0.0, width as f64), rng.range(0.0, height as f64)];
            let free = placed.iter().all(|(c, e)| {
                let d = ((c[0] - at[0]).powi(2) + (c[1] - at[1]).powi(2)).sqrt();
                d >= e + extent + gap_px
            });
            if free {
                spot = Some(at);
                break;
            }
        }
        let Some(at) = spot else {
            tracing::warn!(
                placed = vessels.len(),
                wanted = count,
                "scene too crowded: placing fewer skin vessels"
            );
            break;
        };
        placed.push((at, extent));
        let points = densify(
            &shape
                .iter()
                .map(|p| [p[0] + at[0], p[1] + at[1]])
                .collect::<Vec<_>>(),
            step,
        );
        let contrast = rng.range(0.24, 0.40);
        let halo = Halo {
            radius_px: rng.range(20.0, 45.0) * k / um,
            strength: rng.range(0.07, 0.16),
        };
        let depth_blur_px = rng.range(3.0, 8.0) * k / um;
        vessels.push(Vessel {
            id: vessels.len() as u32,
            kind,
            points,
            radius_px: r_px,
            radius_end_px: r_px,
            perfused: false,
            velocity_um_s: 0.0,
            absorbance: -(1.0f64 - contrast).ln(),
            halo: Some(halo),
            depth_blur_px,
        });
    }
    // Faint out-of-focus loops deeper in the skin: background only.
    let n_ghosts = count / 2 + 4;
    let mut ghosts = Vec::with_capacity(n_ghosts);
    for _ in 0..n_ghosts {
        let (_, local, _) = skin_shape(rng);
        let at = [rng.range(0.0, width as f64), rng.range(0.0, height as f64)];
        let points = densify(&place(&local, rng.range(0.0, 6.3), um, at), 1.0);
        ghosts.push(Ghost {
            points,
            halo: Halo {
                radius_px: rng.range(12.0, 30.0) / um,
                strength: rng.range(0.03, 0.07),
            },
        });
    }
    (vessels, ghosts)
}

/// A smooth random walk with Ornstein-Uhlenbeck curvature, in scene pixels.
struct Walk {
    step_um: f64,
    curvature_sigma: f64,
    correlation_um: f64,
}

impl Walk {
    fn run(
        &self,
        rng: &mut Rng,
        start: [f64; 2],
        heading: f64,
        max_len_um: f64,
        um: f64,
        bounds: [f64; 4],
    ) -> Vec<[f64; 2]> {
        let mut pts = vec![start];
        let (mut x, mut y, mut h, mut k) = (start[0], start[1], heading, 0.0f64);
        let mut len = 0.0;
        let decay = (-self.step_um / self.correlation_um).exp();
        let kick = self.curvature_sigma * (1.0 - decay * decay).sqrt();
        while len < max_len_um {
            k = k * decay + kick * rng.normal();
            h += k * self.step_um;
            x += h.cos() * self.step_um / um;
            y += h.sin() * self.step_um / um;
            len += self.step_um;
            pts.push([x, y]);
            if x < bounds[0] || y < bounds[1] || x > bounds[2] || y > bounds[3] {
                break;
            }
        }
        pts
    }
}

fn sublingual_vessels(
    spec: &SynthSpec,
    width: usize,
    height: usize,
    count: usize,
    rng: &mut Rng,
) -> (Vec<Vessel>, Vec<Ghost>) {
    let um = spec.um_per_px;
    let (w, h) = (width as f64, height as f64);
    let diag_um = (w * w + h * h).sqrt() * um;
    let mut vessels: Vec<Vessel> = Vec::new();
    let n_venules = 1 + usize::from(rng.chance(0.5));
    let step_px = 1.0;
    for _ in 0..n_venules {
        let r_um = rng.range(15.0, 30.0);
        let margin = r_um / um + 2.0;
        // Start on a random edge, head roughly across the field.
        let edge = rng.below(4);
        let t = rng.range(0.15, 0.85);
        let (start, heading) = match edge {
            0 => ([t * w, -margin * 0.5], std::f64::consts::FRAC_PI_2),
            1 => ([w + margin * 0.5, t * h], std::f64::consts::PI),
            2 => ([t * w, h + margin * 0.5], -std::f64::consts::FRAC_PI_2),
            _ => ([-margin * 0.5, t * h], 0.0),
        };
        let walk = Walk {
            step_um: 2.0,
            curvature_sigma: 0.003,
            correlation_um: 150.0,
        };
        let heading = heading + rng.range(-0.5, 0.5);
        let pts = walk.run(
            rng,
            start,
            heading,
            diag_um * 2.0,
            um,
            [-margin, -margin, w + margin, h + margin],
        );
        vessels.push(Vessel {
            id: vessels.len() as u32,
            kind: VesselKind::Venule,
            points: densify(&pts, step_px),
            radius_px: r_um / um,
            radius_end_px: r_um / um,
            perfused: false,
            velocity_um_s: 0.0,
            absorbance: -(1.0 - rng.range(0.45, 0.62f64)).ln(),
            halo: Some(Halo {
                radius_px: r_um * 1.6 / um,
                strength: 0.08,
            }),
            depth_blur_px: rng.range(0.5, 1.5) / um,
        });
    }
    let mut made = 0;
    let mut tries = 0;
    while made < count && tries < count * 20 + 100 {
        tries += 1;
        let d_um = 5.0 + 15.0 * rng.uniform().powi(3);
        let r_um = d_um / 2.0;
        let (start, heading) = if !vessels.is_empty() && rng.chance(0.55) {
            // Branch off an existing vessel.
            let parent = &vessels[rng.below(vessels.len() as u64) as usize];
            let n = parent.points.len();
            if n < 3 {
                continue;
            }
            let i = 1 + rng.below(n as u64 - 2) as usize;
            let (a, b) = (parent.points[i - 1], parent.points[i + 1]);
            let tangent = (b[1] - a[1]).atan2(b[0] - a[0]);
            let side = if rng.chance(0.5) { 1.0 } else { -1.0 };
            (parent.points[i], tangent + side * rng.range(0.9, 2.2))
        } else {
            (
                [rng.range(0.0, w), rng.range(0.0, h)],
                rng.range(0.0, std::f64::consts::TAU),
            )
        };
        let walk = Walk {
            step_um: 2.0,
            curvature_sigma: 0.015,
            correlation_um: 30.0,
        };
        let target = rng.range(120.0, 380.0);
        let margin = r_um / um + 2.0;
        let pts = walk.run(
            rng,
            start,
            heading,
            target,
            um,
            [-margin, -margin, w + margin, h + margin],
        );
        if polyline_length(&pts) * um < 30.0 {
            continue;
        }
        let contrast = rng.range(0.28, 0.5);
        vessels.push(Vessel {
            id: vessels.len() as u32,
            kind: VesselKind::Capillary,
            points: densify(&pts, step_px),
            radius_px: r_um / um,
            radius_end_px: r_um / um,
            perfused: false,
            velocity_um_s: 0.0,
            absorbance: -(1.0f64 - contrast).ln(),
            halo: None,
            depth_blur_px: rng.range(0.0, 1.5) / um,
        });
        made += 1;
    }
    // Deep, out-of-focus vessels below the capillary layer.
    let n_ghosts = 3 + rng.below(4) as usize;
    let mut ghosts = Vec::with_capacity(n_ghosts);
    for _ in 0..n_ghosts {
        let walk = Walk {
            step_um: 4.0,
            curvature_sigma: 0.006,
            correlation_um: 120.0,
        };
        let start = [rng.range(0.0, w), rng.range(0.0, h)];
        let heading = rng.range(0.0, std::f64::consts::TAU);
        let length = rng.range(300.0, 900.0);
        let pts = walk.run(
            rng,
            start,
            heading,
            length,
            um,
            [-50.0, -50.0, w + 50.0, h + 50.0],
        );
        ghosts.push(Ghost {
            points: densify(&pts, 2.0),
            halo: Halo {
                radius_px: rng.range(25.0, 60.0) / um,
                strength: rng.range(0.05, 0.12),
            },
        });
    }
    (vessels, ghosts)
}

/// One nailfold hairpin loop in a local µm frame: the arterial limb starts at the base
/// (y = 0, x < 0), rises to the apex at y = -length and the venous limb comes back down.
/// Returns the centre line and the (arterial, venous) radii in µm.
fn nailfold_loop(rng: &mut Rng) -> (Vec<[f64; 2]>, f64, f64) {
    let r_art = rng.range(3.0, 5.0);
    let r_ven = (r_art + rng.range(1.0, 3.0)).min(7.5);
    let length = rng.range(150.0, 400.0);
    let sep = r_art + r_ven + rng.range(4.0, 30.0);
    // Some loops are tortuous ("bushy"): larger, faster wiggles of both limbs.
    let tortuous = rng.chance(0.25);
    let (amp, waves) = if tortuous {
        (rng.range(4.0, 12.0), rng.range(2.0, 5.0))
    } else {
        (rng.range(0.0, 3.0), rng.range(0.5, 1.5))
    };
    let lean = rng.range(-0.08, 0.08);
    let apex_widen = if rng.chance(0.3) {
        rng.range(1.0, 1.6)
    } else {
        1.0
    };
    let venous_len = length * rng.range(0.92, 1.0);
    let (pa, pv) = (rng.range(0.0, 6.3), rng.range(0.0, 6.3));
    // Wiggles fade out towards the apex so the limbs meet the U-turn smoothly.
    let wiggle = |t: f64, phase: f64| {
        amp * (phase + t * waves * std::f64::consts::TAU).sin() * ((1.0 - t) / 0.15).min(1.0)
    };
    let mut pts = Vec::new();
    let n_limb = 48;
    let half = sep / 2.0 * apex_widen;
    // A dilated apex: the limbs flare smoothly into the wider U-turn.
    let flare = |t: f64| (half - sep / 2.0) * ((t - 0.75) / 0.25).clamp(0.0, 1.0).powi(2);
    for k in 0..=n_limb {
        let t = k as f64 / n_limb as f64;
        let y = -length * t;
        pts.push([-sep / 2.0 - flare(t) + wiggle(t, pa) - lean * y, y]);
    }
    let n_arc = 20;
    for k in 1..n_arc {
        let a = std::f64::consts::PI * (1.0 - k as f64 / n_arc as f64);
        pts.push([
            half * a.cos() + lean * length,
            -length - half * a.sin() * 1.1,
        ]);
    }
    for k in 0..=n_limb {
        let t = 1.0 - k as f64 / n_limb as f64;
        let y = -length + venous_len * (1.0 - t);
        pts.push([sep / 2.0 + flare(t) + wiggle(t, pv) - lean * y, y]);
    }
    (pts, r_art, r_ven)
}

fn nailfold_vessels(
    spec: &SynthSpec,
    width: usize,
    height: usize,
    count: usize,
    rng: &mut Rng,
) -> (Vec<Vessel>, Vec<Ghost>) {
    let um = spec.um_per_px;
    let (w, h) = (width as f64, height as f64);
    let mut vessels: Vec<Vessel> = Vec::new();
    // Rows of loops: the first row's apexes face the nail edge at the top of the field.
    let max_rows = 1 + rng.below(3) as usize;
    let mut apex_y = rng.range(0.08, 0.3) * h;
    for _ in 0..max_rows {
        if vessels.len() >= count || apex_y > h * 0.85 {
            break;
        }
        let row_tilt = rng.range(-0.08, 0.08);
        let mut x = rng.range(-60.0, 40.0) / um;
        let mut deepest: f64 = 0.0;
        while x < w + 60.0 / um && vessels.len() < count {
            let (local, r_art, r_ven) = nailfold_loop(rng);
            let angle = rng.range(-0.08, 0.08);
            // Local y = -length is the apex; anchor the apex on the row line.
            let length = local.iter().map(|p| -p[1]).fold(0.0, f64::max);
            let flip = rng.chance(0.5);
            let local: Vec<[f64; 2]> = local
                .iter()
                .map(|p| [if flip { -p[0] } else { p[0] }, p[1] + length])
                .collect();
            let at = [
                x,
                apex_y + row_tilt * (x - w / 2.0) + rng.range(-15.0, 15.0) / um,
            ];
            let placed = place(&local, angle, um, at);
            deepest = deepest.max(length);
            let contrast = rng.range(0.30, 0.55);
            vessels.push(Vessel {
                id: vessels.len() as u32,
                kind: VesselKind::Loop,
                points: densify(&placed, 0.5),
                radius_px: r_art / um,
                radius_end_px: r_ven / um,
                perfused: false,
                velocity_um_s: 0.0,
                absorbance: -(1.0f64 - contrast).ln(),
                halo: Some(Halo {
                    radius_px: rng.range(10.0, 25.0) / um,
                    strength: rng.range(0.03, 0.08),
                }),
                depth_blur_px: rng.range(0.0, 3.0) / um,
            });
            x += rng.range(80.0, 120.0) / um;
        }
        apex_y += (deepest + rng.range(60.0, 160.0)) / um;
    }
    // Deeper subpapillary plexus: faint, blurred, background only.
    let n_ghosts = 4 + rng.below(6) as usize;
    let mut ghosts = Vec::with_capacity(n_ghosts);
    for _ in 0..n_ghosts {
        let walk = Walk {
            step_um: 4.0,
            curvature_sigma: 0.006,
            correlation_um: 120.0,
        };
        let start = [rng.range(0.0, w), rng.range(h * 0.3, h)];
        let flip = if rng.chance(0.5) {
            0.0
        } else {
            std::f64::consts::PI
        };
        let heading = rng.range(-0.4, 0.4) + flip;
        let length = rng.range(300.0, 1200.0);
        let pts = walk.run(
            rng,
            start,
            heading,
            length,
            um,
            [-50.0, -50.0, w + 50.0, h + 50.0],
        );
        ghosts.push(Ghost {
            points: densify(&pts, 2.0),
            halo: Halo {
                radius_px: rng.range(15.0, 40.0) / um,
                strength: rng.range(0.04, 0.10),
            },
        });
    }
    (vessels, ghosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skin_vessels_keep_their_distance() {
        let spec = SynthSpec {
            width: 640,
            height: 360,
            capillaries: 30,
            ..SynthSpec::default()
        };
        let scene = build_scene(&spec, 640, 360);
        assert_eq!(scene.vessels.len(), 30);
        for (i, a) in scene.vessels.iter().enumerate() {
            for b in &scene.vessels[i + 1..] {
                let mut min: f64 = f64::MAX;
                for p in &a.points {
                    for q in &b.points {
                        min = min.min(((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt());
                    }
                }
                assert!(min - a.radius_px - b.radius_px >= 3.0, "gap {min}");
            }
        }
        let perfused = scene.vessels.iter().filter(|v| v.perfused).count();
        assert_eq!(perfused, 24);
    }

    #[test]
    fn skin_sizes_match_the_field() {
        let spec = SynthSpec::default();
        let scene = build_scene(&spec, 1920, 1080);
        for v in &scene.vessels {
            let d_um = 2.0 * v.radius_px * spec.um_per_px;
            assert!((8.0..=16.0).contains(&d_um), "{d_um}");
            let ext = v.length_px();
            assert!(ext < 100.0, "{ext}");
        }
    }

    #[test]
    fn vessel_scale_enlarges_skin_vessels() {
        let base = SynthSpec::default();
        let big = SynthSpec {
            vessel_scale: 2.0,
            ..base.clone()
        };
        let (a, b) = (
            build_scene(&base, 1920, 1080),
            build_scene(&big, 1920, 1080),
        );
        let mean_r =
            |s: &Scene| s.vessels.iter().map(|v| v.radius_px).sum::<f64>() / s.vessels.len() as f64;
        let ratio = mean_r(&b) / mean_r(&a);
        assert!((1.7..=2.3).contains(&ratio), "radius ratio {ratio}");
    }

    #[test]
    fn sublingual_has_venules_and_capillaries() {
        let spec = SynthSpec::preset("sublingual").unwrap();
        let scene = build_scene(&spec, 640, 480);
        let venules = scene
            .vessels
            .iter()
            .filter(|v| v.kind == VesselKind::Venule)
            .count();
        assert!((1..=2).contains(&venules));
        assert_eq!(scene.vessels.len() - venules, spec.capillaries as usize);
    }
}
