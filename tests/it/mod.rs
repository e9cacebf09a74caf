mod colour;
mod edl;
mod media;
mod movie;
mod scan;
mod scanlist;
