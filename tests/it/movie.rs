//! Movies through FFmpeg: every file here is written by `write_test_movie` (or, for
//! the audio-only case, the `ffmpeg` CLI) into a temporary folder, then probed and
//! decoded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use iom::media::movie::{
    self, decode_frames, decode_frames_with_stats, probe, test_frame_colour, test_frame_index,
    write_test_movie, MovieSpec,
};
use iom::media::{MediaError, RgbImage};
use iom::timecode::FrameRate;

fn write(dir: &Path, name: &str, spec: &MovieSpec) -> PathBuf {
    let path = dir.join(name);
    write_test_movie(&path, spec).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    path
}

/// The frame number a decoded test-pattern image shows (sampled above the bar).
fn shown_frame(img: &RgbImage) -> Option<u64> {
    test_frame_index(img.pixel(img.width / 2, img.height / 4))
}

fn max_error(img: &RgbImage, n: u64) -> f32 {
    let want = test_frame_colour(n);
    let got = img.pixel(img.width / 2, img.height / 4);
    (0..3).map(|c| (want[c] - got[c]).abs()).fold(0.0, f32::max)
}

#[test]
fn prores_hq_24fps_with_timecode() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MovieSpec::prores_hq(320, 180, FrameRate::FPS_24, 30).with_timecode("01:00:00:00");
    let path = write(dir.path(), "plate.mov", &spec);
    let info = probe(&path).unwrap();
    assert_eq!(info.codec, "prores");
    assert_eq!(info.profile.as_deref(), Some("HQ"));
    assert_eq!((info.width, info.height), (320, 180));
    assert_eq!(info.fps, FrameRate::new(24, 1));
    assert_eq!(info.frame_count, 30);
    assert!(
        (info.duration_seconds - 1.25).abs() < 1e-6,
        "{}",
        info.duration_seconds
    );
    assert_eq!(info.timecode.as_deref(), Some("01:00:00:00"));
    assert_eq!(info.color_primaries.as_deref(), Some("bt709"));
    assert_eq!(info.color_transfer.as_deref(), Some("bt709"));
    assert_eq!(info.color_space.as_deref(), Some("bt709"));
    assert_eq!(info.pix_fmt, "yuv422p10le");
    assert_eq!(info.pixel_aspect, 1.0);
    assert!(info.container.contains("mov"), "{}", info.container);
    // Nothing but the finished movie is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("plate.mov")]);
}

#[test]
fn prores_4444_profile_and_25fps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MovieSpec {
        profile: Some("4".into()),
        ..MovieSpec::prores_hq(256, 144, FrameRate::FPS_25, 25)
    }
    .with_timecode("10:00:00:00");
    let path = write(dir.path(), "p4444.mov", &spec);
    let info = probe(&path).unwrap();
    assert_eq!(info.profile.as_deref(), Some("4444"));
    // FFmpeg's ProRes decoder reports 4444 as 12-bit.
    assert_eq!(info.pix_fmt, "yuv444p12le");
    assert_eq!(info.fps, FrameRate::FPS_25);
    assert_eq!(info.frame_count, 25);
    assert_eq!(info.timecode.as_deref(), Some("10:00:00:00"));
    assert!((info.duration_seconds - 1.0).abs() < 1e-6);
}

#[test]
fn fps_23_976_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        MovieSpec::prores_hq(192, 108, FrameRate::FPS_23_976, 48).with_timecode("00:59:59:00");
    let path = write(dir.path(), "ntsc.mov", &spec);
    let info = probe(&path).unwrap();
    assert_eq!(info.fps, FrameRate::new(24000, 1001));
    assert_eq!(info.frame_count, 48);
    assert!((info.duration_seconds - 48.0 * 1001.0 / 24000.0).abs() < 1e-6);
    assert_eq!(info.timecode.as_deref(), Some("00:59:59:00"));
    // Frame identification by pts must survive the 1001/24000 arithmetic.
    let frames = decode_frames(&path, &[47, 23]).unwrap();
    assert_eq!(shown_frame(&frames[0]), Some(47));
    assert_eq!(shown_frame(&frames[1]), Some(23));
}

#[test]
fn drop_frame_timecode_at_29_97() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MovieSpec::prores_hq(160, 90, FrameRate::FPS_29_97, 12).with_timecode("01:00:00;00");
    let path = write(dir.path(), "df.mov", &spec);
    let info = probe(&path).unwrap();
    assert_eq!(info.fps, FrameRate::new(30000, 1001));
    assert_eq!(info.timecode.as_deref(), Some("01:00:00;00"));
    assert_eq!(info.frame_count, 12);
}

#[test]
fn no_timecode_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "notc.mov",
        &MovieSpec::prores_hq(64, 64, FrameRate::FPS_24, 3),
    );
    assert_eq!(probe(&path).unwrap().timecode, None);
}

#[test]
fn drop_frame_label_at_24fps_is_refused_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.mov");
    let spec = MovieSpec::default().with_timecode("01:00:00;00");
    let err = write_test_movie(&path, &spec).unwrap_err();
    assert!(err.to_string().contains("bad.mov"), "{err}");
    assert!(!path.exists());
}

#[test]
fn odd_dimensions_mjpeg_and_prores() {
    let dir = tempfile::tempdir().unwrap();
    for (name, spec) in [
        (
            "odd_mjpeg.mov",
            MovieSpec::mjpeg(721, 405, FrameRate::FPS_24, 6),
        ),
        (
            "odd_prores.mov",
            MovieSpec::prores_hq(721, 405, FrameRate::FPS_24, 6),
        ),
    ] {
        let path = write(dir.path(), name, &spec);
        let info = probe(&path).unwrap();
        assert_eq!((info.width, info.height), (721, 405), "{name}");
        assert_eq!(info.frame_count, 6, "{name}");
        let frames = decode_frames(&path, &[5, 2]).unwrap();
        for (img, n) in frames.iter().zip([5u64, 2]) {
            assert_eq!((img.width, img.height), (721, 405), "{name}");
            assert_eq!(img.data.len(), 721 * 405 * 3);
            assert_eq!(shown_frame(img), Some(n), "{name}");
            assert!(
                max_error(img, n) < 0.03,
                "{name} frame {n}: {}",
                max_error(img, n)
            );
        }
    }
}

#[test]
fn upper_case_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "A001C003_PLATE.MOV",
        &MovieSpec::prores_hq(64, 36, FrameRate::FPS_24, 4),
    );
    let info = probe(&path).unwrap();
    assert_eq!(info.codec, "prores");
    assert_eq!(info.frame_count, 4);
}

#[test]
fn mxf_with_dnxhd() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MovieSpec::dnxhd_1080(FrameRate::FPS_25, 10).with_timecode("10:00:00:00");
    let path = write(dir.path(), "reel.mxf", &spec);
    let info = probe(&path).unwrap();
    assert_eq!(info.codec, "dnxhd");
    assert_eq!(info.profile.as_deref(), Some("DNXHD"));
    assert_eq!((info.width, info.height), (1920, 1080));
    assert_eq!(info.fps, FrameRate::FPS_25);
    assert_eq!(info.frame_count, 10);
    assert_eq!(info.timecode.as_deref(), Some("10:00:00:00"));
    assert_eq!(info.container, "mxf");
    let frames = decode_frames(&path, &[9, 0, 4]).unwrap();
    let shown: Vec<_> = frames.iter().map(shown_frame).collect();
    assert_eq!(shown, vec![Some(9), Some(0), Some(4)]);
}

#[test]
fn name_with_extra_dots_and_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "A001 C003.plate.v01 final.cut:2.mov",
        &MovieSpec::prores_hq(64, 36, FrameRate::FPS_24, 5).with_timecode("01:00:00:00"),
    );
    let info = probe(&path).unwrap();
    assert_eq!(info.frame_count, 5);
    assert_eq!(info.timecode.as_deref(), Some("01:00:00:00"));
    assert_eq!(
        shown_frame(&decode_frames(&path, &[4]).unwrap()[0]),
        Some(4)
    );
}

#[test]
fn decode_picks_the_asked_frames_in_the_asked_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "pick.mov",
        &MovieSpec::prores_hq(320, 180, FrameRate::FPS_24, 48),
    );
    let asked = [47u64, 0, 17, 17, 30];
    let (frames, stats) = decode_frames_with_stats(&path, &asked).unwrap();
    assert_eq!(frames.len(), asked.len());
    for (img, &n) in frames.iter().zip(&asked) {
        assert_eq!((img.width, img.height, img.pixel_aspect), (320, 180, 1.0));
        assert_eq!(shown_frame(img), Some(n));
        // 10-bit ProRes decoded with the right matrix and range is within 2 %.
        assert!(
            max_error(img, n) < 0.02,
            "frame {n}: error {}",
            max_error(img, n)
        );
    }
    // Intra-only: only the wanted frames go through the decoder, and seeks are used.
    assert_eq!(stats.packets_decoded, 4, "{stats:?}");
    assert!(stats.seeks >= 1, "{stats:?}");
    assert!(stats.packets_read < 48, "{stats:?}");
    assert_eq!(stats.restarts, 0, "{stats:?}");
}

#[test]
fn decode_h264_long_gop_with_b_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "gop.mp4",
        &MovieSpec::h264(256, 144, FrameRate::FPS_24, 120),
    );
    let info = probe(&path).unwrap();
    assert_eq!(info.codec, "h264");
    assert_eq!(info.profile.as_deref(), Some("High"));
    assert_eq!(info.frame_count, 120);
    let asked = [119u64, 3, 64, 65, 100];
    let (frames, stats) = decode_frames_with_stats(&path, &asked).unwrap();
    let shown: Vec<_> = frames.iter().map(shown_frame).collect();
    assert_eq!(shown, asked.iter().map(|n| Some(*n)).collect::<Vec<_>>());
    assert!(stats.seeks >= 1, "{stats:?}");
    assert!(
        stats.frames_decoded < 120,
        "seeking should skip most of the movie: {stats:?}"
    );
}

#[test]
fn untagged_sd_round_trips_with_bt601() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MovieSpec {
        bt709_tags: false,
        ..MovieSpec::prores_hq(320, 240, FrameRate::FPS_25, 3)
    };
    let path = write(dir.path(), "sd.mov", &spec);
    let info = probe(&path).unwrap();
    assert_eq!(info.color_primaries, None);
    assert_eq!(info.color_space, None);
    let img = &decode_frames(&path, &[2]).unwrap()[0];
    assert!(max_error(img, 2) < 0.02, "{}", max_error(img, 2));
}

#[test]
fn text_file_named_mov_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.mov");
    std::fs::write(&path, "this is a text file, not a movie\n".repeat(50)).unwrap();
    let err = probe(&path).unwrap_err();
    assert!(matches!(err, MediaError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("x.mov"), "{err}");
    let err = decode_frames(&path, &[0]).unwrap_err();
    assert!(err.to_string().contains("x.mov"), "{err}");
}

#[test]
fn empty_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mov");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(probe(&empty), Err(MediaError::Empty { .. })));
    let missing = dir.path().join("missing.mov");
    let err = probe(&missing).unwrap_err();
    assert!(matches!(err, MediaError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.mov"));
}

#[test]
fn movie_truncated_to_half_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cut.mov",
        &MovieSpec::prores_hq(320, 180, FrameRate::FPS_24, 24),
    );
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = probe(&path).unwrap_err();
    assert!(matches!(err, MediaError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("cut.mov"), "{err}");
    assert!(decode_frames(&path, &[0, 20]).is_err());
}

#[test]
fn mxf_truncated_to_half_fails_on_the_missing_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cut.mxf",
        &MovieSpec::dnxhd_1080(FrameRate::FPS_24, 8),
    );
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Probing may succeed from the header partition; asking for the last frame must not.
    let _ = probe(&path);
    let err = decode_frames(&path, &[7]).unwrap_err();
    assert!(err.to_string().contains("cut.mxf"), "{err}");
}

#[test]
fn index_past_the_end_names_the_file_and_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "short.mov",
        &MovieSpec::prores_hq(64, 36, FrameRate::FPS_24, 12),
    );
    let err = decode_frames(&path, &[3, 12]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("short.mov") && text.contains("12 frames") && text.contains("12"),
        "{text}"
    );
    assert!(decode_frames(&path, &[]).unwrap().is_empty());
}

#[test]
fn audio_only_movie_has_no_video_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audio.mov");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=48000:cl=mono",
            "-t",
            "0.5",
        ])
        .args(["-c:a", "pcm_s16le"])
        .arg(&path)
        .status()
        .expect("the ffmpeg CLI must be installed for this test");
    assert!(status.success());
    let err = probe(&path).unwrap_err();
    assert!(matches!(err, MediaError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("no video stream"), "{err}");
    assert!(decode_frames(&path, &[0]).is_err());
}

#[test]
fn probe_agrees_with_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        MovieSpec::prores_hq(320, 180, FrameRate::FPS_23_976, 20).with_timecode("01:02:03:04");
    let path = write(dir.path(), "cross.mov", &spec);
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&path)
        .output()
        .expect("ffprobe must be installed for this test");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let video = json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap();
    let info = probe(&path).unwrap();
    assert_eq!(video["codec_name"], info.codec.as_str());
    assert_eq!(video["profile"], info.profile.as_deref().unwrap());
    assert_eq!(video["width"], info.width);
    assert_eq!(video["height"], info.height);
    assert_eq!(
        video["avg_frame_rate"],
        format!("{}/{}", info.fps.num, info.fps.den).as_str()
    );
    assert_eq!(video["nb_frames"], info.frame_count.to_string().as_str());
    assert_eq!(video["tags"]["timecode"], info.timecode.as_deref().unwrap());
    assert_eq!(video["pix_fmt"], info.pix_fmt.as_str());
    assert_eq!(
        video["color_primaries"],
        info.color_primaries.as_deref().unwrap()
    );
    assert_eq!(video["color_space"], info.color_space.as_deref().unwrap());
    let ff_duration: f64 = video["duration"].as_str().unwrap().parse().unwrap();
    assert!((ff_duration - info.duration_seconds).abs() < 1e-3);
}

/// A 48-frame 1920×1080 ProRes 422 HQ file: correctness plus timings (printed; run
/// with `--nocapture` to see them).
#[test]
fn prores_1080p_48_frames_probe_and_decode_timings() {
    let dir = tempfile::tempdir().unwrap();
    let spec = MovieSpec::prores_hq(1920, 1080, FrameRate::FPS_24, 48).with_timecode("01:00:00:00");
    let t = Instant::now();
    let path = write(dir.path(), "hd.mov", &spec);
    let write_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let info = probe(&path).unwrap();
    let probe_s = t.elapsed().as_secs_f64();
    assert_eq!(
        (info.width, info.height, info.frame_count),
        (1920, 1080, 48)
    );

    let t = Instant::now();
    let (last, stats_last) = decode_frames_with_stats(&path, &[47]).unwrap();
    let last_s = t.elapsed().as_secs_f64();
    assert_eq!(shown_frame(&last[0]), Some(47));
    assert_eq!(stats_last.packets_decoded, 1, "{stats_last:?}");

    let t = Instant::now();
    let three = decode_frames(&path, &[40, 0, 20]).unwrap();
    let three_s = t.elapsed().as_secs_f64();
    let shown: Vec<_> = three.iter().map(shown_frame).collect();
    assert_eq!(shown, vec![Some(40), Some(0), Some(20)]);
    for (img, n) in three.iter().zip([40u64, 0, 20]) {
        assert!(max_error(img, n) < 0.02);
    }
    eprintln!(
        "prores 1080p 48 frames ({} bytes): write {write_s:.3} s, probe {probe_s:.4} s, \
         decode frame 47 {last_s:.3} s ({stats_last:?}), decode 3 frames {three_s:.3} s",
        std::fs::metadata(&path).unwrap().len()
    );
}

#[test]
fn writer_rejects_unknown_container_and_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let avi = dir.path().join("x.avi");
    assert!(write_test_movie(&avi, &MovieSpec::default()).is_err());
    let spec = MovieSpec {
        codec: "no_such_encoder".into(),
        ..MovieSpec::default()
    };
    let mov = dir.path().join("x.mov");
    let err = write_test_movie(&mov, &spec).unwrap_err();
    assert!(err.to_string().contains("no_such_encoder"), "{err}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no partial file left"
    );
    movie::init();
}
