//! artifact (to be written)
