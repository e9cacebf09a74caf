//! The DPX header parser on arbitrary bytes, the length checks and the derived
//! values (timecode, frame rate, line size). When the header parses and the file
//! is small, the whole file is also read back through the public path API (pixel
//! decoding included) from a scratch file.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use iom::media::dpx;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iom-fuzz-dpx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir.join("frame.0001.dpx")
    })
}

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.0001.dpx");
    let len = data.len() as u64;
    let Ok(h) = dpx::parse_header(name, data, len) else {
        return;
    };
    assert!(h.width > 0 && h.height > 0);
    assert!(h.width <= dpx::MAX_DIMENSION && h.height <= dpx::MAX_DIMENSION);
    let _ = h.components();
    let _ = h.min_image_bytes();
    let _ = h.fps();
    let _ = h.timecode();
    let _ = dpx::check_length(name, &h, len);
    // Claimed lengths far past the real one: still no panic.
    let _ = dpx::check_length(name, &h, u64::MAX);
    if data.len() <= 64 * 1024 {
        let path = scratch();
        std::fs::write(path, data).expect("write scratch file");
        let _ = dpx::read_info(path);
        let _ = dpx::verify(path);
        if let Ok(img) = dpx::read_pixels(path) {
            assert_eq!(
                img.data.len() as u64,
                u64::from(h.width) * u64::from(h.height) * 3
            );
        }
    }
});
