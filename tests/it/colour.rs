//! Colour transforms, `.cube` LUTs and thumbnails.
//!
//! Reference values below were computed once with the Python package
//! `colour-science` 0.4.7 (numpy 2.4.6), independently of this crate, and pasted
//! here. The calls, with `import colour, numpy as np` and
//! `from colour.models import log_decoding_ARRILogC3, log_decoding_SLog3,
//! log_decoding_Cineon, eotf_inverse_BT1886, eotf_BT1886, RGB_to_RGB`:
//!
//! - curves: `log_decoding_ARRILogC3(x)` (defaults: SUP 3.x, EI 800),
//!   `log_decoding_SLog3(x)` (defaults), `log_decoding_Cineon(x)` (defaults),
//!   `colour.cctf_encoding(x, function='sRGB')`, `colour.cctf_decoding(x,
//!   function='sRGB')`, `eotf_inverse_BT1886(x)`, `eotf_BT1886(x)`;
//! - matrices: `colour.matrix_RGB_to_RGB(colour.RGB_COLOURSPACES[src],
//!   colour.RGB_COLOURSPACES['ITU-R BT.709'], chromatic_adaptation_transform='Bradford')`
//!   for src in 'ACEScg', 'ACES2065-1', 'ARRI Wide Gamut 3', 'S-Gamut3.Cine';
//! - display patches: `np.clip(colour.cctf_encoding(np.clip(RGB_to_RGB(decode(p),
//!   RGB_COLOURSPACES[src], RGB_COLOURSPACES['ITU-R BT.709'],
//!   chromatic_adaptation_transform='Bradford'), 0, None), function='sRGB'), 0, 1)`
//!   with decode = identity for ACEScg/ACES2065-1, the log decodings above for
//!   LogC3 (AWG3), S-Log3 (S-Gamut3.Cine) and Cineon (BT.709);
//! - 8-bit values: `int(np.floor(v * 255 + 0.5))` of such a display patch.

use std::path::{Path, PathBuf};

use iom::colour::{self, ColourError, CubeLut, DisplayEncoding, LutPlacement, Pipeline, Transform};
use iom::config::{ColourSettings, ColourSpaceSettings, ProjectColourSettings, Settings};
use iom::error::{Classify, ErrorClass};
use iom::media::RgbImage;
use iom::thumbnail::{self, ThumbnailError};

// --- reference values (colour-science 0.4.7, see the module comment) ---------

const LOGC3_DECODE: &[(f64, f64)] = &[
    (0.000000000e+00, -1.729041826e-02),
    (9.280900000e-02, 0.000000000e+00),
    (1.000000000e-01, 1.339691169e-03),
    (3.910070000e-01, 1.800002964e-01),
    (5.000000000e-01, 5.133833960e-01),
    (7.500000000e-01, 5.357163556e+00),
    (1.000000000e+00, 5.507957670e+01),
];
const SLOG3_DECODE: &[(f64, f64)] = &[
    (0.000000000e+00, -1.402369594e-02),
    (9.286412512e-02, 0.000000000e+00),
    (1.673609919e-01, 1.125000000e-02),
    (4.105571848e-01, 1.800000000e-01),
    (6.000000000e-01, 1.036797285e+00),
    (1.000000000e+00, 3.842093434e+01),
];
const CINEON_DECODE: &[(f64, f64)] = &[
    (0.000000000e+00, -5.650819439e-03),
    (9.286412512e-02, 0.000000000e+00),
    (4.349951124e-01, 1.493037120e-01),
    (6.695992180e-01, 1.000000000e+00),
    (1.000000000e+00, 1.352169457e+01),
];
const SRGB_ENCODE: &[(f64, f64)] = &[
    (0.000000000e+00, 0.000000000e+00),
    (2.000000000e-03, 2.584000000e-02),
    (3.130800000e-03, 4.044993600e-02),
    (1.800000000e-01, 4.613561295e-01),
    (9.000000000e-01, 9.546871719e-01),
    (1.000000000e+00, 1.000000000e+00),
];
const SRGB_DECODE: &[(f64, f64)] = &[
    (0.000000000e+00, 0.000000000e+00),
    (4.000000000e-02, 3.095975232e-03),
    (5.000000000e-01, 2.140411405e-01),
    (1.000000000e+00, 1.000000000e+00),
];
const BT1886_ENCODE: &[(f64, f64)] = &[
    (0.000000000e+00, 0.000000000e+00),
    (1.000000000e-02, 1.467799268e-01),
    (1.800000000e-01, 4.894370896e-01),
    (9.000000000e-01, 9.570494520e-01),
    (1.000000000e+00, 1.000000000e+00),
];
const BT1886_DECODE: &[(f64, f64)] = &[
    (0.000000000e+00, 0.000000000e+00),
    (2.500000000e-01, 3.589682359e-02),
    (5.000000000e-01, 1.894645708e-01),
    (1.000000000e+00, 1.000000000e+00),
];

const ACESCG_TO_709: [[f64; 3]; 3] = [
    [1.705050993e+00, -6.217921207e-01, -8.325887200e-02],
    [-1.302564175e-01, 1.140804737e+00, -1.054831907e-02],
    [-2.400335680e-02, -1.289689761e-01, 1.152972333e+00],
];
const AP0_TO_709: [[f64; 3]; 3] = [
    [2.521686187e+00, -1.134130988e+00, -3.875551986e-01],
    [-2.764799141e-01, 1.372719088e+00, -9.623917345e-02],
    [-1.537806498e-02, -1.529753359e-01, 1.168353401e+00],
];
const AWG3_TO_709: [[f64; 3]; 3] = [
    [1.617524470e+00, -5.372862103e-01, -8.023814713e-02],
    [-7.057270691e-02, 1.334612855e+00, -2.640402084e-01],
    [-2.110204687e-02, -2.269536096e-01, 1.248055924e+00],
];
const SGAMUT3CINE_TO_709: [[f64; 3]; 3] = [
    [1.626947410e+00, -5.401385388e-01, -8.680887073e-02],
    [-1.785155272e-01, 1.417940927e+00, -2.394254004e-01],
    [-4.443611496e-02, -1.959199662e-01, 1.240356081e+00],
];

type Patches = &'static [([f64; 3], [f64; 3])];
const ACESCG_SRGB: Patches = &[
    (
        [1.800000000e-01, 1.800000000e-01, 1.800000000e-01],
        [4.613561295e-01, 4.613561295e-01, 4.613561295e-01],
    ),
    (
        [9.000000000e-01, 9.000000000e-01, 9.000000000e-01],
        [9.546871719e-01, 9.546871719e-01, 9.546871719e-01],
    ),
    (
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
    ),
    (
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
    ),
    (
        [5.000000000e-01, 2.000000000e-01, 1.000000000e-01],
        [8.649574642e-01, 4.391502683e-01, 3.084675227e-01],
    ),
    (
        [1.000000000e-01, 4.000000000e-01, 1.500000000e-01],
        [0.000000000e+00, 6.955758962e-01, 3.795099236e-01],
    ),
    (
        [8.000000000e-02, 1.000000000e-01, 4.500000000e-01],
        [2.113693511e-01, 3.473540976e-01, 7.379987478e-01],
    ),
    (
        [8.000000000e-01, 5.000000000e-02, 2.000000000e-02],
        [1.000000000e+00, 0.000000000e+00, 0.000000000e+00],
    ),
];
const AP0_SRGB: Patches = &[
    (
        [1.800000000e-01, 1.800000000e-01, 1.800000000e-01],
        [4.613561294e-01, 4.613561295e-01, 4.613561295e-01],
    ),
    (
        [9.000000000e-01, 9.000000000e-01, 9.000000000e-01],
        [9.546871718e-01, 9.546871719e-01, 9.546871719e-01],
    ),
    (
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
        [9.999999999e-01, 1.000000000e+00, 1.000000000e+00],
    ),
    (
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
    ),
    (
        [5.000000000e-01, 2.000000000e-01, 1.000000000e-01],
        [9.979140936e-01, 3.910471148e-01, 3.105102520e-01],
    ),
    (
        [1.000000000e-01, 4.000000000e-01, 1.500000000e-01],
        [0.000000000e+00, 7.399511722e-01, 3.695605756e-01],
    ),
    (
        [8.000000000e-02, 1.000000000e-01, 4.500000000e-01],
        [0.000000000e+00, 2.971707298e-01, 7.414045450e-01],
    ),
    (
        [8.000000000e-01, 5.000000000e-02, 2.000000000e-02],
        [1.000000000e+00, 0.000000000e+00, 4.397911871e-02],
    ),
];
const LOGC3_SRGB: Patches = &[
    (
        [3.910070000e-01, 3.910070000e-01, 3.910070000e-01],
        [4.613565078e-01, 4.613564707e-01, 4.613565413e-01],
    ),
    (
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
    ),
    (
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
    ),
    (
        [4.500000000e-01, 4.000000000e-01, 3.600000000e-01],
        [6.646722046e-01, 4.899362228e-01, 3.718934762e-01],
    ),
    (
        [3.600000000e-01, 4.400000000e-01, 3.800000000e-01],
        [2.368462894e-01, 6.134100931e-01, 4.003383237e-01],
    ),
    (
        [3.500000000e-01, 3.700000000e-01, 4.600000000e-01],
        [3.266117926e-01, 3.393024009e-01, 6.667065911e-01],
    ),
];
const SLOG3_SRGB: Patches = &[
    (
        [4.105571848e-01, 4.105571848e-01, 4.105571848e-01],
        [4.613561296e-01, 4.613561295e-01, 4.613561295e-01],
    ),
    (
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
    ),
    (
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
    ),
    (
        [4.500000000e-01, 4.000000000e-01, 3.600000000e-01],
        [6.073674734e-01, 4.337115170e-01, 3.381423725e-01],
    ),
    (
        [3.600000000e-01, 4.400000000e-01, 3.800000000e-01],
        [2.201100984e-01, 5.704842487e-01, 3.735453421e-01],
    ),
    (
        [3.500000000e-01, 3.700000000e-01, 4.600000000e-01],
        [2.978648224e-01, 3.251019723e-01, 6.073287685e-01],
    ),
];
const CINEON_SRGB: Patches = &[
    (
        [4.349951124e-01, 4.349951124e-01, 4.349951124e-01],
        [4.226559719e-01, 4.226559719e-01, 4.226559719e-01],
    ),
    (
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
        [0.000000000e+00, 0.000000000e+00, 0.000000000e+00],
    ),
    (
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
        [1.000000000e+00, 1.000000000e+00, 1.000000000e+00],
    ),
    (
        [4.500000000e-01, 4.000000000e-01, 3.600000000e-01],
        [4.483836053e-01, 3.668520566e-01, 3.094407135e-01],
    ),
    (
        [3.600000000e-01, 4.400000000e-01, 3.800000000e-01],
        [3.094407135e-01, 4.311109654e-01, 3.373618834e-01],
    ),
    (
        [3.500000000e-01, 3.700000000e-01, 4.600000000e-01],
        [2.960250803e-01, 3.232138951e-01, 4.661780438e-01],
    ),
];

/// Exact formulas in f64: relative 1e-7 (the references print 10 digits).
const CURVE_TOL: f64 = 1e-7;
/// Table-driven f32 pipeline vs the reference: well inside 1/1023.
const PIPELINE_TOL: f64 = 1e-4;

// --- helpers -----------------------------------------------------------------

fn settings() -> ColourSettings {
    Settings::defaults().unwrap().colour
}

fn cube_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A `.cube` of size `n` sampling `f` (red fastest).
fn cube_text(n: usize, f: impl Fn([f32; 3]) -> [f32; 3]) -> String {
    let mut s = format!(
        "TITLE \"test\"\n# generated\n\nLUT_3D_SIZE {n}\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 1 1 1\n"
    );
    let k = (n - 1) as f32;
    for b in 0..n {
        for g in 0..n {
            for r in 0..n {
                let v = f([r as f32 / k, g as f32 / k, b as f32 / k]);
                s.push_str(&format!("{:.6} {:.6} {:.6}\n", v[0], v[1], v[2]));
            }
        }
    }
    s
}

fn constant(width: u32, height: u32, rgb: [f32; 3]) -> RgbImage {
    RgbImage {
        width,
        height,
        pixel_aspect: 1.0,
        data: rgb.repeat(width as usize * height as usize),
    }
}

fn assert_pixel_near(img: &image::RgbImage, want: [u8; 3], tol: i32, what: &str) {
    for (x, y) in [
        (0, 0),
        (img.width() / 2, img.height() / 2),
        (img.width() - 1, img.height() - 1),
    ] {
        let got = img.get_pixel(x, y).0;
        for c in 0..3 {
            assert!(
                (i32::from(got[c]) - i32::from(want[c])).abs() <= tol,
                "{what}: pixel ({x},{y}) is {got:?}, expected {want:?} ±{tol}"
            );
        }
    }
}

// --- curves and matrices -------------------------------------------------------

#[test]
fn curves_match_colour_science() {
    type Case = (&'static str, fn(f64) -> f64, &'static [(f64, f64)]);
    let cases: [Case; 7] = [
        ("logc3", colour::logc3_decode, LOGC3_DECODE),
        ("slog3", colour::slog3_decode, SLOG3_DECODE),
        ("cineon", colour::cineon_decode, CINEON_DECODE),
        ("srgb encode", colour::srgb_encode, SRGB_ENCODE),
        ("srgb decode", colour::srgb_decode, SRGB_DECODE),
        ("bt1886 encode", colour::bt1886_encode, BT1886_ENCODE),
        ("bt1886 decode", colour::bt1886_decode, BT1886_DECODE),
    ];
    for (name, f, refs) in cases {
        for &(x, want) in refs {
            let got = f(x);
            assert!(
                (got - want).abs() <= CURVE_TOL * want.abs().max(1e-3),
                "{name}({x}) = {got}, colour-science says {want}"
            );
        }
    }
    // 18% grey lands where each vendor says it does.
    assert!((colour::logc3_encode(0.18) - 0.391007).abs() < 1e-6);
    assert!((colour::slog3_encode(0.18) * 1023.0 - 420.0).abs() < 1e-9);
    assert!((colour::cineon_encode(1.0) * 1023.0 - 685.0).abs() < 1e-9);
}

#[test]
fn matrices_match_colour_science_with_bradford() {
    for (t, want) in [
        (Transform::AcesCg, ACESCG_TO_709),
        (Transform::Aces2065_1, AP0_TO_709),
        (Transform::ArriLogC3, AWG3_TO_709),
        (Transform::SonySlog3SGamut3Cine, SGAMUT3CINE_TO_709),
    ] {
        let got = t.to_rec709_matrix().unwrap();
        for i in 0..3 {
            for j in 0..3 {
                assert!(
                    (got[i][j] - want[i][j]).abs() < 1e-7,
                    "{t}: [{i}][{j}] = {}, colour-science says {}",
                    got[i][j],
                    want[i][j]
                );
            }
        }
    }
    for t in [
        Transform::LinearRec709,
        Transform::Cineon,
        Transform::Srgb,
        Transform::Rec709,
    ] {
        assert!(t.to_rec709_matrix().is_none(), "{t}");
    }
}

#[test]
fn pipelines_match_colour_science_patches() {
    for (t, patches) in [
        (Transform::AcesCg, ACESCG_SRGB),
        (Transform::Aces2065_1, AP0_SRGB),
        (Transform::ArriLogC3, LOGC3_SRGB),
        (Transform::SonySlog3SGamut3Cine, SLOG3_SRGB),
        (Transform::Cineon, CINEON_SRGB),
    ] {
        let p = Pipeline::builtin(t, DisplayEncoding::Srgb).unwrap();
        for &(input, want) in patches {
            let got = p.apply(input.map(|v| v as f32));
            for c in 0..3 {
                assert!(
                    (f64::from(got[c]) - want[c]).abs() < PIPELINE_TOL,
                    "{t} {input:?}: got {got:?}, colour-science says {want:?}"
                );
            }
        }
    }
}

#[test]
fn other_displays_and_display_referred_inputs() {
    // Scene grey on a BT.1886 display: eotf_inverse_BT1886(0.18) = 0.4894370896.
    let p = Pipeline::builtin(Transform::AcesCg, DisplayEncoding::Rec709).unwrap();
    assert!((f64::from(p.apply([0.18; 3])[1]) - 0.489_437_089_6).abs() < PIPELINE_TOL);
    let p = Pipeline::builtin(Transform::LinearRec709, DisplayEncoding::Gamma24).unwrap();
    assert!((f64::from(p.apply([0.9; 3])[0]) - 0.957_049_452_0).abs() < PIPELINE_TOL);
    // Rec.709 video 0.5 on an sRGB display: cctf_encoding(eotf_BT1886(0.5), 'sRGB') = 0.4725.
    let p = Pipeline::builtin(Transform::Rec709, DisplayEncoding::Srgb).unwrap();
    assert!((f64::from(p.apply([0.5; 3])[2]) - 0.4725).abs() < PIPELINE_TOL);
    // sRGB 0.5 on a BT.1886 display: eotf_inverse_BT1886(cctf_decoding(0.5, 'sRGB')) = 0.5260663507.
    let p = Pipeline::builtin(Transform::Srgb, DisplayEncoding::Rec709).unwrap();
    assert!((f64::from(p.apply([0.5; 3])[0]) - 0.526_066_350_7).abs() < PIPELINE_TOL);
    // Same curve in and out is the identity (to table precision).
    for t in [Transform::Rec709, Transform::Gamma24] {
        let p = Pipeline::builtin(t, DisplayEncoding::Rec709).unwrap();
        for v in [0.0f32, 0.01, 0.2, 0.5, 0.77, 1.0] {
            assert!((p.apply([v; 3])[0] - v).abs() < 1e-5, "{t} {v}");
        }
    }
}

// --- names and settings ----------------------------------------------------------

#[test]
fn transform_names_round_trip_and_unknown_lists_valid() {
    for t in Transform::ALL {
        assert_eq!(t.name().parse::<Transform>().unwrap(), t);
    }
    let e = "logc4".parse::<Transform>().unwrap_err().to_string();
    assert!(e.contains("\"logc4\""), "{e}");
    for t in Transform::ALL {
        assert!(e.contains(t.name()), "{e} should list {t}");
    }
    let e = "p3".parse::<DisplayEncoding>().unwrap_err().to_string();
    assert!(
        e.contains("srgb") && e.contains("rec709") && e.contains("gamma24"),
        "{e}"
    );
}

#[test]
fn pipeline_from_settings_picks_the_space() {
    let mut s = settings();
    // Default.
    let p = Pipeline::from_settings(&s, None, None).unwrap();
    assert_eq!(p.colourspace(), "ACES - ACEScg");
    assert_eq!(p.transform(), Transform::AcesCg);
    assert_eq!(p.display(), DisplayEncoding::Srgb);
    assert_eq!(p.output(), Some("Output - Rec.709"));
    // Explicit.
    let p = Pipeline::from_settings(&s, Some("AlexaV3LogC"), None).unwrap();
    assert_eq!(p.transform(), Transform::ArriLogC3);
    assert_eq!(p.output(), Some("AlexaViewer"));
    // Project override, and the explicit name still wins over it.
    s.projects.insert(
        "jung".into(),
        ProjectColourSettings {
            colorspace: Some("Sony SLog3 SGamut3.Cine".into()),
            lut: None,
        },
    );
    let p = Pipeline::from_settings(&s, None, Some("jung")).unwrap();
    assert_eq!(p.transform(), Transform::SonySlog3SGamut3Cine);
    let p = Pipeline::from_settings(&s, Some("Cineon"), Some("jung")).unwrap();
    assert_eq!(p.transform(), Transform::Cineon);
    // A project without an override uses the default.
    let p = Pipeline::from_settings(&s, None, Some("other")).unwrap();
    assert_eq!(p.transform(), Transform::AcesCg);
}

#[test]
fn unknown_colour_space_lists_known_names() {
    let s = settings();
    let e = Pipeline::from_settings(&s, Some("Arri4.rec709"), None).unwrap_err();
    assert!(matches!(e, ColourError::UnknownColourSpace { .. }));
    assert_eq!(e.class(), ErrorClass::Permanent);
    let msg = e.to_string();
    assert!(msg.contains("\"Arri4.rec709\""), "{msg}");
    for known in [
        "ACES - ACEScg",
        "AlexaV3LogC",
        "Cineon",
        "Sony SLog3 SGamut3.Cine",
    ] {
        assert!(msg.contains(known), "{msg} should list {known}");
    }
    // A space whose transform is misspelt names the transform and the valid ones.
    let mut s = settings();
    s.spaces.insert(
        "bad".into(),
        ColourSpaceSettings {
            transform: "log_c".into(),
            lut: None,
            output: None,
        },
    );
    let msg = Pipeline::from_settings(&s, Some("bad"), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("log_c") && msg.contains("arri_logc3"), "{msg}");
}

#[test]
fn colour_space_lut_applies_after_display_and_project_lut_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let invert = cube_file(
        dir.path(),
        "invert.cube",
        &cube_text(17, |v| v.map(|c| 1.0 - c)),
    );
    let mut s = settings();
    s.spaces.get_mut("linear").unwrap().lut = Some(invert.clone());
    // After display: grey 0.18 → sRGB 0.46136 → inverted 0.53864.
    let p = Pipeline::from_settings(&s, Some("linear"), None).unwrap();
    assert_eq!(p.lut().unwrap().1, LutPlacement::AfterDisplay);
    let got = p.apply([0.18; 3]);
    assert!(
        (f64::from(got[0]) - (1.0 - 0.461_356_129_5)).abs() < 1e-4,
        "{got:?}"
    );

    // A project LUT replaces the display transform: it sees the plate's own values.
    s.projects.insert(
        "show".into(),
        ProjectColourSettings {
            colorspace: Some("AlexaV3LogC".into()),
            lut: Some(invert.clone()),
        },
    );
    let p = Pipeline::from_settings(&s, None, Some("show")).unwrap();
    assert_eq!(p.lut().unwrap().1, LutPlacement::ReplacesDisplay);
    let got = p.apply([0.391007, 0.2, 0.8]);
    for (g, w) in got.iter().zip([1.0 - 0.391007, 0.8, 0.2]) {
        assert!((g - w).abs() < 1e-4, "{got:?}");
    }
    // …but not for a different space asked for explicitly (it was baked for LogC).
    let p = Pipeline::from_settings(&s, Some("ACES - ACEScg"), Some("show")).unwrap();
    assert!(p.lut().is_none());

    // lut_only without a LUT is refused with a hint.
    s.spaces.insert(
        "lutonly".into(),
        ColourSpaceSettings {
            transform: "lut_only".into(),
            lut: None,
            output: None,
        },
    );
    let msg = Pipeline::from_settings(&s, Some("lutonly"), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lut_only") && msg.contains("lut"), "{msg}");
    // A missing LUT file is named.
    s.spaces.get_mut("lutonly").unwrap().lut = Some(dir.path().join("nope.cube"));
    let e = Pipeline::from_settings(&s, Some("lutonly"), None).unwrap_err();
    assert!(e.to_string().contains("nope.cube"), "{e}");
    assert_eq!(e.class(), ErrorClass::Permanent);
}

// --- .cube ---------------------------------------------------------------------------

#[test]
fn identity_cube_is_a_no_op_and_inverting_cube_inverts() {
    let dir = tempfile::tempdir().unwrap();
    let ident = cube_file(dir.path(), "id.cube", &cube_text(33, |v| v));
    let lut = CubeLut::load(&ident).unwrap();
    assert_eq!(lut.size_3d(), Some(33));
    assert_eq!(lut.title(), Some("test"));
    let img = constant(2048, 1152, [0.35, 0.2, 0.1]);
    let plain = Pipeline::builtin(Transform::AcesCg, DisplayEncoding::Srgb).unwrap();
    let with_id = Pipeline::with_lut(
        Transform::AcesCg,
        DisplayEncoding::Srgb,
        lut,
        LutPlacement::AfterDisplay,
    )
    .unwrap();
    let a = thumbnail::render(&img, &plain, 960, 540);
    let b = thumbnail::render(&img, &with_id, 960, 540);
    for (pa, pb) in a.pixels().zip(b.pixels()).step_by(997) {
        for c in 0..3 {
            assert!(
                (i32::from(pa[c]) - i32::from(pb[c])).abs() <= 1,
                "{pa:?} vs {pb:?}"
            );
        }
    }
    // Any colour through the identity cube, at 8 bits.
    for rgb in [[0.1f32, 0.5, 0.9], [0.77, 0.03, 0.41], [1.0, 0.0, 0.5]] {
        let id = CubeLut::load(&ident).unwrap();
        let got = id.apply(rgb);
        for c in 0..3 {
            assert!((got[c] - rgb[c]).abs() < 0.5 / 255.0, "{rgb:?} -> {got:?}");
        }
    }

    let inv = CubeLut::parse(&cube_text(9, |v| v.map(|c| 1.0 - c)), Path::new("inv.cube")).unwrap();
    let p = Pipeline::with_lut(
        Transform::AcesCg,
        DisplayEncoding::Srgb,
        inv,
        LutPlacement::AfterDisplay,
    )
    .unwrap();
    let c = thumbnail::render(&img, &p, 960, 540);
    for (pa, pc) in a.pixels().zip(c.pixels()).step_by(997) {
        for k in 0..3 {
            assert!(
                (i32::from(pa[k]) + i32::from(pc[k]) - 255).abs() <= 1,
                "{pa:?} vs {pc:?}"
            );
        }
    }
}

#[test]
fn one_d_cube_and_domain() {
    // A 1D LUT squaring its input over a 0..2 domain (saved with a BOM and CRLF).
    let mut text = String::from("\u{feff}LUT_1D_SIZE 1024\r\nDOMAIN_MIN 0 0 0\nDOMAIN_MAX 2 2 2\n");
    for i in 0..1024 {
        let x = 2.0 * i as f64 / 1023.0;
        text.push_str(&format!("{} {} {}\r\n", x * x, x * x, x * x));
    }
    let lut = CubeLut::parse(&text, Path::new("sq.cube")).unwrap();
    assert_eq!(lut.size_1d(), Some(1024));
    assert_eq!(lut.size_3d(), None);
    let got = lut.apply([0.5, 1.5, 3.0]);
    assert!(
        (got[0] - 0.25).abs() < 1e-4 && (got[1] - 2.25).abs() < 1e-4,
        "{got:?}"
    );
    assert!(
        (got[2] - 4.0).abs() < 1e-4,
        "clamps at the domain edge: {got:?}"
    );
}

#[test]
fn malformed_cubes_name_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        // (text, line expected in the message, words expected)
        (
            "LUT_3D_SIZE 2\n0 0 0\n1 0 0\n0 1 0\n1 x 0\n",
            5,
            "\"x\" is not a number",
        ),
        ("# c\nLUT_3D_SIZE 2\n0 0 0\n1 0\n", 4, "expected 3 numbers"),
        ("LUT_3D_SIZE 2\n0 0 0\n1 0 0 5\n", 3, "found more"),
        ("LUT_3D_SIZE 2\n0 0 0\n1 0 0\n", 4, "truncated"),
        ("LUT_3D_SIZE 257\n", 1, "2..=256"),
        ("LUT_3D_SIZE 1\n", 1, "2..=256"),
        ("LUT_3D_SIZE two\n", 1, "not a whole number"),
        ("TITLE \"x\"\n0 0 0\n", 2, "before LUT_3D_SIZE"),
        ("TITLE \"x\"\n", 2, "no LUT_3D_SIZE"),
        (
            "LUT_1D_SIZE 2\n0 0 0\n1 1 1\n2 2 2\n",
            4,
            "more table entries",
        ),
        (
            "LUT_1D_SIZE 2\nDOMAIN_MIN 1 0 0\nDOMAIN_MAX 1 1 1\n0 0 0\n1 1 1\n",
            3,
            "not below",
        ),
        (
            "LUT_1D_SIZE 2\n0 0 0\nLUT_3D_SIZE 2\n",
            3,
            "after the table data",
        ),
        ("LUT_1D_SIZE 2\n0 0 nan\n1 1 1\n", 2, "not a finite number"),
        ("LUT_1D_SIZE 2\nDOMAIN_MIN 0 0\n", 2, "takes 3 numbers"),
        ("LUT_3D_SIZE 2\nLUT_3D_SIZE 2\n", 2, "twice"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, &(text, line, words)) in cases.iter().enumerate() {
        let path = cube_file(dir.path(), &format!("bad{i}.cube"), text);
        let e = CubeLut::load(&path).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("bad{i}.cube:{line}:")) && msg.contains(words),
            "case {i}: {msg}"
        );
        assert!(
            matches!(e, ColourError::LutSyntax { line: l, .. } if l == line),
            "case {i}: {e:?}"
        );
    }
}

// --- fit -----------------------------------------------------------------------------

#[test]
fn fit_keeps_the_display_aspect() {
    // 16:9 fills the box.
    assert_eq!(thumbnail::fit(1920, 1080, 1.0, 960, 540), (960, 540));
    assert_eq!(thumbnail::fit(2048, 1152, 1.0, 960, 540), (960, 540));
    // 4:3 is pillarboxed by height.
    assert_eq!(thumbnail::fit(2048, 1536, 1.0, 960, 540), (720, 540));
    // 2.39:1 scope is limited by width.
    assert_eq!(thumbnail::fit(4096, 1714, 1.0, 960, 540), (960, 402));
    // Portrait.
    assert_eq!(thumbnail::fit(1080, 1920, 1.0, 960, 540), (304, 540));
    // 2× anamorphic 2048×1716 displays as 4096×1716 (2.39:1).
    assert_eq!(thumbnail::fit(2048, 1716, 2.0, 960, 540), (960, 402));
    // Pixel aspect 0.667 (DisplayWindow/t16.exr is 481×371 at 0.667).
    assert_eq!(thumbnail::fit(481, 371, 0.667, 960, 540), (467, 540));
    // Small frames grow to the box; never beyond it; never to zero.
    assert_eq!(thumbnail::fit(400, 300, 1.0, 960, 540), (720, 540));
    assert_eq!(thumbnail::fit(100_000, 1, 1.0, 960, 540), (960, 1));
    assert_eq!(thumbnail::fit(1, 100_000, 1.0, 960, 540), (1, 540));
    assert_eq!(thumbnail::fit(0, 1080, 1.0, 960, 540), (1, 1));
    // A nonsense pixel aspect counts as square.
    assert_eq!(thumbnail::fit(1920, 1080, f32::NAN, 960, 540), (960, 540));
    assert_eq!(thumbnail::fit(1920, 1080, -2.0, 960, 540), (960, 540));
}

// --- render ----------------------------------------------------------------------------

#[test]
fn render_constant_images_through_the_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    // 8-bit expectations from colour-science (module comment).
    let cases = [
        (Transform::AcesCg, [0.35f32, 0.2, 0.1], [181u8, 118, 80]),
        (Transform::ArriLogC3, [0.5, 0.42, 0.35], [217, 137, 82]),
        (
            Transform::SonySlog3SGamut3Cine,
            [0.5, 0.42, 0.35],
            [197, 118, 73],
        ),
        (Transform::Aces2065_1, [0.3, 0.25, 0.2], [169, 135, 121]),
    ];
    for (t, input, want) in cases {
        let p = Pipeline::builtin(t, DisplayEncoding::Srgb).unwrap();
        let img = constant(2048, 1152, input);
        let thumb = thumbnail::render(&img, &p, 960, 540);
        assert_eq!(thumb.dimensions(), (960, 540));
        // Before JPEG: exact to one code value.
        assert_pixel_near(&thumb, want, 1, &format!("{t} rendered"));
        let out = dir.path().join(format!("t/{t}.jpg"));
        thumbnail::write_jpeg(&thumb, &out, 95).unwrap();
        let back = image::open(&out).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (960, 540));
        assert_pixel_near(&back, want, 1, &format!("{t} through JPEG"));
    }
}

#[test]
fn render_averages_in_linear_light_without_aliasing() {
    // One-pixel black/white stripes (linear 0 and 1) in both directions: a correct
    // linear-light filter gives an even linear 0.5 everywhere, sRGB 0.7354 = 188.
    // Averaging code values would give 128; point sampling would give stripes.
    let (w, h) = (2048u32, 1152u32);
    for vertical in [true, false] {
        let mut img = RgbImage::black(w, h);
        for y in 0..h {
            for x in 0..w {
                let on = if vertical { x % 2 == 0 } else { y % 2 == 0 };
                if on {
                    let i = ((y * w + x) * 3) as usize;
                    img.data[i..i + 3].copy_from_slice(&[1.0; 3]);
                }
            }
        }
        let p = Pipeline::builtin(Transform::LinearRec709, DisplayEncoding::Srgb).unwrap();
        let thumb = thumbnail::render(&img, &p, 960, 540);
        // The outermost output pixel sees only part of a filter footprint, and at
        // the edge of a Nyquist pattern there is no right answer; skip it.
        let (mut lo, mut hi) = (255u8, 0u8);
        for y in 1..thumb.height() - 1 {
            for x in 1..thumb.width() - 1 {
                let v = thumb.get_pixel(x, y).0[0];
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        assert!(
            lo >= 185 && hi <= 191,
            "vertical={vertical}: values {lo}..={hi}, expected 188±3"
        );
    }
}

#[test]
fn render_keeps_geometry_and_pixel_aspect() {
    // Left half red, right half blue, anamorphic 2×: 1024×858 displays as 2.39:1.
    let (w, h) = (1024u32, 858u32);
    let mut img = RgbImage::black(w, h);
    img.pixel_aspect = 2.0;
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            let v = if x < w / 2 {
                [0.5, 0.0, 0.0]
            } else {
                [0.0, 0.0, 0.5]
            };
            img.data[i..i + 3].copy_from_slice(&v);
        }
    }
    let p = Pipeline::builtin(Transform::LinearRec709, DisplayEncoding::Srgb).unwrap();
    let t = thumbnail::render(&img, &p, 960, 540);
    assert_eq!(t.dimensions(), (960, 402));
    assert_eq!(t.get_pixel(10, 200).0, [188, 0, 0]);
    assert_eq!(t.get_pixel(950, 200).0, [0, 0, 188]);
    // The edge stays within a couple of pixels of the middle.
    let red_cols = (0..960).filter(|&x| t.get_pixel(x, 200).0[0] > 94).count();
    assert!((478..=482).contains(&red_cols), "{red_cols}");
}

#[test]
fn render_survives_bad_samples_and_short_buffers() {
    let p = Pipeline::builtin(Transform::AcesCg, DisplayEncoding::Srgb).unwrap();
    let mut img = constant(64, 36, [0.18; 3]);
    img.data[0] = f32::NAN;
    img.data[4] = f32::INFINITY;
    img.data[8] = -1e30;
    let t = thumbnail::render(&img, &p, 960, 540);
    assert_eq!(t.dimensions(), (960, 540));
    assert_eq!(t.get_pixel(480, 270).0, [118, 118, 118]);
    // A buffer shorter than the size says (or a huge bogus size): a black
    // thumbnail of the fitted size, and rejected by the check make_from_image runs.
    img.data.truncate(100);
    let t = thumbnail::render(&img, &p, 96, 54);
    assert_eq!(t.dimensions(), (96, 54));
    assert!(t.pixels().all(|px| px.0 == [0, 0, 0]));
    let huge = RgbImage {
        width: u32::MAX,
        height: u32::MAX,
        pixel_aspect: 1.0,
        data: vec![0.5; 30],
    };
    assert_eq!(thumbnail::render(&huge, &p, 96, 54).dimensions(), (54, 54));
    let e = thumbnail::check_image(&img, Path::new("/plates/a.exr")).unwrap_err();
    assert!(e.to_string().contains("/plates/a.exr"), "{e}");
    assert!(thumbnail::render(&RgbImage::black(0, 0), &p, 96, 54).dimensions() == (1, 1));
}

// --- writing -------------------------------------------------------------------------

#[test]
fn write_jpeg_creates_folders_replaces_atomically_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("delivery/.thumbnail/A001_plate_1001.jpg");
    let img = image::RgbImage::from_pixel(32, 18, image::Rgb([10, 200, 30]));
    thumbnail::write_jpeg(&img, &out, 90).unwrap();
    let first = std::fs::read(&out).unwrap();
    assert_eq!(&first[..2], &[0xFF, 0xD8]);
    // Overwriting leaves no temporary files behind.
    let img2 = image::RgbImage::from_pixel(32, 18, image::Rgb([200, 10, 30]));
    thumbnail::write_jpeg(&img2, &out, 90).unwrap();
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["A001_plate_1001.jpg".to_string()]);
    assert!(image::open(&out).unwrap().to_rgb8().get_pixel(5, 5).0[0] > 150);

    // A parent that is a file: the error names the thumbnail path.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("t.jpg");
    let e = thumbnail::write_jpeg(&img, &bad, 90).unwrap_err();
    assert!(matches!(e, ThumbnailError::Write { .. }), "{e:?}");
    assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
}

#[test]
fn missing_frame_is_a_media_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::defaults().unwrap();
    let p = Pipeline::from_settings(&s.colour, None, None).unwrap();
    let frame = dir.path().join("missing.0001.exr");
    let e =
        thumbnail::make_for_frame(&frame, &dir.path().join("t.jpg"), &p, &s.thumbnail).unwrap_err();
    assert!(matches!(e, ThumbnailError::Media(_)), "{e:?}");
    assert!(e.to_string().contains("missing.0001.exr"), "{e}");
    assert!(!dir.path().join("t.jpg").exists());
}

// --- end to end through the media readers ---------------------------------------------

/// Needs `media::exr::write_frame` and `media::exr::read_pixels`.
#[test]
fn exr_frame_to_thumbnail() {
    use iom::media::exr::{write_frame, ExrSpec, Fill};
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("plate.1001.exr");
    // ACEScg (0.35, 0.2, 0.1) as half floats, 2× anamorphic.
    let spec = ExrSpec {
        fill: Fill::Constant([0.35, 0.2, 0.1]),
        pixel_aspect: 2.0,
        ..ExrSpec::new(1024, 858)
    };
    write_frame(&frame, &spec).unwrap();
    let s = Settings::defaults().unwrap();
    let p = Pipeline::from_settings(&s.colour, Some("ACES - ACEScg"), None).unwrap();
    let out = dir.path().join(".thumbnail/plate_1001.jpg");
    let size = thumbnail::make_for_frame(&frame, &out, &p, &s.thumbnail).unwrap();
    assert_eq!(size, (960, 402));
    let back = image::open(&out).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), (960, 402));
    assert_pixel_near(&back, [181, 118, 80], 1, "EXR ACEScg");
}

/// Needs `media::jpeg::read_pixels`.
#[test]
fn jpeg_frame_to_thumbnail_is_identity_for_srgb() {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("ref.0001.jpg");
    image::RgbImage::from_pixel(1280, 720, image::Rgb([40, 120, 220]))
        .save(&frame)
        .unwrap();
    let s = Settings::defaults().unwrap();
    let p = Pipeline::from_settings(&s.colour, Some("sRGB"), None).unwrap();
    let out = dir.path().join(".thumbnail/ref_0001.jpg");
    let size = thumbnail::make_for_frame(&frame, &out, &p, &s.thumbnail).unwrap();
    assert_eq!(size, (960, 540));
    let src = image::open(&frame).unwrap().to_rgb8().get_pixel(640, 360).0;
    assert_pixel_near(&image::open(&out).unwrap().to_rgb8(), src, 2, "sRGB JPEG");
}
