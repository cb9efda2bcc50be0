//! folds (to be written)
