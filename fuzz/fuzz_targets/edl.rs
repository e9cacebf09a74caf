//! The EDL parser on arbitrary bytes: UTF-8/UTF-16/Latin-1 decoding, every line
//! kind, at the frame rate the first byte picks, strict or tolerant. Then the
//! helpers the scan calls on each event. Nothing may panic (overflow included:
//! fuzz builds keep debug assertions).
#![no_main]

use iom::edl::{self, ParseOptions};
use iom::timecode::{FrameRate, Timecode};
use libfuzzer_sys::fuzz_target;

const RATES: [FrameRate; 9] = [
    FrameRate::FPS_24,
    FrameRate::FPS_25,
    FrameRate::FPS_23_976,
    FrameRate::FPS_29_97,
    FrameRate::FPS_30,
    FrameRate::FPS_48,
    FrameRate::FPS_50,
    FrameRate::FPS_59_94,
    FrameRate::FPS_60,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let rate = RATES[usize::from(sel) % RATES.len()];
    let options = ParseOptions {
        strict_durations: sel & 0x80 != 0,
    };
    let Ok(parsed) = edl::parse_bytes(body.to_vec(), rate, options) else {
        return;
    };
    let start = edl::hour_start(rate, sel & 0x40 != 0);
    let _ = parsed.first_record_in();
    for e in parsed.video_events() {
        let _ = e.is_black();
        let _ = e.source_duration();
        let _ = e.record_duration();
        let _ = e.record_range(start);
        let _ = e.record_range(Timecode::from_frames(0, rate, false));
        let _ = e.clip_name_cut();
        let _ = e.retime_percent(rate);
        let _ = e.retime_note(rate);
    }
    // What the writer makes of a parsed EDL must parse again.
    let text = edl::write(&parsed);
    if let Err(e) = edl::parse(&text, rate, ParseOptions::default()) {
        panic!("written EDL does not parse again: {e}\n{text}");
    }
});
