//! Luma levels: a grayscale camera's video keeps its luma in the limited range 16–235 (ITU-R BT.601/709), while
//! colour frames reach the model as full-range RGB (0–255) and the model and the quality thresholds expect that.

/// Full-range level of each limited-range luma value: `(y − 16) · 255 / 219`, rounded and clamped to 0–255.
const EXPAND: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut y = 0;
    while y < 256 {
        let scaled = (y as i32 - 16) * 255;
        // Round half up; integer arithmetic, so the table is exact on every target.
        let level = (scaled + 219 / 2).div_euclid(219);
        table[y] = if level < 0 {
            0
        } else if level > 255 {
            255
        } else {
            level as u8
        };
        y += 1;
    }
    table
};

/// Stretches limited-range luma (16–235) in place to full range (0–255), as a YUV-to-RGB conversion does; values
/// outside 16–235 (codec overshoot) clamp to black and white.
pub fn expand_limited(levels: &mut [u8]) {
    for v in levels {
        *v = EXPAND[*v as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_range_luma_is_stretched_to_full_range() {
        let mut levels: Vec<u8> = vec![0, 15, 16, 17, 126, 128, 235, 236, 255];
        expand_limited(&mut levels);
        assert_eq!(levels, [0, 0, 0, 1, 128, 130, 255, 255, 255]);
        for y in 16..=235u8 {
            let want = ((y as f64 - 16.0) * 255.0 / 219.0).round() as u8;
            assert_eq!(EXPAND[y as usize], want, "y = {y}");
        }
    }
}
