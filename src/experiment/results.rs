//! Results: one row per run, stored as one Parquet file per run (written atomically), and the
//! merged polars table that `collect` writes.
//!
//! Atomicity: every file is written to a temporary name in the same folder, flushed, synced and
//! renamed onto its final name (rename within one file system is atomic on POSIX). A process
//! killed at any moment leaves either no result file or a complete one; temporaries (names
//! starting with `.` and ending in `.tmp`) are ignored and swept on the next run.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::grid::Run;
use crate::error::{Error, Result};

/// The result of one run: its config columns, AUCs, PSD curves, alignment and timings.
///
/// PSD curves share the frequency axis `omega` (normalised radial frequency, 1 = Nyquist, ring 0
/// dropped). Timings are seconds of wall time; they are the only columns that differ between two
/// executions of the same run (their names start with `time_`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    pub run_id: String,
    /// Position in the grid when it ran.
    pub index: u32,
    pub pretrain_id: String,
    pub source: String,
    pub edit: String,
    pub artifact: String,
    /// The artifact's kind (`grating`, `photon_noise`, ...).
    pub artifact_kind: String,
    /// The run's full config as canonical JSON (what its id hashes).
    pub config_json: String,
    pub level: f64,
    pub fold: u32,
    pub seed: u64,
    pub n_train: u32,
    pub n_val: u32,
    pub n_test: u32,
    /// Positive-class ROC AUC on the I.I.D., O.O.D. and clean test sets.
    pub auc_iid: f64,
    pub auc_ood: f64,
    pub auc_clean: f64,
    /// Clean-test AUC of the floor the network must beat: logistic regression on four patch
    /// statistics (`baseline`), trained on the clean training split of the same fold.
    pub auc_baseline_clean: f64,
    pub omega: Vec<f64>,
    /// Mean normalised gradient PSD of the pre-trained model on the clean target images.
    pub psd_pretrained: Vec<f64>,
    /// Mean normalised gradient PSD of the fine-tuned model on this fold's clean test images.
    pub psd_finetuned: Vec<f64>,
    /// Mean normalised PSD of the artifact residual (degraded minus clean) at full strength.
    pub psd_artifact: Vec<f64>,
    /// `spectrum::alignment` of the pre-trained / fine-tuned curve with the artifact's.
    pub alignment_pretrained: f64,
    pub alignment_finetuned: f64,
    /// Epochs fine-tuning ran (early stopping) and its best validation loss.
    pub epochs: u32,
    pub best_val_loss: f64,
    /// Wall time of pre-training this run's source (shared by all its runs; 0 for registry weights).
    pub time_pretrain_s: f64,
    pub time_finetune_s: f64,
    pub time_eval_s: f64,
    pub time_psd_s: f64,
    pub time_total_s: f64,
}

/// Columns that differ between two executions of one run (wall times).
pub fn timing_columns(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .filter(|n| n.starts_with("time_"))
        .map(|n| n.to_string())
        .collect()
}

fn list_column(name: &str, rows: impl Iterator<Item = Vec<f64>>) -> Column {
    let series: Vec<Series> = rows.map(|v| Series::new("".into(), v)).collect();
    Series::new(name.into(), series).into_column()
}

/// The results as a polars table, one row per run, in the given order.
pub fn to_frame(results: &[RunResult]) -> Result<DataFrame> {
    macro_rules! col {
        ($name:literal, $f:expr) => {
            Column::new($name.into(), results.iter().map($f).collect::<Vec<_>>())
        };
    }
    let columns = vec![
        col!("run_id", |r| r.run_id.clone()),
        col!("index", |r| r.index),
        col!("pretrain_id", |r| r.pretrain_id.clone()),
        col!("source", |r| r.source.clone()),
        col!("edit", |r| r.edit.clone()),
        col!("artifact", |r| r.artifact.clone()),
        col!("artifact_kind", |r| r.artifact_kind.clone()),
        col!("config_json", |r| r.config_json.clone()),
        col!("level", |r| r.level),
        col!("fold", |r| r.fold),
        col!("seed", |r| r.seed),
        col!("n_train", |r| r.n_train),
        col!("n_val", |r| r.n_val),
        col!("n_test", |r| r.n_test),
        col!("auc_iid", |r| r.auc_iid),
        col!("auc_ood", |r| r.auc_ood),
        col!("auc_clean", |r| r.auc_clean),
        col!("auc_baseline_clean", |r| r.auc_baseline_clean),
        list_column("omega", results.iter().map(|r| r.omega.clone())),
        list_column(
            "psd_pretrained",
            results.iter().map(|r| r.psd_pretrained.clone()),
        ),
        list_column(
            "psd_finetuned",
            results.iter().map(|r| r.psd_finetuned.clone()),
        ),
        list_column(
            "psd_artifact",
            results.iter().map(|r| r.psd_artifact.clone()),
        ),
        col!("alignment_pretrained", |r| r.alignment_pretrained),
        col!("alignment_finetuned", |r| r.alignment_finetuned),
        col!("epochs", |r| r.epochs),
        col!("best_val_loss", |r| r.best_val_loss),
        col!("time_pretrain_s", |r| r.time_pretrain_s),
        col!("time_finetune_s", |r| r.time_finetune_s),
        col!("time_eval_s", |r| r.time_eval_s),
        col!("time_psd_s", |r| r.time_psd_s),
        col!("time_total_s", |r| r.time_total_s),
    ];
    Ok(DataFrame::new(results.len(), columns)?)
}

fn missing(name: &str, i: usize) -> Error {
    Error::Other(format!("results table: null in column `{name}` at row {i}"))
}

/// Reads a results table back into rows (the inverse of [`to_frame`]).
pub fn from_frame(df: &DataFrame) -> Result<Vec<RunResult>> {
    let n = df.height();
    let s = |name: &str| -> Result<Vec<String>> {
        let c = df.column(name)?.str()?;
        (0..n)
            .map(|i| c.get(i).map(str::to_string).ok_or_else(|| missing(name, i)))
            .collect()
    };
    let f = |name: &str| -> Result<Vec<f64>> {
        let c = df.column(name)?.f64()?;
        (0..n)
            .map(|i| c.get(i).ok_or_else(|| missing(name, i)))
            .collect()
    };
    let u = |name: &str| -> Result<Vec<u32>> {
        let c = df.column(name)?.u32()?;
        (0..n)
            .map(|i| c.get(i).ok_or_else(|| missing(name, i)))
            .collect()
    };
    let l = |name: &str| -> Result<Vec<Vec<f64>>> {
        let c = df.column(name)?.list()?;
        (0..n)
            .map(|i| {
                let s = c.get_as_series(i).ok_or_else(|| missing(name, i))?;
                let v = s.f64()?;
                Ok((0..v.len()).map(|j| v.get(j).unwrap_or(f64::NAN)).collect())
            })
            .collect()
    };
    let seed = {
        let c = df.column("seed")?.u64()?;
        (0..n)
            .map(|i| c.get(i).ok_or_else(|| missing("seed", i)))
            .collect::<Result<Vec<u64>>>()?
    };
    let (run_id, pretrain_id, source, edit, artifact, kind, config) = (
        s("run_id")?,
        s("pretrain_id")?,
        s("source")?,
        s("edit")?,
        s("artifact")?,
        s("artifact_kind")?,
        s("config_json")?,
    );
    let (index, fold, n_train, n_val, n_test, epochs) = (
        u("index")?,
        u("fold")?,
        u("n_train")?,
        u("n_val")?,
        u("n_test")?,
        u("epochs")?,
    );
    let baseline = f("auc_baseline_clean")?;
    let (level, iid, ood, clean, a_pre, a_fine, best) = (
        f("level")?,
        f("auc_iid")?,
        f("auc_ood")?,
        f("auc_clean")?,
        f("alignment_pretrained")?,
        f("alignment_finetuned")?,
        f("best_val_loss")?,
    );
    let (t_pre, t_fine, t_eval, t_psd, t_total) = (
        f("time_pretrain_s")?,
        f("time_finetune_s")?,
        f("time_eval_s")?,
        f("time_psd_s")?,
        f("time_total_s")?,
    );
    let (omega, p_pre, p_fine, p_art) = (
        l("omega")?,
        l("psd_pretrained")?,
        l("psd_finetuned")?,
        l("psd_artifact")?,
    );
    Ok((0..n)
        .map(|i| RunResult {
            run_id: run_id[i].clone(),
            index: index[i],
            pretrain_id: pretrain_id[i].clone(),
            source: source[i].clone(),
            edit: edit[i].clone(),
            artifact: artifact[i].clone(),
            artifact_kind: kind[i].clone(),
            config_json: config[i].clone(),
            level: level[i],
            fold: fold[i],
            seed: seed[i],
            n_train: n_train[i],
            n_val: n_val[i],
            n_test: n_test[i],
            auc_iid: iid[i],
            auc_ood: ood[i],
            auc_clean: clean[i],
            auc_baseline_clean: baseline[i],
            omega: omega[i].clone(),
            psd_pretrained: p_pre[i].clone(),
            psd_finetuned: p_fine[i].clone(),
            psd_artifact: p_art[i].clone(),
            alignment_pretrained: a_pre[i],
            alignment_finetuned: a_fine[i],
            epochs: epochs[i],
            best_val_loss: best[i],
            time_pretrain_s: t_pre[i],
            time_finetune_s: t_fine[i],
            time_eval_s: t_eval[i],
            time_psd_s: t_psd[i],
            time_total_s: t_total[i],
        })
        .collect())
}

/// A temporary path next to `path` (same folder, so the rename stays on one file system).
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let k = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{k}.tmp", std::process::id()))
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is synced
/// and renamed onto `path`. On any error the temporary is removed and `path` is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        write(&mut file)?;
        file.flush().map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |f| f.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// Writes a table as Parquet, atomically.
pub fn write_parquet_atomic(path: &Path, df: &DataFrame) -> Result<()> {
    let mut df = df.clone();
    write_atomic(path, |f| {
        ParquetWriter::new(f).finish(&mut df)?;
        Ok(())
    })
}

/// Reads a Parquet table.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| Error::file(path, format!("not a readable Parquet results file: {e}")))
}

/// Removes the temporaries a killed process left in `dir` (names `.<file>.<pid>-<k>.tmp`).
/// Only files whose pid is not a live process are removed (a parallel writer keeps its own).
pub fn sweep_temporaries(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let pid = name
            .trim_end_matches(".tmp")
            .rsplit('.')
            .next()
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u32>().ok());
        let alive = pid
            .map(|p| p == std::process::id() || Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(false);
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The folder layout of a study's output.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// One Parquet file per run.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }
    pub fn run_file(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(format!("{run_id}.parquet"))
    }
    /// Cached pre-trained checkpoints (safetensors + JSON sidecar).
    pub fn pretrained_dir(&self) -> PathBuf {
        self.root.join("pretrained")
    }
    pub fn checkpoint(&self, pretrain_id: &str) -> PathBuf {
        self.pretrained_dir()
            .join(format!("{pretrain_id}.safetensors"))
    }
    pub fn sidecar(&self, pretrain_id: &str) -> PathBuf {
        self.pretrained_dir().join(format!("{pretrain_id}.json"))
    }
    /// The merged table.
    pub fn table(&self) -> PathBuf {
        self.root.join("results.parquet")
    }
    pub fn figures_dir(&self) -> PathBuf {
        self.root.join("figures")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.md")
    }
}

/// Whether a run's result file exists (a complete file: partial ones never carry the final name).
pub fn is_done(layout: &Layout, run: &Run) -> bool {
    layout.run_file(&run.id).is_file()
}

/// Writes one run's result atomically.
pub fn write_run(layout: &Layout, result: &RunResult) -> Result<PathBuf> {
    let path = layout.run_file(&result.run_id);
    write_parquet_atomic(&path, &to_frame(std::slice::from_ref(result))?)?;
    Ok(path)
}

/// What `collect` found.
#[derive(Clone, Debug)]
pub struct Collected {
    pub table: DataFrame,
    /// Runs of the grid with a result.
    pub done: usize,
    /// Runs of the grid without one yet.
    pub missing: Vec<usize>,
}

/// Merges the per-run files of the grid's runs (in grid order) into one table. Runs without a
/// result are listed in `missing`; files of runs not in the grid are ignored.
pub fn collect(layout: &Layout, runs: &[Run]) -> Result<Collected> {
    let mut frames: Vec<DataFrame> = Vec::new();
    let mut missing = Vec::new();
    for run in runs {
        let path = layout.run_file(&run.id);
        if !path.is_file() {
            missing.push(run.index);
            continue;
        }
        let df = read_parquet(&path)?;
        let rows = from_frame(&df)?;
        if rows.len() != 1 || rows[0].run_id != run.id {
            return Err(Error::file(
                &path,
                format!("expected one row for run {}", run.id),
            ));
        }
        frames.push(df);
    }
    let done = frames.len();
    let table = match frames.split_first_mut() {
        None => to_frame(&[])?,
        Some((first, rest)) => {
            let mut acc = first.clone();
            for df in rest.iter() {
                acc.vstack_mut(df)?;
            }
            acc.rechunk_mut();
            acc
        }
    };
    Ok(Collected {
        table,
        done,
        missing,
    })
}

/// Collects and writes the merged table atomically to `results.parquet`.
pub fn collect_to_file(layout: &Layout, runs: &[Run]) -> Result<Collected> {
    let collected = collect(layout, runs)?;
    write_parquet_atomic(&layout.table(), &collected.table)?;
    Ok(collected)
}
