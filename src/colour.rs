//! Colour transforms from a scan colour space to the display, and `.cube` LUTs.
//! (being written)
