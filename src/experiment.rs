//! experiment (to be written)
