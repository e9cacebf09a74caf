//! Colour-managed thumbnails that fit a box with their aspect kept.
//! (being written)
