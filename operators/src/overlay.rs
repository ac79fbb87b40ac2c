//! Evidence images: the analysed plane with the vessels found drawn over it, so a person can check a window's
//! numbers by eye (the replaced system's "analysed image"). Pure pixels in, pixels out; encoding and storage are the
//! caller's.

use crate::vessels::VesselMap;

/// Colour of vessels thinner than the small-vessel threshold (the capillaries): yellow.
pub const SMALL_VESSEL: [u8; 3] = [255, 214, 0];
/// Colour of larger vessels (venules): magenta.
pub const LARGE_VESSEL: [u8; 3] = [235, 40, 200];

/// An 8-bit RGB image, rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    /// Width, px.
    pub width: usize,
    /// Height, px.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// The grey plane `luma` (`width` × `height`, values 0..=255) with every centre line of `vessels` drawn over it,
/// about 3 px wide, yellow below `small_diameter_um` and magenta above. The vessel map may have another size than the
/// plane (the model's working resolution); its coordinates are scaled.
pub fn vessel_overlay(
    luma: &[f32],
    width: usize,
    height: usize,
    vessels: &VesselMap,
    small_diameter_um: f64,
) -> Rgb {
    assert_eq!(luma.len(), width * height, "luma plane size");
    let mut data: Vec<u8> = luma
        .iter()
        .flat_map(|&v| {
            let g = v.clamp(0.0, 255.0).round() as u8;
            [g, g, g]
        })
        .collect();
    let sx = width as f64 / vessels.width.max(1) as f64;
    let sy = height as f64 / vessels.height.max(1) as f64;
    for segment in &vessels.segments {
        let colour = if segment.diameter_um < small_diameter_um {
            SMALL_VESSEL
        } else {
            LARGE_VESSEL
        };
        for &(x, y) in &segment.points {
            let cx = ((x as f64 + 0.5) * sx) as i64;
            let cy = ((y as f64 + 0.5) * sy) as i64;
            for (dx, dy) in [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)] {
                let (px, py) = (cx + dx, cy + dy);
                if px >= 0 && py >= 0 && (px as usize) < width && (py as usize) < height {
                    let i = (py as usize * width + px as usize) * 3;
                    data[i..i + 3].copy_from_slice(&colour);
                }
            }
        }
    }
    Rgb {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vessels::{vessel_map, VesselParams};

    #[test]
    fn centre_lines_are_drawn_in_their_class_colour_over_the_grey_plane() {
        // A 40×20 plane with a thin horizontal vessel (3 px) and a wide vertical one (11 px), both as mask and
        // as darker pixels.
        let (w, h) = (40usize, 30usize);
        let mut mask = vec![false; w * h];
        for x in 2..38 {
            for y in 4..7 {
                mask[y * w + x] = true;
            }
        }
        for y in 10..29 {
            for x in 20..31 {
                mask[y * w + x] = true;
            }
        }
        let luma: Vec<f32> = mask.iter().map(|&m| if m { 60.0 } else { 180.0 }).collect();
        let map = vessel_map(&mask, w, h, 2.0, &VesselParams::default());
        let image = vessel_overlay(&luma, w, h, &map, 10.0);
        assert_eq!(image.data.len(), w * h * 3);
        let px = |x: usize, y: usize| -> [u8; 3] {
            let i = (y * w + x) * 3;
            [image.data[i], image.data[i + 1], image.data[i + 2]]
        };
        // Background stays grey; the thin vessel's centre row is yellow, the wide one's centre column magenta.
        assert_eq!(px(0, 0), [180, 180, 180]);
        assert_eq!(px(10, 5), SMALL_VESSEL);
        assert_eq!(px(25, 20), LARGE_VESSEL);
        // The same map over a plane twice the size lands at twice the coordinates.
        let big_luma = vec![100.0; 4 * w * h];
        let big = vessel_overlay(&big_luma, 2 * w, 2 * h, &map, 10.0);
        let i = (11 * 2 * w + 21) * 3;
        assert_eq!(&big.data[i..i + 3], &SMALL_VESSEL);
    }
}
