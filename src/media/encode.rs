//! Streaming movie encoder for the review step: H.264 MP4 and the delivery codecs
//! of the original's codec table (ProRes through `prores_ks`, DNxHD/DNxHR through
//! `dnxhd`), fed one display-referred 16-bit RGB frame at a time.
//!
//! The traps of `crates-notes.md` are handled here: encoder threads (`threads=auto`),
//! swscale's BT.601 default (BT.709 matrix set explicitly), planar GBRP16 input,
//! colour tags on every frame (prores_ks reads them there), and the `timecode`
//! stream tag set before the header so the MOV/MP4 muxer writes a `tmcd` track.

use std::os::raw::c_int;
use std::path::Path;

use ff::ffi;
use ffmpeg_next as ff;

use super::font::Canvas;
use super::movie::{
    add_video_stream, alloc_frame, ff_message, ffmpeg_err, init, set_colour_details,
};
use super::MediaError;
use crate::timecode::FrameRate;

/// A delivery codec of the original's table (`sg_mov_codec` → Nuke `mov64_codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCodec {
    /// The name as in ShotGrid (`Apple ProRes 422 HQ`).
    pub name: &'static str,
    /// FFmpeg encoder.
    pub encoder: &'static str,
    /// The encoder's `profile` option.
    pub profile: &'static str,
    /// QuickTime fourcc the file carries.
    pub fourcc: &'static str,
    /// Pixel format fed to the encoder.
    pub pix_fmt: ff::format::Pixel,
    /// DNxHD (not HR) exists only at 1920×1080: the picture is fitted into it.
    pub fixed_1080: bool,
    /// DNxHD bit rates in Mbit/s at 23.976/24, 25 and 29.97/30 fps.
    pub dnxhd_rates: Option<[u64; 3]>,
}

/// The codec table (original-app.md §9).
pub fn delivery_codecs() -> Vec<DeliveryCodec> {
    use ff::format::Pixel as P;
    let prores = |name, profile, fourcc, pix| DeliveryCodec {
        name,
        encoder: "prores_ks",
        profile,
        fourcc,
        pix_fmt: pix,
        fixed_1080: false,
        dnxhd_rates: None,
    };
    vec![
        prores("Apple ProRes 4444", "4", "ap4h", P::YUV444P10LE),
        prores("Apple ProRes 422 HQ", "3", "apch", P::YUV422P10LE),
        prores("Apple ProRes 422", "2", "apcn", P::YUV422P10LE),
        prores("Apple ProRes 422 LT", "1", "apcs", P::YUV422P10LE),
        prores("Apple ProRes 422 Proxy", "0", "apco", P::YUV422P10LE),
        DeliveryCodec {
            name: "Avid DNxHD 444",
            encoder: "dnxhd",
            profile: "dnxhd",
            fourcc: "AVdn",
            pix_fmt: P::YUV444P10LE,
            fixed_1080: true,
            dnxhd_rates: Some([350, 390, 440]),
        },
        DeliveryCodec {
            name: "Avid DNxHD 422",
            encoder: "dnxhd",
            profile: "dnxhd",
            fourcc: "AVdn",
            pix_fmt: P::YUV422P10LE,
            fixed_1080: true,
            dnxhd_rates: Some([175, 185, 220]),
        },
        DeliveryCodec {
            name: "Avid DnxHR 422",
            encoder: "dnxhd",
            profile: "dnxhr_hqx",
            fourcc: "AVdh",
            pix_fmt: P::YUV422P10LE,
            fixed_1080: false,
            dnxhd_rates: None,
        },
    ]
}

fn normalise(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// Looks a codec up by its table name (case and spacing ignored). The error
/// lists the valid names.
pub fn delivery_codec(name: &str) -> Result<DeliveryCodec, String> {
    let want = normalise(name);
    let table = delivery_codecs();
    let names = table.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
    table
        .into_iter()
        .find(|c| normalise(c.name) == want)
        .ok_or_else(|| format!("unknown delivery codec {name:?}; valid names are: {names}"))
}

/// What one movie is encoded as.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodeKind {
    /// H.264 (libx264), 4:2:0 8-bit, constant quality.
    H264 {
        /// x264 CRF (0–51).
        crf: u8,
        /// x264 preset.
        preset: String,
    },
    /// A delivery codec.
    Delivery(DeliveryCodec),
}

/// A movie to write.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeSpec {
    /// What to encode with.
    pub kind: EncodeKind,
    /// Picture width fed to [`MovieEncoder::push`].
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frame rate.
    pub fps: FrameRate,
    /// Start timecode label, written as a `tmcd` track.
    pub timecode: Option<String>,
    /// Encoder threads; 0 = the encoder's own choice (libx264: 1.5 × cores).
    pub threads: u32,
}

impl EncodeSpec {
    /// The picture size the encoder takes for a `w × h` plate: even sizes for
    /// subsampled chroma (the last column/row is cropped), 1920×1080 for DNxHD,
    /// at least 256×120 for DNxHR.
    pub fn output_size(kind: &EncodeKind, w: u32, h: u32) -> (u32, u32) {
        match kind {
            EncodeKind::H264 { .. } => ((w & !1).max(2), (h & !1).max(2)),
            EncodeKind::Delivery(c) if c.fixed_1080 => (1920, 1080),
            // DNxHR refuses pictures under 256×120: small ones are letterboxed.
            EncodeKind::Delivery(c) if c.encoder == "dnxhd" => ((w & !1).max(256), h.max(120)),
            EncodeKind::Delivery(_) => (w.max(1), h.max(1)),
        }
    }
}

pub use super::Rgb16;

impl Rgb16 {
    /// This picture as `w × h`: the same picture, its top-left crop when only the
    /// last row/column differ (even sizes), else fitted with its aspect kept
    /// (bilinear) and centred on black.
    pub fn placed(self, w: u32, h: u32) -> Rgb16 {
        if self.width == w && self.height == h {
            return self;
        }
        let (sw, sh) = (self.width as usize, self.height as usize);
        if w <= self.width && h <= self.height && self.width - w <= 1 && self.height - h <= 1 {
            let planes = self.planes.map(|p| {
                let mut out = Vec::with_capacity(w as usize * h as usize);
                for y in 0..h as usize {
                    out.extend_from_slice(&p[y * sw..y * sw + w as usize]);
                }
                out
            });
            return Rgb16 {
                width: w,
                height: h,
                planes,
            };
        }
        let mut out = Rgb16::black(w, h);
        if sw == 0 || sh == 0 {
            return out;
        }
        let scale = (f64::from(w) / sw as f64).min(f64::from(h) / sh as f64);
        let fw = ((sw as f64 * scale).round() as usize).clamp(1, w as usize);
        let fh = ((sh as f64 * scale).round() as usize).clamp(1, h as usize);
        let (ox, oy) = ((w as usize - fw) / 2, (h as usize - fh) / 2);
        let ow = w as usize;
        for (dst, src) in out.planes.iter_mut().zip(&self.planes) {
            let p = |xx: usize, yy: usize| f32::from(src[yy * sw + xx]);
            for y in 0..fh {
                let sy = ((y as f64 + 0.5) / scale - 0.5).clamp(0.0, (sh - 1) as f64);
                let (y0, fy) = (sy.floor() as usize, sy.fract() as f32);
                let y1 = (y0 + 1).min(sh - 1);
                for x in 0..fw {
                    let sx = ((x as f64 + 0.5) / scale - 0.5).clamp(0.0, (sw - 1) as f64);
                    let (x0, fx) = (sx.floor() as usize, sx.fract() as f32);
                    let x1 = (x0 + 1).min(sw - 1);
                    let top = p(x0, y0) + (p(x1, y0) - p(x0, y0)) * fx;
                    let bot = p(x0, y1) + (p(x1, y1) - p(x0, y1)) * fx;
                    dst[(oy + y) * ow + ox + x] = (top + (bot - top) * fy).round() as u16;
                }
            }
        }
        out
    }
}

/// Writes one movie frame by frame. Create with [`MovieEncoder::create`], feed
/// pictures of exactly the spec's size with [`MovieEncoder::push`], then
/// [`MovieEncoder::finish`].
pub struct MovieEncoder {
    path: std::path::PathBuf,
    octx: ff::format::context::Output,
    enc: ff::encoder::Video,
    sws: ff::software::scaling::Context,
    width: u32,
    height: u32,
    stream_index: usize,
    time_base: ff::Rational,
    stream_tb: ff::Rational,
    next_pts: i64,
    /// The GBRP16 copy handed to swscale when the burn-in draws on a picture
    /// (made on first use, then reused).
    rgb: Option<ff::frame::Video>,
    /// The encoder's input pictures: a frame-threaded encoder (prores_ks,
    /// dnxhd) keeps a reference to each picture until a thread has encoded it,
    /// so the next picture goes into one it has let go of. Without this pool
    /// every picture was a fresh allocation (and a copy): 10 MB of new pages
    /// per 2K ProRes frame.
    yuv: Vec<ff::frame::Video>,
    /// Size and format of the pictures in `yuv`.
    yuv_format: ff::format::Pixel,
    packet: ff::Packet,
}

fn bad(path: &Path, detail: impl Into<String>) -> MediaError {
    MediaError::Unsupported {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

impl MovieEncoder {
    /// Opens `path` (MP4 for H.264, MOV for the delivery codecs, whatever the
    /// name) and writes the header.
    pub fn create(path: &Path, spec: &EncodeSpec) -> Result<MovieEncoder, MediaError> {
        use ff::color;
        init();
        let fail = |what: &'static str| move |e: ff::Error| ffmpeg_err(path, what, e);
        let container = match spec.kind {
            EncodeKind::H264 { .. } => "mp4",
            EncodeKind::Delivery(_) => "mov",
        };
        // The muxer comes from the kind, not the name: the step writes to an iom
        // temporary name and renames it into place.
        let url = path
            .to_str()
            .map(|s| format!("file:{s}"))
            .ok_or_else(|| bad(path, "the output path is not valid Unicode"))?;
        let (encoder_name, pix) = match &spec.kind {
            EncodeKind::H264 { .. } => ("libx264", ff::format::Pixel::YUV420P),
            EncodeKind::Delivery(c) => (c.encoder, c.pix_fmt),
        };
        let (w, h) = (spec.width, spec.height);
        if w == 0 || h == 0 || w > 16384 || h > 16384 {
            return Err(bad(
                path,
                format!("picture size {w}×{h} is outside 1..16384"),
            ));
        }
        let (num, den) = (spec.fps.num, spec.fps.den);
        if num == 0 || den == 0 || num > i32::MAX as u32 || den > i32::MAX as u32 {
            return Err(bad(path, format!("invalid frame rate {num}/{den}")));
        }
        let codec = ff::encoder::find_by_name(encoder_name).ok_or_else(|| {
            bad(
                path,
                format!("this FFmpeg has no encoder named {encoder_name:?}"),
            )
        })?;
        let mut octx =
            ff::format::output_as(&url, container).map_err(fail("creating the output"))?;
        let global_header = octx
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let fps = ff::Rational::new(num as i32, den as i32);
        let time_base = ff::Rational::new(den as i32, num as i32);

        let ctx = ff::codec::context::Context::new_with_codec(codec);
        let mut enc = ctx
            .encoder()
            .video()
            .map_err(fail("creating the encoder"))?;
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(pix);
        enc.set_time_base(time_base);
        enc.set_frame_rate(Some(fps));
        enc.set_aspect_ratio(ff::Rational::new(1, 1));
        enc.set_color_range(color::Range::MPEG);
        enc.set_color_primaries(color::Primaries::BT709);
        enc.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
        enc.set_colorspace(color::Space::BT709);
        let mut opts = ff::Dictionary::new();
        match spec.threads {
            0 => opts.set("threads", "auto"),
            n => opts.set("threads", &n.to_string()),
        }
        match &spec.kind {
            EncodeKind::H264 { crf, preset } => {
                opts.set("crf", &crf.min(&51).to_string());
                opts.set("preset", preset);
                opts.set("profile", "high");
                // No frames buffered for a lookahead thread of its own: the
                // lookahead runs in x264's encoding threads. The bitstream is
                // bit-identical (checked with the CLI), ~20 MB less at 2K.
                opts.set("x264-params", "sync-lookahead=0");
                enc.set_gop(fps.numerator().max(1) as u32 / fps.denominator().max(1) as u32);
            }
            EncodeKind::Delivery(c) => {
                opts.set("profile", c.profile);
                if c.encoder == "prores_ks" {
                    opts.set("vendor", "apl0");
                }
                if let Some(rates) = c.dnxhd_rates {
                    let f = spec.fps.as_f64();
                    let mbit = if f < 24.5 {
                        rates[0]
                    } else if f < 27.0 {
                        rates[1]
                    } else {
                        rates[2]
                    };
                    enc.set_bit_rate((mbit * 1_000_000) as usize);
                }
            }
        }
        if global_header {
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let enc = enc.open_with(opts).map_err(|e| {
            bad(
                path,
                format!(
                    "{encoder_name} refused {w}×{h} at {} fps as {pix:?}: {}",
                    spec.fps.label(),
                    ff_message(e)
                ),
            )
        })?;
        let stream_index = add_video_stream(
            &mut octx,
            codec,
            &enc,
            time_base,
            fps,
            spec.timecode.as_deref(),
        )
        .map_err(fail("adding the video stream"))?;
        let mut header_opts = ff::Dictionary::new();
        if container == "mp4" {
            header_opts.set("movflags", "+faststart");
        }
        octx.write_header_with(header_opts)
            .map_err(fail("writing the header"))?;
        let stream_tb = octx
            .stream(stream_index)
            .map(|s| s.time_base())
            .unwrap_or(time_base);
        let mut sws = ff::software::scaling::Context::get(
            ff::format::Pixel::GBRP16LE,
            w,
            h,
            pix,
            w,
            h,
            ff::software::scaling::Flags::BICUBIC | ff::software::scaling::Flags::ACCURATE_RND,
        )
        .map_err(fail("creating the RGB→YUV converter"))?;
        // SAFETY: live context; trap 2 (swscale assumes BT.601 otherwise).
        unsafe {
            set_colour_details(
                sws.as_mut_ptr(),
                ffi::SWS_CS_ITU709,
                true,
                ffi::SWS_CS_ITU709,
                false,
            )
        };
        let yuv = alloc_frame(pix, w, h).ok_or_else(|| bad(path, "cannot allocate a YUV frame"))?;
        Ok(MovieEncoder {
            path: path.to_path_buf(),
            octx,
            enc,
            sws,
            width: w,
            height: h,
            stream_index,
            time_base,
            stream_tb,
            next_pts: 0,
            rgb: None,
            yuv: vec![yuv],
            yuv_format: pix,
            packet: ff::Packet::empty(),
        })
    }

    /// The picture size this encoder takes.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Encodes one picture (exactly the encoder's size); `overlay` may draw on it
    /// (burn-in, slate) before it is converted. Without an overlay swscale reads
    /// the picture's planes where they are; with one they are copied first.
    pub fn push(
        &mut self,
        pic: &Rgb16,
        overlay: Option<&mut dyn FnMut(&mut Canvas<'_>)>,
    ) -> Result<(), MediaError> {
        let (w, h) = (self.width as usize, self.height as usize);
        if pic.width != self.width
            || pic.height != self.height
            || pic.planes.iter().any(|p| p.len() != w * h)
        {
            return Err(bad(
                &self.path,
                format!(
                    "a {}×{} picture was given to a {}×{} encoder",
                    pic.width, pic.height, self.width, self.height
                ),
            ));
        }
        let row = w * 2;
        // swscale wants 16-byte aligned rows; the planes are native-endian u16.
        let direct = overlay.is_none()
            && cfg!(target_endian = "little")
            && row.is_multiple_of(16)
            && pic
                .planes
                .iter()
                .all(|p| (p.as_ptr() as usize).is_multiple_of(16));
        // GBRP16 plane order: G, B, R.
        let (src, src_stride): ([*const u8; 4], [c_int; 4]) = if direct {
            (
                [
                    pic.planes[1].as_ptr().cast(),
                    pic.planes[2].as_ptr().cast(),
                    pic.planes[0].as_ptr().cast(),
                    std::ptr::null(),
                ],
                [row as c_int, row as c_int, row as c_int, 0],
            )
        } else {
            if self.rgb.is_none() {
                self.rgb = Some(
                    alloc_frame(ff::format::Pixel::GBRP16LE, self.width, self.height)
                        .ok_or_else(|| bad(&self.path, "cannot allocate an RGB frame"))?,
                );
            }
            let Some(rgb) = self.rgb.as_mut() else {
                return Err(bad(&self.path, "cannot allocate an RGB frame"));
            };
            for (plane, src) in [
                (0usize, &pic.planes[1]),
                (1, &pic.planes[2]),
                (2, &pic.planes[0]),
            ] {
                let stride = rgb.stride(plane);
                let dst = rgb.data_mut(plane);
                for (drow, srow) in dst.chunks_mut(stride).zip(src.chunks_exact(w)).take(h) {
                    for (d, s) in drow[..row].chunks_exact_mut(2).zip(srow) {
                        d.copy_from_slice(&s.to_le_bytes());
                    }
                }
            }
            // SAFETY: the frame is ours and allocated (checked above); its three
            // planes are disjoint regions of `linesize × height` bytes, so the
            // slices made from them do not overlap, and they are only used in
            // this block, while `rgb` is not otherwise touched.
            unsafe {
                let f = rgb.as_mut_ptr();
                let (data, ls) = ((*f).data, (*f).linesize);
                if let Some(draw) = overlay {
                    let plane =
                        |i: usize| std::slice::from_raw_parts_mut(data[i], ls[i] as usize * h);
                    let mut canvas = Canvas {
                        width: self.width,
                        height: self.height,
                        planes: [plane(2), plane(0), plane(1)],
                        strides: [ls[2] as usize, ls[0] as usize, ls[1] as usize],
                    };
                    draw(&mut canvas);
                }
                (
                    [
                        data[0].cast_const(),
                        data[1].cast_const(),
                        data[2].cast_const(),
                        std::ptr::null(),
                    ],
                    [ls[0], ls[1], ls[2], 0],
                )
            }
        };
        // A picture the encoder holds no reference to (else a new one, kept).
        // SAFETY: live frames we own.
        let free = self
            .yuv
            .iter()
            .position(|f| unsafe { ffi::av_frame_is_writable(f.as_ptr().cast_mut()) } > 0);
        let slot = match free {
            Some(i) => i,
            None => {
                let f = alloc_frame(self.yuv_format, self.width, self.height)
                    .ok_or_else(|| bad(&self.path, "cannot allocate a YUV frame"))?;
                self.yuv.push(f);
                self.yuv.len() - 1
            }
        };
        // SAFETY: `src` points at three planes of `h` rows of `src_stride` bytes
        // (the picture's, checked above, or the RGB frame's), which stay alive
        // and unchanged during the call; the YUV frame is writable and of the
        // size and format the context was made for.
        let scaled = unsafe {
            let y = self.yuv[slot].as_mut_ptr();
            ffi::sws_scale(
                self.sws.as_mut_ptr(),
                src.as_ptr(),
                src_stride.as_ptr(),
                0,
                h as c_int,
                (*y).data.as_ptr(),
                (*y).linesize.as_ptr(),
            )
        };
        if scaled < 0 {
            return Err(ffmpeg_err(
                &self.path,
                "converting RGB to YUV",
                ff::Error::from(scaled),
            ));
        }
        let yuv = &mut self.yuv[slot];
        yuv.set_pts(Some(self.next_pts));
        self.next_pts += 1;
        yuv.set_color_range(ff::color::Range::MPEG);
        // Trap 3: prores_ks takes the tags from each frame.
        yuv.set_color_primaries(ff::color::Primaries::BT709);
        yuv.set_color_transfer_characteristic(ff::color::TransferCharacteristic::BT709);
        yuv.set_color_space(ff::color::Space::BT709);
        self.enc
            .send_frame(&self.yuv[slot])
            .map_err(|e| ffmpeg_err(&self.path, "encoding a frame", e))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), MediaError> {
        loop {
            match self.enc.receive_packet(&mut self.packet) {
                Ok(()) => {
                    self.packet.set_stream(self.stream_index);
                    self.packet.rescale_ts(self.time_base, self.stream_tb);
                    self.packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|e| ffmpeg_err(&self.path, "writing a packet", e))?;
                }
                Err(ff::Error::Eof) => return Ok(()),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
                Err(e) => return Err(ffmpeg_err(&self.path, "encoding", e)),
            }
        }
    }

    /// Flushes the encoder and writes the trailer. Returns the frames written.
    pub fn finish(mut self) -> Result<u64, MediaError> {
        self.enc
            .send_eof()
            .map_err(|e| ffmpeg_err(&self.path, "flushing the encoder", e))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(|e| ffmpeg_err(&self.path, "writing the trailer", e))?;
        Ok(self.next_pts as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_table_lookup_ignores_case_and_spacing() {
        let c = delivery_codec("apple  prores 422 hq").unwrap();
        assert_eq!((c.encoder, c.profile, c.fourcc), ("prores_ks", "3", "apch"));
        assert_eq!(
            delivery_codec("Avid DNxHR 422").unwrap().profile,
            "dnxhr_hqx"
        );
        let e = delivery_codec("Apple ProRes 9000").unwrap_err();
        assert!(e.contains("Apple ProRes 4444") && e.contains("9000"), "{e}");
        assert_eq!(delivery_codecs().len(), 8);
    }

    #[test]
    fn placing_crops_odd_sizes_and_letterboxes_others() {
        let mut p = Rgb16::black(5, 3);
        p.planes.iter_mut().flatten().for_each(|v| *v = 1000);
        let c = p.clone().placed(4, 2);
        assert_eq!((c.width, c.height), (4, 2));
        assert!(c
            .planes
            .iter()
            .all(|p| p.len() == 8 && p.iter().all(|&v| v == 1000)));
        let l = p.placed(10, 10);
        // 5×3 fitted into 10×10 is 10×6, centred: rows 0-1 black, row 5 grey.
        assert_eq!(l.pixel(0, 0), [0; 3]);
        assert_eq!(l.pixel(5, 5), [1000; 3]);
    }
}
