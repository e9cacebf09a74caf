//! CMX3600 EDLs: every fixture is written here, to a temporary folder, and read
//! back through `parse_file`. The cases follow the OpenTimelineIO sample set
//! (test-data.md §1) and the extra cases of §4.5.

use std::path::{Path, PathBuf};

use iom::edl::{
    self, hour_start, EdlBuilder, EdlError, Event, KeyKind, Marker, ParseOptions, Transition,
};
use iom::error::{Classify, ErrorClass};
use iom::timecode::{FrameRate, Timecode};

const R24: FrameRate = FrameRate::FPS_24;
const R25: FrameRate = FrameRate::FPS_25;
const R2997: FrameRate = FrameRate::FPS_29_97;

const LENIENT: ParseOptions = ParseOptions {
    strict_durations: false,
};
const STRICT: ParseOptions = ParseOptions {
    strict_durations: true,
};

fn tc(s: &str, rate: FrameRate) -> Timecode {
    Timecode::parse(s, rate, false).unwrap()
}

fn save(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Writes `text` to `<tmp>/<name>` and parses it.
fn read(text: &str, rate: FrameRate, options: ParseOptions) -> Result<edl::Edl, EdlError> {
    let dir = tempfile::tempdir().unwrap();
    let path = save(dir.path(), "cut.edl", text.as_bytes());
    edl::parse_file(&path, rate, options)
}

fn read_ok(text: &str, rate: FrameRate) -> edl::Edl {
    match read(text, rate, STRICT) {
        Ok(e) => e,
        Err(e) => panic!("fixture should parse: {e}"),
    }
}

/// The line of `text` (1-based) that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Events with their line numbers cleared, to compare a written EDL with the events
/// it came from.
fn without_lines(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .cloned()
        .map(|mut e| {
            e.line = 0;
            e
        })
        .collect()
}

const SCREENING: &str = "TITLE:   Screening_Check.01 \n\
FCM: NON-DROP FRAME\n\
001  ZZ100_50 V     C        01:00:04:05 01:00:05:12 00:59:53:11 00:59:54:18 \n\
* FROM CLIP NAME:  ZZ100_501 (LAY3) \n\
* SOURCE FILE: ZZ100_501.LAY3.01\n\
\n\
002  ZZ100_50 V     C        01:00:06:13 01:00:08:15 00:59:54:18 00:59:56:20 \n\
* FROM CLIP NAME:  ZZ100_502A (LAY3) \n\
* SOURCE FILE: ZZ100_502A.LAY3.02\n\
003  ZZ100_50 V     C        01:00:08:09 01:00:09:13 00:59:56:20 00:59:58:00 \n\
* FROM CLIP NAME:  ZZ100_503A (LAY1) \n\
   \n\
004  ZZ100_50 V     C        01:00:10:01 01:00:14:20 00:59:58:00 01:00:02:19 \n\
* FROM CLIP NAME:  ZZ100_504C (LAY1) \n\
* LOC: 01:00:01:14 RED     ANIM FIX NEEDED \n\
* LOC: 01:00:02:03 GREEN   CHANGE APPROVED \n\
* SOURCE FILE: ZZ100_504C.LAY1.02\n\
005  ZZ100_50 V     C        01:00:14:17 01:00:18:22 01:00:02:19 01:00:07:00 \n\
* FROM CLIP NAME:  ZZ100_504B (LAY1) \n\
006  ZZ100_51 V     C        01:00:04:05 01:00:10:22 01:00:07:00 01:00:13:17 \n\
* AVX2 EFFECT, RESIZE \n\
* FROM CLIP NAME:  ZZ100_510B (LAY1) \n\
* SOURCE FILE: ZZ100_510B.LAY1.02";

#[test]
fn screening_cuts_names_files_markers_and_hour_straddling_record() {
    let e = read_ok(SCREENING, R24);
    assert_eq!(e.title.as_deref(), Some("Screening_Check.01"));
    assert_eq!(e.events.len(), 6);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);

    let first = &e.events[0];
    assert_eq!(first.number, 1);
    assert_eq!(first.reel, "ZZ100_50");
    assert_eq!(first.clip_name.as_deref(), Some("ZZ100_501 (LAY3)"));
    assert_eq!(first.source_file.as_deref(), Some("ZZ100_501.LAY3.01"));
    // 00:00:01:07 at 24 fps.
    assert_eq!(first.source_duration(), 31);
    assert_eq!(first.record_duration(), 31);
    assert_eq!(first.rec_in.to_string(), "00:59:53:11");
    assert_eq!(first.line, 3);

    let fourth = &e.events[3];
    assert_eq!(fourth.markers.len(), 2);
    assert_eq!(
        fourth.markers[0],
        Marker {
            tc: tc("01:00:01:14", R24),
            colour: Some("RED".into()),
            text: "ANIM FIX NEEDED".into(),
        }
    );
    assert_eq!(fourth.markers[1].colour.as_deref(), Some("GREEN"));
    assert_eq!(e.events[5].comments, ["AVX2 EFFECT, RESIZE"]);
    assert_eq!(e.events[5].clip_name.as_deref(), Some("ZZ100_510B (LAY1)"));

    // The movie of this edit starts at 00:59:53:11: its events tile it from frame 1.
    let movie_start = tc("00:59:53:11", R24);
    let video = e.video_events();
    assert_eq!(video.len(), 6);
    let mut next = 1;
    for ev in &video {
        let (start, end, duration) = ev.record_range(movie_start);
        assert_eq!(start, next, "event {}", ev.number);
        assert_eq!(end - start + 1, duration);
        next = end + 1;
    }
    assert_eq!(video[0].record_range(movie_start), (1, 31, 31));
    assert_eq!(e.first_record_in(), Some(movie_start));
}

#[test]
fn comments_without_a_space_after_the_star_read_the_same() {
    let spaced = read_ok(SCREENING, R24);
    let tight = read_ok(&SCREENING.replace("* ", "*"), R24);
    assert!(SCREENING.replace("* ", "*").contains("*FROM CLIP NAME:"));
    assert_eq!(tight.events, spaced.events);
}

const SPEED: &str = "TITLE: Speed_Check\n\
\n\
001  Z677_4C. V     C        01:00:01:21 01:00:07:03 01:00:00:00 01:00:05:06 \n\
* FROM CLIP NAME:  Z677_4C (ANIM10)\n\
002  Z682_156 V     C        01:00:10:21 01:00:10:22 01:08:30:00 01:08:30:17 \n\
M2   Z682_156       000.0                01:00:10:21 \n\
* FROM CLIP NAME:  Z682_156 (LAY3) FF \n\
* * FREEZE FRAME\n\
003  Z682_157 V     C        01:00:10:20 01:00:10:21 01:08:30:17 01:08:31:10 \n\
M2   Z682_157       000.0                01:00:10:20 \n\
* FROM CLIP NAME:  Z682_157 (LAY2) FF \n\
004  Z682_157 V     C        01:00:10:20 01:00:11:14 01:08:31:10 01:08:32:04 \n\
* FROM CLIP NAME:  Z682_157 (LAY2)\n\
005  Z686_5A. V     C        01:00:06:00 01:00:08:22 01:11:31:16 01:11:33:04 \n\
M2   Z686_5A.       047.6                01:00:06:00\n\
* FROM CLIP NAME:  Z686_5A (LAY2) (47.56 FPS)\n";

#[test]
fn speed_effects_freeze_frames_and_m2_retimes() {
    let e = read_ok(SPEED, R24);
    assert_eq!(e.events.len(), 5);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    assert_eq!(e.events[0].reel, "Z677_4C.");
    assert!(e.events[0].speed.is_none());

    let freeze = &e.events[1];
    let speed = freeze.speed.as_ref().unwrap();
    assert!(speed.is_freeze());
    assert_eq!(speed.reel, "Z682_156");
    assert_eq!(speed.tc, tc("01:00:10:21", R24));
    assert_eq!(freeze.source_duration(), 1);
    assert_eq!(freeze.record_duration(), 17);
    assert_eq!(freeze.rec_in.to_string(), "01:08:30:00");
    assert_eq!(freeze.clip_name.as_deref(), Some("Z682_156 (LAY3) FF"));
    assert_eq!(freeze.comments, ["* FREEZE FRAME"]);
    assert_eq!(freeze.retime_percent(R24), Some(0.0));
    assert_eq!(
        freeze.retime_note(R24).as_deref(),
        Some("retime 0% (freeze) 17fr")
    );
    // 8 min 30 s after a movie that starts at one hour.
    let (start, end, duration) = freeze.record_range(tc("01:00:00:00", R24));
    assert_eq!((start, end, duration), (12_241, 12_257, 17));

    let fast = &e.events[4];
    let scalar = fast.speed.as_ref().unwrap().fps / 24.0;
    assert!((scalar - 1.98333).abs() < 1e-4, "{scalar}");
    let pct = fast.retime_percent(R24).unwrap();
    assert!((pct - 198.333).abs() < 1e-2, "{pct}");
    assert_eq!(fast.retime_note(R24).as_deref(), Some("retime 198.3% 36fr"));
    // The same M2 in a 25-fps movie is a different retime: never assume 24.
    let pct25 = fast.retime_percent(R25).unwrap();
    assert!((pct25 - 190.4).abs() < 1e-6, "{pct25}");
    assert_eq!(e.events[3].retime_note(R24), None);
}

#[test]
fn six_digit_event_numbers() {
    let text = "TITLE: long edit\n\
FCM: NON-DROP FRAME\n\
000001  Z100_1   V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
* FROM CLIP NAME:  Z100_1 (LAY1)\n\
000182  Z682_156 V     C        01:00:10:21 01:00:10:22 01:00:01:00 01:00:01:17\n\
M2   Z682_156       000.0                01:00:10:21\n\
* FROM CLIP NAME:  Z682_156 (LAY3)\n\
000183  Z100_3   A     C        01:00:00:00 01:00:01:00 01:00:01:17 01:00:02:17\n";
    let e = read_ok(text, R24);
    let numbers: Vec<u32> = e.events.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [1, 182, 183]);
    assert_eq!(e.events[1].clip_name.as_deref(), Some("Z682_156 (LAY3)"));
    assert_eq!(e.events[1].record_duration(), 17);
    assert!(e.events[1].speed.as_ref().unwrap().is_freeze());
    assert_eq!(e.video_events().len(), 2);
}

const FPS25: &str = "\n\
TITLE: SQ0002_A2\n\
FCM: NON-DROP FRAME\n\
001  SC00.JPG V     C        01:00:00:00 01:00:06:11 00:00:00:00 00:00:06:11\n\
* FROM CLIP NAME:  sq001_s001\n\
002  SC00.JPG V     C        01:00:00:00 01:00:08:00 00:00:06:11 00:00:14:11\n\
* FROM CLIP NAME:  sq001_s002\n\
003  SC00.JPG V     C        01:00:00:00 01:00:03:11 00:00:14:11 00:00:17:22\n\
* FROM CLIP NAME:  sq001_s003\n\
004  SC00.JPG V     C        01:00:00:00 01:00:01:24 00:00:17:22 00:00:19:21\n\
* FROM CLIP NAME:  sq001_s004\n";

#[test]
fn twenty_five_fps_frame_field_24_and_source_at_one_hour() {
    let e = read_ok(FPS25, R25);
    let durations: Vec<i64> = e.events.iter().map(|e| e.source_duration()).collect();
    assert_eq!(durations, [161, 200, 86, 49]);
    for ev in &e.events {
        assert_eq!(
            ev.src_in.frames(),
            90_000,
            "01:00:00:00 is 90000 frames at 25 fps"
        );
        assert_eq!(ev.source_duration(), ev.record_duration());
    }
    // A movie starting at 00:00:00:00.
    let start = tc("00:00:00:00", R25);
    assert_eq!(e.events[3].record_range(start), (448, 496, 49));
}

#[test]
fn twenty_five_fps_edl_read_at_24_fps_names_the_bad_timecode() {
    let err = read(FPS25, R24, LENIENT).unwrap_err();
    let at = err.location().unwrap();
    assert_eq!(at.event, Some(4));
    assert_eq!(at.line, line_of(FPS25, "004  SC00"));
    assert!(
        matches!(
            err,
            EdlError::Timecode {
                field: "source out",
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("cut.edl"), "{msg}");
    assert!(msg.contains("01:00:01:24"), "{msg}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

const MISMATCH: &str = "TITLE: mismatch\n\
FCM: NON-DROP FRAME\n\
001  SC00.JPG V     C        01:00:00:00 01:00:06:11 00:00:00:00 00:00:06:11\n\
002  SC00.JPG V     C        01:00:00:00 01:00:08:00 00:00:06:11 00:00:14:11\n\
003  SC00.JPG V     C        01:00:00:00 01:00:03:11 00:00:14:11 00:00:17:22\n\
004  SC00.JPG V     C        01:00:00:00 01:00:01:24 00:00:17:22 00:00:19:19\n\
* FROM CLIP NAME:  sq001_s004\n\
005  SC00.JPG V     C        01:00:00:00 01:00:01:06 00:00:19:21 00:00:21:02\n";

#[test]
fn duration_mismatch_is_an_error_when_strict_and_a_warning_otherwise() {
    let err = read(MISMATCH, R25, STRICT).unwrap_err();
    match &err {
        EdlError::DurationMismatch {
            at,
            source_frames,
            record_frames,
        } => {
            assert_eq!(at.event, Some(4));
            assert_eq!(at.line, line_of(MISMATCH, "004  SC00"));
            assert_eq!((*source_frames, *record_frames), (49, 47));
        }
        other => panic!("expected a duration mismatch, got {other}"),
    }
    assert!(err.to_string().contains("event 4"), "{err}");

    let e = read(MISMATCH, R25, LENIENT).unwrap();
    assert_eq!(e.events.len(), 5);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(e.warnings[0].contains("event 4"), "{:?}", e.warnings);
    // A 2-frame record gap after event 4.
    assert_eq!(
        e.events[4].rec_in.frames() - e.events[3].rec_out.frames(),
        2
    );
}

#[test]
fn record_gaps_and_clip_names_without_a_star() {
    let text = "TITLE:   gap check\n\
FCM: NON-DROP FRAME\n\
001  SHOT1    V     C        00:10:00:00 00:10:01:00 00:00:00:00 00:00:01:00 \n\
FROM CLIP NAME: shot1\n\
002  SHOT2    V     C        23:00:00:00 23:00:01:00 00:00:01:16 00:00:02:16 \n\
FROM CLIP NAME: shot2\n\
003  SHOT3    V     C        10:00:00:00 10:00:01:00 00:00:04:06 00:00:05:06 \n\
FROM CLIP NAME: shot3\n";
    let e = read_ok(text, R24);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    let names: Vec<&str> = e
        .events
        .iter()
        .filter_map(|e| e.clip_name.as_deref())
        .collect();
    assert_eq!(names, ["shot1", "shot2", "shot3"]);
    assert!(e.events.iter().all(|e| e.record_duration() == 24));
    let gaps: Vec<i64> = e
        .events
        .windows(2)
        .map(|w| w[1].rec_in.frames() - w[0].rec_out.frames())
        .collect();
    assert_eq!(gaps, [16, 38]);
    let movie = tc("00:00:00:00", R24);
    let ranges: Vec<(i64, i64, i64)> = e.events.iter().map(|e| e.record_range(movie)).collect();
    assert_eq!(ranges, [(1, 24, 24), (41, 64, 24), (103, 126, 24)]);
}

#[test]
fn cdl_comments_in_both_spellings() {
    let text = "TITLE: cdl\n\
001  ZZ100_50 V     C        01:00:04:05 01:00:05:12 00:59:53:11 00:59:54:18 \n\
* FROM CLIP NAME:  ZZ100_501 (LAY3) \n\
*ASC_SOP (0.9 1.0 1.1)(0.01 -0.02 0.03)(1.0 1.0 0.95)\n\
*ASC_SAT 0.9\n\
002  ZZ100_50 V     C        01:00:06:13 01:00:08:15 00:59:54:18 00:59:56:20 \n\
* ASC_SOP: (0.1 0.2 0.3)(1.0000 0.0122 0.0305)(1.0000 0.0000 1.0000)\n\
* ASC_SAT: 0.9000\n";
    let e = read_ok(text, R24);
    let a = e.events[0].asc_sop.unwrap();
    assert_eq!(a.slope, [0.9, 1.0, 1.1]);
    assert_eq!(a.offset, [0.01, -0.02, 0.03]);
    assert_eq!(a.power, [1.0, 1.0, 0.95]);
    assert_eq!(e.events[0].asc_sat, Some(0.9));
    let b = e.events[1].asc_sop.unwrap();
    assert_eq!(b.slope, [0.1, 0.2, 0.3]);
    assert_eq!(b.offset, [1.0, 0.0122, 0.0305]);
    assert_eq!(b.power, [1.0, 0.0, 1.0]);
    assert_eq!(e.events[1].asc_sat, Some(0.9));
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn premiere_frame_file_names_are_cut_at_the_first_dot() {
    let text = "TITLE:   Premiere_Check.01\n\
001  AX V     C        01:00:04:05 01:00:05:12 00:59:53:11 00:59:54:18\n\
* FROM CLIP NAME:  ZZ100_501.take_1.0001.exr\n\
002  AX V     C        01:00:06:13 01:00:08:15 00:59:54:18 00:59:56:20\n\
* FROM CLIP NAME:  ZZ100_502A.take_2.0101.exr\n\
003  AX V     C        01:00:06:13 01:00:08:15 00:59:56:20 00:59:58:22\n";
    let e = read_ok(text, R24);
    let cut: Vec<String> = e.events.iter().map(Event::clip_name_cut).collect();
    assert_eq!(cut, ["ZZ100_501.", "ZZ100_502A.", "None"]);
}

#[test]
fn avid_from_clip_and_nucoda_from_file_paths() {
    let avid = "TITLE:   Avid_Check.01\n\
001  ZZ100_50 V     C        01:00:04:05 01:00:05:12 00:59:53:11 00:59:54:18\n\
* FROM CLIP NAME:  take_1\n\
* FROM CLIP: S:\\path\\to\\ZZ100_501.take_1.0001.exr\n";
    let e = read_ok(avid, R24);
    assert_eq!(e.events[0].clip_name.as_deref(), Some("take_1"));
    assert_eq!(
        e.events[0].source_file.as_deref(),
        Some(r"S:\path\to\ZZ100_501.take_1.0001.exr")
    );

    let nucoda = avid.replace("FROM CLIP:", "FROM FILE:");
    let e = read_ok(&nucoda, R24);
    assert_eq!(e.events[0].clip_name.as_deref(), Some("take_1"));
    assert_eq!(
        e.events[0].source_file.as_deref(),
        Some(r"S:\path\to\ZZ100_501.take_1.0001.exr")
    );
}

const DISSOLVE: &str = "TITLE:   dissolve check\n\
FCM: NON-DROP FRAME\n\
001  TST      V     C        01:00:04:05 01:00:04:14 01:00:00:00 01:00:00:09\n\
* FROM CLIP NAME:  clip_A\n\
002  TST      V     C        01:00:04:14 01:00:04:14 01:00:00:09 01:00:00:09\n\
002  TST      V     D    010 01:00:08:08 01:00:08:18 01:00:00:09 01:00:00:19\n\
* BLEND, DISSOLVE\n\
* FROM CLIP NAME:  clip_A\n\
* TO CLIP NAME:  clip_B\n\
003  TST      V     C        01:00:08:18 01:00:08:19 01:00:00:19 01:00:00:20\n\
* FROM CLIP NAME:  clip_B\n";

#[test]
fn dissolve_resolves_to_the_incoming_clip() {
    let e = read_ok(DISSOLVE, R24);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    let numbers: Vec<u32> = e.events.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [1, 2, 3], "one event per event number");
    let d = &e.events[1];
    assert_eq!(d.transition, Transition::Dissolve { frames: 10 });
    assert_eq!(d.clip_name.as_deref(), Some("clip_B"));
    assert_eq!(d.to_clip_name.as_deref(), Some("clip_B"));
    assert_eq!(d.line, line_of(DISSOLVE, "D    010"));
    assert_eq!(d.src_in, tc("01:00:08:08", R24));
    let out = d.outgoing.as_ref().unwrap();
    assert_eq!(out.clip_name.as_deref(), Some("clip_A"));
    assert_eq!(out.src_in, tc("01:00:04:14", R24));
    assert_eq!(d.comments, ["BLEND, DISSOLVE"]);
    // The record timeline is tiled: 9 + 10 + 1 frames.
    let movie = tc("01:00:00:00", R24);
    let ranges: Vec<_> = e
        .video_events()
        .iter()
        .map(|e| e.record_range(movie))
        .collect();
    assert_eq!(ranges, [(1, 9, 9), (10, 19, 10), (20, 20, 1)]);
}

#[test]
fn dissolve_with_fcm_between_lines_and_effects_name() {
    let text = "TITLE: dissolve check 3\n\
FCM: NON-DROP FRAME\n\
\n\
001  AX       V     C        01:00:03:23 01:00:06:12 01:00:00:00 01:00:02:13\n\
* FROM CLIP NAME: Clip A.mov\n\
\n\
002  AX       V     C        01:00:06:00 01:00:06:00 01:00:02:13 01:00:02:13\n\
FCM: NON-DROP FRAME\n\
002  AX       V     D    030 01:00:33:22 01:00:35:04 01:00:02:13 01:00:03:19\n\
EFFECTS NAME IS CROSS DISSOLVE\n\
* FROM CLIP NAME: Clip B.mov\n\
* TO CLIP NAME: Clip C.mov\n\
\n\
003  AX       V     C        01:00:00:00 01:00:01:22 01:00:03:19 01:00:05:17\n\
* FROM CLIP NAME: Clip D.mov\n";
    let e = read_ok(text, R24);
    assert_eq!(e.events.len(), 3);
    let d = &e.events[1];
    assert_eq!(d.transition, Transition::Dissolve { frames: 30 });
    assert_eq!(d.effect.as_deref(), Some("CROSS DISSOLVE"));
    assert_eq!(d.clip_name.as_deref(), Some("Clip C.mov"));
    assert_eq!(d.clip_name_cut(), "Clip C.");
    assert_eq!(
        d.outgoing.as_ref().unwrap().clip_name.as_deref(),
        Some("Clip B.mov")
    );
    assert_eq!(d.record_duration(), 30);
}

/// An outgoing cut with frames of its own stays an event; the `FROM CLIP NAME`
/// under the transition line names it (its row's clip_name was "None").
#[test]
fn an_outgoing_cut_kept_as_its_own_event_takes_the_from_clip_name() {
    let text = "TITLE: kept outgoing\n\
FCM: NON-DROP FRAME\n\
001  A001C001 V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
* FROM CLIP NAME: A001C001_bench\n\
002  A001C002 V     C        01:00:00:00 01:00:00:12 01:00:01:00 01:00:01:12\n\
002  A001C003 V     D    012 01:00:00:00 01:00:00:12 01:00:01:12 01:00:02:00\n\
* FROM CLIP NAME: A001C002_bench\n\
* TO CLIP NAME: A001C003_bench\n";
    let e = read_ok(text, R24);
    let names: Vec<String> = e.events.iter().map(|e| e.clip_name_cut()).collect();
    assert_eq!(
        names,
        ["A001C001_bench", "A001C002_bench", "A001C003_bench"],
        "{e:#?}"
    );
    // A kept outgoing cut with a name of its own keeps it.
    let own = text.replace(
        "01:00:01:00 01:00:01:12\n",
        "01:00:01:00 01:00:01:12\n* FROM CLIP NAME: own_name\n",
    );
    let e = read_ok(&own, R24);
    assert_eq!(e.events[1].clip_name.as_deref(), Some("own_name"));
}

#[test]
fn dissolves_with_jumping_numbers_above_one_hour() {
    let text = "TITLE:   TRANSITION_CHECK_2\n\
FCM: NON-DROP FRAME\n\
001  ABC0000. V     C        01:00:06:18 01:00:08:00 01:04:11:17 01:04:12:23\n\
002  ABC0010. V     C        01:00:06:15 01:00:08:18 01:04:12:23 01:04:15:02\n\
003  ABC0010. V     C        01:00:08:18 01:00:08:18 01:04:15:02 01:04:15:02\n\
003  ABC0020. V     D    035 01:00:06:22 01:00:10:07 01:04:15:02 01:04:18:11\n\
* BLEND, DISSOLVE\n\
004  ABC0020. V     C        01:00:10:07 01:00:10:07 01:04:18:11 01:04:18:11\n\
004  ABC0030. V     D    064 01:00:06:10 01:00:09:22 01:04:18:11 01:04:21:23\n\
* BLEND, DISSOLVE\n\
005  ABC0040. V     C        01:00:08:14 01:00:12:14 01:04:21:23 01:04:25:23\n\
060  ABC0050. V     C        01:00:12:06 01:00:17:21 01:04:25:23 01:04:31:14\n";
    let e = read_ok(text, R24);
    let numbers: Vec<u32> = e.events.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 60]);
    assert_eq!(e.events[2].reel, "ABC0020.");
    assert_eq!(e.events[3].outgoing.as_ref().unwrap().reel, "ABC0020.");
    // Tiled from the movie's own start (01:04:11:17), not from an hour rule.
    let movie = tc("01:04:11:17", R24);
    let mut next = 1;
    for ev in e.video_events() {
        let (s, end, _) = ev.record_range(movie);
        assert_eq!(s, next, "event {}", ev.number);
        next = end + 1;
    }
}

#[test]
fn wipe_resolves_like_a_dissolve() {
    let text = DISSOLVE.replace("D    010", "W001    010");
    let e = read_ok(&text, R24);
    assert_eq!(e.events.len(), 3);
    assert_eq!(
        e.events[1].transition,
        Transition::Wipe {
            code: 1,
            frames: 10
        }
    );
    assert_eq!(e.events[1].clip_name.as_deref(), Some("clip_B"));
}

#[test]
fn malformed_dissolve_is_a_transition_mismatch() {
    let text = "TITLE:   dissolve fail\n\
FCM: NON-DROP FRAME\n\
001  TST V     C        01:00:04:05 01:00:04:14 01:00:00:00 01:00:00:09\n\
* FROM CLIP NAME:  clip_A\n\
001  TST V     C        01:00:04:14 01:00:04:14 01:00:00:09 01:00:00:09\n\
002  TST V     D    010 01:00:08:08 01:00:08:18 01:00:00:09 01:00:00:19\n\
* FROM CLIP NAME:  clip_A\n\
* TO CLIP NAME:  clip_B\n";
    let err = read(text, R24, LENIENT).unwrap_err();
    assert!(matches!(err, EdlError::TransitionMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("transition and event id mismatch"), "{msg}");
    assert!(msg.contains("line 6"), "{msg}");
    assert!(msg.contains("line 5"), "the outgoing cut's line: {msg}");
}

#[test]
fn key_lines_stay_separate_events() {
    let text = "001  BG       V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
001  FG       V     K    B   01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
001  FG       V     K    000 01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n";
    let e = read_ok(text, R24);
    let t: Vec<Transition> = e.events.iter().map(|e| e.transition).collect();
    assert_eq!(
        t,
        [
            Transition::Cut,
            Transition::Key {
                kind: KeyKind::Background,
                frames: 0
            },
            Transition::Key {
                kind: KeyKind::Key,
                frames: 0
            },
        ]
    );
}

#[test]
fn audio_only_events_give_no_video_event() {
    let text = "TITLE: MultiAudio\n\
FCM: NON-DROP FRAME\n\
\n\
001  AX       AA    C        00:00:00:00 00:56:55:22 00:00:00:00 00:56:55:22\n\
* FROM CLIP NAME: AX\n\
AUD  3    \n";
    let e = read_ok(text, R24);
    assert_eq!(e.events.len(), 1);
    assert!(!e.events[0].is_video());
    assert_eq!(e.events[0].aud.as_deref(), Some("3"));
    assert!(e.video_events().is_empty());
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);

    // Mixed channels: only the events with picture count.
    let mixed = "001  AX       A2    C        00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00\n\
002  AX       AA/V  C        00:00:00:00 00:00:01:00 00:00:01:00 00:00:02:00\n\
003  AX       B     C        00:00:00:00 00:00:01:00 00:00:02:00 00:00:03:00\n\
004  BL       V     C        00:00:00:00 00:00:01:00 00:00:03:00 00:00:04:00\n\
005  AX       A3    C        00:00:00:00 00:00:01:00 00:00:04:00 00:00:05:00\n";
    let e = read_ok(mixed, R24);
    let video: Vec<u32> = e.video_events().iter().map(|e| e.number).collect();
    assert_eq!(video, [2, 3], "audio and black slug give no row");
}

#[test]
fn drop_frame_at_2997_counts_across_a_minute_boundary() {
    let text = "TITLE: df check\n\
FCM: DROP FRAME\n\
001  A001C003 V     C        01:09:59;25 01:10:00;13 00:00:59;20 00:01:00;10\n\
* FROM CLIP NAME: A001C003_220101_R1AB\n\
002  A001C004 V     C        01:10:00:13 01:10:01:13 00:01:00:10 00:01:01:10\n\
FCM: NON-DROP FRAME\n\
003  A001C005 V     C        02:00:00:00 02:00:01:00 00:02:00:00 00:02:01:00\n";
    let e = read_ok(text, R2997);
    let first = &e.events[0];
    assert!(first.rec_in.is_drop_frame());
    // 00:01:00;00 and ;01 do not exist: 59;20 → 1:00;10 is 18 frames, not 20.
    assert_eq!(first.record_duration(), 18);
    assert_eq!(
        first.source_duration(),
        18,
        "no labels dropped at the 10-minute mark"
    );
    assert_eq!(first.rec_in.frames(), 59 * 30 + 20);
    assert_eq!(first.rec_out.to_string(), "00:01:00;10");
    // `:` separators under FCM: DROP FRAME still count drop frame.
    let second = &e.events[1];
    assert!(second.rec_in.is_drop_frame());
    assert_eq!(second.rec_in, first.rec_out);
    assert_eq!(second.record_duration(), 30);
    // FCM: NON-DROP FRAME applies to the events after it.
    assert!(!e.events[2].rec_in.is_drop_frame());
    assert_eq!(e.events[2].rec_in.frames(), 2 * 60 * 30);

    let movie = Timecode::parse("00:00:59;20", R2997, false).unwrap();
    assert_eq!(first.record_range(movie), (1, 18, 18));
    assert_eq!(second.record_range(movie), (19, 48, 30));

    // A label that drop frame skips is a bad timecode.
    let bad = text.replace("00:00:59;20 00:01:00;10", "00:00:59;20 00:01:00;00");
    let err = read(&bad, R2997, LENIENT).unwrap_err();
    assert!(
        matches!(
            err,
            EdlError::Timecode {
                field: "record out",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn drop_frame_at_a_rate_without_it_is_a_warning() {
    let text = "FCM: DROP FRAME\n\
001  AX       V     C        00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00\n";
    let e = read_ok(text, R25);
    assert!(!e.events[0].rec_in.is_drop_frame());
    assert_eq!(e.warnings.len(), 1);
    assert!(e.warnings[0].contains("line 1"), "{:?}", e.warnings);
}

#[test]
fn m2_at_25_fps_and_reverse_speeds() {
    let text = "TITLE: retime 25\n\
FCM: NON-DROP FRAME\n\
001  B001C002 V     C        10:00:00:00 10:00:02:00 01:00:00:00 01:00:01:00\n\
M2   B001C002       050.0                10:00:00:00\n\
002  B001C003 V     C        10:00:05:00 10:00:06:00 01:00:01:00 01:00:02:00\n\
M2   B001C003       -025.0               10:00:06:00\n\
003  B001C004 V     C        10:00:05:00 10:00:06:00 01:00:02:00 01:00:02:12\n\
M2   B001C004       -047.6               10:00:06:00\n";
    let e = read_ok(text, R25);
    assert_eq!(e.events[0].retime_percent(R25), Some(200.0));
    assert_eq!(
        e.events[0].retime_note(R25).as_deref(),
        Some("retime 200.0% 25fr")
    );
    let rev = &e.events[1];
    assert!(rev.speed.as_ref().unwrap().is_reverse());
    assert_eq!(rev.retime_percent(R25), Some(-100.0));
    assert_eq!(
        rev.retime_note(R25).as_deref(),
        Some("retime -100.0% (reverse) 25fr")
    );
    assert_eq!(e.events[2].speed.as_ref().unwrap().fps, -47.6);
    assert_eq!(
        e.events[2].retime_note(R25).as_deref(),
        Some("retime -190.4% (reverse) 12fr")
    );
    // Event 1 of a movie starting at one hour is frame 1.
    assert_eq!(
        e.events[0].record_range(hour_start(R25, false)),
        (1, 25, 25)
    );
}

#[test]
fn bad_m2_speed_is_an_error_naming_the_event() {
    let text = "001  AX       V     C        10:00:00:00 10:00:02:00 01:00:00:00 01:00:01:00\n\
M2   AX       fast                10:00:00:00\n";
    let err = read(text, R24, LENIENT).unwrap_err();
    assert!(matches!(err, EdlError::Speed { .. }), "{err}");
    assert_eq!(err.location().unwrap().event, Some(1));
    assert_eq!(err.location().unwrap().line, 2);
}

#[test]
fn source_out_before_source_in_names_the_event() {
    let text = "TITLE: scan request\n\
FCM: NON-DROP FRAME\n\
001  A001     V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
002  A002     V     C        01:00:00:00 01:00:01:00 01:00:01:00 01:00:02:00\n\
003  A003     V     C        01:00:00:00 01:00:01:00 01:00:02:00 01:00:03:00\n\
004  A004     V     C        01:00:03:00 01:00:01:00 01:00:03:00 01:00:05:00\n\
* FROM CLIP NAME: A004\n";
    let err = read(text, R24, LENIENT).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("event 4: source out 01:00:01:00 is before source in 01:00:03:00"),
        "{msg}"
    );
    assert!(msg.contains("cut.edl: line 6"), "{msg}");

    let rec = text.replace(
        "01:00:03:00 01:00:01:00 01:00:03:00 01:00:05:00",
        "01:00:01:00 01:00:03:00 01:00:05:00 01:00:03:00",
    );
    let err = read(&rec, R24, LENIENT).unwrap_err();
    assert!(
        err.to_string()
            .contains("event 4: record out 01:00:03:00 is before record in 01:00:05:00"),
        "{err}"
    );
}

#[test]
fn garbage_event_lines_are_errors_and_unknown_lines_are_warnings() {
    let garbage = "001  AX       V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
002  AX       V     C        01:00:00:00 01:00:01:00\n";
    let err = read(garbage, R24, LENIENT).unwrap_err();
    assert!(matches!(err, EdlError::Syntax { .. }), "{err}");
    assert_eq!(err.location().unwrap().line, 2);
    assert_eq!(err.location().unwrap().event, Some(2));

    let bad_channel = garbage.replace(
        "002  AX       V     C        01:00:00:00 01:00:01:00",
        "002  AX       Q     C        01:00:00:00 01:00:01:00 01:00:01:00 01:00:02:00",
    );
    let err = read(&bad_channel, R24, LENIENT).unwrap_err();
    assert!(err.to_string().contains("channel field \"Q\""), "{err}");

    let unknown = "TITLE: odd\n\
SPLIT:    AUDIO DELAY=  00:00:00:10\n\
001  AX       V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n\
SWM something\n";
    let e = read_ok(unknown, R24);
    assert_eq!(e.events.len(), 1);
    assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
    assert!(e.warnings[0].starts_with("line 2:"), "{:?}", e.warnings);
    assert!(e.warnings[1].starts_with("line 4:"), "{:?}", e.warnings);
}

#[test]
fn crlf_bom_tabs_and_cr_only_files_read_like_lf() {
    let lf = read_ok(SCREENING, R24);
    let dir = tempfile::tempdir().unwrap();

    let mut crlf = vec![0xEF, 0xBB, 0xBF];
    crlf.extend(SCREENING.replace('\n', "\r\n").into_bytes());
    let p = save(dir.path(), "crlf.edl", &crlf);
    let e = edl::parse_file(&p, R24, STRICT).unwrap();
    assert_eq!(e.title, lf.title);
    assert_eq!(e.events, lf.events, "same events, same line numbers");

    let cr = SCREENING.replace('\n', "\r");
    let p = save(dir.path(), "cr.edl", cr.as_bytes());
    assert_eq!(edl::parse_file(&p, R24, STRICT).unwrap().events, lf.events);

    let tabs = SCREENING.replace("     C  ", "\tC\t");
    let p = save(dir.path(), "tabs.edl", tabs.as_bytes());
    assert_eq!(edl::parse_file(&p, R24, STRICT).unwrap().events, lf.events);
}

#[test]
fn empty_edls_have_no_events() {
    for text in [
        "",
        "\u{feff}",
        "TITLE: nothing yet\nFCM: NON-DROP FRAME\n\n",
    ] {
        let e = read_ok(text, R24);
        assert!(e.events.is_empty());
        assert!(e.video_events().is_empty());
        assert_eq!(e.first_record_in(), None);
    }
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.edl");
    let err = edl::parse_file(&path, R24, STRICT).unwrap_err();
    assert!(matches!(err, EdlError::Io { .. }));
    assert!(err.to_string().contains("nope.edl"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[test]
fn latin1_file_is_read_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"TITLE: caf".to_vec();
    bytes.push(0xE9);
    bytes.extend(
        b"\n001  AX       V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n* FROM CLIP NAME: s\xE9q\n",
    );
    let p = save(dir.path(), "latin1.edl", &bytes);
    let e = edl::parse_file(&p, R24, STRICT).unwrap();
    assert_eq!(e.title.as_deref(), Some("caf\u{e9}"));
    assert_eq!(e.events[0].clip_name.as_deref(), Some("s\u{e9}q"));
    assert!(e.warnings[0].contains("Latin-1"), "{:?}", e.warnings);
}

#[test]
fn hour_rule_at_25_fps_starts_at_frame_one() {
    // The original used 86400 (a 24-fps hour) and started every event 3600 frames late.
    let text = "FCM: NON-DROP FRAME\n\
001  A001C001 V     C        12:00:00:00 12:00:02:00 01:00:00:00 01:00:02:00\n\
002  A001C002 V     C        12:00:10:00 12:00:11:00 01:00:02:00 01:00:03:00\n";
    let e = read_ok(text, R25);
    let movie = tc("01:00:00:00", R25);
    assert_eq!(movie.frames(), 90_000);
    assert_eq!(e.events[0].record_range(movie), (1, 50, 50));
    assert_eq!(e.events[1].record_range(movie), (51, 75, 25));
    assert_eq!(
        e.events[0].record_range(hour_start(R25, false)),
        (1, 50, 50)
    );
}

#[test]
fn writer_uses_cmx_columns() {
    let mut b = EdlBuilder::new("columns", tc("01:00:00:00", R24));
    b.cut("AX", Some("shot_a"), tc("00:00:00:00", R24), 24);
    b.transition(
        "BX",
        Some("shot_b"),
        tc("00:00:10:00", R24),
        12,
        Transition::Dissolve { frames: 6 },
    );
    let text = edl::write(&b.build());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "TITLE: columns");
    assert_eq!(lines[1], "FCM: NON-DROP FRAME");
    assert_eq!(
        lines[2],
        "001  AX       V     C        00:00:00:00 00:00:01:00 01:00:00:00 01:00:01:00"
    );
    assert_eq!(lines[3], "* FROM CLIP NAME: shot_a");
    assert_eq!(
        lines[4],
        "002  AX       V     C        00:00:01:00 00:00:01:00 01:00:01:00 01:00:01:00"
    );
    assert_eq!(
        lines[5],
        "002  BX       V     D    006 00:00:10:00 00:00:10:12 01:00:01:00 01:00:01:12"
    );
    assert_eq!(lines[6], "* FROM CLIP NAME: shot_a");
    assert_eq!(lines[7], "* TO CLIP NAME: shot_b");
}

#[test]
fn builder_write_parse_round_trip() {
    let rec = tc("01:00:00:00", R24);
    let mut b = EdlBuilder::new("round trip", rec);
    {
        let ev = b.cut(
            "A001C003",
            Some("A001C003_220101_R1AB.mov"),
            tc("10:00:00:00", R24),
            48,
        );
        ev.markers.push(Marker {
            tc: tc("01:00:00:12", R24),
            colour: Some("RED".into()),
            text: "fix the wire".into(),
        });
        ev.source_file = Some(r"S:\plates\A001C003.0001.exr".into());
        ev.asc_sop = Some(edl::AscSop {
            slope: [1.1, 1.0, 0.9],
            offset: [0.01, 0.0, -0.01],
            power: [1.0, 1.0, 1.0],
        });
        ev.asc_sat = Some(0.85);
        ev.comments.push("NOTE FROM EDITORIAL".into());
    }
    b.retimed(
        "Z682_156",
        Some("Z682_156 (LAY3) FF"),
        tc("01:00:10:21", R24),
        1,
        17,
        Some(0.0),
    );
    b.gap(16);
    b.retimed(
        "Z686_5A.",
        Some("Z686_5A (LAY2)"),
        tc("01:00:06:00", R24),
        70,
        36,
        Some(47.6),
    );
    b.retimed("R001", None, tc("02:00:00:00", R24), 10, 10, Some(-24.0));
    b.transition(
        "B002",
        Some("B002_clip"),
        tc("03:00:00:00", R24),
        30,
        Transition::Dissolve { frames: 12 },
    );
    b.transition(
        "B003",
        Some("B003_clip"),
        tc("03:10:00:00", R24),
        20,
        Transition::Wipe {
            code: 1,
            frames: 10,
        },
    );
    b.audio("AX", "AA", tc("00:00:00:00", R24), 20).aud = Some("3".into());
    b.cut("Z9", None, tc("04:00:00:00", R24), 5);
    b.renumber_last(60);
    b.cut("Z10", Some("after the jump"), tc("04:00:00:00", R24), 5);
    let built = b.build();
    assert_eq!(built.events.last().unwrap().number, 61);

    let text = edl::write(&built);
    let dir = tempfile::tempdir().unwrap();
    let p = save(dir.path(), "round.edl", text.as_bytes());
    let back = edl::parse_file(&p, R24, STRICT).unwrap();
    assert!(back.warnings.is_empty(), "{:?}\n{text}", back.warnings);
    assert_eq!(back.title.as_deref(), Some("round trip"));
    assert_eq!(
        without_lines(&back.events),
        without_lines(&built.events),
        "\n{text}"
    );
    // And the written text of the parsed EDL is the same text.
    assert_eq!(edl::write(&back), text);
}

#[test]
fn parsed_fixtures_survive_write_and_parse() {
    for (text, rate) in [
        (SCREENING, R24),
        (SPEED, R24),
        (DISSOLVE, R24),
        (FPS25, R25),
        (MISMATCH, R25),
    ] {
        let first = read(text, rate, LENIENT).unwrap();
        let again = edl::parse(&edl::write(&first), rate, LENIENT).unwrap();
        assert_eq!(without_lines(&again.events), without_lines(&first.events));
    }
}

#[test]
fn drop_frame_round_trip() {
    let start = Timecode::parse("00:59:59;00", R2997, false).unwrap();
    let mut b = EdlBuilder::new("df", start);
    let src = Timecode::parse("01:00:59;00", R2997, false).unwrap();
    b.cut("A", Some("a"), src, 45);
    b.cut("B", Some("b"), src.offset(45), 100);
    let built = b.build();
    let text = edl::write(&built);
    assert!(text.contains("FCM: DROP FRAME"), "{text}");
    assert!(text.contains("01:00:00;15"), "{text}");
    let back = edl::parse(&text, R2997, STRICT).unwrap();
    assert_eq!(without_lines(&back.events), without_lines(&built.events));
    assert_eq!(back.events[1].record_range(start), (46, 145, 100));
}
