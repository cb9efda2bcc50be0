//! plot (to be written)
