//! The scanlist reader on arbitrary bytes, through a scratch file (the reader
//! sniffs and opens a path): zip, workbook XML, sheet choice, header, every
//! column's value checks, paths against a delivery root.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use iom::config::Settings;
use iom::scanlist::read;
use libfuzzer_sys::fuzz_target;

struct Env {
    path: PathBuf,
    root: PathBuf,
    settings: iom::config::ScanlistSettings,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iom-fuzz-scanlist-{}", std::process::id()));
        let root = dir.join("delivery");
        std::fs::create_dir_all(&root).expect("scratch folder");
        Env {
            path: root.join("scanlist_01.xlsx"),
            root,
            settings: Settings::defaults().expect("default settings").scanlist,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    std::fs::write(&e.path, data).expect("write scratch file");
    if let Ok(list) = read::read(&e.path, &e.settings, Some(&e.root)) {
        assert_eq!(list.rows.len(), list.row_numbers.len());
    }
    let _ = read::read(&e.path, &e.settings, None);
});
