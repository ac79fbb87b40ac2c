//! Per-frame rendering. The static scene (background, vessel geometry, non-perfused vessels,
//! lumen mask) is prepared once in [`Renderer::new`]; each frame then only crops the drifted
//! field, moves the red-cell texture of perfused vessels and adds sensor noise.

use crate::artefacts::ArtefactLayer;
use crate::background::{channel_absorption, render_background};
use crate::flow::CellTexture;
use crate::noise::GaussTable;
use crate::raster::{rasterise, NO_VESSEL};
use crate::rng::Rng;
use crate::scene::{build_scene, Vessel};
use crate::spec::{Look, SynthSpec};
use crate::truth::{clipped_length, FrameTruth, Labeller, VesselTruth, MIN_COMPONENT_PIXELS};
use crate::SynthError;

/// One rendered frame with its exact ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedFrame {
    /// Interleaved RGB, `width * height * 3` bytes, rows tightly packed.
    pub rgb: Vec<u8>,
    /// Lumen mask, `width * height` bytes, 0 or 255, aligned with `rgb`.
    pub mask: Vec<u8>,
    /// Measurements of this frame.
    pub truth: FrameTruth,
}

/// A perfused-vessel pixel whose appearance changes every frame.
#[derive(Clone, Copy, Debug)]
struct FlowPixel {
    /// Scene index (`y * scene_width + x`).
    index: u32,
    vessel: u32,
    arclength_um: f32,
    cross_um: f32,
    absorbance: f32,
}

/// Truth and cleaned mask of one field position (reused while drift keeps the field still).
#[derive(Clone, Debug)]
struct FieldTruth {
    origin: [usize; 2],
    mask: Vec<u8>,
    count: u32,
    area_fraction: f64,
    length_um: f64,
}

/// Adds sensor noise to one row of linear values and rounds it to 8 bits.
struct Quantiser<'a> {
    gauss: &'a GaussTable,
    seed: u64,
    frame_index: u32,
    grey: bool,
    noisy: bool,
}

impl Quantiser<'_> {
    fn row(&self, y: usize, row: &[f32], out: &mut [u8]) {
        if !self.noisy {
            for (o, v) in out.iter_mut().zip(row.iter()) {
                *o = (v + 0.5).clamp(0.0, 255.0) as u8;
            }
            return;
        }
        let mut rng = Rng::derive(self.seed, &[NOISE_TAG, self.frame_index as u64, y as u64]);
        if self.grey {
            for (x_chunk, o_chunk) in row.chunks(15).zip(out.chunks_mut(15)) {
                let mut bits = rng.next_u64();
                for (px, opx) in x_chunk.chunks(3).zip(o_chunk.chunks_mut(3)) {
                    let v = (px[1] + self.gauss.get(bits) + 0.5).clamp(0.0, 255.0) as u8;
                    bits >>= 12;
                    opx.fill(v);
                }
            }
        } else {
            for (x_chunk, o_chunk) in row.chunks(5).zip(out.chunks_mut(5)) {
                let mut bits = rng.next_u64();
                for (v, o) in x_chunk.iter().zip(o_chunk.iter_mut()) {
                    *o = (v + self.gauss.get(bits) + 0.5).clamp(0.0, 255.0) as u8;
                    bits >>= 12;
                }
            }
        }
    }
}

/// Renders the frames of one clip. Deterministic: the same spec gives the same bytes.
#[derive(Debug)]
pub struct Renderer {
    spec: SynthSpec,
    scene_w: usize,
    scene_h: usize,
    /// Field origin of frame 0 minus the drift offset (see `origin`).
    max_offset: [i64; 2],
    base: Vec<f32>,
    mask: Vec<u8>,
    flow: Vec<FlowPixel>,
    flow_rows: Vec<u32>,
    textures: Vec<CellTexture>,
    geometry: Vec<Vessel>,
    bboxes: Vec<[f64; 4]>,
    vessels: Vec<VesselTruth>,
    absorption: [f32; 3],
    gauss: GaussTable,
    labeller: Labeller,
    cache: Option<FieldTruth>,
    row: Vec<f32>,
    artefacts: Option<ArtefactLayer>,
}

const NOISE_TAG: u64 = 0x004E_015E;

impl Renderer {
    /// Validates `spec` and prepares the static scene (the expensive part, done once per clip).
    pub fn new(spec: &SynthSpec) -> Result<Self, SynthError> {
        spec.validate()?;
        let [span_x, span_y] = spec.drift_span();
        let last = spec.drift_offset(spec.frames.saturating_sub(1));
        let max_offset = [last[0].max(0), last[1].max(0)];
        let scene_w = spec.width as usize + span_x as usize;
        let scene_h = spec.height as usize + span_y as usize;
        let scene = build_scene(spec, scene_w, scene_h);
        let raster = rasterise(&scene, spec.blur_sigma_px, spec.um_per_px);
        let mut base = render_background(spec, scene_w, scene_h, &raster.background_absorbance);
        let absorption = channel_absorption(spec.look);
        let um = spec.um_per_px;

        let mut tex_rng = Rng::derive(spec.seed, &[0xCE11]);
        // Skin loops are seen through epidermis: cells blur together; sublingual cells are crisp.
        let plasma = |radius_um: f64| match spec.look {
            Look::Skin => 0.8,
            Look::Nailfold => 0.55,
            Look::Sublingual if radius_um > 8.0 => 0.7,
            Look::Sublingual => 0.45,
        };
        let textures: Vec<CellTexture> = scene
            .vessels
            .iter()
            .map(|v| {
                let r_um = v.max_radius_px() * um;
                CellTexture::new(&mut tex_rng, v.length_px() * um, r_um, plasma(r_um))
            })
            .collect();

        let mut flow = Vec::new();
        let mut flow_rows = Vec::with_capacity(scene_h + 1);
        for y in 0..scene_h {
            flow_rows.push(flow.len() as u32);
            for x in 0..scene_w {
                let i = y * scene_w + x;
                let v = raster.vessel[i];
                if v == NO_VESSEL {
                    continue;
                }
                let vessel = &scene.vessels[v as usize];
                if vessel.perfused {
                    flow.push(FlowPixel {
                        index: i as u32,
                        vessel: v,
                        arclength_um: raster.arclength_um[i],
                        cross_um: raster.cross_um[i],
                        absorbance: raster.absorbance[i],
                    });
                } else {
                    let density =
                        textures[v as usize].sample(raster.arclength_um[i], raster.cross_um[i]);
                    let a = raster.absorbance[i] * density;
                    for c in 0..3 {
                        base[i * 3 + c] *= (-absorption[c] * a).exp();
                    }
                }
            }
        }
        flow_rows.push(flow.len() as u32);

        let vessels = scene
            .vessels
            .iter()
            .map(|v| VesselTruth {
                vessel_id: v.id,
                kind: v.kind.as_str().to_string(),
                perfused: v.perfused,
                length_um: v.length_px() * um,
                diameter_um: 2.0 * v.mean_radius_px() * um,
                velocity_um_s: v.velocity_um_s,
            })
            .collect();
        let bboxes = scene
            .vessels
            .iter()
            .map(|v| {
                v.points
                    .iter()
                    .fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, p| {
                        [
                            b[0].min(p[0]),
                            b[1].min(p[1]),
                            b[2].max(p[0]),
                            b[3].max(p[1]),
                        ]
                    })
            })
            .collect();
        Ok(Renderer {
            spec: spec.clone(),
            scene_w,
            scene_h,
            max_offset,
            base,
            mask: raster.mask,
            flow,
            flow_rows,
            textures,
            geometry: scene.vessels,
            bboxes,
            vessels,
            absorption,
            gauss: GaussTable::new(spec.noise_sigma),
            labeller: Labeller::default(),
            cache: None,
            row: vec![0.0; spec.width as usize * 3],
            artefacts: ArtefactLayer::new(spec),
        })
    }

    /// The spec this renderer was built from.
    pub fn spec(&self) -> &SynthSpec {
        &self.spec
    }

    /// Per-vessel ground truth of the whole scene (including vessels that drift into view later).
    pub fn vessels(&self) -> &[VesselTruth] {
        &self.vessels
    }

    /// Top-left corner of frame `i`'s field in scene pixels. Frames past the clip keep the
    /// drift clamped to the prepared scene.
    fn origin(&self, frame_index: u32) -> [usize; 2] {
        let off = self.spec.drift_offset(frame_index);
        let span = [
            (self.scene_w - self.spec.width as usize) as i64,
            (self.scene_h - self.spec.height as usize) as i64,
        ];
        [
            (self.max_offset[0] - off[0]).clamp(0, span[0]) as usize,
            (self.max_offset[1] - off[1]).clamp(0, span[1]) as usize,
        ]
    }

    /// Renders frame `frame_index` (any index; the drift is clamped past `spec.frames`).
    pub fn render(&mut self, frame_index: u32) -> RenderedFrame {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        let [fx, fy] = self.origin(frame_index);
        let t_s = frame_index as f64 / self.spec.fps as f64;
        let displacement: Vec<f32> = self
            .geometry
            .iter()
            .zip(&self.textures)
            .map(|(v, tex)| (v.velocity_um_s * t_s).rem_euclid(tex.period_um() as f64) as f32)
            .collect();
        let mut rgb = vec![0u8; w * h * 3];
        let k = self.absorption;
        let mut frame = self.artefacts.as_ref().map(|_| vec![0.0f32; w * h * 3]);
        let quant = Quantiser {
            gauss: &self.gauss,
            seed: self.spec.seed,
            frame_index,
            grey: self.spec.look == Look::Sublingual,
            noisy: self.spec.noise_sigma > 0.0,
        };
        for y in 0..h {
            let sy = fy + y;
            let row_start = sy * self.scene_w + fx;
            let row = &mut self.row;
            row.copy_from_slice(&self.base[row_start * 3..(row_start + w) * 3]);
            // Moving red cells of perfused vessels in this row.
            for (x, p) in flow_in_row(&self.flow, &self.flow_rows, sy, row_start, w) {
                let tex = &self.textures[p.vessel as usize];
                let s = p.arclength_um - displacement[p.vessel as usize];
                let a = p.absorbance * tex.sample(s, p.cross_um);
                for c in 0..3 {
                    row[x * 3 + c] *= (-k[c] * a).exp();
                }
            }
            match frame.as_mut() {
                Some(f) => f[y * w * 3..(y + 1) * w * 3].copy_from_slice(row),
                None => quant.row(y, row, &mut rgb[y * w * 3..(y + 1) * w * 3]),
            }
        }
        if let (Some(mut f), Some(layer)) = (frame, self.artefacts.as_ref()) {
            layer.apply(&mut f);
            for y in 0..h {
                let span = y * w * 3..(y + 1) * w * 3;
                quant.row(y, &f[span.clone()], &mut rgb[span]);
            }
        }
        let pts_ns = self.spec.pts_ns(frame_index);
        let field = self.field_truth([fx, fy]);
        RenderedFrame {
            rgb,
            mask: field.mask.clone(),
            truth: FrameTruth {
                frame_index,
                pts_ns,
                capillary_count: field.count,
                area_fraction: field.area_fraction,
                centerline_length_um: field.length_um,
            },
        }
    }

    /// Pixels of frame `frame_index`'s field (0 or 255, aligned with its `mask`) where red cells move: the lumen of
    /// perfused vessels. The per-pixel flow truth, e.g. for the MFI of a quadrant.
    pub fn perfused_mask(&self, frame_index: u32) -> Vec<u8> {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        let [fx, fy] = self.origin(frame_index);
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            let sy = fy + y;
            let row_start = sy * self.scene_w + fx;
            for (x, p) in flow_in_row(&self.flow, &self.flow_rows, sy, row_start, w) {
                // Cells are drawn a little past the lumen edge, where they fade out.
                if self.mask[p.index as usize] > 0 {
                    out[y * w + x] = 255;
                }
            }
        }
        out
    }

    /// Cleaned mask and measurements of the field at `origin` (cached for the last origin).
    fn field_truth(&mut self, origin: [usize; 2]) -> &FieldTruth {
        if self.cache.as_ref().map(|c| c.origin) != Some(origin) {
            let (w, h) = (self.spec.width as usize, self.spec.height as usize);
            let [fx, fy] = origin;
            let mut mask = vec![0u8; w * h];
            for y in 0..h {
                let s = (fy + y) * self.scene_w + fx;
                mask[y * w..(y + 1) * w].copy_from_slice(&self.mask[s..s + w]);
            }
            let (count, pixels) =
                self.labeller
                    .clean_and_count(&mut mask, w, h, MIN_COMPONENT_PIXELS);
            let (x0, y0) = (fx as f64 - 0.5, fy as f64 - 0.5);
            let (x1, y1) = (x0 + w as f64, y0 + h as f64);
            let length_px: f64 = self
                .geometry
                .iter()
                .zip(&self.bboxes)
                .filter(|(_, b)| b[2] >= x0 && b[0] <= x1 && b[3] >= y0 && b[1] <= y1)
                .map(|(v, _)| clipped_length(&v.points, x0, y0, x1, y1))
                .sum();
            self.cache = Some(FieldTruth {
                origin,
                mask,
                count,
                area_fraction: pixels as f64 / (w * h) as f64,
                length_um: length_px * self.spec.um_per_px,
            });
        }
        self.cache.as_ref().expect("cache was just filled")
    }
}

/// The moving-cell pixels of scene row `sy` inside the field row that starts at scene index `row_start` and is `w`
/// wide, each with its column in the field.
fn flow_in_row<'a>(
    flow: &'a [FlowPixel],
    flow_rows: &[u32],
    sy: usize,
    row_start: usize,
    w: usize,
) -> impl Iterator<Item = (usize, &'a FlowPixel)> {
    let row = &flow[flow_rows[sy] as usize..flow_rows[sy + 1] as usize];
    let first = row.partition_point(|p| (p.index as usize) < row_start);
    row[first..]
        .iter()
        .map(move |p| (p.index as usize - row_start, p))
        .take_while(move |&(x, _)| x < w)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small noiseless, motionless clip with half of its 16 vessels perfused.
    fn still_half_perfused() -> SynthSpec {
        SynthSpec {
            width: 320,
            height: 180,
            capillaries: 16,
            perfused_fraction: 0.5,
            noise_sigma: 0.0,
            drift_px_per_frame: [0.0, 0.0],
            ..SynthSpec::default()
        }
    }

    #[test]
    fn only_perfused_vessel_pixels_change() {
        let spec = still_half_perfused();
        let mut r = Renderer::new(&spec).unwrap();
        let (a, b) = (r.render(0), r.render(1));
        let w = spec.width as usize;
        let mut flowing = vec![false; a.mask.len()];
        let mut changed_per_vessel = vec![0usize; r.vessels.len()];
        for p in &r.flow {
            let (x, y) = (p.index as usize % r.scene_w, p.index as usize / r.scene_w);
            let i = y * w + x;
            flowing[i] = true;
            if a.rgb[i * 3 + 1] != b.rgb[i * 3 + 1] {
                changed_per_vessel[p.vessel as usize] += 1;
            }
        }
        for (i, flows) in flowing.iter().enumerate() {
            if !flows {
                assert_eq!(
                    a.rgb[i * 3..i * 3 + 3],
                    b.rgb[i * 3..i * 3 + 3],
                    "static pixel {i}"
                );
            }
        }
        let perfused: Vec<&VesselTruth> = r.vessels.iter().filter(|v| v.perfused).collect();
        assert_eq!(perfused.len(), 8);
        for v in perfused {
            assert!(v.velocity_um_s >= 200.0);
            assert!(
                changed_per_vessel[v.vessel_id as usize] > 0,
                "vessel {} static",
                v.vessel_id
            );
        }
        for v in r.vessels.iter().filter(|v| !v.perfused) {
            assert_eq!(v.velocity_um_s, 0.0);
            assert_eq!(changed_per_vessel[v.vessel_id as usize], 0);
        }
    }

    #[test]
    fn the_perfused_mask_holds_every_changing_pixel_and_drifts_with_the_field() {
        let still = still_half_perfused();
        let mut r = Renderer::new(&still).unwrap();
        let (a, b) = (r.render(0), r.render(1));
        let perfused = r.perfused_mask(0);
        let changed = (0..perfused.len())
            .filter(|&i| a.rgb[i * 3..i * 3 + 3] != b.rgb[i * 3..i * 3 + 3])
            .collect::<Vec<_>>();
        let lumen_changed = changed.iter().filter(|&&i| a.mask[i] > 0).count();
        assert!(lumen_changed > 100, "{lumen_changed} lumen pixels changed");
        assert!(changed
            .iter()
            .all(|&i| (perfused[i] == 255) == (a.mask[i] > 0)));
        let lumen = a.mask.iter().filter(|&&m| m > 0).count();
        let moving = perfused.iter().filter(|&&m| m > 0).count();
        assert!(
            moving > 0 && moving < lumen,
            "{moving} of {lumen} lumen pixels"
        );

        let drifting = SynthSpec {
            drift_px_per_frame: [2.0, 0.0],
            ..still
        };
        let r = Renderer::new(&drifting).unwrap();
        let (m0, m1) = (r.perfused_mask(0), r.perfused_mask(1));
        let w = drifting.width as usize;
        for y in 0..drifting.height as usize {
            assert_eq!(
                m1[y * w + 2..(y + 1) * w],
                m0[y * w..(y + 1) * w - 2],
                "row {y}"
            );
        }
    }

    #[test]
    fn renderer_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Renderer>();
    }
}
