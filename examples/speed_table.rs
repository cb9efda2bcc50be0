//! candle side of the CPU speed comparison (issue 5): times the workloads of
//! `scripts/bench_torch.py` with stock candle and with the fast CPU convolution, in one process,
//! and writes seconds per iteration (median of `--reps` after a warm-up) as JSON.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --example speed_table -- --json /tmp/candle.json \
//!     [--reps 5] [--stock-reps 1 --stock-warmup 0] [--only conv/r18_64] [--mode both|fast|stock]
//!     (`--only` filters by substring; `--only conv/r18_64/dx$` picks that workload alone)
//! ```
//! The workloads (`conv/<net>_<px>/{fwd,dx,dxdw}`, `model/<net>_<px>/{fwd,dx,train}`) are
//! defined in `spectral_transfer::bench`, which the criterion benches share.

use std::collections::BTreeMap;
use std::time::Instant;

use spectral_transfer::bench::{
    conv_layers, model_workload, run_conv, run_model, BATCH, MODEL_WORKLOADS,
};
use spectral_transfer::kernels::conv::set_fast_cpu;

fn median_secs(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    Ok(ts[ts.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let reps: usize = opt("--reps").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let only = opt("--only").unwrap_or_default();
    // The stock path is slow enough on the 224 px workloads that one untimed warm-up doubles the
    // run; `--stock-reps 1 --stock-warmup 0` keeps a full table within minutes.
    let stock_reps: usize = opt("--stock-reps")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(reps);
    let stock_warmup: usize = opt("--stock-warmup")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    let mode = opt("--mode").unwrap_or_else(|| "both".into());
    let mut workloads: Vec<String> = Vec::new();
    for net in ["r18_64", "r18_224", "r50_224"] {
        for kind in ["fwd", "dx", "dxdw"] {
            workloads.push(format!("conv/{net}/{kind}"));
        }
    }
    workloads.extend(MODEL_WORKLOADS.iter().map(|w| w.to_string()));
    let modes: Vec<&str> = match mode.as_str() {
        "both" => vec!["stock", "fast"],
        m => vec![if m == "stock" { "stock" } else { "fast" }],
    };
    let mut out: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    // `--only NAME$`: that workload alone (a plain filter is a substring: `dx` matches `dxdw`)
    let wanted = |w: &str| match only.strip_suffix('$') {
        Some(exact) => w == exact,
        None => w.contains(&only),
    };
    for name in workloads.iter().filter(|w| wanted(w)) {
        let parts: Vec<&str> = name.split('/').collect();
        let (net, px) = parts[1].split_once('_').unwrap_or(("r18", "64"));
        let px: usize = px.parse()?;
        let is_model = parts[0] == "model";
        let layers = if is_model {
            Vec::new()
        } else {
            conv_layers(net, px)?
        };
        for &m in &modes {
            set_fast_cpu(m == "fast");
            let (w, r) = if m == "fast" {
                (1, reps)
            } else {
                (stock_warmup, stock_reps)
            };
            let t = if is_model {
                let mut work = model_workload(net, px)?;
                median_secs(w, r, || Ok(run_model(&mut work, parts[2])?))?
            } else {
                median_secs(w, r, || Ok(run_conv(&layers, parts[2])?))?
            };
            println!(
                "{m:5} {name:24} {t:8.4} s/it {:8.1} img/s",
                BATCH as f64 / t
            );
            out.entry(m).or_default().insert(name.clone(), t);
        }
    }
    if let Some(path) = opt("--json") {
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}
