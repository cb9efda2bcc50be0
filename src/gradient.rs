//! gradient (to be written)
