//! radon (to be written)
