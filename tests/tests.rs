//! One integration-test binary (keeps link time down with FFmpeg in the graph).
//! Every test makes its own real files in a temporary folder.

mod it;
