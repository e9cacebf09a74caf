//! Camera clip names (ARRI, Sony Venice, RED, DJI) found in a file name or in
//! header values, with the patterns of original-app.md §3.4.
//!
//! Every pattern is tried on a text and the **longest** match wins (ties go to the
//! earlier pattern in [`PATTERNS`]), so `A001C0012` is a DJI name rather than the
//! ARRI name `A001C001` followed by a stray digit, and `A001C003_220101_R1AB` keeps
//! its ARRI date/reel suffix instead of stopping at the Sony-shaped prefix.
//!
//! A match must not be glued to other letters or digits on its left (so a hex
//! string or a word that merely contains `…A001C003…` is not taken), and must not
//! be followed by a digit on its right (a longer number means another pattern).

use std::sync::LazyLock;

use regex::Regex;

/// The camera families, in tie-break order, with their patterns.
///
/// RED's suffix is written `_\d{4}[A-Z0-9]{2}` rather than the port's
/// `_\d{5}[A-Z0-9]`: real RED clips end in a month-day and two characters
/// (`A002_C003_0522AB`), and the wider pattern still matches every name the
/// narrower one did.
pub const PATTERNS: [(&str, &str); 5] = [
    ("ARRI Alexa 35", r"[A-Z]_\d{4}C\d{3}(?:_\d{6}_[A-Z0-9]{4})?"),
    ("ARRI", r"[A-Z]\d{3}C\d{3}(?:_\d{6}_[A-Z0-9]{4})?"),
    ("RED", r"[A-Z]\d{3}_C\d{3}(?:_\d{4}[A-Z0-9]{2})?"),
    ("Sony Venice", r"[A-Z]\d{3}C\d{3}(?:_\d{6}[A-Z]{2})?"),
    ("DJI", r"[A-Z]\d{3}C\d{4}"),
];

/// Compiled once: each pattern wrapped in the boundary rules of the module doc,
/// the clip name itself in group 1.
static COMPILED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    PATTERNS
        .iter()
        .map(|(_, p)| {
            // The patterns are constants checked by the unit tests below, so a
            // failure here is a programming error, not a data error.
            Regex::new(&format!(r"(?:^|[^A-Za-z0-9])({p})(?:$|[^0-9])"))
                .expect("clip-name pattern must compile")
        })
        .collect()
});

/// Finds a camera clip name: first in `file_name`, then in each of `values`, in
/// order. Within one text the longest match of any pattern wins.
pub fn find<'a>(file_name: &str, values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    if let Some(name) = find_in(file_name) {
        return Some(name);
    }
    values.into_iter().find_map(find_in)
}

/// The best clip name in one text, if any.
pub fn find_in(text: &str) -> Option<String> {
    let mut best: Option<&str> = None;
    for re in COMPILED.iter() {
        for caps in re.captures_iter(text) {
            if let Some(m) = caps.get(1) {
                // Strictly longer only: on a tie the earlier pattern keeps it.
                if best.is_none_or(|b| m.as_str().len() > b.len()) {
                    best = Some(m.as_str());
                }
            }
        }
    }
    best.map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Option<String> {
        find(name, [])
    }

    #[test]
    fn arri_with_date_and_reel() {
        assert_eq!(
            f("A001C003_220101_R1AB.0001.exr").as_deref(),
            Some("A001C003_220101_R1AB")
        );
        assert_eq!(
            f("ABC_0010_A001C003_plate.1001.exr").as_deref(),
            Some("A001C003")
        );
    }

    #[test]
    fn alexa_35() {
        assert_eq!(
            f("B_0012C004_230405_A1B2.mxf").as_deref(),
            Some("B_0012C004_230405_A1B2")
        );
        assert_eq!(f("B_0012C004.1001.exr").as_deref(), Some("B_0012C004"));
    }

    #[test]
    fn red() {
        assert_eq!(
            f("A002_C003_0522AB_001.R3D").as_deref(),
            Some("A002_C003_0522AB")
        );
        assert_eq!(f("A002_C003.0001.dpx").as_deref(), Some("A002_C003"));
    }

    #[test]
    fn sony_venice() {
        assert_eq!(
            f("A001C003_220101AB.mxf").as_deref(),
            Some("A001C003_220101AB")
        );
    }

    #[test]
    fn dji_beats_arri_prefix() {
        assert_eq!(f("A001C0012.mov").as_deref(), Some("A001C0012"));
        assert_eq!(
            f("DJI_A001C0012_plate.0001.exr").as_deref(),
            Some("A001C0012")
        );
    }

    #[test]
    fn no_match_inside_words_or_numbers() {
        assert_eq!(f("plate_v001.1001.exr"), None);
        assert_eq!(f("XA001C003.exr"), None);
        assert_eq!(f("A001C00345.exr"), None);
        assert_eq!(f("a001c003.exr"), None);
    }

    #[test]
    fn file_name_first_then_values_in_order() {
        let values = ["ARRI ALEXA Mini", "A005C010_230101_R2CD", "B001C001"];
        assert_eq!(
            find("shot_0010.1001.exr", values).as_deref(),
            Some("A005C010_230101_R2CD")
        );
        assert_eq!(
            find("A001C003.1001.exr", values).as_deref(),
            Some("A001C003")
        );
        assert_eq!(find("shot.exr", ["nothing", "here"]), None);
    }
}
