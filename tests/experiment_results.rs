//! Per-run Parquet files, atomic writes, collect on partial grids, and the runner's resume logic
//! (with a deterministic stand-in executor: the real pipeline is exercised by the CLI tests).

use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "experiment_common/mod.rs"]
mod common;
use common::{fake_result, study};

use spectral_transfer::experiment::grid::{stable_id, PretrainConfig, Run};
use spectral_transfer::experiment::results::{self, RunResult};
use spectral_transfer::experiment::{expand, Executor, Layout, PretrainOutcome, Runner, Study};

#[derive(Default)]
struct Fake {
    pretrained: AtomicUsize,
    executed: AtomicUsize,
    fail_index: Option<usize>,
}

impl Executor for Fake {
    fn ensure_pretrained(
        &self,
        _s: &Study,
        layout: &Layout,
        id: &str,
        _c: &PretrainConfig,
    ) -> spectral_transfer::Result<PretrainOutcome> {
        let p = layout.checkpoint(id);
        if p.is_file() {
            return Ok(PretrainOutcome {
                cached: true,
                seconds: 0.0,
            });
        }
        self.pretrained.fetch_add(1, Ordering::SeqCst);
        results::write_bytes_atomic(&p, b"weights")?;
        Ok(PretrainOutcome {
            cached: false,
            seconds: 0.0,
        })
    }
    fn execute(
        &self,
        _s: &Study,
        layout: &Layout,
        run: &Run,
    ) -> spectral_transfer::Result<RunResult> {
        assert!(
            layout.checkpoint(&run.pretrain_id).is_file(),
            "pre-training must come first"
        );
        if self.fail_index == Some(run.index) {
            return Err(spectral_transfer::Error::Other("boom".into()));
        }
        self.executed.fetch_add(1, Ordering::SeqCst);
        Ok(fake_result(run))
    }
}

fn without_timings(df: &polars::prelude::DataFrame) -> polars::prelude::DataFrame {
    df.drop_many(results::timing_columns(df))
}

#[test]
fn frame_round_trip_through_parquet() {
    let s = study();
    let runs = expand(&s).unwrap();
    let rows: Vec<RunResult> = runs.iter().take(3).map(fake_result).collect();
    let df = results::to_frame(&rows).unwrap();
    assert_eq!(df.height(), 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    results::write_parquet_atomic(&path, &df).unwrap();
    let back = results::from_frame(&results::read_parquet(&path).unwrap()).unwrap();
    assert_eq!(back, rows);
    // No temporary left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn failed_atomic_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    std::fs::write(&path, b"old").unwrap();
    let r = results::write_atomic(&path, |f| {
        use std::io::Write;
        f.write_all(b"partial").unwrap();
        Err(spectral_transfer::Error::Other("killed".into()))
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn stale_temporaries_are_swept_but_results_kept() {
    let dir = tempfile::tempdir().unwrap();
    // pid 999999999 cannot be alive (above Linux's pid_max).
    std::fs::write(dir.path().join(".abc.parquet.999999999-0.tmp"), b"partial").unwrap();
    std::fs::write(dir.path().join("abc.parquet"), b"whole").unwrap();
    assert_eq!(results::sweep_temporaries(dir.path()).unwrap(), 1);
    assert!(dir.path().join("abc.parquet").is_file());
}

#[test]
fn collect_on_partial_results_lists_the_missing() {
    let s = study();
    let runs = expand(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    for r in runs.iter().filter(|r| r.index % 3 == 0) {
        results::write_run(&layout, &fake_result(r)).unwrap();
    }
    // A file of a run outside the grid is ignored.
    let mut foreign = fake_result(&runs[0]);
    foreign.run_id = stable_id(&"not in the grid").unwrap();
    results::write_run(&layout, &foreign).unwrap();
    let c = results::collect_to_file(&layout, &runs).unwrap();
    let expected: Vec<usize> = runs
        .iter()
        .filter(|r| r.index % 3 != 0)
        .map(|r| r.index)
        .collect();
    assert_eq!(c.missing, expected);
    assert_eq!(c.done, runs.len() - expected.len());
    assert_eq!(c.table.height(), c.done);
    let back = results::from_frame(&results::read_parquet(&layout.table()).unwrap()).unwrap();
    let idx: Vec<u32> = back.iter().map(|r| r.index).collect();
    assert_eq!(
        idx,
        runs.iter()
            .filter(|r| r.index % 3 == 0)
            .map(|r| r.index as u32)
            .collect::<Vec<_>>()
    );
    // An empty grid collects to an empty table with the full schema.
    let empty = tempfile::tempdir().unwrap();
    let c = results::collect(&Layout::new(empty.path()), &runs).unwrap();
    assert_eq!((c.table.height(), c.done), (0, 0));
    assert!(c.table.column("auc_ood").is_ok());
}

#[test]
fn runner_resumes_without_redoing_or_duplicating() {
    let s = study();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let runner = Runner::new(&s, layout.clone()).unwrap();
    let n = runner.runs.len();
    // First invocation: one run fails (as if killed), the rest finish.
    let first = Fake {
        fail_index: Some(3),
        ..Default::default()
    };
    let sum = runner.run_all(2, &first, &|_| {}).unwrap();
    assert_eq!(sum.failed.len(), 1);
    assert_eq!(sum.executed.len(), n - 1);
    assert_eq!(runner.pending(), vec![3]);
    // Second: only the missing run is executed, pre-training comes from the cache.
    let second = Fake::default();
    let sum = runner.run_all(1, &second, &|_| {}).unwrap();
    assert_eq!((sum.executed.clone(), sum.already_done), (vec![3], n - 1));
    assert_eq!(second.pretrained.load(Ordering::SeqCst), 0);
    assert!(runner.pending().is_empty());
    let resumed = results::collect(&layout, &runner.runs).unwrap().table;
    // Uninterrupted reference.
    let dir2 = tempfile::tempdir().unwrap();
    let runner2 = Runner::new(&s, Layout::new(dir2.path())).unwrap();
    let fresh = Fake::default();
    runner2.run_all(1, &fresh, &|_| {}).unwrap();
    let edits: usize = s.sources.iter().map(|x| x.edits.len()).sum();
    assert_eq!(fresh.pretrained.load(Ordering::SeqCst), edits);
    let reference = results::collect(&Layout::new(dir2.path()), &runner2.runs)
        .unwrap()
        .table;
    assert!(without_timings(&resumed).equals_missing(&without_timings(&reference)));
    // --index of a done run does nothing; an index outside the grid is an error naming it.
    let third = Fake::default();
    let sum = runner.run_index(0, &third, &|_| {}).unwrap();
    assert!(sum.executed.is_empty() && third.executed.load(Ordering::SeqCst) == 0);
    let e = runner
        .run_index(n, &third, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("index"), "{e}");
}
