//! The study end to end: the grid of runs (source x edit x artifact x level x fold), their
//! execution with a cached pre-training per source, one Parquet file per run, the merged polars
//! table, and the report that checks the paper's claims against it.
//!
//! ```text
//! study.toml --expand--> [Run] --run--> runs/<id>.parquet --collect--> results.parquet
//!                                                               \--> figures/, report.md
//! ```

pub mod config;
pub mod grid;
pub mod results;
pub mod spec;

pub use config::{
    DataSpec, ModelSpec, Pretraining, PsdSpec, SourceSpec, Study, TargetSpec, TrainSpec,
};
pub use grid::{expand, resolve_index, stable_id, IndexSource, Run, RunConfig};
pub use results::{collect, collect_to_file, Collected, Layout, RunResult};
pub mod analysis;
pub mod figures;
pub mod report;
pub mod runner;
pub use runner::{Event, Executor, PretrainOutcome, Runner, Summary};
pub mod output;
pub mod pipeline;
