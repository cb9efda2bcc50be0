//! spectrum (to be written)
