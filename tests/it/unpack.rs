//! Movie plates published as frames (the original's "MOV to DPX"): planning by
//! setting, project and option; ProRes and DNxHD/MXF sources written as DPX and
//! EXR frames that decode to the movie's own pixels, carry its timecode and feed
//! the proxy and review steps; re-runs, a frame in the way, a truncated movie.

use std::path::{Path, PathBuf};

use iom::config::{MovieFrames, Settings};
use iom::error::{Classify, ErrorClass};
use iom::media::movie::{self, MovieSpec};
use iom::media::{dpx, exr, read_frame_info, RgbImage};
use iom::plan::{self, PlanOptions};
use iom::scanlist::Row;
use iom::steps::{self, StepContext};
use iom::store::{GraphState, WorkDir};
use iom::task::{FrameFormat, Graph, Source, Step, StepKind};
use iom::timecode::FrameRate;

use super::publish::{project, run_embedded, Project};

/// A checked scanlist row for the movie `delivery/<dir>/<file>`, frames `a..=b`.
fn movie_row(p: &Project, dir: &str, file: &str, frames: i64, a: i64, b: i64) -> Row {
    Row {
        check: true,
        shot_name: "ABC_0010".into(),
        seq_type: "org".into(),
        scan_path: p.delivery.join(dir).display().to_string(),
        scan_name: file.into(),
        ext: Path::new(file)
            .extension()
            .unwrap()
            .to_string_lossy()
            .to_lowercase(),
        start_frame: Some(1),
        end_frame: Some(frames),
        duration: Some(frames),
        just_in: Some(a),
        just_out: Some(b),
        framerate: Some(24.0),
        ..Row::default()
    }
}

fn write_movie(p: &Project, dir: &str, file: &str, spec: &MovieSpec) -> PathBuf {
    let d = p.delivery.join(dir);
    std::fs::create_dir_all(&d).unwrap();
    let path = d.join(file);
    movie::write_test_movie(&path, spec).unwrap();
    path
}

fn plan_with(p: &Project, rows: &[Row], movie_frames: Option<MovieFrames>) -> Vec<Graph> {
    let opts = PlanOptions {
        delivery_root: Some(p.delivery.clone()),
        movie_frames,
        ..PlanOptions::default()
    };
    plan::plan(rows, &p.settings, &opts, &|_| vec![])
        .unwrap()
        .graphs
}

fn copy_step(g: &Graph) -> (&Source, &iom::task::PlateOutput, Option<FrameFormat>) {
    match &g
        .nodes
        .iter()
        .find(|n| n.step.kind() == StepKind::Copy)
        .unwrap()
        .step
    {
        Step::Copy {
            source,
            output,
            frames,
        } => (source, output, *frames),
        s => panic!("{s:?}"),
    }
}

fn step_ctx(settings: &Settings) -> StepContext {
    StepContext {
        settings: std::sync::Arc::new(settings.clone()),
        worker: "test".into(),
        cancel: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        tracker: iom::tracker::open_tracker(settings).unwrap(),
    }
}

/// Runs the graph's copy step on its own, as attempt `attempt`.
fn run_copy(p: &Project, g: &Graph, attempt: u32) -> Result<steps::StepOutput, steps::StepError> {
    let id = &g
        .nodes
        .iter()
        .find(|n| n.step.kind() == StepKind::Copy)
        .unwrap()
        .id;
    let msg = g.message(id, attempt).unwrap();
    steps::run(&msg, &step_ctx(&p.settings))
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Cuts a file to half its length (a delivery still being written).
fn cut_in_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len / 2).unwrap();
}

/// Largest channel difference between two images of one size.
fn max_diff(a: &RgbImage, b: &RgbImage) -> f32 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn movie_rows_plan_as_frames_by_setting_project_and_option() {
    let mut p = project("probe, copy, cleanup", None);
    let rows = [movie_row(&p, "mov", "A001C003.mov", 10, 2, 9)];
    // Default: the movie is published as it is.
    let g = plan_with(&p, &rows, None).remove(0);
    let (_, out, frames) = copy_step(&g);
    assert_eq!((out.ext.as_str(), frames), ("mov", None));
    let copy_id = &g.nodes[1].id;
    assert_eq!(g.message(copy_id, 1).unwrap().schema, 1);

    // The studio setting.
    p.settings.publish.movie_frames = MovieFrames(Some(FrameFormat::Dpx10));
    let g = plan_with(&p, &rows, None).remove(0);
    let (src, out, frames) = copy_step(&g);
    assert_eq!(
        (out.ext.as_str(), frames),
        ("dpx", Some(FrameFormat::Dpx10))
    );
    assert!(
        matches!(
            src,
            Source::Movie {
                first: 2,
                last: 9,
                ..
            }
        ),
        "{src:?}"
    );
    // A frames copy needs schema 2; every other message stays at 1.
    let copy_id = &g.nodes[1].id;
    assert_eq!(g.message(copy_id, 1).unwrap().schema, 2);
    assert_eq!(g.message(&g.nodes[0].id, 1).unwrap().schema, 1);

    // The project's own format wins over the studio's.
    p.settings
        .publish
        .project_movie_frames
        .insert("demo".into(), MovieFrames(Some(FrameFormat::Exr32)));
    let g = plan_with(&p, &rows, None).remove(0);
    assert_eq!(copy_step(&g).1.ext, "exr");
    assert_eq!(copy_step(&g).2, Some(FrameFormat::Exr32));

    // The command-line option wins over both; "off" keeps the movie.
    let g = plan_with(&p, &rows, Some(MovieFrames(None))).remove(0);
    assert_eq!(copy_step(&g).1.ext, "mov");
    let g = plan_with(&p, &rows, Some(MovieFrames(Some(FrameFormat::Dpx12)))).remove(0);
    assert_eq!(copy_step(&g).2, Some(FrameFormat::Dpx12));

    // `editor` rows always keep the movie (as the original forced the option off).
    let mut editor = rows[0].clone();
    editor.seq_type = "editor".into();
    let g = plan_with(&p, &[editor], None).remove(0);
    assert_eq!(
        (copy_step(&g).1.ext.as_str(), copy_step(&g).2),
        ("mov", None)
    );
}

#[test]
fn a_bad_movie_frames_setting_names_the_key_and_the_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("settings.yml");
    std::fs::write(&cfg, "publish:\n  movie_frames: tiff 8bit\n").unwrap();
    let e = Settings::load_with(Some(&cfg), &|_| None, std::iter::empty())
        .unwrap_err()
        .to_string();
    assert!(e.contains("publish.movie_frames"), "{e}");
    assert!(e.contains("\"dpx 10bit\""), "{e}");
    // The environment layer speaks the same names.
    let e = Settings::load_with(
        None,
        &|_| None,
        [(
            "IOM__PUBLISH__MOVIE_FRAMES".to_string(),
            "exr 16bit".to_string(),
        )]
        .into_iter(),
    )
    .unwrap();
    assert_eq!(
        e.publish.movie_frames,
        MovieFrames(Some(FrameFormat::Exr16))
    );
}

#[test]
fn a_prores_movie_published_as_dpx_frames_end_to_end() {
    let mut p = project(
        "probe, copy, thumbnail, proxy, review, register, cleanup",
        None,
    );
    p.settings.publish.movie_frames = MovieFrames(Some(FrameFormat::Dpx10));
    let mov = write_movie(
        &p,
        "mov",
        "A001C003.mov",
        &MovieSpec::prores_hq(64, 36, FrameRate::FPS_24, 8).with_timecode("01:00:00:00"),
    );
    // Movie frames 3..=7 become 1001..=1005.
    let g = plan_with(&p, &[movie_row(&p, "mov", "A001C003.mov", 8, 3, 7)], None).remove(0);
    let s = &run_embedded(&p, std::slice::from_ref(&g))[0];
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");

    let (_, out, _) = copy_step(&g);
    let names = files_in(&out.frames_dir);
    let want: Vec<String> = (1001..=1005)
        .map(|n| format!("ABC_0010_org_v001.{n}.dpx"))
        .collect();
    assert_eq!(names, want, "only the frames, no movie, no temporaries");
    let decoded = movie::decode_frames(&mov, &[2, 3, 4, 5, 6]).unwrap();
    for (i, n) in (1001..=1005).enumerate() {
        let f = out.frame_path(n);
        let info = read_frame_info(&f).unwrap();
        assert_eq!(info.bit_depth, Some(10), "{}", f.display());
        assert_eq!(info.fps, Some(FrameRate::FPS_24));
        // Movie frame 3 (index 2) sits at 01:00:00:02.
        assert_eq!(
            info.timecode.as_deref(),
            Some(format!("01:00:00:{:02}", 2 + i).as_str())
        );
        // The DPX holds the movie's decoded code values, to 10-bit quantisation.
        let px = dpx::read_pixels(&f).unwrap();
        let d = max_diff(&px, &decoded[i]);
        assert!(d <= 0.6 / 1023.0, "{}: off by {d}", f.display());
        // Each test-movie frame has its own flat colour: frame index 2 + i.
        let c = px.pixel(32, 18);
        assert_eq!(movie::test_frame_index(c), Some(2 + i as u64), "{c:?}");
    }
    // The later steps treated it as a frame plate.
    assert_eq!(files_in(&out.jpg_dir).len(), 5);
    let mp4 = movie::probe(&out.movie_path("mp4")).unwrap();
    assert_eq!(mp4.frame_count, 5);
    assert_eq!(mp4.timecode.as_deref(), Some("01:00:00:02"));

    // A second run (a redelivered message) finds its own frames and keeps them.
    let before: Vec<Vec<u8>> = (1001..=1005)
        .map(|n| std::fs::read(out.frame_path(n)).unwrap())
        .collect();
    let again = run_copy(&p, &g, 2).unwrap();
    assert_eq!(again.summary["skipped"], 5, "{}", again.summary);
    assert_eq!(again.summary["written"], 0);
    for (n, b) in (1001..=1005).zip(&before) {
        assert_eq!(&std::fs::read(out.frame_path(n)).unwrap(), b);
    }

    // A frame with other content in the way is refused, never overwritten.
    let f = out.frame_path(1003);
    std::fs::write(&f, b"someone else's frame").unwrap();
    let e = run_copy(&p, &g, 3).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(
        e.to_string()
            .contains("already exists with different content"),
        "{e}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"someone else's frame");
    assert!(
        files_in(&out.frames_dir)
            .iter()
            .all(|n| !n.starts_with('.')),
        "no temporaries left: {:?}",
        files_in(&out.frames_dir)
    );
}

#[test]
fn exr_frames_hold_the_movie_code_values_in_half_and_float() {
    for (format, tol) in [(FrameFormat::Exr16, 1e-3), (FrameFormat::Exr32, 1e-6)] {
        let p = project("probe, copy", None);
        let mov = write_movie(
            &p,
            "mov",
            "B002C001.mov",
            &MovieSpec::prores_hq(48, 28, FrameRate::FPS_25, 4).with_timecode("10:00:00:00"),
        );
        let rows = [movie_row(&p, "mov", "B002C001.mov", 4, 1, 4)];
        let g = plan_with(&p, &rows, Some(MovieFrames(Some(format)))).remove(0);
        let s = &run_embedded(&p, std::slice::from_ref(&g))[0];
        assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
        let (_, out, _) = copy_step(&g);
        let decoded = movie::decode_frames(&mov, &[0, 3]).unwrap();
        for (img, n) in decoded.iter().zip([1001, 1004]) {
            let f = out.frame_path(n);
            let info = read_frame_info(&f).unwrap();
            let bits = if format == FrameFormat::Exr16 { 16 } else { 32 };
            assert_eq!(info.bit_depth, Some(bits), "{}", f.display());
            assert_eq!(info.fps, Some(FrameRate::FPS_25));
            assert_eq!(
                info.timecode.as_deref(),
                Some(if n == 1001 {
                    "10:00:00:00"
                } else {
                    "10:00:00:03"
                })
            );
            let d = max_diff(&exr::read_pixels(&f).unwrap(), img);
            assert!(d <= tol, "{format}: {} off by {d}", f.display());
        }
    }
}

#[test]
fn an_mxf_plate_is_transcoded_to_the_delivery_codec() {
    // DNxHD in MXF (1080p, the only size FFmpeg's dnxhd takes without DNxHR), kept
    // as a movie: the review step decodes it and writes the project's codec.
    let mut p = project("probe, copy, review", None);
    p.settings.media.review.display = "rec709".into();
    p.settings.media.review.codec = "Apple ProRes 422 LT".into();
    p.settings.media.review.filmstrip = false;
    p.settings.colour.default_colorspace = "rec709".into();
    write_movie(
        &p,
        "mxf",
        "C003.mxf",
        &MovieSpec::dnxhd_1080(FrameRate::FPS_24, 3).with_timecode("02:00:00:00"),
    );
    let g = plan_with(&p, &[movie_row(&p, "mxf", "C003.mxf", 3, 1, 3)], None).remove(0);
    let s = &run_embedded(&p, std::slice::from_ref(&g))[0];
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    let (_, out, _) = copy_step(&g);
    assert!(out.frames_dir.join("ABC_0010_org_v001.mxf").is_file());
    let mov = movie::probe(&out.movie_path("mov")).unwrap();
    assert_eq!(
        (mov.codec.as_str(), mov.profile.as_deref(), mov.frame_count),
        ("prores", Some("LT"), 3)
    );
    assert_eq!((mov.width, mov.height), (1920, 1080));
    assert_eq!(mov.timecode.as_deref(), Some("02:00:00:00"));
    let mp4 = movie::probe(&out.movie_path("mp4")).unwrap();
    assert_eq!((mp4.codec.as_str(), mp4.frame_count), ("h264", 3));
    // rec709 in, rec709 out: the test movie's flat colours come through.
    let f = &movie::decode_frames(&out.movie_path("mov"), &[1]).unwrap()[0];
    let c = f.pixel(960, 540);
    assert_eq!(movie::test_frame_index(c), Some(1), "{c:?}");
}

#[test]
fn a_truncated_movie_fails_the_copy_and_leaves_no_frames() {
    let mut p = project("probe, copy", None);
    p.settings.publish.movie_frames = MovieFrames(Some(FrameFormat::Dpx10));
    let mov = write_movie(
        &p,
        "mov",
        "D004.mov",
        &MovieSpec::prores_hq(64, 36, FrameRate::FPS_24, 24),
    );
    let g = plan_with(&p, &[movie_row(&p, "mov", "D004.mov", 24, 1, 24)], None).remove(0);
    // Cut the movie after planning (the delivery was still being written).
    cut_in_half(&mov);
    copy_fails_leaving_no_frame(&p, &g, "D004.mov", "nothing under the publish root");
}

/// Runs the graph's copy (the unpack), which must fail permanently naming
/// `movie`, with no frame (or temporary) left in the frames folder.
fn copy_fails_leaving_no_frame(p: &Project, g: &Graph, movie: &str, why: &str) {
    WorkDir::create(g).unwrap();
    let e = run_copy(p, g, 1).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    assert!(e.to_string().contains(movie), "{e}");
    let (_, out, _) = copy_step(g);
    assert_eq!(files_in(&out.frames_dir), Vec::<String>::new(), "{why}");
}

#[test]
fn a_movie_that_breaks_mid_range_removes_the_frames_already_written() {
    // An MXF cut in half still probes from its header partition and its first
    // frames decode, so the step writes a batch or more before it meets the cut.
    let mut p = project("probe, copy", None);
    p.settings.media.jobs = 2;
    p.settings.publish.movie_frames = MovieFrames(Some(FrameFormat::Dpx10));
    let mxf = write_movie(
        &p,
        "mxf",
        "E005.mxf",
        &MovieSpec::dnxhd_1080(FrameRate::FPS_24, 8),
    );
    let g = plan_with(&p, &[movie_row(&p, "mxf", "E005.mxf", 8, 1, 8)], None).remove(0);
    cut_in_half(&mxf);
    assert_eq!(movie::probe(&mxf).unwrap().frame_count, 8, "precondition");
    assert_eq!(
        movie::decode_frames(&mxf, &[0, 1]).unwrap().len(),
        2,
        "precondition"
    );
    copy_fails_leaving_no_frame(
        &p,
        &g,
        "E005.mxf",
        "the frames written before the cut are gone, and no temporary is left",
    );
}
