//! candle side of the CPU speed comparison (issue 5): times the workloads of
//! `scripts/bench_torch.py` with stock candle and with the fast CPU convolution, in one process,
//! and writes seconds per iteration (median of `--reps` after a warm-up) as JSON.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example speed_table -- --json /tmp/candle.json \
//!     [--reps 5] [--only conv/r18_64] [--mode both|fast|stock]
//! ```
//! Workload names: `conv/<net>_<px>/{fwd,dx,dxdw}`: every convolution of ResNet-18/-50 at that
//! input size, each on its own random batch-16 input, summed over the layers.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use spectral_transfer::kernels::conv::{conv2d, set_fast_cpu, without_weight_grads};

const BATCH: usize = 16;

fn out_size(h: usize, k: usize, s: usize, p: usize) -> usize {
    (h + 2 * p - k) / s + 1
}

/// (c_in, c_out, k, stride, pad, h_in) of every convolution of the net (torchvision layout).
/// Keep in step with conv_shapes() in scripts/bench_torch.py.
fn conv_shapes(net: &str, px: usize) -> Vec<(usize, usize, usize, usize, usize, usize)> {
    let mut convs = vec![(3, 64, 7, 2, 3, px)];
    let mut h = out_size(out_size(px, 7, 2, 3), 3, 2, 1);
    let mut c = 64;
    let r18 = net == "r18";
    let blocks: [usize; 4] = if r18 { [2, 2, 2, 2] } else { [3, 4, 6, 3] };
    for (stage, (&width, &n)) in [64usize, 128, 256, 512].iter().zip(&blocks).enumerate() {
        for b in 0..n {
            let s = if stage > 0 && b == 0 { 2 } else { 1 };
            let ho = out_size(h, 3, s, 1);
            let c_out = if r18 {
                convs.push((c, width, 3, s, 1, h));
                convs.push((width, width, 3, 1, 1, ho));
                width
            } else {
                convs.push((c, width, 1, 1, 0, h));
                convs.push((width, width, 3, s, 1, h));
                convs.push((width, 4 * width, 1, 1, 0, ho));
                4 * width
            };
            if s != 1 || c != c_out {
                convs.push((c, c_out, 1, s, 0, h));
            }
            c = c_out;
            h = ho;
        }
    }
    convs
}

struct Layer {
    x: Var,
    w: Var,
    stride: usize,
    pad: usize,
    up: Tensor,
}

fn conv_layers(net: &str, px: usize) -> candle_core::Result<Vec<Layer>> {
    let dev = Device::Cpu;
    conv_shapes(net, px)
        .into_iter()
        .map(|(ci, co, k, s, p, h)| {
            let ho = out_size(h, k, s, p);
            Ok(Layer {
                x: Var::from_tensor(&Tensor::randn(0f32, 1.0, (BATCH, ci, h, h), &dev)?)?,
                w: Var::from_tensor(&Tensor::randn(0f32, 0.05, (co, ci, k, k), &dev)?)?,
                stride: s,
                pad: p,
                up: Tensor::randn(0f32, 1.0, (BATCH, co, ho, ho), &dev)?,
            })
        })
        .collect()
}

fn run_conv(layers: &[Layer], kind: &str) -> anyhow::Result<()> {
    for l in layers {
        match kind {
            "fwd" => {
                let y = conv2d(
                    &l.x.as_tensor().detach(),
                    &l.w.as_tensor().detach(),
                    l.stride,
                    l.pad,
                )?;
                std::hint::black_box(y);
            }
            // As in an input-gradient pass of a model: weights are variables, only dx is wanted.
            "dx" => {
                let g = without_weight_grads(|| -> anyhow::Result<_> {
                    let y = conv2d(l.x.as_tensor(), l.w.as_tensor(), l.stride, l.pad)?;
                    Ok((y * &l.up)?.sum_all()?.backward()?)
                })?;
                std::hint::black_box(g);
            }
            _ => {
                let y = conv2d(l.x.as_tensor(), l.w.as_tensor(), l.stride, l.pad)?;
                std::hint::black_box((y * &l.up)?.sum_all()?.backward()?);
            }
        }
    }
    Ok(())
}

fn median_secs(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
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
    let mode = opt("--mode").unwrap_or_else(|| "both".into());
    let mut workloads: Vec<String> = Vec::new();
    for net in ["r18_64", "r18_224", "r50_224"] {
        for kind in ["fwd", "dx", "dxdw"] {
            workloads.push(format!("conv/{net}/{kind}"));
        }
    }
    let modes: Vec<&str> = match mode.as_str() {
        "both" => vec!["stock", "fast"],
        m => vec![if m == "stock" { "stock" } else { "fast" }],
    };
    let mut out: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    for name in workloads.iter().filter(|w| w.contains(&only)) {
        let parts: Vec<&str> = name.split('/').collect();
        let (net, px) = parts[1].split_once('_').unwrap_or(("r18", "64"));
        let px: usize = px.parse()?;
        let layers = conv_layers(net, px)?;
        for &m in &modes {
            set_fast_cpu(m == "fast");
            let t = median_secs(reps, || run_conv(&layers, parts[2]))?;
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
