//! Criterion benches of the convolution paths (issue 5): every convolution of ResNet-18 / -50 at
//! the study's input sizes, batch 16, stock candle vs the fast CPU path, for the forward, the
//! forward + input gradient (weights tracked, as in a model's input-gradient pass) and the
//! forward + both gradients (training).
//!
//! Quick by design (10 samples, short measurement); filter with criterion's positional filter:
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench conv -- 'conv/r18_64'
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench conv -- 'fast'
//! ```
//! `--profile dev` reuses the project's one (optimised) profile and its build. The side-by-side
//! table with PyTorch comes from `examples/speed_table.rs` + `scripts/bench_torch.py`.

use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spectral_transfer::kernels::conv::{conv2d, set_fast_cpu, without_weight_grads};

const BATCH: usize = 16;

fn out_size(h: usize, k: usize, s: usize, p: usize) -> usize {
    (h + 2 * p - k) / s + 1
}

/// (c_in, c_out, k, stride, pad, h_in) of every convolution of the net (torchvision layout).
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

fn conv_layers(net: &str, px: usize) -> Vec<Layer> {
    let dev = Device::Cpu;
    conv_shapes(net, px)
        .into_iter()
        .map(|(ci, co, k, s, p, h)| {
            let ho = out_size(h, k, s, p);
            Layer {
                x: Var::from_tensor(&Tensor::randn(0f32, 1.0, (BATCH, ci, h, h), &dev).unwrap())
                    .unwrap(),
                w: Var::from_tensor(&Tensor::randn(0f32, 0.05, (co, ci, k, k), &dev).unwrap())
                    .unwrap(),
                stride: s,
                pad: p,
                up: Tensor::randn(0f32, 1.0, (BATCH, co, ho, ho), &dev).unwrap(),
            }
        })
        .collect()
}

fn run(layers: &[Layer], kind: &str) {
    for l in layers {
        match kind {
            "fwd" => {
                let y = conv2d(
                    &l.x.as_tensor().detach(),
                    &l.w.as_tensor().detach(),
                    l.stride,
                    l.pad,
                )
                .unwrap();
                std::hint::black_box(y);
            }
            "dx" => {
                let g = without_weight_grads(|| {
                    let y = conv2d(l.x.as_tensor(), l.w.as_tensor(), l.stride, l.pad).unwrap();
                    (y * &l.up).unwrap().sum_all().unwrap().backward().unwrap()
                });
                std::hint::black_box(g);
            }
            _ => {
                let y = conv2d(l.x.as_tensor(), l.w.as_tensor(), l.stride, l.pad).unwrap();
                std::hint::black_box((y * &l.up).unwrap().sum_all().unwrap().backward().unwrap());
            }
        }
    }
}

fn conv_stacks(c: &mut Criterion) {
    for (net, px) in [("r18", 64usize), ("r18", 224), ("r50", 224)] {
        let layers = conv_layers(net, px);
        let mut group = c.benchmark_group(format!("conv/{net}_{px}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for kind in ["fwd", "dx", "dxdw"] {
            for path in ["fast", "stock"] {
                group.bench_with_input(BenchmarkId::new(path, kind), &kind, |b, &kind| {
                    set_fast_cpu(path == "fast");
                    b.iter(|| run(&layers, kind))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, conv_stacks);
criterion_main!(benches);
