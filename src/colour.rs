//! Colour transforms from a scan colour space to the display, and `.cube` LUTs.
//!
//! The original handed every thumbnail to `oiiotool --colorconvert linear sRGB`
//! whatever the plate's colour space, so LogC and S-Log3 plates came out flat and
//! ACES plates came out desaturated. Here a [`Pipeline`] is built once per scan from
//! the `colour:` settings and applied to every thumbnail:
//!
//! 1. **Input decode** ([`Pipeline::linearise_in_place`]): log curves (ARRI LogC3,
//!    Sony S-Log3, Cineon) and display curves (BT.1886, sRGB, gamma 2.4) go through a
//!    precomputed table to linear light; scene-linear input (EXR) is only sanitised.
//!    Thumbnails resize *after* this stage, so filtering happens in linear light.
//! 2. **Output** ([`Pipeline::finish`]): a 3×3 matrix from the camera or ACES
//!    primaries to linear Rec.709/sRGB primaries (D65, Bradford adaptation from the
//!    ACES white as the ACES OCIO configs do), a clamp at 0, then the display
//!    encoding (sRGB piecewise, BT.1886 = `L^(1/2.4)`, or gamma 2.4). Display-referred
//!    inputs are decoded with their own curve and re-encoded for the configured
//!    display (the identity when both are the same).
//! 3. **Optional `.cube` LUT** ([`CubeLut`]): a colour space's `lut` is applied to the
//!    display-encoded result; a project's `lut` *replaces* step 2 (and takes
//!    precedence over the colour space's) and receives the plate's own values (the way
//!    `ociobakelut --inputspace <scan space> --displayview …` bakes them).
//!
//! There is no tone mapping: scene values above display white clip. That is a
//! deliberate, cheap, predictable default for scan-time thumbnails; a studio that
//! wants the true ACES RRT/ODT (or a camera viewing LUT with a film look) bakes a
//! `.cube` from its OCIO config and sets it as the project's `lut`.
//!
//! Formulas are the published ones: ARRI "ALEXA Log C curve, usage in VFX"
//! (SUP 3.x, EI 800) and the ARRI Wide Gamut 3 matrix; Sony "Technical summary for
//! S-Gamut3.Cine/S-Log3"; ACES S-2014-004 (AP1) and SMPTE ST 2065-1 (AP0); Kodak
//! Cineon (reference white 685, black 95, 0.002 density per code value, negative
//! gamma 0.6); IEC 61966-2-1 (sRGB); ITU-R BT.1886 with a zero black level. The
//! tests compare them with values computed by the `colour-science` Python package.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::config::ColourSettings;
use crate::error::{io_class, Classify, ErrorClass};

/// Why a colour transform or a LUT could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ColourError {
    /// A `transform:` name that is not built in.
    #[error("unknown colour transform {name:?}; valid transforms are: {valid}")]
    UnknownTransform {
        /// The name as given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A display name that is not known.
    #[error("unknown display encoding {name:?}; valid displays are: {valid}")]
    UnknownDisplay {
        /// The name as given.
        name: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// A colour-space name that is not in `colour.spaces`.
    #[error("unknown colour space {name:?} ({source_of_name}); known colour spaces are: {known}; add it under colour.spaces in the settings or pick one of these")]
    UnknownColourSpace {
        /// The name as given.
        name: String,
        /// Where the name came from (command line, project override, default).
        source_of_name: String,
        /// The configured names, comma-separated.
        known: String,
    },
    /// `transform: lut_only` without a LUT to apply.
    #[error("colour space {colourspace:?} uses transform lut_only but no .cube LUT is configured; set `lut:` for it under colour.spaces (or the project's colour.projects.<name>.lut)")]
    LutRequired {
        /// The colour-space name.
        colourspace: String,
    },
    /// A LUT file could not be read.
    #[error("cannot read LUT {path}: {source}")]
    LutIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A LUT file is malformed.
    #[error("{path}:{line}: invalid .cube LUT: {message}")]
    LutSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number (the last line + 1 when the file ends too early).
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl Classify for ColourError {
    fn class(&self) -> ErrorClass {
        match self {
            ColourError::LutIo { source, .. } => io_class(source),
            _ => ErrorClass::Permanent,
        }
    }
}

// ---------------------------------------------------------------------------
// Transfer curves (exact, f64). Public so fixtures can *encode* plates and tests
// can check the tables against the formulas.
// ---------------------------------------------------------------------------

/// ARRI LogC3 (SUP 3.x, EI 800) constants: cut, a, b, c, d, e, f.
const LOGC3: [f64; 7] = [
    0.010591, 5.555556, 0.052272, 0.247190, 0.385537, 5.367655, 0.092809,
];

/// ARRI LogC3 (EI 800) code value → scene-linear exposure (0.18 = mid grey).
pub fn logc3_decode(t: f64) -> f64 {
    let [cut, a, b, c, d, e, f] = LOGC3;
    if t > e * cut + f {
        (10f64.powf((t - d) / c) - b) / a
    } else {
        (t - f) / e
    }
}

/// ARRI LogC3 (EI 800) scene-linear → code value.
pub fn logc3_encode(x: f64) -> f64 {
    let [cut, a, b, c, d, e, f] = LOGC3;
    if x > cut {
        c * (a * x + b).log10() + d
    } else {
        e * x + f
    }
}

/// Sony S-Log3 code value (0..1 of 1023) → scene-linear reflection (0.18 = mid grey).
pub fn slog3_decode(t: f64) -> f64 {
    let cv = t * 1023.0;
    if cv >= 171.210_294_692_9 {
        10f64.powf((cv - 420.0) / 261.5) * (0.18 + 0.01) - 0.01
    } else {
        (cv - 95.0) * 0.01125 / (171.210_294_692_9 - 95.0)
    }
}

/// Sony S-Log3 scene-linear reflection → code value (0..1).
pub fn slog3_encode(x: f64) -> f64 {
    let cv = if x >= 0.01125 {
        420.0 + ((x + 0.01) / (0.18 + 0.01)).log10() * 261.5
    } else {
        x * (171.210_294_692_9 - 95.0) / 0.01125 + 95.0
    };
    cv / 1023.0
}

/// Kodak Cineon: 0.002 density per code value over a negative gamma of 0.6, i.e.
/// 1/300 of a decade per code value, relative to reference white 685.
const CINEON_STEP: f64 = 0.002 / 0.6;

/// The linear value of reference black (code 95) before the black offset is removed.
fn cineon_black() -> f64 {
    10f64.powf((95.0 - 685.0) * CINEON_STEP)
}

/// Kodak Cineon code value (0..1 of 1023) → linear (95 → 0, 685 → 1).
pub fn cineon_decode(t: f64) -> f64 {
    let black = cineon_black();
    (10f64.powf((t * 1023.0 - 685.0) * CINEON_STEP) - black) / (1.0 - black)
}

/// Kodak Cineon linear → code value (0..1).
pub fn cineon_encode(x: f64) -> f64 {
    let black = cineon_black();
    let v = x * (1.0 - black) + black;
    if v <= 0.0 {
        return 0.0;
    }
    (685.0 + v.log10() / CINEON_STEP) / 1023.0
}

/// sRGB (IEC 61966-2-1) linear → display code value, piecewise.
pub fn srgb_encode(l: f64) -> f64 {
    if l <= 0.003_130_8 {
        12.92 * l
    } else {
        1.055 * l.powf(1.0 / 2.4) - 0.055
    }
}

/// sRGB display code value → linear.
pub fn srgb_decode(v: f64) -> f64 {
    if v <= 0.040_45 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

/// Inverse BT.1886 EOTF with black 0 and white 1: `V = L^(1/2.4)`.
pub fn bt1886_encode(l: f64) -> f64 {
    if l <= 0.0 {
        0.0
    } else {
        l.powf(1.0 / 2.4)
    }
}

/// BT.1886 EOTF with black 0 and white 1: `L = V^2.4`.
pub fn bt1886_decode(v: f64) -> f64 {
    if v <= 0.0 {
        0.0
    } else {
        v.powf(2.4)
    }
}

fn identity(v: f64) -> f64 {
    v
}

// ---------------------------------------------------------------------------
// Primaries and matrices.
// ---------------------------------------------------------------------------

/// A row-major 3×3 matrix.
pub type Mat3 = [[f64; 3]; 3];

/// CIE 1931 xy of D65 as ITU-R BT.709 gives it.
const D65: [f64; 2] = [0.3127, 0.3290];
/// The ACES white (≈ D60), SMPTE ST 2065-1.
const ACES_WHITE: [f64; 2] = [0.32168, 0.33767];

/// A set of RGB primaries and a white point (CIE 1931 xy).
#[derive(Debug, Clone, Copy)]
struct Gamut {
    r: [f64; 2],
    g: [f64; 2],
    b: [f64; 2],
    white: [f64; 2],
    /// A published RGB → XYZ matrix that takes precedence over the one derived
    /// from the primaries (ARRI publishes AWG3's rounded to 6 places).
    published: Option<Mat3>,
}

const REC709: Gamut = Gamut {
    r: [0.64, 0.33],
    g: [0.30, 0.60],
    b: [0.15, 0.06],
    white: D65,
    published: None,
};
const ACES_AP1: Gamut = Gamut {
    r: [0.713, 0.293],
    g: [0.165, 0.830],
    b: [0.128, 0.044],
    white: ACES_WHITE,
    published: None,
};
const ACES_AP0: Gamut = Gamut {
    r: [0.7347, 0.2653],
    g: [0.0, 1.0],
    b: [0.0001, -0.0770],
    white: ACES_WHITE,
    published: None,
};
const ARRI_WIDE_GAMUT_3: Gamut = Gamut {
    r: [0.6840, 0.3130],
    g: [0.2210, 0.8480],
    b: [0.0861, -0.1020],
    white: D65,
    published: Some([
        [0.638008, 0.214704, 0.097744],
        [0.291954, 0.823841, -0.115795],
        [0.002798, -0.067034, 1.153294],
    ]),
};
const S_GAMUT3_CINE: Gamut = Gamut {
    r: [0.766, 0.275],
    g: [0.225, 0.800],
    b: [0.089, -0.087],
    white: D65,
    published: None,
};

fn xy_to_xyz(xy: [f64; 2]) -> [f64; 3] {
    [xy[0] / xy[1], 1.0, (1.0 - xy[0] - xy[1]) / xy[1]]
}

fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

fn mat_vec(m: &Mat3, v: [f64; 3]) -> [f64; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

/// Inverse by the adjugate; the matrices here are all well conditioned
/// primaries matrices, so no pivoting is needed.
fn mat_inv(m: &Mat3) -> Mat3 {
    let c =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let cof = [
        [c(1, 2, 1, 2), -c(1, 2, 0, 2), c(1, 2, 0, 1)],
        [-c(0, 2, 1, 2), c(0, 2, 0, 2), -c(0, 2, 0, 1)],
        [c(0, 1, 1, 2), -c(0, 1, 0, 2), c(0, 1, 0, 1)],
    ];
    let det = m[0][0] * cof[0][0] + m[0][1] * cof[0][1] + m[0][2] * cof[0][2];
    // Transpose of the cofactor matrix over the determinant.
    let mut inv = [[0.0; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = cof[j][i] / det;
        }
    }
    inv
}

/// The normalised primary matrix (RGB → XYZ, white maps to Y = 1), SMPTE RP 177.
fn rgb_to_xyz(g: &Gamut) -> Mat3 {
    if let Some(m) = g.published {
        return m;
    }
    let [r, gg, b] = [xy_to_xyz(g.r), xy_to_xyz(g.g), xy_to_xyz(g.b)];
    let p = [
        [r[0], gg[0], b[0]],
        [r[1], gg[1], b[1]],
        [r[2], gg[2], b[2]],
    ];
    let s = mat_vec(&mat_inv(&p), xy_to_xyz(g.white));
    let mut m = p;
    for row in m.iter_mut() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell *= s[j];
        }
    }
    m
}

/// Bradford chromatic adaptation from one white to another (XYZ → XYZ).
fn bradford(from: [f64; 2], to: [f64; 2]) -> Mat3 {
    const B: Mat3 = [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ];
    let s = mat_vec(&B, xy_to_xyz(from));
    let d = mat_vec(&B, xy_to_xyz(to));
    let scale = [
        [d[0] / s[0], 0.0, 0.0],
        [0.0, d[1] / s[1], 0.0],
        [0.0, 0.0, d[2] / s[2]],
    ];
    mat_mul(&mat_inv(&B), &mat_mul(&scale, &B))
}

/// Linear `src` RGB → linear Rec.709 RGB, adapting the white with Bradford.
fn to_rec709(src: &Gamut) -> Mat3 {
    let mut xyz = rgb_to_xyz(src);
    if src.white != REC709.white {
        xyz = mat_mul(&bradford(src.white, REC709.white), &xyz);
    }
    mat_mul(&mat_inv(&rgb_to_xyz(&REC709)), &xyz)
}

// ---------------------------------------------------------------------------
// Transforms and displays.
// ---------------------------------------------------------------------------

/// A built-in input transform, named as in `colour.spaces.<name>.transform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// Scene-linear, Rec.709/sRGB primaries.
    LinearRec709,
    /// Scene-linear ACES AP1 primaries (ACEScg).
    AcesCg,
    /// Scene-linear ACES AP0 primaries (ACES2065-1).
    Aces2065_1,
    /// ARRI LogC3 (EI 800), ARRI Wide Gamut 3.
    ArriLogC3,
    /// Sony S-Log3, S-Gamut3.Cine.
    SonySlog3SGamut3Cine,
    /// Kodak Cineon log, Rec.709 primaries assumed.
    Cineon,
    /// Display-referred Rec.709 video (BT.1886 encoded).
    Rec709,
    /// Display-referred sRGB.
    Srgb,
    /// Display-referred pure gamma 2.4.
    Gamma24,
    /// No built-in transform: the configured `.cube` LUT does all the work on the
    /// file's own values.
    LutOnly,
}

/// How a transform's input values relate to light.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputEncoding {
    /// Already linear in scene light (EXR plates).
    SceneLinear,
    /// A camera or film log curve.
    Log,
    /// Encoded for a display (video, sRGB images).
    DisplayReferred,
    /// Unknown: only a LUT knows what the values mean.
    Raw,
}

impl Transform {
    /// Every built-in transform.
    pub const ALL: [Transform; 10] = [
        Transform::LinearRec709,
        Transform::AcesCg,
        Transform::Aces2065_1,
        Transform::ArriLogC3,
        Transform::SonySlog3SGamut3Cine,
        Transform::Cineon,
        Transform::Rec709,
        Transform::Srgb,
        Transform::Gamma24,
        Transform::LutOnly,
    ];

    /// The settings name.
    pub fn name(self) -> &'static str {
        match self {
            Transform::LinearRec709 => "linear_rec709",
            Transform::AcesCg => "acescg",
            Transform::Aces2065_1 => "aces2065_1",
            Transform::ArriLogC3 => "arri_logc3",
            Transform::SonySlog3SGamut3Cine => "sony_slog3_sgamut3cine",
            Transform::Cineon => "cineon",
            Transform::Rec709 => "rec709",
            Transform::Srgb => "srgb",
            Transform::Gamma24 => "gamma24",
            Transform::LutOnly => "lut_only",
        }
    }

    /// How the input values are encoded.
    pub fn encoding(self) -> InputEncoding {
        match self {
            Transform::LinearRec709 | Transform::AcesCg | Transform::Aces2065_1 => {
                InputEncoding::SceneLinear
            }
            Transform::ArriLogC3 | Transform::SonySlog3SGamut3Cine | Transform::Cineon => {
                InputEncoding::Log
            }
            Transform::Rec709 | Transform::Srgb | Transform::Gamma24 => {
                InputEncoding::DisplayReferred
            }
            Transform::LutOnly => InputEncoding::Raw,
        }
    }

    /// Exact per-channel decode of an input value to linear light (scene-linear for
    /// log inputs, display-linear for display-referred ones; the identity otherwise).
    pub fn decode(self, v: f64) -> f64 {
        self.decode_fn()(v)
    }

    /// Exact per-channel encode, the inverse of [`Transform::decode`].
    pub fn encode(self, l: f64) -> f64 {
        self.encode_fn()(l)
    }

    fn decode_fn(self) -> fn(f64) -> f64 {
        match self {
            Transform::ArriLogC3 => logc3_decode,
            Transform::SonySlog3SGamut3Cine => slog3_decode,
            Transform::Cineon => cineon_decode,
            Transform::Rec709 | Transform::Gamma24 => bt1886_decode,
            Transform::Srgb => srgb_decode,
            Transform::LinearRec709
            | Transform::AcesCg
            | Transform::Aces2065_1
            | Transform::LutOnly => identity,
        }
    }

    fn encode_fn(self) -> fn(f64) -> f64 {
        match self {
            Transform::ArriLogC3 => logc3_encode,
            Transform::SonySlog3SGamut3Cine => slog3_encode,
            Transform::Cineon => cineon_encode,
            Transform::Rec709 | Transform::Gamma24 => bt1886_encode,
            Transform::Srgb => srgb_encode,
            Transform::LinearRec709
            | Transform::AcesCg
            | Transform::Aces2065_1
            | Transform::LutOnly => identity,
        }
    }

    /// The matrix from the decoded input's primaries to linear Rec.709 (D65), or
    /// `None` when the input already has Rec.709 primaries (or no known primaries).
    pub fn to_rec709_matrix(self) -> Option<Mat3> {
        let gamut = match self {
            Transform::AcesCg => ACES_AP1,
            Transform::Aces2065_1 => ACES_AP0,
            Transform::ArriLogC3 => ARRI_WIDE_GAMUT_3,
            Transform::SonySlog3SGamut3Cine => S_GAMUT3_CINE,
            _ => return None,
        };
        Some(to_rec709(&gamut))
    }

    fn valid_names() -> String {
        Transform::ALL.map(Transform::name).join(", ")
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Transform {
    type Err = ColourError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Transform::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ColourError::UnknownTransform {
                name: s.to_string(),
                valid: Transform::valid_names(),
            })
    }
}

/// The display a thumbnail is encoded for (`colour.display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisplayEncoding {
    /// sRGB piecewise curve (IEC 61966-2-1).
    Srgb,
    /// BT.1886 with black 0: `V = L^(1/2.4)`.
    Rec709,
    /// Pure gamma 2.4 (numerically the same curve as `rec709` here).
    Gamma24,
}

impl DisplayEncoding {
    /// Every display encoding.
    pub const ALL: [DisplayEncoding; 3] = [
        DisplayEncoding::Srgb,
        DisplayEncoding::Rec709,
        DisplayEncoding::Gamma24,
    ];

    /// The settings name.
    pub fn name(self) -> &'static str {
        match self {
            DisplayEncoding::Srgb => "srgb",
            DisplayEncoding::Rec709 => "rec709",
            DisplayEncoding::Gamma24 => "gamma24",
        }
    }

    /// Display-linear → display code value (exact).
    pub fn encode(self, l: f64) -> f64 {
        self.encode_fn()(l)
    }

    /// Display code value → display-linear (exact).
    pub fn decode(self, v: f64) -> f64 {
        match self {
            DisplayEncoding::Srgb => srgb_decode(v),
            DisplayEncoding::Rec709 | DisplayEncoding::Gamma24 => bt1886_decode(v),
        }
    }

    fn encode_fn(self) -> fn(f64) -> f64 {
        match self {
            DisplayEncoding::Srgb => srgb_encode,
            DisplayEncoding::Rec709 | DisplayEncoding::Gamma24 => bt1886_encode,
        }
    }
}

impl fmt::Display for DisplayEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DisplayEncoding {
    type Err = ColourError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        DisplayEncoding::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ColourError::UnknownDisplay {
                name: s.to_string(),
                valid: DisplayEncoding::ALL.map(DisplayEncoding::name).join(", "),
            })
    }
}

// ---------------------------------------------------------------------------
// Tables: the per-sample work of a thumbnail is a lookup and a lerp, no powf.
// ---------------------------------------------------------------------------

/// Intervals of the uniform decode table over code values 0..1. 4096 keeps the
/// linear-interpolation error of the steepest curve here (LogC3) below 1e-6
/// relative; a 10-bit code value lands near a node anyway.
const DECODE_STEPS: usize = 4096;

/// A uniform table over code values `0..=1` of a decode curve, with linear
/// interpolation; values outside `0..=1` use the exact formula (or clamp, for
/// display-referred input, whose values cannot exceed the display range).
#[derive(Debug, Clone)]
struct DecodeTable {
    /// A fixed-size array, so the two lookups need no bounds checks.
    nodes: Box<[f32; DECODE_STEPS + 1]>,
    exact: fn(f64) -> f64,
    clamp_to_unit: bool,
}

impl DecodeTable {
    fn new(exact: fn(f64) -> f64, clamp_to_unit: bool) -> Self {
        let mut nodes = Box::new([0.0f32; DECODE_STEPS + 1]);
        for (i, n) in nodes.iter_mut().enumerate() {
            *n = exact(i as f64 / DECODE_STEPS as f64) as f32;
        }
        DecodeTable {
            nodes,
            exact,
            clamp_to_unit,
        }
    }

    #[inline]
    fn eval(&self, v: f32) -> f32 {
        if (0.0..=1.0).contains(&v) {
            let x = v * DECODE_STEPS as f32;
            // `x` is in 0..=4096: an i32 conversion is one instruction, where a
            // saturating usize one is several.
            let i = (x as i32).min(DECODE_STEPS as i32 - 1);
            let frac = x - i as f32;
            let i = i as usize;
            let (a, b) = (self.nodes[i], self.nodes[i + 1]);
            a + (b - a) * frac
        } else {
            self.eval_outside(v)
        }
    }

    /// Out of `0..=1` (or NaN): clamp display-referred input, use the exact
    /// formula for log input, and turn NaN/∞ into 0.
    #[cold]
    fn eval_outside(&self, v: f32) -> f32 {
        if self.clamp_to_unit {
            if v > 1.0 {
                self.nodes[DECODE_STEPS]
            } else {
                self.nodes[0]
            }
        } else if !v.is_finite() {
            0.0
        } else {
            (self.exact)(f64::from(v)) as f32
        }
    }
}

/// Number of mantissa bits that index the encode table within each power of two.
const ENC_MANT_BITS: u32 = 8;
const ENC_SHIFT: u32 = 23 - ENC_MANT_BITS;
/// Powers of two covered below 1.0 (down to 2^-14, about 6e-5).
const ENC_OCTAVES: u32 = 14;

/// A display encode table indexed by the bits of an `f32` in `[2^-14, 1)`: each
/// octave is cut into 256 linear bins, so the spacing follows the value and the
/// steep `x^(1/2.4)` foot is as accurate as the top (relative error < 1e-6).
/// Outside that range: ≤ 0 (and NaN) → 0, ≥ 1 → 1 (the display clips), tiny
/// positive values use the exact formula.
#[derive(Debug, Clone)]
struct EncodeTable {
    nodes: Box<[f32]>,
    exact: fn(f64) -> f64,
}

impl EncodeTable {
    fn base() -> u32 {
        (1.0f32 / (1u32 << ENC_OCTAVES) as f32).to_bits() >> ENC_SHIFT
    }

    fn new(exact: fn(f64) -> f64) -> Self {
        let base = Self::base();
        let count = ENC_OCTAVES << ENC_MANT_BITS;
        let nodes = (0..=count)
            .map(|k| exact(f64::from(f32::from_bits((base + k) << ENC_SHIFT))) as f32)
            .collect();
        EncodeTable { nodes, exact }
    }

    #[inline]
    fn eval(&self, x: f32) -> f32 {
        // Written so NaN takes the first branch.
        if x.is_nan() || x <= 0.0 {
            return 0.0;
        }
        if x >= 1.0 {
            return 1.0;
        }
        let bits = x.to_bits();
        let top = bits >> ENC_SHIFT;
        let base = Self::base();
        if top < base {
            return (self.exact)(f64::from(x)) as f32;
        }
        let k = (top - base) as usize;
        let frac = (bits & ((1 << ENC_SHIFT) - 1)) as f32 * (1.0 / (1u32 << ENC_SHIFT) as f32);
        match (self.nodes.get(k), self.nodes.get(k + 1)) {
            (Some(&a), Some(&b)) => a + (b - a) * frac,
            _ => (self.exact)(f64::from(x)) as f32,
        }
    }
}

// ---------------------------------------------------------------------------
// The pipeline.
// ---------------------------------------------------------------------------

/// Where a LUT sits in a [`Pipeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LutPlacement {
    /// After the built-in display transform (a colour space's `lut`): the LUT gets
    /// display code values.
    AfterDisplay,
    /// Instead of the built-in matrix and display encoding (a project's `lut`, or
    /// `lut_only`): the LUT gets the plate's own code values.
    ReplacesDisplay,
}

/// Stage 1, before resizing.
#[derive(Debug, Clone)]
enum Pre {
    /// Values are already linear: only replace NaN/∞ so one bad pixel cannot
    /// smear across a filter footprint.
    Sanitise,
    /// Decode through a table.
    Decode(DecodeTable),
}

/// Stage 2, after resizing.
#[derive(Debug, Clone)]
enum Post {
    /// Matrix to Rec.709 primaries, clamp at 0, display encode.
    Display {
        matrix: Option<[[f32; 3]; 3]>,
        encode: EncodeTable,
    },
    /// Back to the input's own display curve, for a LUT that expects it.
    ReencodeTable(EncodeTable),
    /// Back to the input's own log curve (exact: values may lie outside 0..1).
    ReencodeExact(fn(f64) -> f64),
    /// Leave the values as they are (scene-linear or raw input into a LUT).
    Raw,
}

/// A colour pipeline from a scan colour space to display code values, built once
/// and shared (it is `Send + Sync` and cheap to clone).
#[derive(Debug, Clone)]
pub struct Pipeline {
    colourspace: String,
    transform: Transform,
    display: DisplayEncoding,
    output: Option<String>,
    pre: Pre,
    post: Post,
    /// Shared: a 65³ LUT is 3 MB and every worker clones the pipeline.
    lut: Option<(Arc<CubeLut>, LutPlacement)>,
}

/// A settings value that names its origin, for error messages.
fn known_spaces(settings: &ColourSettings) -> String {
    settings
        .spaces
        .keys()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Pipeline {
    /// Builds the pipeline for a scan: the colour space is `colourspace` when given
    /// (e.g. from the command line), else the `project`'s override, else
    /// `colour.default_colorspace`. A project `lut` is used when the chosen space is
    /// the project's own (or the project names none), since it was baked for that
    /// input, and then replaces the colour space's `lut`. Relative LUT paths
    /// resolve against the working directory.
    pub fn from_settings(
        settings: &ColourSettings,
        colourspace: Option<&str>,
        project: Option<&str>,
    ) -> Result<Pipeline, ColourError> {
        let project_cfg = project.and_then(|p| settings.projects.get(p));
        let (name, origin) = match (
            colourspace,
            project_cfg.and_then(|p| p.colorspace.as_deref()),
        ) {
            (Some(n), _) => (n, "as requested".to_string()),
            (None, Some(n)) => (
                n,
                format!(
                    "set by colour.projects.{}.colorspace",
                    project.unwrap_or_default()
                ),
            ),
            (None, None) => (
                settings.default_colorspace.as_str(),
                "set by colour.default_colorspace".to_string(),
            ),
        };
        let space = settings
            .spaces
            .get(name)
            .ok_or_else(|| ColourError::UnknownColourSpace {
                name: name.to_string(),
                source_of_name: origin,
                known: known_spaces(settings),
            })?;
        let transform: Transform = space.transform.parse()?;
        let display: DisplayEncoding = settings.display.parse()?;

        let project_lut = project_cfg.and_then(|p| {
            let applies = p.colorspace.as_deref().is_none_or(|cs| cs == name);
            p.lut.as_deref().filter(|_| applies)
        });
        let lut = match (project_lut, space.lut.as_deref()) {
            (Some(path), _) => Some((CubeLut::load(path)?, LutPlacement::ReplacesDisplay)),
            (None, Some(path)) => {
                let placement = if transform == Transform::LutOnly {
                    LutPlacement::ReplacesDisplay
                } else {
                    LutPlacement::AfterDisplay
                };
                Some((CubeLut::load(path)?, placement))
            }
            (None, None) => None,
        };
        let mut p = Pipeline::build(name, transform, display, lut)?;
        p.output = space.output.clone();
        Ok(p)
    }

    /// A pipeline from a built-in transform to a display, without a LUT.
    /// Fails only for [`Transform::LutOnly`], which needs one.
    pub fn builtin(
        transform: Transform,
        display: DisplayEncoding,
    ) -> Result<Pipeline, ColourError> {
        Pipeline::build(transform.name(), transform, display, None)
    }

    /// A pipeline with a LUT at the given place.
    pub fn with_lut(
        transform: Transform,
        display: DisplayEncoding,
        lut: CubeLut,
        placement: LutPlacement,
    ) -> Result<Pipeline, ColourError> {
        Pipeline::build(transform.name(), transform, display, Some((lut, placement)))
    }

    fn build(
        name: &str,
        transform: Transform,
        display: DisplayEncoding,
        lut: Option<(CubeLut, LutPlacement)>,
    ) -> Result<Pipeline, ColourError> {
        let enc = transform.encoding();
        let replaces = match &lut {
            Some((_, placement)) => *placement == LutPlacement::ReplacesDisplay,
            None if enc == InputEncoding::Raw => {
                return Err(ColourError::LutRequired {
                    colourspace: name.to_string(),
                })
            }
            None => false,
        };
        let pre = match enc {
            InputEncoding::SceneLinear | InputEncoding::Raw => Pre::Sanitise,
            InputEncoding::Log => Pre::Decode(DecodeTable::new(transform.decode_fn(), false)),
            InputEncoding::DisplayReferred => {
                Pre::Decode(DecodeTable::new(transform.decode_fn(), true))
            }
        };
        let post = if replaces || enc == InputEncoding::Raw {
            match enc {
                InputEncoding::SceneLinear | InputEncoding::Raw => Post::Raw,
                InputEncoding::Log => Post::ReencodeExact(transform.encode_fn()),
                InputEncoding::DisplayReferred => {
                    Post::ReencodeTable(EncodeTable::new(transform.encode_fn()))
                }
            }
        } else {
            Post::Display {
                matrix: transform
                    .to_rec709_matrix()
                    .map(|m| m.map(|row| row.map(|v| v as f32))),
                encode: EncodeTable::new(display.encode_fn()),
            }
        };
        Ok(Pipeline {
            colourspace: name.to_string(),
            transform,
            display,
            output: None,
            pre,
            post,
            lut: lut.map(|(l, p)| (Arc::new(l), p)),
        })
    }

    /// The scan colour-space name (the settings key, or the transform name).
    pub fn colourspace(&self) -> &str {
        &self.colourspace
    }

    /// The built-in input transform.
    pub fn transform(&self) -> Transform {
        self.transform
    }

    /// The display encoding.
    pub fn display(&self) -> DisplayEncoding {
        self.display
    }

    /// The output/view name configured for the colour space (for the tracker).
    pub fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    /// The LUT and where it applies, if any.
    pub fn lut(&self) -> Option<(&CubeLut, LutPlacement)> {
        self.lut.as_ref().map(|(l, p)| (&**l, *p))
    }

    /// Stage 1 on one sample: the input value to the linear domain thumbnails are
    /// resized in (scene- or display-linear; raw values for `lut_only`).
    #[inline]
    pub fn linearise(&self, v: f32) -> f32 {
        match &self.pre {
            Pre::Sanitise => sanitise(v),
            Pre::Decode(t) => t.eval(v),
        }
    }

    /// Stage 1 on a run of samples (interleaved RGB or not: it is per channel).
    pub fn linearise_in_place(&self, samples: &mut [f32]) {
        match &self.pre {
            Pre::Sanitise => samples.iter_mut().for_each(|v| *v = sanitise(*v)),
            Pre::Decode(t) => samples.iter_mut().for_each(|v| *v = t.eval(*v)),
        }
    }

    /// Stage 2 on one pixel from the linear domain: matrix, clamp, display encode,
    /// LUT. The result is in `0..=1` (NaN never escapes).
    #[inline]
    pub fn finish(&self, rgb: [f32; 3]) -> [f32; 3] {
        let mut out = match &self.post {
            Post::Display { matrix, encode } => {
                let lin = match matrix {
                    Some(m) => [
                        m[0][0] * rgb[0] + m[0][1] * rgb[1] + m[0][2] * rgb[2],
                        m[1][0] * rgb[0] + m[1][1] * rgb[1] + m[1][2] * rgb[2],
                        m[2][0] * rgb[0] + m[2][1] * rgb[1] + m[2][2] * rgb[2],
                    ],
                    None => rgb,
                };
                // The table clamps at 0 and clips at display white.
                lin.map(|v| encode.eval(v))
            }
            Post::ReencodeTable(t) => rgb.map(|v| t.eval(v)),
            Post::ReencodeExact(f) => rgb.map(|v| f(f64::from(v)) as f32),
            Post::Raw => rgb,
        };
        if let Some((lut, _)) = &self.lut {
            out = lut.apply(out);
        }
        out.map(unit)
    }

    /// This pipeline for half-float input as lookup tables (see [`HalfDisplay`]),
    /// or `None` when a `.cube` LUT is involved (use [`Pipeline::apply`]).
    pub fn half_display<T: DisplayCode>(&self) -> Option<HalfDisplay<T>> {
        if self.lut.is_some() {
            return None;
        }
        let Post::Display { matrix, encode } = &self.post else {
            return None;
        };
        let lin = |h: u16| self.linearise(half::f16::from_bits(h).to_f32());
        let kind = match matrix {
            None => HalfKind::PerChannel(
                (0..=u16::MAX)
                    .map(|h| T::from_unit(self.finish([lin(h); 3])[0]))
                    .collect(),
            ),
            Some(m) => {
                let base = HalfDisplay::<T>::enc_base();
                let count = HALF_ENC_LOW_EXP << HALF_ENC_MANT_BITS;
                // Each entry is the encoding of its bin's centre.
                let centre = 1u32 << (HALF_ENC_SHIFT - 1);
                let enc = (0..count)
                    .map(|k| {
                        let x = f32::from_bits(((base + k) << HALF_ENC_SHIFT) | centre);
                        T::from_unit(encode.eval(x))
                    })
                    .collect();
                HalfKind::Matrix {
                    lin: (0..=u16::MAX).map(lin).collect(),
                    m: *m,
                    enc,
                    encode: encode.clone(),
                }
            }
        };
        Some(HalfDisplay { kind })
    }

    /// Both stages on one pixel: file values → display code values in `0..=1`.
    pub fn apply(&self, rgb: [f32; 3]) -> [f32; 3] {
        self.finish(rgb.map(|v| self.linearise(v)))
    }
}

// ---------------------------------------------------------------------------
// Half-float input: the whole pipeline as lookups.
// ---------------------------------------------------------------------------

/// Code values a [`HalfDisplay`] produces: `u16` (movies, via GBRP16) or `u8`
/// (JPEG proxies).
pub trait DisplayCode: Copy + Send + Sync + 'static {
    /// A display value in `0..=1` (NaN → 0) to the nearest code, rounding the
    /// way the float paths do (`v × max + 0.5`, truncated).
    fn from_unit(v: f32) -> Self;
}

impl DisplayCode for u16 {
    #[inline]
    fn from_unit(v: f32) -> u16 {
        (unit(v) * 65535.0 + 0.5) as u16
    }
}

impl DisplayCode for u8 {
    #[inline]
    fn from_unit(v: f32) -> u8 {
        (unit(v) * 255.0 + 0.5) as u8
    }
}

/// Lowest linear value the display table of a [`HalfDisplay`] covers (2^-24, the
/// smallest half denormal); smaller positive values are encoded exactly.
const HALF_ENC_LOW_EXP: u32 = 24;
/// Mantissa bits that index the display table: 11, as many as a half has, so
/// a linear value is rounded to half precision before the display encoding.
const HALF_ENC_MANT_BITS: u32 = 11;
const HALF_ENC_SHIFT: u32 = 23 - HALF_ENC_MANT_BITS;

/// [`Pipeline::apply`] for half-float input as table lookups (built by
/// [`Pipeline::half_display`]).
///
/// - Without a primaries matrix every channel is independent: one 65536-entry
///   table maps a half's bits to its display code. This is exactly
///   `DisplayCode::from_unit(apply(v))`.
/// - With a matrix: a table takes the half bits to linear light, the matrix runs
///   in `f32` as in `apply`, and the display encoding is a table indexed by the
///   linear value's top `f32` bits (its exponent and 11 mantissa bits: half
///   precision). The only difference from `apply` is that rounding of the linear
///   value to half precision before the encoding: at most 2^-12 relative, which
///   moves a display value (`x^(1/2.4)` at its steepest relative slope) by at most
///   1.1e-4 of full scale, 7 of 65535 (0.03 of an 8-bit code).
///
/// `.cube` LUTs (and `lut_only`) are not covered: [`Pipeline::half_display`]
/// returns `None` for them and callers use `apply`.
#[derive(Debug, Clone)]
pub struct HalfDisplay<T> {
    kind: HalfKind<T>,
}

#[derive(Debug, Clone)]
enum HalfKind<T> {
    PerChannel(Box<[T]>),
    Matrix {
        lin: Box<[f32]>,
        m: [[f32; 3]; 3],
        enc: Box<[T]>,
        encode: EncodeTable,
    },
}

impl<T: DisplayCode> HalfDisplay<T> {
    fn enc_base() -> u32 {
        ((127 - HALF_ENC_LOW_EXP) << 23) >> HALF_ENC_SHIFT
    }

    fn encode_lin(enc: &[T], encode: &EncodeTable, x: f32) -> T {
        // NaN takes the first branch.
        if x.is_nan() || x <= 0.0 {
            return T::from_unit(0.0);
        }
        if x >= 1.0 {
            return T::from_unit(1.0);
        }
        let top = x.to_bits() >> HALF_ENC_SHIFT;
        match top
            .checked_sub(Self::enc_base())
            .and_then(|k| enc.get(k as usize))
        {
            Some(&c) => c,
            None => T::from_unit(encode.eval(x)),
        }
    }

    /// One pixel: the bits of three half floats (R, G, B) to display codes.
    #[inline]
    pub fn pixel(&self, rgb: [u16; 3]) -> [T; 3] {
        match &self.kind {
            HalfKind::PerChannel(t) => rgb.map(|h| t[usize::from(h)]),
            HalfKind::Matrix {
                lin,
                m,
                enc,
                encode,
            } => {
                let v = rgb.map(|h| lin[usize::from(h)]);
                let out = [
                    m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
                    m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
                    m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
                ];
                out.map(|x| Self::encode_lin(enc, encode, x))
            }
        }
    }

    /// Planar rows: `src` R, G, B half bits to `dst` R, G, B codes (the
    /// shortest of the six slices sets the count).
    pub fn rows(&self, src: [&[u16]; 3], dst: [&mut [T]; 3]) {
        let [dr, dg, db] = dst;
        match &self.kind {
            HalfKind::PerChannel(t) => {
                for (s, d) in src.into_iter().zip([dr, dg, db]) {
                    for (o, &h) in d.iter_mut().zip(s) {
                        *o = t[usize::from(h)];
                    }
                }
            }
            HalfKind::Matrix { .. } => {
                let [sr, sg, sb] = src;
                let srcs = sr.iter().zip(sg).zip(sb);
                let dsts = dr.iter_mut().zip(dg.iter_mut()).zip(db.iter_mut());
                for (((r, g), b), ((or, og), ob)) in srcs.zip(dsts) {
                    [*or, *og, *ob] = self.pixel([*r, *g, *b]);
                }
            }
        }
    }
}

impl HalfDisplay<u16> {
    /// [`HalfDisplay::rows`] in place: half bits become 16-bit display codes.
    pub fn rows_in_place(&self, planes: [&mut [u16]; 3]) {
        let [r, g, b] = planes;
        match &self.kind {
            HalfKind::PerChannel(t) => {
                for p in [r, g, b] {
                    for v in p.iter_mut() {
                        *v = t[usize::from(*v)];
                    }
                }
            }
            HalfKind::Matrix { .. } => {
                for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
                    [*r, *g, *b] = self.pixel([*r, *g, *b]);
                }
            }
        }
    }
}

/// Clamps to `0..=1` with NaN → 0 (`f32::clamp` would keep the NaN).
#[inline]
fn unit(v: f32) -> f32 {
    if v >= 0.0 {
        v.min(1.0)
    } else {
        0.0
    }
}

/// NaN → 0, ±∞ → ±65504 (the half-float limit EXR plates are written with).
#[inline]
fn sanitise(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-65504.0, 65504.0)
    }
}

// ---------------------------------------------------------------------------
// .cube LUTs.
// ---------------------------------------------------------------------------

/// Largest `.cube` file read (a 256³ LUT is about 500 MB of text).
const MAX_CUBE_BYTES: u64 = 1 << 30;
/// Largest 3D edge the Cube spec allows.
const MAX_3D_SIZE: usize = 256;
/// Largest 1D size the Cube spec allows.
const MAX_1D_SIZE: usize = 65536;

/// One table of a `.cube` file with its input domain.
#[derive(Debug, Clone, PartialEq)]
struct Table {
    size: usize,
    min: [f32; 3],
    max: [f32; 3],
    /// 1D: `size` entries; 3D: `size³`, red fastest.
    entries: Vec<[f32; 3]>,
}

impl Table {
    /// Maps a channel value into table coordinates: the cell index (at most
    /// `size − 2`) and the fraction within it. Values outside the domain clamp.
    #[inline]
    fn locate(&self, v: f32, c: usize) -> (usize, f32) {
        let t = (v - self.min[c]) / (self.max[c] - self.min[c]);
        let t = unit(t);
        let x = t * (self.size - 1) as f32;
        let i = (x as usize).min(self.size - 2);
        (i, x - i as f32)
    }

    fn apply_1d(&self, rgb: [f32; 3]) -> [f32; 3] {
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            let (i, f) = self.locate(rgb[c], c);
            let a = self.entries.get(i).map_or(0.0, |e| e[c]);
            let b = self.entries.get(i + 1).map_or(a, |e| e[c]);
            *o = a + (b - a) * f;
        }
        out
    }

    /// Tetrahedral interpolation: exact on the cube's grey axis and smoother than
    /// trilinear on saturated colours.
    fn apply_3d(&self, rgb: [f32; 3]) -> [f32; 3] {
        let n = self.size;
        let (r0, fr) = self.locate(rgb[0], 0);
        let (g0, fg) = self.locate(rgb[1], 1);
        let (b0, fb) = self.locate(rgb[2], 2);
        let at = |r: usize, g: usize, b: usize| -> [f32; 3] {
            self.entries
                .get(r + g * n + b * n * n)
                .copied()
                .unwrap_or([0.0; 3])
        };
        let c000 = at(r0, g0, b0);
        let c111 = at(r0 + 1, g0 + 1, b0 + 1);
        // Walk from c000 to c111 along the edges in order of the largest fraction.
        let (w1, c1, w2, c2, w3) = if fr > fg {
            if fg > fb {
                (fr, at(r0 + 1, g0, b0), fg, at(r0 + 1, g0 + 1, b0), fb)
            } else if fr > fb {
                (fr, at(r0 + 1, g0, b0), fb, at(r0 + 1, g0, b0 + 1), fg)
            } else {
                (fb, at(r0, g0, b0 + 1), fr, at(r0 + 1, g0, b0 + 1), fg)
            }
        } else if fb > fg {
            (fb, at(r0, g0, b0 + 1), fg, at(r0, g0 + 1, b0 + 1), fr)
        } else if fb > fr {
            (fg, at(r0, g0 + 1, b0), fb, at(r0, g0 + 1, b0 + 1), fr)
        } else {
            (fg, at(r0, g0 + 1, b0), fr, at(r0 + 1, g0 + 1, b0), fb)
        };
        let mut out = [0.0; 3];
        for (c, o) in out.iter_mut().enumerate() {
            *o = c000[c] + w1 * (c1[c] - c000[c]) + w2 * (c2[c] - c1[c]) + w3 * (c111[c] - c2[c]);
        }
        out
    }
}

/// A `.cube` LUT (Adobe Cube LUT 1.0 / Resolve): a 3D LUT, a 1D LUT, or a 1D
/// shaper followed by a 3D LUT (the form `ociobakelut` writes for Resolve).
#[derive(Debug, Clone, PartialEq)]
pub struct CubeLut {
    title: Option<String>,
    shaper: Option<Table>,
    cube: Option<Table>,
}

/// Header state while parsing.
#[derive(Default)]
struct CubeHeader {
    title: Option<String>,
    size_1d: Option<usize>,
    size_3d: Option<usize>,
    domain_min: Option<[f32; 3]>,
    domain_max: Option<[f32; 3]>,
    range_1d: Option<(f32, f32)>,
    range_3d: Option<(f32, f32)>,
    /// Line of the last domain keyword, for errors about the domain.
    domain_line: Option<usize>,
}

impl CubeLut {
    /// Reads and parses a `.cube` file.
    pub fn load(path: &Path) -> Result<CubeLut, ColourError> {
        let io_err = |source| ColourError::LutIo {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io_err)?.len();
        if len > MAX_CUBE_BYTES {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("file is {len} bytes, more than the {MAX_CUBE_BYTES} a .cube LUT may be"),
            )));
        }
        let bytes = std::fs::read(path).map_err(io_err)?;
        let text = String::from_utf8_lossy(&bytes);
        CubeLut::parse(&text, path)
    }

    /// Parses `.cube` text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<CubeLut, ColourError> {
        let err = |line: usize, message: String| ColourError::LutSyntax {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut h = CubeHeader::default();
        // Entries are pushed as they are read, never reserved from the header's
        // size, so a hostile size cannot force a large allocation.
        let mut entries: Vec<[f32; 3]> = Vec::new();
        let mut expected: Option<usize> = None;
        let mut last_line = 0;

        // Some editors on Windows save a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            last_line = line_no;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            // Keywords are upper case (TITLE, LUT_3D_SIZE …); anything else is
            // table data, so a typo in a number is reported, not skipped.
            let is_keyword = first.starts_with(|c: char| c.is_ascii_uppercase())
                && first
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_keyword {
                if !entries.is_empty() {
                    return Err(err(
                        line_no,
                        format!("keyword {first} after the table data; keywords must come first"),
                    ));
                }
                parse_keyword(line, first, &mut h).map_err(|m| err(line_no, m))?;
                if first.contains("DOMAIN") || first.contains("INPUT_RANGE") {
                    h.domain_line = Some(line_no);
                }
                continue;
            }
            let total = match expected {
                Some(t) => t,
                None => {
                    let t = h.size_1d.unwrap_or(0) + h.size_3d.map_or(0, |n| n * n * n);
                    if t == 0 {
                        return Err(err(
                            line_no,
                            "table data before LUT_3D_SIZE or LUT_1D_SIZE".into(),
                        ));
                    }
                    expected = Some(t);
                    t
                }
            };
            // Trailing comments are tolerated on data lines.
            let data = line.split('#').next().unwrap_or_default();
            let mut vals = [0.0f32; 3];
            let mut count = 0;
            for tok in data.split_whitespace() {
                if count == 3 {
                    return Err(err(
                        line_no,
                        format!("expected 3 numbers per line, found more: {data:?}"),
                    ));
                }
                let v: f32 = tok
                    .parse()
                    .map_err(|_| err(line_no, format!("{tok:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(err(line_no, format!("{tok:?} is not a finite number")));
                }
                vals[count] = v;
                count += 1;
            }
            if count != 3 {
                return Err(err(
                    line_no,
                    format!("expected 3 numbers per line, found {count}: {data:?}"),
                ));
            }
            if entries.len() == total {
                return Err(err(
                    line_no,
                    format!("more table entries than the {} the sizes declare", total),
                ));
            }
            entries.push(vals);
        }

        let total = h.size_1d.unwrap_or(0) + h.size_3d.map_or(0, |n| n * n * n);
        if total == 0 {
            return Err(err(
                last_line + 1,
                "no LUT_3D_SIZE or LUT_1D_SIZE line; is this a .cube file?".into(),
            ));
        }
        if entries.len() != total {
            return Err(err(
                last_line + 1,
                format!(
                    "file ends after {} table entries but the sizes declare {} ({}); the LUT is truncated",
                    entries.len(),
                    total,
                    describe_sizes(&h)
                ),
            ));
        }

        let domain = |range: Option<(f32, f32)>, first_stage: bool| -> ([f32; 3], [f32; 3]) {
            match range {
                Some((lo, hi)) => ([lo; 3], [hi; 3]),
                None if first_stage => (
                    h.domain_min.unwrap_or([0.0; 3]),
                    h.domain_max.unwrap_or([1.0; 3]),
                ),
                None => ([0.0; 3], [1.0; 3]),
            }
        };
        let mut rest = entries;
        let shaper = h.size_1d.map(|n| {
            let tail = rest.split_off(n);
            let head = std::mem::replace(&mut rest, tail);
            let (min, max) = domain(h.range_1d, true);
            Table {
                size: n,
                min,
                max,
                entries: head,
            }
        });
        let cube = h.size_3d.map(|n| {
            let (min, max) = domain(h.range_3d, shaper.is_none());
            Table {
                size: n,
                min,
                max,
                entries: std::mem::take(&mut rest),
            }
        });
        for t in shaper.iter().chain(cube.iter()) {
            for c in 0..3 {
                if t.max[c].partial_cmp(&t.min[c]) != Some(std::cmp::Ordering::Greater) {
                    return Err(err(
                        h.domain_line.unwrap_or(last_line),
                        format!(
                            "domain minimum {} is not below maximum {} for channel {}",
                            t.min[c], t.max[c], c
                        ),
                    ));
                }
            }
        }
        Ok(CubeLut {
            title: h.title,
            shaper,
            cube,
        })
    }

    /// The `TITLE`, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// The 3D edge length, if the file has a 3D table.
    pub fn size_3d(&self) -> Option<usize> {
        self.cube.as_ref().map(|t| t.size)
    }

    /// The 1D size, if the file has a 1D table (alone or as a shaper).
    pub fn size_1d(&self) -> Option<usize> {
        self.shaper.as_ref().map(|t| t.size)
    }

    /// Applies the LUT to one pixel (inputs outside the domain clamp to its edge).
    #[inline]
    pub fn apply(&self, rgb: [f32; 3]) -> [f32; 3] {
        let mut v = rgb;
        if let Some(s) = &self.shaper {
            v = s.apply_1d(v);
        }
        if let Some(c) = &self.cube {
            v = c.apply_3d(v);
        }
        v
    }
}

fn describe_sizes(h: &CubeHeader) -> String {
    match (h.size_1d, h.size_3d) {
        (Some(a), Some(b)) => format!("LUT_1D_SIZE {a} + LUT_3D_SIZE {b}³"),
        (Some(a), None) => format!("LUT_1D_SIZE {a}"),
        (None, Some(b)) => format!("LUT_3D_SIZE {b} = {b}³"),
        (None, None) => "no size".into(),
    }
}

fn parse_keyword(line: &str, keyword: &str, h: &mut CubeHeader) -> Result<(), String> {
    let rest = line[keyword.len()..].trim();
    let numbers = |n: usize| -> Result<Vec<f32>, String> {
        let vals = rest
            .split_whitespace()
            .map(|t| {
                t.parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("{keyword}: {t:?} is not a number"))
            })
            .collect::<Result<Vec<f32>, String>>()?;
        if vals.len() != n {
            return Err(format!("{keyword} takes {n} numbers, found {}", vals.len()));
        }
        Ok(vals)
    };
    let size = |max: usize| -> Result<usize, String> {
        let n: usize = rest
            .parse()
            .map_err(|_| format!("{keyword}: {rest:?} is not a whole number"))?;
        if !(2..=max).contains(&n) {
            return Err(format!("{keyword} {n} is outside the allowed 2..={max}"));
        }
        Ok(n)
    };
    match keyword {
        "TITLE" => {
            h.title = Some(rest.trim_matches('"').to_string());
        }
        "LUT_3D_SIZE" => {
            if h.size_3d.is_some() {
                return Err("LUT_3D_SIZE given twice".into());
            }
            h.size_3d = Some(size(MAX_3D_SIZE)?);
        }
        "LUT_1D_SIZE" => {
            if h.size_1d.is_some() {
                return Err("LUT_1D_SIZE given twice".into());
            }
            h.size_1d = Some(size(MAX_1D_SIZE)?);
        }
        "DOMAIN_MIN" | "DOMAIN_MAX" => {
            let v = numbers(3)?;
            let v = [v[0], v[1], v[2]];
            if keyword == "DOMAIN_MIN" {
                h.domain_min = Some(v);
            } else {
                h.domain_max = Some(v);
            }
        }
        "LUT_1D_INPUT_RANGE" | "LUT_3D_INPUT_RANGE" => {
            let v = numbers(2)?;
            if keyword == "LUT_1D_INPUT_RANGE" {
                h.range_1d = Some((v[0], v[1]));
            } else {
                h.range_3d = Some((v[0], v[1]));
            }
        }
        // Other vendors' keywords (e.g. Resolve's LUT_IN_VIDEO_RANGE) do not change
        // how the table maps values for a full-range thumbnail.
        other => {
            tracing::debug!(keyword = other, "ignoring unknown .cube keyword");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn encodes_invert_decodes() {
        for t in Transform::ALL {
            for i in 0..=100 {
                let v = i as f64 / 100.0;
                let back = t.encode(t.decode(v));
                assert!(close(back, v, 1e-9), "{t} {v} -> {back}");
            }
        }
    }

    #[test]
    fn matrices_keep_white() {
        for t in Transform::ALL {
            if let Some(m) = t.to_rec709_matrix() {
                let w = mat_vec(&m, [1.0, 1.0, 1.0]);
                for c in w {
                    // AWG3's published matrix is rounded to 6 places.
                    assert!((c - 1.0).abs() < 1e-5, "{t}: {w:?}");
                }
            }
        }
    }

    #[test]
    fn decode_table_matches_formula() {
        for t in [
            Transform::ArriLogC3,
            Transform::SonySlog3SGamut3Cine,
            Transform::Cineon,
        ] {
            let table = DecodeTable::new(t.decode_fn(), false);
            for i in 0..=10_000 {
                let v = i as f32 / 10_000.0;
                let exact = t.decode(f64::from(v));
                let got = f64::from(table.eval(v));
                assert!(close(got, exact, 2e-6), "{t} at {v}: {got} vs {exact}");
            }
            // Outside 0..1 the exact formula is used.
            let got = f64::from(table.eval(1.2));
            assert!(close(got, t.decode(f64::from(1.2f32)), 1e-6));
        }
    }

    #[test]
    fn encode_table_matches_formula() {
        for d in DisplayEncoding::ALL {
            let table = EncodeTable::new(d.encode_fn());
            let mut x = 1e-7f32;
            while x < 1.0 {
                let got = f64::from(table.eval(x));
                let exact = d.encode(f64::from(x));
                assert!((got - exact).abs() < 2e-6, "{d} at {x}: {got} vs {exact}");
                x *= 1.013;
            }
            assert_eq!(table.eval(0.0), 0.0);
            assert_eq!(table.eval(-3.0), 0.0);
            assert_eq!(table.eval(f32::NAN), 0.0);
            assert_eq!(table.eval(7.0), 1.0);
        }
    }

    #[test]
    fn tetrahedral_is_exact_on_nodes_and_linear_in_a_linear_cube() {
        // A 3-point cube of the function (r, g, b) -> (2r, g/2 + 0.1, 1 - b).
        let f = |r: f32, g: f32, b: f32| [2.0 * r, g / 2.0 + 0.1, 1.0 - b];
        let mut text = String::from("LUT_3D_SIZE 3\n");
        for b in 0..3 {
            for g in 0..3 {
                for r in 0..3 {
                    let v = f(r as f32 / 2.0, g as f32 / 2.0, b as f32 / 2.0);
                    text.push_str(&format!("{} {} {}\n", v[0], v[1], v[2]));
                }
            }
        }
        let lut = CubeLut::parse(&text, Path::new("t.cube")).unwrap();
        for rgb in [
            [0.1, 0.7, 0.3],
            [0.9, 0.2, 0.55],
            [0.5, 0.5, 0.5],
            [0.33, 0.33, 0.9],
        ] {
            let got = lut.apply(rgb);
            let want = f(rgb[0], rgb[1], rgb[2]);
            for c in 0..3 {
                assert!(
                    (got[c] - want[c]).abs() < 1e-5,
                    "{rgb:?}: {got:?} vs {want:?}"
                );
            }
        }
        // Out of domain clamps.
        assert_eq!(lut.apply([-1.0, 2.0, f32::NAN]), f(0.0, 1.0, 0.0));
    }

    #[test]
    fn shaper_plus_cube_with_input_range() {
        // 1D shaper over 0..4 that maps x -> x/4, then an identity 2-point cube.
        let text = "LUT_1D_SIZE 2\nLUT_1D_INPUT_RANGE 0 4\nLUT_3D_SIZE 2\n\
                    0 0 0\n1 1 1\n\
                    0 0 0\n1 0 0\n0 1 0\n1 1 0\n0 0 1\n1 0 1\n0 1 1\n1 1 1\n";
        let lut = CubeLut::parse(text, Path::new("s.cube")).unwrap();
        assert_eq!(lut.size_1d(), Some(2));
        assert_eq!(lut.size_3d(), Some(2));
        let got = lut.apply([1.0, 2.0, 3.0]);
        for (g, w) in got.iter().zip([0.25, 0.5, 0.75]) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn pipeline_identity_for_matching_display() {
        let p = Pipeline::builtin(Transform::Srgb, DisplayEncoding::Srgb).unwrap();
        for i in 0..=255 {
            let v = i as f32 / 255.0;
            let out = p.apply([v, v, v]);
            assert!((out[0] - v).abs() < 1e-5, "{v} -> {out:?}");
        }
    }

    #[test]
    fn lut_only_needs_a_lut() {
        let e = Pipeline::builtin(Transform::LutOnly, DisplayEncoding::Srgb).unwrap_err();
        assert!(e.to_string().contains("lut_only"), "{e}");
    }

    /// Deterministic half bits covering every exponent and sign.
    fn half_samples(n: usize) -> Vec<[u16; 3]> {
        let mut x = 0x2545_f491_u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u16
        };
        (0..n).map(|_| [next(), next(), next()]).collect()
    }

    #[test]
    fn half_display_without_matrix_equals_apply_exactly() {
        for (t, d) in [
            (Transform::LinearRec709, DisplayEncoding::Rec709),
            (Transform::LinearRec709, DisplayEncoding::Srgb),
            (Transform::Srgb, DisplayEncoding::Rec709),
            (Transform::Rec709, DisplayEncoding::Srgb),
        ] {
            let p = Pipeline::builtin(t, d).unwrap();
            let h16 = p.half_display::<u16>().expect("no LUT: a table path");
            let h8 = p.half_display::<u8>().expect("no LUT: a table path");
            for h in 0..=u16::MAX {
                let v = half::f16::from_bits(h).to_f32();
                let want = p.apply([v, 0.5, v]);
                assert_eq!(h16.pixel([h, h, h])[0], u16::from_unit(want[0]), "{t} {v}");
                assert_eq!(h8.pixel([h, h, h])[2], u8::from_unit(want[2]), "{t} {v}");
            }
        }
    }

    #[test]
    fn half_display_with_matrix_is_within_half_precision_of_apply() {
        // Tolerance: the linear value is rounded to half precision (2^-12
        // relative) before the display encoding, at most 7 of 65535; 8-bit codes
        // may round the other way at a boundary (1 code).
        let samples = half_samples(200_000);
        for t in [
            Transform::AcesCg,
            Transform::Aces2065_1,
            Transform::ArriLogC3,
            Transform::SonySlog3SGamut3Cine,
        ] {
            let p = Pipeline::builtin(t, DisplayEncoding::Srgb).unwrap();
            assert!(t.to_rec709_matrix().is_some(), "{t} has a matrix");
            let h16 = p.half_display::<u16>().unwrap();
            let h8 = p.half_display::<u8>().unwrap();
            let mut worst = 0i32;
            for rgb in &samples {
                let want = p.apply(rgb.map(|h| half::f16::from_bits(h).to_f32()));
                let (got16, got8) = (h16.pixel(*rgb), h8.pixel(*rgb));
                for c in 0..3 {
                    let d16 = (i32::from(got16[c]) - i32::from(u16::from_unit(want[c]))).abs();
                    let d8 = (i32::from(got8[c]) - i32::from(u8::from_unit(want[c]))).abs();
                    assert!(d16 <= 7, "{t} {rgb:?} channel {c}: {got16:?} vs {want:?}");
                    assert!(d8 <= 1, "{t} {rgb:?} channel {c}: {got8:?} vs {want:?}");
                    worst = worst.max(d16);
                }
            }
            assert!(worst > 0, "{t}: the samples reach the rounding");
        }
        // Planar rows and in place agree with the per-pixel form.
        let p = Pipeline::builtin(Transform::AcesCg, DisplayEncoding::Rec709).unwrap();
        let h = p.half_display::<u16>().unwrap();
        let px = &samples[..1000];
        let mut planes: [Vec<u16>; 3] = [0, 1, 2].map(|c| px.iter().map(|p| p[c]).collect());
        let mut out = [vec![0u16; 1000], vec![0u16; 1000], vec![0u16; 1000]];
        {
            let [a, b, c] = &mut out;
            h.rows([&planes[0], &planes[1], &planes[2]], [a, b, c]);
        }
        let [r, g, b] = &mut planes;
        h.rows_in_place([r, g, b]);
        assert_eq!(planes, out);
        for (i, p) in px.iter().enumerate() {
            assert_eq!(h.pixel(*p), [out[0][i], out[1][i], out[2][i]]);
        }
    }

    #[test]
    fn half_display_is_not_offered_with_a_lut() {
        let lut = CubeLut::parse("LUT_1D_SIZE 2\n0 0 0\n1 1 1\n", Path::new("l.cube")).unwrap();
        let p = Pipeline::with_lut(
            Transform::LinearRec709,
            DisplayEncoding::Srgb,
            lut,
            LutPlacement::AfterDisplay,
        )
        .unwrap();
        assert!(p.half_display::<u16>().is_none());
    }

    #[test]
    fn nan_and_inf_do_not_escape() {
        let p = Pipeline::builtin(Transform::AcesCg, DisplayEncoding::Srgb).unwrap();
        let out = p.apply([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        for v in out {
            assert!((0.0..=1.0).contains(&v), "{out:?}");
        }
    }
}
