//! # spectral-transfer
//!
//! Which spatial frequencies does a model rely on, how does its pre-training source (natural vs
//! medical images) set that, and when does that make it learn a shortcut? A reproduction and
//! extension of Lu, Juodelyte, Victor and Cheplygina, *Exploring connections of spectral analysis
//! and transfer learning in medical imaging* (SPIE Medical Imaging 2025, arXiv 2407.11379).
//!
//! One module per idea of the method:
//! - [`fourier`]: the 2-D FFT and the frequency-domain filters shared by artifacts and edits;
//! - [`spectrum`]: windows, the radially averaged (gradient) PSD, alignment scores;
//! - [`artifact`] (with [`radon`]): frequency shortcuts injected into the data;
//! - [`edit`]: spectral editing of the source data;
//! - [`data`], [`folds`], [`degradation`]: the patch sets, the cross-validation and the
//!   injection protocol;
//! - [`baseline`]: logistic regression on patch statistics, the floor a network must beat;
//! - [`model`], [`kernels`], [`source`], [`train`], [`gradient`]: ResNets in candle, the registry
//!   of pre-training sources, training, and the model's input-gradient PSD;
//! - [`experiment`], [`plot`]: the study grid, its results table and the paper's figures.

pub mod artifact;
pub mod baseline;
pub mod bench;
pub mod data;
pub mod degradation;
pub mod edit;
pub mod error;
pub mod experiment;
pub mod folds;
pub mod fourier;
pub mod gradient;
pub mod image;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod radon;
pub mod source;
pub mod spectrum;
pub mod train;

pub use error::{Error, Result};
pub use image::{Image, ImageBatch};

// Re-exported so that notebooks and downstream code use exactly the versions this crate was
// built with (evcxr resolves `:dep` afresh otherwise).
pub use candle_core;
pub use candle_nn;
pub use plotters;
pub use polars;
