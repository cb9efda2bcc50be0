//! source (to be written)
