//! A tiny built-in 5×7 bitmap font for burn-ins and slates (no font files, no
//! ImageMagick, no Nuke). Text is drawn upper-case; characters without a glyph
//! print as `?`.
//!
//! Drawing works on planar 16-bit RGB (the GBRP16 frames the review encoder
//! feeds to swscale): [`Canvas`] borrows the three planes.

/// Glyph width in font pixels.
pub const GLYPH_W: u32 = 5;
/// Glyph height in font pixels.
pub const GLYPH_H: u32 = 7;
/// Advance per character (glyph plus one column of spacing).
pub const ADVANCE: u32 = GLYPH_W + 1;

/// Rows of a glyph, top first; bit 4 is the leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        ' ' => [0, 0, 0, 0, 0, 0, 0],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        ';' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '×' | '*' => [0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x00],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// Width in image pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    let n = text.chars().count() as u32;
    if n == 0 {
        0
    } else {
        (n * ADVANCE - 1) * scale
    }
}

/// Height in image pixels of one line at `scale`.
pub fn text_height(scale: u32) -> u32 {
    GLYPH_H * scale
}

/// Three 16-bit planes (R, G, B order here; the caller maps them to GBRP's
/// plane order) of a `width × height` picture with a byte stride per row.
pub struct Canvas<'a> {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// R, G, B planes of little-endian u16 samples.
    pub planes: [&'a mut [u8]; 3],
    /// Bytes per row of each plane.
    pub strides: [usize; 3],
}

/// A picture the font draws on: 16-bit RGB values in, whatever the storage.
/// Coordinates passed to the provided methods are clipped to the picture.
pub trait Surface {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// The pixel at (`x`, `y`), inside the picture.
    fn get(&self, x: usize, y: usize) -> [u16; 3];
    /// Sets the pixel at (`x`, `y`), inside the picture.
    fn set(&mut self, x: usize, y: usize, rgb: [u16; 3]);

    /// Sets one pixel (clipped to the picture).
    fn put(&mut self, x: i64, y: i64, rgb: [u16; 3]) {
        let (w, h) = self.size();
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            return;
        }
        self.set(x as usize, y as usize, rgb);
    }

    /// Fills a rectangle (clipped), blending towards `rgb` by `alpha` (0..=1).
    fn fill_rect(&mut self, x: i64, y: i64, w: u32, h: u32, rgb: [u16; 3], alpha: f32) {
        let a = alpha.clamp(0.0, 1.0);
        let (pw, ph) = self.size();
        for yy in y.max(0)..(y + i64::from(h)).min(i64::from(ph)) {
            for xx in x.max(0)..(x + i64::from(w)).min(i64::from(pw)) {
                let (ux, uy) = (xx as usize, yy as usize);
                let old = self.get(ux, uy);
                let mut new = [0u16; 3];
                for c in 0..3 {
                    let o = f32::from(old[c]);
                    new[c] = (o + (f32::from(rgb[c]) - o) * a).round() as u16;
                }
                self.set(ux, uy, new);
            }
        }
    }

    /// Draws `text` with its top-left corner at (`x`, `y`), each font pixel a
    /// `scale × scale` block.
    fn draw_text(&mut self, x: i64, y: i64, text: &str, scale: u32, rgb: [u16; 3]) {
        let s = i64::from(scale.max(1));
        for (i, c) in text.chars().enumerate() {
            let gx = x + i as i64 * i64::from(ADVANCE) * s;
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..GLYPH_W as i64 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    for dy in 0..s {
                        for dx in 0..s {
                            self.put(gx + col * s + dx, y + row as i64 * s + dy, rgb);
                        }
                    }
                }
            }
        }
    }

    /// Draws `text` on a darkened box (for legibility over any picture).
    fn label(&mut self, x: i64, y: i64, text: &str, scale: u32) {
        let pad = i64::from(scale.max(1)) * 2;
        let w = text_width(text, scale) + 2 * pad as u32;
        let h = text_height(scale) + 2 * pad as u32;
        self.fill_rect(x - pad, y - pad, w, h, [0, 0, 0], LABEL_BOX_ALPHA);
        self.draw_text(x, y, text, scale, LABEL_TEXT);
    }
}

/// How far [`Surface::label`] darkens the picture under its box.
pub const LABEL_BOX_ALPHA: f32 = 0.6;
/// The colour of [`Surface::label`]'s text (16-bit code values).
pub const LABEL_TEXT: [u16; 3] = [60000, 60000, 60000];

impl Surface for Canvas<'_> {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn get(&self, x: usize, y: usize) -> [u16; 3] {
        let mut out = [0u16; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let i = y * self.strides[c] + x * 2;
            if let Some(d) = self.planes[c].get(i..i + 2) {
                *o = u16::from_le_bytes([d[0], d[1]]);
            }
        }
        out
    }

    fn set(&mut self, x: usize, y: usize, rgb: [u16; 3]) {
        for (c, v) in rgb.iter().enumerate() {
            let i = y * self.strides[c] + x * 2;
            if let Some(d) = self.planes[c].get_mut(i..i + 2) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// 8-bit pictures (JPEG tiles and montage frames): 16-bit values are rounded
/// to 8 bits.
impl Surface for image::RgbImage {
    fn size(&self) -> (u32, u32) {
        self.dimensions()
    }

    fn get(&self, x: usize, y: usize) -> [u16; 3] {
        self.get_pixel(x as u32, y as u32)
            .0
            .map(|v| u16::from(v) * 257)
    }

    fn set(&mut self, x: usize, y: usize, rgb: [u16; 3]) {
        let px = rgb.map(|v| ((u32::from(v) + 128) / 257) as u8);
        self.put_pixel(x as u32, y as u32, image::Rgb(px));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_where_asked() {
        let (w, h) = (40u32, 12u32);
        let mut planes = [
            vec![0u8; (w * h * 2) as usize],
            vec![0u8; (w * h * 2) as usize],
            vec![0u8; (w * h * 2) as usize],
        ];
        {
            let [r, g, b] = &mut planes;
            let mut c = Canvas {
                width: w,
                height: h,
                planes: [r, g, b],
                strides: [(w * 2) as usize; 3],
            };
            c.draw_text(1, 1, "1", 1, [65535, 65535, 65535]);
        }
        let at = |x: u32, y: u32| {
            u16::from_le_bytes([
                planes[0][((y * w + x) * 2) as usize],
                planes[0][((y * w + x) * 2 + 1) as usize],
            ])
        };
        // '1' row 0 is 0x04: only column 2 lit.
        assert_eq!(at(3, 1), 65535);
        assert_eq!(at(1, 1), 0);
        // Bottom row 0x0E: columns 1..=3.
        assert_eq!(at(2, 7), 65535);
        assert_eq!(text_width("AB", 2), 22);
    }
}
