//! The speed workloads (issues 4 and 5), defined once for `benches/` (criterion),
//! `examples/speed_table.rs` (the side-by-side table) and mirrored by `scripts/bench_torch.py`
//! (PyTorch). Not part of the method: a fixed set of random inputs and the passes to time.
//!
//! - `conv/<net>_<px>/{fwd,dx,dxdw}`: every convolution of ResNet-18 / -50 (torchvision layout,
//!   3 input channels) at `px`, each on its own random batch, summed over the layers;
//! - `model/<net>_<px>/{fwd,dx,train}`: the whole [`ResNet`] with 2 classes: eval forward; the
//!   input-gradient pass of [`input_gradient`] (loss target, weight gradients skipped); one
//!   training step (train-mode forward, cross-entropy, backward, the study's AdamW update).
//!   `net` is `r18`, `r50` (torchvision) or `s4` (the embedded study's network: ResNet-18, base
//!   width 4, 1 channel, small-input stem).

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor, Var};
use candle_nn::{ModuleT, VarMap};

use crate::error::{Error, Result};
use crate::gradient::{input_gradient, GradientTarget};
use crate::kernels::conv::{conv2d, without_weight_grads};
use crate::model::{trainable_vars, Arch, ResNet, ResNetConfig};
use crate::train::{Adam, OptimizerKind};

/// Images per batch in every workload (the issues' tables are at batch 16).
pub const BATCH: usize = 16;

/// The whole-model workloads of the issues' tables, plus the study's own network.
pub const MODEL_WORKLOADS: [&str; 10] = [
    "model/r18_64/fwd",
    "model/r18_64/dx",
    "model/r18_64/train",
    "model/r18_224/fwd",
    "model/r18_224/dx",
    "model/r50_224/dx",
    "model/r50_224/train",
    "model/s4_32/fwd",
    "model/s4_32/dx",
    "model/s4_32/train",
];

fn out_size(h: usize, k: usize, s: usize, p: usize) -> usize {
    (h + 2 * p - k) / s + 1
}

/// (c_in, c_out, k, stride, pad, h_in) of every convolution of `net` ("r18" or "r50",
/// torchvision layout) at `px` input. Keep in step with `conv_shapes()` in
/// scripts/bench_torch.py.
pub fn conv_shapes(net: &str, px: usize) -> Vec<(usize, usize, usize, usize, usize, usize)> {
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

/// One convolution layer of a conv stack: input and weight (variables, as in a model), and a
/// fixed upstream gradient.
pub struct ConvLayer {
    x: Var,
    w: Var,
    stride: usize,
    pad: usize,
    up: Tensor,
}

/// Random layers (N(0, 1) inputs, N(0, 0.05) weights) for every convolution of `net` at `px`.
pub fn conv_layers(net: &str, px: usize) -> Result<Vec<ConvLayer>> {
    let dev = Device::Cpu;
    conv_shapes(net, px)
        .into_iter()
        .map(|(ci, co, k, s, p, h)| {
            let ho = out_size(h, k, s, p);
            Ok(ConvLayer {
                x: Var::from_tensor(&Tensor::randn(0f32, 1.0, (BATCH, ci, h, h), &dev)?)?,
                w: Var::from_tensor(&Tensor::randn(0f32, 0.05, (co, ci, k, k), &dev)?)?,
                stride: s,
                pad: p,
                up: Tensor::randn(0f32, 1.0, (BATCH, co, ho, ho), &dev)?,
            })
        })
        .collect()
}

/// `y.apply_op2(up, Upstream)`: the scalar Σ y·up, whose gradient with respect to `y` is `up`
/// itself (`up` is untracked). What PyTorch's `autograd.grad(y, x, grad_outputs=up)`
/// (scripts/bench_torch.py) does has no candle API; `(y * up).sum_all().backward()`, used before
/// stop 16, added four passes over each layer's output (the product, its sum, the sum's broadcast
/// gradient and the product's backward) that the PyTorch side does not run. Here the forward is
/// one read of y and up, and the backward hands `up` on as it is.
struct Upstream;

impl CustomOp2 for Upstream {
    fn name(&self) -> &'static str {
        "bench-upstream"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = crate::kernels::contiguous::<f32>(s1, l1, "bench upstream: output")?;
        let up = crate::kernels::contiguous::<f32>(s2, l2, "bench upstream: upstream gradient")?;
        if up.len() != y.len() {
            candle_core::bail!(
                "bench upstream: {} upstream values for {}",
                up.len(),
                y.len()
            );
        }
        let dot: f64 = y.iter().zip(up).map(|(&y, &u)| f64::from(y * u)).sum();
        Ok((CpuStorage::F32(vec![dot as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // `backward` seeds the scalar with 1
        let g = grad.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let dy = if g == 1.0 {
            up.clone()
        } else {
            up.affine(g, 0.0)?
        };
        Ok((Some(dy), None))
    }
}

/// The backward pass from `y` with upstream gradient `up` (see [`Upstream`]).
fn backward_from(y: &Tensor, up: &Tensor) -> Result<GradStore> {
    Ok(y.apply_op2(up, Upstream)?.backward()?)
}

/// One pass over every layer: `fwd`, `dx` (forward + input gradient, weight gradients
/// skipped as in an input-gradient pass) or `dxdw` (forward + both gradients: training).
pub fn run_conv(layers: &[ConvLayer], pass: &str) -> Result<()> {
    for l in layers {
        match pass {
            "fwd" => {
                let y = conv2d(
                    &l.x.as_tensor().detach(),
                    &l.w.as_tensor().detach(),
                    l.stride,
                    l.pad,
                )?;
                std::hint::black_box(y);
            }
            "dx" => {
                let g = without_weight_grads(|| -> Result<_> {
                    let y = conv2d(l.x.as_tensor(), l.w.as_tensor(), l.stride, l.pad)?;
                    backward_from(&y, &l.up)
                })?;
                std::hint::black_box(g);
            }
            "dxdw" => {
                let y = conv2d(l.x.as_tensor(), l.w.as_tensor(), l.stride, l.pad)?;
                std::hint::black_box(backward_from(&y, &l.up)?);
            }
            other => return Err(Error::param("pass", other, "must be fwd, dx or dxdw")),
        }
    }
    Ok(())
}

/// A whole model with its batch, labels and optimiser.
pub struct ModelWorkload {
    model: ResNet,
    x: Tensor,
    labels: Vec<u32>,
    y: Tensor,
    opt: Adam,
}

/// The model `net` ("r18", "r50", "s4"), seeded, with a random batch at `px` (f32, CPU).
pub fn model_workload(net: &str, px: usize) -> Result<ModelWorkload> {
    let cfg = match net {
        "r18" => ResNetConfig::torchvision(Arch::ResNet18, 2),
        "r50" => ResNetConfig::torchvision(Arch::ResNet50, 2),
        "s4" => ResNetConfig::torchvision(Arch::ResNet18, 2)
            .with_base_width(4)
            .with_in_channels(1)
            .with_small_input(true),
        other => return Err(Error::param("net", other, "must be r18, r50 or s4")),
    };
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = ResNet::seeded(&cfg, &varmap, DType::F32, &dev, 0)?;
    let x = Tensor::randn(0f32, 1.0, (BATCH, cfg.in_channels, px, px), &dev)?;
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i % 2).collect();
    let y = Tensor::new(labels.as_slice(), &dev)?;
    let opt = Adam::new(trainable_vars(&varmap), OptimizerKind::AdamW, 1e-4)?;
    Ok(ModelWorkload {
        model,
        x,
        labels,
        y,
        opt,
    })
}

/// One pass of the model: `fwd`, `dx` or `train` (see the module doc).
pub fn run_model(w: &mut ModelWorkload, pass: &str) -> Result<()> {
    match pass {
        "fwd" => {
            std::hint::black_box(w.model.forward_t(&w.x, false)?);
        }
        "dx" => {
            let g = input_gradient(&w.model, &w.x, &w.labels, GradientTarget::Loss)?;
            std::hint::black_box(g);
        }
        "train" => {
            let logits = w.model.forward_t(&w.x, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &w.y)?;
            let grads = loss.backward()?;
            w.opt.step(&grads, 1e-3)?;
        }
        other => return Err(Error::param("pass", other, "must be fwd, dx or train")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes are torchvision's: 20 convolutions in ResNet-18 (17 + 3 downsamples), 53 in
    /// ResNet-50 (49 + 4), and every pass of the smallest model runs.
    #[test]
    fn workloads_have_torchvision_shapes_and_run() {
        assert_eq!(conv_shapes("r18", 64).len(), 20);
        assert_eq!(conv_shapes("r50", 224).len(), 53);
        assert_eq!(conv_shapes("r50", 224).last().unwrap().5, 7);
        let mut w = model_workload("s4", 32).unwrap();
        for pass in ["fwd", "dx", "train"] {
            run_model(&mut w, pass).unwrap();
        }
        assert!(run_model(&mut w, "backward").is_err());
        assert!(model_workload("vgg", 32).is_err());
    }

    /// The upstream op gives the gradients `(y * up).sum_all().backward()` gives (and its value).
    #[test]
    fn upstream_op_is_the_weighted_sum() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 7, 6), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.2, (4, 3, 3, 3), &dev).unwrap()).unwrap();
        let up = Tensor::randn(0f32, 1.0, (2, 4, 4, 3), &dev).unwrap();
        let y = conv2d(x.as_tensor(), w.as_tensor(), 2, 1).unwrap();
        let a = backward_from(&y, &up).unwrap();
        let b = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            let d = (a.get(v).unwrap() - b.get(v).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{d}");
        }
        let dot = y
            .apply_op2(&up, Upstream)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (&y * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (dot - want).abs() < 1e-3 * want.abs().max(1.0),
            "{dot} vs {want}"
        );
    }
}
