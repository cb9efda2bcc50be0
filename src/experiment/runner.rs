//! Executing the grid: one run by index (a Slurm array task, a Kubernetes Indexed Job), or every
//! run not yet done, up to `jobs` at a time. Pre-training is shared: each source + edit is
//! pre-trained once, its checkpoint cached under `pretrained/` (written atomically) and reused by
//! all its runs, by later invocations and by other array tasks.
//!
//! Resume: a run is done when `runs/<id>.parquet` exists; that file only ever appears complete
//! (see [`super::results::write_atomic`]). Killing the process at any point loses at most the
//! runs in progress, and rerunning redoes exactly those.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::config::Study;
use super::grid::{expand, pretrain_jobs, PretrainConfig, Run};
use super::results::{is_done, sweep_temporaries, write_run, Layout, RunResult};
use crate::error::{Error, Result};

/// What the runner needs from a pipeline that trains and measures.
pub trait Executor: Sync {
    /// Makes sure the pre-trained model `id` exists under `layout` (pre-trains it and writes it
    /// atomically if not). Returns the wall time pre-training took (0 when cached or not trained).
    fn ensure_pretrained(
        &self,
        study: &Study,
        layout: &Layout,
        id: &str,
        config: &PretrainConfig,
    ) -> Result<PretrainOutcome>;

    /// Executes one run from its (existing) pre-trained model.
    fn execute(&self, study: &Study, layout: &Layout, run: &Run) -> Result<RunResult>;
}

/// Whether a pre-trained model was trained now or found in the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainOutcome {
    pub cached: bool,
    pub seconds: f64,
}

/// Progress events, for the CLI's progress bars (the library itself prints nothing).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The runs this invocation will execute and the pre-trainings it needs.
    Plan {
        runs: usize,
        done: usize,
        pretrain: usize,
    },
    PretrainStarted {
        id: String,
        source: String,
        edit: String,
    },
    PretrainFinished {
        id: String,
        cached: bool,
        seconds: f64,
    },
    RunStarted {
        index: usize,
        id: String,
    },
    RunFinished {
        index: usize,
        id: String,
        seconds: f64,
    },
    RunFailed {
        index: usize,
        id: String,
        error: String,
    },
}

/// What an invocation did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub total: usize,
    /// Done before this invocation.
    pub already_done: usize,
    pub executed: Vec<usize>,
    pub failed: Vec<(usize, String)>,
    pub pretrained: usize,
    pub seconds: f64,
}

/// The grid of a study bound to an output folder.
pub struct Runner<'a> {
    pub study: &'a Study,
    pub layout: Layout,
    pub runs: Vec<Run>,
}

impl<'a> Runner<'a> {
    pub fn new(study: &'a Study, layout: Layout) -> Result<Self> {
        Ok(Self {
            study,
            runs: expand(study)?,
            layout,
        })
    }

    /// Indices of the runs without a result.
    pub fn pending(&self) -> Vec<usize> {
        self.runs
            .iter()
            .filter(|r| !is_done(&self.layout, r))
            .map(|r| r.index)
            .collect()
    }

    fn run(&self, index: usize) -> Result<&Run> {
        self.runs.get(index).ok_or_else(|| {
            Error::param(
                "index",
                index,
                format!(
                    "the grid has {} runs (0..{})",
                    self.runs.len(),
                    self.runs.len()
                ),
            )
        })
    }

    fn pretrain_for(
        &self,
        runs: &[Run],
        exec: &dyn Executor,
        on: &(dyn Fn(Event) + Sync),
    ) -> Result<usize> {
        let mut n = 0;
        for (id, cfg) in pretrain_jobs(runs) {
            on(Event::PretrainStarted {
                id: id.clone(),
                source: cfg.source.name.clone(),
                edit: super::spec::edit_label(&cfg.edit),
            });
            let out = exec.ensure_pretrained(self.study, &self.layout, &id, &cfg)?;
            if !out.cached {
                n += 1;
            }
            on(Event::PretrainFinished {
                id,
                cached: out.cached,
                seconds: out.seconds,
            });
        }
        Ok(n)
    }

    fn execute_one(
        &self,
        run: &Run,
        exec: &dyn Executor,
        on: &(dyn Fn(Event) + Sync),
    ) -> Result<f64> {
        on(Event::RunStarted {
            index: run.index,
            id: run.id.clone(),
        });
        let t = Instant::now();
        let result = exec.execute(self.study, &self.layout, run).and_then(|r| {
            if r.run_id != run.id {
                return Err(Error::Other(format!(
                    "executor returned run {} for run {}",
                    r.run_id, run.id
                )));
            }
            write_run(&self.layout, &r)
        });
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(_) => {
                on(Event::RunFinished {
                    index: run.index,
                    id: run.id.clone(),
                    seconds: secs,
                });
                Ok(secs)
            }
            Err(e) => {
                on(Event::RunFailed {
                    index: run.index,
                    id: run.id.clone(),
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Runs one run by index (its pre-training first, if missing). A run already done is not
    /// redone.
    pub fn run_index(
        &self,
        index: usize,
        exec: &dyn Executor,
        on: &(dyn Fn(Event) + Sync),
    ) -> Result<Summary> {
        let t = Instant::now();
        let run = self.run(index)?;
        sweep_temporaries(&self.layout.runs_dir())?;
        sweep_temporaries(&self.layout.pretrained_dir())?;
        let done = is_done(&self.layout, run);
        on(Event::Plan {
            runs: usize::from(!done),
            done: usize::from(done),
            pretrain: usize::from(!done),
        });
        let mut s = Summary {
            total: 1,
            already_done: usize::from(done),
            ..Default::default()
        };
        if !done {
            s.pretrained = self.pretrain_for(std::slice::from_ref(run), exec, on)?;
            self.execute_one(run, exec, on)?;
            s.executed.push(index);
        }
        s.seconds = t.elapsed().as_secs_f64();
        Ok(s)
    }

    /// Runs every run not done: pre-trainings first (one at a time, each using every core), then
    /// the fine-tuning runs, `jobs` at a time. A failed run is reported and the others go on.
    pub fn run_all(
        &self,
        jobs: usize,
        exec: &dyn Executor,
        on: &(dyn Fn(Event) + Sync),
    ) -> Result<Summary> {
        let t = Instant::now();
        sweep_temporaries(&self.layout.runs_dir())?;
        sweep_temporaries(&self.layout.pretrained_dir())?;
        let pending: Vec<Run> = self
            .pending()
            .into_iter()
            .map(|i| self.runs[i].clone())
            .collect();
        on(Event::Plan {
            runs: pending.len(),
            done: self.runs.len() - pending.len(),
            pretrain: pretrain_jobs(&pending).len(),
        });
        let mut summary = Summary {
            total: self.runs.len(),
            already_done: self.runs.len() - pending.len(),
            ..Default::default()
        };
        summary.pretrained = self.pretrain_for(&pending, exec, on)?;
        let next = AtomicUsize::new(0);
        let executed = Mutex::new(Vec::new());
        let failed = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1).min(pending.len().max(1)) {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(run) = pending.get(k) else { break };
                    match self.execute_one(run, exec, on) {
                        Ok(_) => executed.lock().map(|mut v| v.push(run.index)).unwrap_or(()),
                        Err(e) => failed
                            .lock()
                            .map(|mut v| v.push((run.index, e.to_string())))
                            .unwrap_or(()),
                    }
                });
            }
        });
        summary.executed = executed.into_inner().unwrap_or_default();
        summary.executed.sort();
        summary.failed = failed.into_inner().unwrap_or_default();
        summary.failed.sort();
        summary.seconds = t.elapsed().as_secs_f64();
        Ok(summary)
    }
}
