//! degradation (to be written)
