//! SMPTE timecode and frame-rate arithmetic.
//!
//! Pure functions, no IO. A [`Timecode`] is stored as a frame count since
//! `00:00:00:00` at a given [`FrameRate`]; the `HH:MM:SS:FF` label is derived from
//! it, with drop-frame counting for 29.97 and 59.94. Every rate the farm sees is
//! supported: 23.976, 24, 25, 29.97 DF/NDF, 30, 48, 50, 59.94 DF/NDF, 60.
//!
//! The original assumed a 24-fps hour (`86400` frames) whatever the rate and
//! rounded 23.976 to 24 with a 24-fps timebase; here the label counts with the
//! *nominal* rate (24 for 23.976, 30 for 29.97), which is what SMPTE 12M says,
//! and an hour is `3600 × nominal` frames.

use std::fmt;
use std::str::FromStr;

/// A frame rate as an exact rational, e.g. `24000/1001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FrameRate {
    /// Numerator (frames).
    pub num: u32,
    /// Denominator (seconds).
    pub den: u32,
}

/// Why a timecode or a frame rate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimecodeError {
    /// The text is not `HH:MM:SS:FF` (or `;` for drop frame).
    #[error("invalid timecode {0:?}: expected HH:MM:SS:FF (or HH:MM:SS;FF for drop frame)")]
    Syntax(String),
    /// A field is out of range for the rate, e.g. frame 25 at 25 fps.
    #[error("timecode {text:?} is out of range at {rate} fps: {why}")]
    Range {
        /// The text as given.
        text: String,
        /// The rate it was read at.
        rate: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Drop frame asked for at a rate that has none (only 29.97 and 59.94 do).
    #[error("drop-frame timecode is only defined at 29.97 and 59.94 fps, not {0}")]
    DropFrameRate(String),
    /// A frame rate that is zero, negative or not a number.
    #[error("invalid frame rate {0:?}")]
    Rate(String),
}

impl FrameRate {
    /// 23.976 (24000/1001).
    pub const FPS_23_976: FrameRate = FrameRate::new(24000, 1001);
    /// 24.
    pub const FPS_24: FrameRate = FrameRate::new(24, 1);
    /// 25.
    pub const FPS_25: FrameRate = FrameRate::new(25, 1);
    /// 29.97 (30000/1001).
    pub const FPS_29_97: FrameRate = FrameRate::new(30000, 1001);
    /// 30.
    pub const FPS_30: FrameRate = FrameRate::new(30, 1);
    /// 48.
    pub const FPS_48: FrameRate = FrameRate::new(48, 1);
    /// 50.
    pub const FPS_50: FrameRate = FrameRate::new(50, 1);
    /// 59.94 (60000/1001).
    pub const FPS_59_94: FrameRate = FrameRate::new(60000, 1001);
    /// 60.
    pub const FPS_60: FrameRate = FrameRate::new(60, 1);

    /// A rate from its rational parts. `den` must not be zero.
    pub const fn new(num: u32, den: u32) -> Self {
        FrameRate { num, den }
    }

    /// Rebuilds an exact rate from a float header value (DPX stores `23.976` as f32),
    /// snapping to the NTSC rationals when within 0.01 of them.
    pub fn from_f64(fps: f64) -> Result<Self, TimecodeError> {
        if !fps.is_finite() || fps <= 0.0 || fps > 1000.0 {
            return Err(TimecodeError::Rate(format!("{fps}")));
        }
        for ntsc in [Self::FPS_23_976, Self::FPS_29_97, Self::FPS_59_94] {
            if (fps - ntsc.as_f64()).abs() < 0.01 {
                return Ok(ntsc);
            }
        }
        let rounded = fps.round();
        if (fps - rounded).abs() < 0.001 {
            return Ok(FrameRate::new(rounded as u32, 1));
        }
        // Other fractional rates: keep three decimals exactly.
        Ok(FrameRate::new((fps * 1000.0).round() as u32, 1000).reduced())
    }

    /// The rate as a float.
    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// The integer rate timecode labels count with (24 for 23.976, 30 for 29.97).
    pub fn nominal(self) -> u32 {
        (self.as_f64().round() as u32).max(1)
    }

    /// Whether drop-frame counting exists at this rate (29.97 and 59.94).
    pub fn has_drop_frame(self) -> bool {
        self.den == 1001 && (self.num == 30000 || self.num == 60000)
    }

    /// The same rate with numerator and denominator divided by their gcd.
    pub fn reduced(self) -> Self {
        fn gcd(a: u32, b: u32) -> u32 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let g = gcd(self.num, self.den).max(1);
        FrameRate::new(self.num / g, self.den / g)
    }

    /// Frames in one timecode hour at this rate (`3600 × nominal`, less dropped labels).
    pub fn frames_per_hour(self, drop_frame: bool) -> i64 {
        let n = i64::from(self.nominal());
        if drop_frame && self.has_drop_frame() {
            let drop = n / 15;
            n * 3600 - drop * 54
        } else {
            n * 3600
        }
    }

    /// Short display: `24`, `23.976`, `29.97`.
    pub fn label(self) -> String {
        if self.den == 1 {
            self.num.to_string()
        } else {
            let v = self.as_f64();
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for FrameRate {
    type Err = TimecodeError;

    /// Accepts `24`, `23.976`, `24000/1001`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some((n, d)) = t.split_once('/') {
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| TimecodeError::Rate(s.into()))?;
            let d: u32 = d
                .trim()
                .parse()
                .map_err(|_| TimecodeError::Rate(s.into()))?;
            if n == 0 || d == 0 {
                return Err(TimecodeError::Rate(s.into()));
            }
            return Ok(FrameRate::new(n, d).reduced());
        }
        let v: f64 = t.parse().map_err(|_| TimecodeError::Rate(s.into()))?;
        FrameRate::from_f64(v)
    }
}

/// A point in time as a frame count at a frame rate, labelled `HH:MM:SS:FF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timecode {
    frames: i64,
    rate: FrameRate,
    drop_frame: bool,
}

const DAY_HOURS: i64 = 24;

impl Timecode {
    /// A timecode `frames` frames after midnight. Wraps at 24 hours.
    pub fn from_frames(frames: i64, rate: FrameRate, drop_frame: bool) -> Self {
        let drop_frame = drop_frame && rate.has_drop_frame();
        let day = rate.frames_per_hour(drop_frame) * DAY_HOURS;
        Timecode {
            frames: frames.rem_euclid(day),
            rate,
            drop_frame,
        }
    }

    /// Builds a timecode from its fields, checking each against the rate.
    pub fn from_parts(
        h: u32,
        m: u32,
        s: u32,
        f: u32,
        rate: FrameRate,
        drop_frame: bool,
    ) -> Result<Self, TimecodeError> {
        let text = format!(
            "{h:02}:{m:02}:{s:02}{}{f:02}",
            if drop_frame { ';' } else { ':' }
        );
        let range = |why| TimecodeError::Range {
            text: text.clone(),
            rate: rate.label(),
            why,
        };
        if drop_frame && !rate.has_drop_frame() {
            return Err(TimecodeError::DropFrameRate(rate.label()));
        }
        if h >= 24 {
            return Err(range("hours must be below 24"));
        }
        if m >= 60 {
            return Err(range("minutes must be below 60"));
        }
        if s >= 60 {
            return Err(range("seconds must be below 60"));
        }
        let n = rate.nominal();
        if f >= n {
            return Err(range("frame number must be below the nominal rate"));
        }
        let (h, m, s, f) = (i64::from(h), i64::from(m), i64::from(s), i64::from(f));
        let n = i64::from(n);
        let mut frames = ((h * 60 + m) * 60 + s) * n + f;
        if drop_frame {
            let drop = n / 15;
            if s == 0 && f < drop && m % 10 != 0 {
                return Err(range("this label is dropped in drop-frame counting"));
            }
            let total_minutes = h * 60 + m;
            frames -= drop * (total_minutes - total_minutes / 10);
        }
        Ok(Timecode::from_frames(frames, rate, drop_frame))
    }

    /// Parses `HH:MM:SS:FF`. A `;`, `.` or `,` before the frames field means drop frame
    /// (only accepted at 29.97/59.94). `force_drop` reads `:` labels as drop frame too,
    /// as an EDL with `FCM: DROP FRAME` requires.
    pub fn parse(text: &str, rate: FrameRate, force_drop: bool) -> Result<Self, TimecodeError> {
        let t = text.trim();
        let bytes = t.as_bytes();
        if bytes.len() != 11 {
            return Err(TimecodeError::Syntax(text.into()));
        }
        let field = |i: usize| -> Result<u32, TimecodeError> {
            let a = bytes[i];
            let b = bytes[i + 1];
            if a.is_ascii_digit() && b.is_ascii_digit() {
                Ok(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
            } else {
                Err(TimecodeError::Syntax(text.into()))
            }
        };
        for (i, allowed) in [(2, ":"), (5, ":;"), (8, ":;.,")] {
            if !allowed.as_bytes().contains(&bytes[i]) {
                return Err(TimecodeError::Syntax(text.into()));
            }
        }
        let df_sep = matches!(bytes[8], b';' | b'.' | b',') || bytes[5] == b';';
        let drop = df_sep || (force_drop && rate.has_drop_frame());
        Timecode::from_parts(field(0)?, field(3)?, field(6)?, field(9)?, rate, drop)
    }

    /// Frames since midnight.
    pub fn frames(self) -> i64 {
        self.frames
    }

    /// The rate.
    pub fn rate(self) -> FrameRate {
        self.rate
    }

    /// Whether labels use drop-frame counting.
    pub fn is_drop_frame(self) -> bool {
        self.drop_frame
    }

    /// This timecode moved by `delta` frames (negative goes back), wrapping at 24 hours.
    pub fn offset(self, delta: i64) -> Self {
        Timecode::from_frames(self.frames + delta, self.rate, self.drop_frame)
    }

    /// `(hours, minutes, seconds, frames)` of the label.
    pub fn parts(self) -> (u32, u32, u32, u32) {
        let n = i64::from(self.rate.nominal());
        let mut frames = self.frames;
        if self.drop_frame {
            let drop = n / 15;
            let per_10min = n * 600 - drop * 9;
            let per_min = n * 60 - drop;
            let d = frames / per_10min;
            let m = frames % per_10min;
            frames += drop * 9 * d;
            if m > drop {
                frames += drop * ((m - drop) / per_min);
            }
        }
        let f = frames % n;
        let secs = frames / n;
        (
            (secs / 3600) as u32,
            ((secs / 60) % 60) as u32,
            (secs % 60) as u32,
            f as u32,
        )
    }
}

impl fmt::Display for Timecode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s, fr) = self.parts();
        let sep = if self.drop_frame { ';' } else { ':' };
        write!(f, "{h:02}:{m:02}:{s:02}{sep}{fr:02}")
    }
}

/// Reads a SMPTE 12M timecode packed in 32 bits as BCD `0xHHMMSSFF`, as DPX (TV header)
/// and EXR (`timeCode`, TV60 packing, flags masked out) store it. Returns the fields and
/// the drop-frame flag (bit 6 in EXR's packing; `false` where the format has none).
pub fn unpack_bcd(value: u32, exr_flags: bool) -> Option<(u32, u32, u32, u32, bool)> {
    let nib = |shift: u32| (value >> shift) & 0xF;
    let (frame_tens_mask, drop) = if exr_flags {
        (0x3, value & (1 << 6) != 0)
    } else {
        (0xF, false)
    };
    let (sec_tens_mask, min_tens_mask, hour_tens_mask) = if exr_flags {
        (0x7, 0x7, 0x3)
    } else {
        (0xF, 0xF, 0xF)
    };
    let f = ((value >> 4) & frame_tens_mask) * 10 + nib(0);
    let s = ((value >> 12) & sec_tens_mask) * 10 + nib(8);
    let m = ((value >> 20) & min_tens_mask) * 10 + nib(16);
    let h = ((value >> 28) & hour_tens_mask) * 10 + nib(24);
    let digits_ok = [0u32, 8, 16, 24].iter().all(|&sh| nib(sh) <= 9);
    if !digits_ok || h >= 24 || m >= 60 || s >= 60 || f >= 60 {
        return None;
    }
    Some((h, m, s, f, drop))
}

/// Packs `HH:MM:SS:FF` as BCD `0xHHMMSSFF` (DPX TV header layout; with `drop` the
/// EXR TV60 drop-frame bit 6 is set).
pub fn pack_bcd(h: u32, m: u32, s: u32, f: u32, drop: bool) -> u32 {
    let bcd = |v: u32| ((v / 10) << 4) | (v % 10);
    let mut v = (bcd(h) << 24) | (bcd(m) << 16) | (bcd(s) << 8) | bcd(f);
    if drop {
        v |= 1 << 6;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(s: &str, r: FrameRate) -> Timecode {
        Timecode::parse(s, r, false).unwrap()
    }

    #[test]
    fn hour_is_nominal_rate_times_3600() {
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_24).frames(), 86_400);
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_25).frames(), 90_000);
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_23_976).frames(), 86_400);
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_30).frames(), 108_000);
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_48).frames(), 172_800);
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_50).frames(), 180_000);
        // 29.97 DF: one hour is 107892 frames (108000 - 108 dropped labels).
        assert_eq!(tc("01:00:00;00", FrameRate::FPS_29_97).frames(), 107_892);
        assert_eq!(tc("01:00:00;00", FrameRate::FPS_59_94).frames(), 215_784);
        assert_eq!(tc("01:00:00:00", FrameRate::FPS_59_94).frames(), 216_000);
    }

    #[test]
    fn drop_frame_skips_labels_at_minute_boundaries() {
        let r = FrameRate::FPS_29_97;
        let a = tc("00:00:59;29", r);
        assert_eq!(a.offset(1).to_string(), "00:01:00;02");
        let b = tc("00:09:59;29", r);
        assert_eq!(b.offset(1).to_string(), "00:10:00;00");
        assert!(Timecode::parse("00:01:00;00", r, false).is_err());
        assert!(Timecode::parse("00:10:00;00", r, false).is_ok());
        let r = FrameRate::FPS_59_94;
        assert_eq!(tc("00:00:59;59", r).offset(1).to_string(), "00:01:00;04");
    }

    #[test]
    fn round_trip_every_label_for_a_day_sample() {
        for rate in [
            FrameRate::FPS_23_976,
            FrameRate::FPS_24,
            FrameRate::FPS_25,
            FrameRate::FPS_29_97,
            FrameRate::FPS_30,
            FrameRate::FPS_48,
            FrameRate::FPS_50,
            FrameRate::FPS_59_94,
        ] {
            for drop in [false, true] {
                let drop = drop && rate.has_drop_frame();
                let day = rate.frames_per_hour(drop) * 24;
                let mut f = 0;
                while f < day {
                    let t = Timecode::from_frames(f, rate, drop);
                    let back = Timecode::parse(&t.to_string(), rate, false).unwrap();
                    assert_eq!(back.frames(), f, "{rate} drop={drop} {t}");
                    f += 997;
                }
            }
        }
    }

    #[test]
    fn rejects_bad_text_and_ranges() {
        assert!(Timecode::parse("1:00:00:00", FrameRate::FPS_24, false).is_err());
        assert!(Timecode::parse("01:00:00:24", FrameRate::FPS_24, false).is_err());
        assert!(Timecode::parse("01:00:00:24", FrameRate::FPS_25, false).is_ok());
        assert!(Timecode::parse("01:00:00;00", FrameRate::FPS_25, false).is_err());
        assert!(Timecode::parse("24:00:00:00", FrameRate::FPS_25, false).is_err());
    }

    #[test]
    fn rates_parse_and_snap() {
        assert_eq!(
            "23.976".parse::<FrameRate>().unwrap(),
            FrameRate::FPS_23_976
        );
        assert_eq!(
            "24000/1001".parse::<FrameRate>().unwrap(),
            FrameRate::FPS_23_976
        );
        assert_eq!("29.97".parse::<FrameRate>().unwrap(), FrameRate::FPS_29_97);
        assert_eq!("25".parse::<FrameRate>().unwrap(), FrameRate::FPS_25);
        assert_eq!(FrameRate::FPS_23_976.nominal(), 24);
        assert!("0".parse::<FrameRate>().is_err());
        assert!("abc".parse::<FrameRate>().is_err());
    }

    #[test]
    fn bcd_round_trip() {
        let v = pack_bcd(1, 2, 3, 4, false);
        assert_eq!(v, 0x0102_0304);
        assert_eq!(unpack_bcd(v, false), Some((1, 2, 3, 4, false)));
        let v = pack_bcd(23, 59, 59, 29, true);
        assert_eq!(unpack_bcd(v, true), Some((23, 59, 59, 29, true)));
        assert_eq!(unpack_bcd(0xFFFF_FFFF, false), None);
    }
}
