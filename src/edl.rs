//! CMX3600 EDLs. (being written)
