//! ResNets in candle that train: ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck) with
//! torchvision/timm tensor names, a configurable base width and a small-input stem for 32-64 px.
//!
//! Written here rather than taken from `candle-transformers` because that ResNet is inference
//! only (BatchNorm fixed to eval mode) and cannot be fine-tuned. Tensor names follow torchvision
//! exactly (`conv1.weight`, `bn1.{weight,bias,running_mean,running_var}`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.{0,1}.*`, `fc.{weight,bias}`), so torchvision
//! and timm ResNet-50 state dicts load unchanged (their `num_batches_tracked` counters are not
//! used). Every convolution goes through [`crate::kernels::conv2d`] and the stem pool through
//! [`crate::kernels::max_pool2d`] (candle's own pooling has no correct backward).
//!
//! BatchNorm is candle-nn's [`candle_nn::BatchNorm`], whose `ModuleT` does what PyTorch does:
//! in training it normalises with the batch statistics (biased variance) and updates the running
//! stats in place (momentum 0.1, unbiased variance), in evaluation it uses the running stats
//! (eps 1e-5). Its running stats are `Var`s of the [`VarMap`] the model was built from, so they
//! are saved with the weights; [`trainable_vars`] leaves them out of the optimiser.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{BatchNorm, BatchNormConfig, Init, Linear, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels;

/// BatchNorm constants of PyTorch (and so of every torchvision/timm checkpoint).
pub const BN_EPS: f64 = 1e-5;
/// Weight of the new batch statistic in the running-stat update.
pub const BN_MOMENTUM: f64 = 0.1;

/// The ResNet depth and block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// BasicBlock, [2, 2, 2, 2].
    ResNet18,
    /// BasicBlock, [3, 4, 6, 3].
    ResNet34,
    /// Bottleneck (expansion 4, stride on the 3 x 3 conv as in torchvision v1.5), [3, 4, 6, 3].
    ResNet50,
}

impl Arch {
    /// Blocks per stage.
    pub fn layers(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => [2, 2, 2, 2],
            Arch::ResNet34 | Arch::ResNet50 => [3, 4, 6, 3],
        }
    }

    /// Whether the blocks are Bottlenecks.
    pub fn bottleneck(self) -> bool {
        matches!(self, Arch::ResNet50)
    }

    /// Output channels of a block relative to its `planes`: 1 (BasicBlock) or 4 (Bottleneck).
    pub fn expansion(self) -> usize {
        if self.bottleneck() {
            4
        } else {
            1
        }
    }

    /// Short name: "resnet18", "resnet34", "resnet50".
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
        }
    }
}

/// Architecture hyper-parameters. Build presets with [`ResNetConfig::torchvision`] or
/// [`ResNetConfig::narrow18`] and adjust with the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    pub arch: Arch,
    /// Channels of the stem and of stage 1 (`planes` of stage i is base_width * 2^i);
    /// 64 is torchvision's ResNet.
    pub base_width: usize,
    /// Channels the first conv expects. A 1-channel input to a model with more input channels
    /// is replicated to all of them (channel replication, see `source::InputAdapt`).
    pub in_channels: usize,
    /// Logits of the linear head.
    pub num_classes: usize,
    /// Dropout probability before the linear head (training only), in [0, 1).
    pub dropout: f64,
    /// Small-input stem for 32-64 px images: a 3 x 3 stride-1 first conv and no max-pool,
    /// instead of torchvision's 7 x 7 stride-2 conv and 3 x 3 stride-2 max-pool.
    pub small_input: bool,
}

impl ResNetConfig {
    /// torchvision's ResNet: base width 64, RGB input, 224 px stem, no dropout.
    pub fn torchvision(arch: Arch, num_classes: usize) -> Self {
        Self {
            arch,
            base_width: 64,
            in_channels: 3,
            num_classes,
            dropout: 0.0,
            small_input: false,
        }
    }

    /// A narrow ResNet-18 that trains on 2 CPU cores at 32-64 px: base width 16 (features 128),
    /// 1 input channel, small-input stem, no dropout.
    pub fn narrow18(num_classes: usize) -> Self {
        Self {
            arch: Arch::ResNet18,
            base_width: 16,
            in_channels: 1,
            num_classes,
            dropout: 0.0,
            small_input: true,
        }
    }

    pub fn with_base_width(mut self, base_width: usize) -> Self {
        self.base_width = base_width;
        self
    }
    pub fn with_in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }
    pub fn with_small_input(mut self, small_input: bool) -> Self {
        self.small_input = small_input;
        self
    }

    /// Channels of [`ResNet::features`]: base_width * 8 * expansion (512 for ResNet-18,
    /// 2048 for ResNet-50).
    pub fn feature_dim(&self) -> usize {
        self.base_width * 8 * self.arch.expansion()
    }

    /// Checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.base_width == 0 {
            return Err(Error::param(
                "base_width",
                self.base_width,
                "must be at least 1",
            ));
        }
        if self.in_channels == 0 {
            return Err(Error::param(
                "in_channels",
                self.in_channels,
                "must be at least 1",
            ));
        }
        if self.num_classes == 0 {
            return Err(Error::param(
                "num_classes",
                self.num_classes,
                "must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::param("dropout", self.dropout, "must be in [0, 1)"));
        }
        Ok(())
    }
}

fn to_candle(e: Error) -> candle_core::Error {
    match e {
        Error::Candle(e) => e,
        e => candle_core::Error::Msg(e.to_string()),
    }
}

/// A bias-free convolution (every ResNet conv), run through [`kernels::conv2d`].
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        let init = Init::Kaiming {
            dist: candle_nn::init::NormalOrUniform::Normal,
            fan: candle_nn::init::FanInOut::FanOut,
            non_linearity: candle_nn::init::NonLinearity::ReLU,
        };
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", init)?;
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    /// The convolution; with `block` > 1 its output is blocked where its channels fill the blocks
    /// ([`kernels::layout::lanes_for`]); with NCHW in and out it is [`kernels::conv2d`].
    fn forward(&self, x: &Tensor, block: usize) -> Result<Tensor> {
        let lanes = kernels::layout::lanes_for(self.weight.dim(0)?, block);
        if lanes == 1 && x.rank() == 4 {
            kernels::conv2d(x, &self.weight, self.stride, self.padding)
        } else {
            kernels::conv2d_blocked(x, &self.weight, self.stride, self.padding, lanes)
        }
    }
}

fn bn(vb: VarBuilder, c: usize) -> Result<BatchNorm> {
    let cfg = BatchNormConfig {
        eps: BN_EPS,
        remove_mean: true,
        affine: true,
        momentum: BN_MOMENTUM,
    };
    Ok(candle_nn::batch_norm(c, cfg, vb)?)
}

#[derive(Clone, Debug)]
struct Downsample {
    conv: Conv,
    bn: BatchNorm,
}

#[derive(Clone, Debug)]
struct Block {
    /// (conv, bn) pairs in order: 2 for a BasicBlock, 3 for a Bottleneck.
    convs: Vec<(Conv, BatchNorm)>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(
        vb: VarBuilder,
        arch: Arch,
        inplanes: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Self> {
        let out = planes * arch.expansion();
        let convs = if arch.bottleneck() {
            vec![
                (
                    Conv::new(vb.pp("conv1"), inplanes, planes, 1, 1, 0)?,
                    bn(vb.pp("bn1"), planes)?,
                ),
                (
                    Conv::new(vb.pp("conv2"), planes, planes, 3, stride, 1)?,
                    bn(vb.pp("bn2"), planes)?,
                ),
                (
                    Conv::new(vb.pp("conv3"), planes, out, 1, 1, 0)?,
                    bn(vb.pp("bn3"), out)?,
                ),
            ]
        } else {
            vec![
                (
                    Conv::new(vb.pp("conv1"), inplanes, planes, 3, stride, 1)?,
                    bn(vb.pp("bn1"), planes)?,
                ),
                (
                    Conv::new(vb.pp("conv2"), planes, planes, 3, 1, 1)?,
                    bn(vb.pp("bn2"), planes)?,
                ),
            ]
        };
        let downsample = if stride != 1 || inplanes != out {
            let vd = vb.pp("downsample");
            Some(Downsample {
                conv: Conv::new(vd.pp("0"), inplanes, out, 1, stride, 0)?,
                bn: bn(vd.pp("1"), out)?,
            })
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool, block: usize) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, norm)) in self.convs.iter().enumerate() {
            h = kernels::batch_norm(norm, &conv.forward(&h, block)?, train, i != last)?;
        }
        let identity = match &self.downsample {
            Some(d) => kernels::batch_norm(&d.bn, &d.conv.forward(x, block)?, train, false)?,
            None => x.clone(),
        };
        kernels::add_relu(&h, &identity)
    }
}

/// A trainable ResNet: (N, C, H, W) -> logits (N, num_classes) through [`ModuleT`]
/// (`train = true`: batch-stat BatchNorm with running-stat updates, and dropout).
#[derive(Clone, Debug)]
pub struct ResNet {
    cfg: ResNetConfig,
    conv1: Conv,
    bn1: BatchNorm,
    stages: Vec<Vec<Block>>,
    fc: Linear,
    /// Dropout masks come from this seeded stream (candle's CPU RNG cannot be seeded), so a
    /// training run is reproducible; see [`ResNet::reseed_dropout`].
    dropout_rng: Arc<Mutex<ChaCha8Rng>>,
}

impl ResNet {
    /// Builds the model from `vb` (a [`VarMap`]-backed builder to train, or one over loaded
    /// tensors to evaluate). Parameters a VarMap does not hold yet get torchvision's init
    /// from candle's (unseeded) RNG; call [`init_seeded`] or use [`ResNet::seeded`] for a
    /// reproducible init. With the fast CPU kernels on, also tunes malloc and shortens candle's
    /// pool spin ([`crate::kernels::tune_allocator`], [`crate::kernels::tune_thread_pools`]).
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        // Before the first forward pass, so that candle's pool starts with the short spin.
        if crate::kernels::fast_cpu() {
            crate::kernels::tune_allocator();
            crate::kernels::tune_thread_pools();
        }
        let w = cfg.base_width;
        let conv1 = if cfg.small_input {
            Conv::new(vb.pp("conv1"), cfg.in_channels, w, 3, 1, 1)?
        } else {
            Conv::new(vb.pp("conv1"), cfg.in_channels, w, 7, 2, 3)?
        };
        let bn1 = bn(vb.pp("bn1"), w)?;
        let mut inplanes = w;
        let mut stages = Vec::with_capacity(4);
        for (i, &n_blocks) in cfg.arch.layers().iter().enumerate() {
            let planes = w << i;
            let stride = if i == 0 { 1 } else { 2 };
            let vl = vb.pp(format!("layer{}", i + 1));
            let mut blocks = Vec::with_capacity(n_blocks);
            for j in 0..n_blocks {
                let s = if j == 0 { stride } else { 1 };
                blocks.push(Block::new(
                    vl.pp(j.to_string()),
                    cfg.arch,
                    inplanes,
                    planes,
                    s,
                )?);
                inplanes = planes * cfg.arch.expansion();
            }
            stages.push(blocks);
        }
        let fc = candle_nn::linear(inplanes, cfg.num_classes, vb.pp("fc"))?;
        Ok(Self {
            cfg: cfg.clone(),
            conv1,
            bn1,
            stages,
            fc,
            dropout_rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(0))),
        })
    }

    /// Builds the model into `varmap` and initialises every tensor from `seed`
    /// (see [`init_seeded`]); the dropout stream is seeded from `seed` too.
    pub fn seeded(
        cfg: &ResNetConfig,
        varmap: &VarMap,
        dtype: DType,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let model = Self::new(cfg, VarBuilder::from_varmap(varmap, dtype, device))?;
        init_seeded(varmap, seed)?;
        model.reseed_dropout(seed);
        Ok(model)
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Device of the parameters (inputs must be there too).
    pub fn device(&self) -> &Device {
        self.conv1.weight.device()
    }

    /// Dtype of the parameters (inputs are converted to it by [`crate::gradient`]).
    pub fn dtype(&self) -> DType {
        self.conv1.weight.dtype()
    }

    /// Restarts the dropout mask stream from `seed`.
    pub fn reseed_dropout(&self, seed: u64) {
        // A poisoned lock only means another thread panicked mid-draw; the stream is reset anyway.
        let mut rng = self.dropout_rng.lock().unwrap_or_else(|p| p.into_inner());
        *rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0d50_9a7e_d509_a7e5);
    }

    /// Checks an input batch and replicates a 1-channel batch to the model's input channels.
    fn adapt_input(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let c = self.cfg.in_channels;
        if dims.len() != 4 || (dims[1] != c && dims[1] != 1) {
            return Err(Error::Shape {
                what: "ResNet input".into(),
                expected: format!("(N, {c}, H, W) or (N, 1, H, W)"),
                got: format!("{dims:?}"),
            });
        }
        if dims[1] == c {
            Ok(x.clone())
        } else {
            Ok(x.broadcast_as((dims[0], c, dims[2], dims[3]))?
                .contiguous()?)
        }
    }

    /// Backbone features after the global average pool: (N, C, H, W) -> (N, feature_dim).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.adapt_input(x)?;
        // Feature maps in oneDNN's blocked layout where that runs and their channels fill the
        // blocks, from the stem's output to the last block's; NCHW otherwise.
        let block = kernels::layout::blocked_lanes(&x).unwrap_or(1);
        let mut h = kernels::batch_norm(&self.bn1, &self.conv1.forward(&x, block)?, train, true)?;
        if !self.cfg.small_input {
            h = kernels::max_pool2d(&h, 3, 2, 1)?;
        }
        for stage in &self.stages {
            for b in stage {
                h = b.forward_t(&h, train, block)?;
            }
        }
        kernels::global_avg_pool(&kernels::layout::to_plain(&h)?)
    }

    /// Inverted dropout with a mask from the model's seeded stream.
    fn dropout(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.cfg.dropout;
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = {
            let mut rng = self.dropout_rng.lock().unwrap_or_else(|p| p.into_inner());
            (0..x.elem_count())
                .map(|_| {
                    if rng.random::<f64>() >= p {
                        scale as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }

    /// Logits (N, num_classes); the same as [`ModuleT::forward_t`] with this crate's error type.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features(x, train)?;
        let f = if train { self.dropout(&f)? } else { f };
        Ok(self.fc.forward(&f)?)
    }
}

impl ModuleT for ResNet {
    /// (N, C, H, W) -> logits (N, num_classes).
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.logits(xs, train).map_err(to_candle)
    }
}

/// Whether a tensor name is a BatchNorm running statistic (not trained by the optimiser).
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The parameters an optimiser should update: every var of `varmap` except the BatchNorm
/// running stats, sorted by name so that optimiser state is laid out reproducibly.
pub fn trainable_vars(varmap: &VarMap) -> Vec<Var> {
    named_vars(varmap)
        .into_iter()
        .filter(|(n, _)| !is_running_stat(n))
        .map(|(_, v)| v)
        .collect()
}

/// Every (name, var) of `varmap`, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Re-initialises every tensor of a ResNet's `varmap` reproducibly from `seed`, with
/// torchvision's rules: conv weights Kaiming normal (fan_out, ReLU gain, std sqrt(2 / fan_out)),
/// BatchNorm weight 1, bias 0, running mean 0, running var 1, and the linear head uniform in
/// +-1/sqrt(fan_in) (PyTorch's nn.Linear default). Names are visited in sorted order from one
/// ChaCha8 stream, so the result depends only on the seed and the architecture.
pub fn init_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, var) in named_vars(varmap) {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("running_mean") {
            vec![0.0; n]
        } else if name.ends_with("running_var") {
            vec![1.0; n]
        } else if name.starts_with("fc.") || name.contains(".fc.") {
            let fan_in = if dims.len() == 2 {
                dims[1]
            } else {
                var_fan_in(varmap, &name)
            };
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n)
                .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
                .collect()
        } else if dims.len() == 4 {
            let fan_out = dims[0] * dims[2] * dims[3];
            let std = (2.0 / fan_out as f64).sqrt();
            (0..n)
                .map(|_| (rng.sample::<f64, _>(StandardNormal) * std) as f32)
                .collect()
        } else if name.ends_with("weight") {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// fan_in of the linear layer a bias belongs to (columns of the sibling weight).
fn var_fan_in(varmap: &VarMap, bias_name: &str) -> usize {
    let weight = bias_name.trim_end_matches("bias").to_string() + "weight";
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    data.get(&weight)
        .and_then(|w| w.dims().get(1).copied())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(arch: Arch, small: bool) -> ResNetConfig {
        ResNetConfig {
            arch,
            base_width: 4,
            in_channels: 1,
            num_classes: 3,
            dropout: 0.0,
            small_input: small,
        }
    }

    #[test]
    fn names_and_shapes_follow_torchvision() {
        let vm = VarMap::new();
        let _m = ResNet::seeded(
            &tiny(Arch::ResNet50, false),
            &vm,
            DType::F32,
            &Device::Cpu,
            1,
        )
        .unwrap();
        let vars = named_vars(&vm);
        let get = |n: &str| {
            vars.iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("missing {n}"))
                .1
                .dims()
                .to_vec()
        };
        assert_eq!(get("conv1.weight"), vec![4, 1, 7, 7]);
        assert_eq!(get("bn1.running_var"), vec![4]);
        assert_eq!(get("layer1.0.conv3.weight"), vec![16, 4, 1, 1]);
        assert_eq!(get("layer1.0.downsample.0.weight"), vec![16, 4, 1, 1]);
        assert_eq!(get("layer2.0.conv2.weight"), vec![8, 8, 3, 3]);
        assert_eq!(get("layer4.2.bn3.bias"), vec![128]);
        assert_eq!(get("fc.weight"), vec![3, 128]);
        // torchvision ResNet-50 has 161 parameter and 106 running-stat tensors (without the 53
        // num_batches_tracked counters).
        assert_eq!(vars.len(), 161 + 106);
        assert_eq!(trainable_vars(&vm).len(), 161);
        assert!(vars.iter().all(|(k, _)| !k.contains("layer1.1.downsample")));
    }

    #[test]
    fn resnet18_counts_and_shapes() {
        let vm = VarMap::new();
        let cfg = ResNetConfig::torchvision(Arch::ResNet18, 10).with_base_width(8);
        let m = ResNet::seeded(&cfg, &vm, DType::F32, &Device::Cpu, 1).unwrap();
        // torchvision ResNet-18: 62 parameter tensors, 40 running stats.
        assert_eq!(named_vars(&vm).len(), 62 + 40);
        let x = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.forward_t(&x, false).unwrap().dims(), &[2, 10]);
        assert_eq!(m.features(&x, true).unwrap().dims(), &[2, 64]);
    }

    #[test]
    fn seeded_init_is_reproducible_and_follows_the_rules() {
        let a = VarMap::new();
        let b = VarMap::new();
        let cfg = tiny(Arch::ResNet18, true);
        ResNet::seeded(&cfg, &a, DType::F32, &Device::Cpu, 7).unwrap();
        ResNet::seeded(&cfg, &b, DType::F32, &Device::Cpu, 7).unwrap();
        for ((na, va), (nb, vb)) in named_vars(&a).iter().zip(named_vars(&b).iter()) {
            assert_eq!(na, nb);
            let x = va.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = vb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(x, y, "{na}");
        }
        let vars = named_vars(&a);
        let vals = |n: &str| {
            vars.iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert!(vals("bn1.weight").iter().all(|&v| v == 1.0));
        assert!(vals("bn1.running_mean").iter().all(|&v| v == 0.0));
        let w = vals("layer3.0.conv1.weight"); // (16, 8, 3, 3): fan_out 144
        let sd = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        assert!((sd - (2.0f32 / 144.0).sqrt()).abs() < 0.01, "{sd}");
        let fc = vals("fc.weight"); // fan_in 32
        assert!(fc.iter().all(|v| v.abs() <= 1.0 / 32f32.sqrt()));
    }

    #[test]
    fn batchnorm_trains_and_updates_running_stats() {
        let vm = VarMap::new();
        let cfg = tiny(Arch::ResNet18, true);
        let m = ResNet::seeded(&cfg, &vm, DType::F32, &Device::Cpu, 3).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 1, 16, 16), &Device::Cpu)
            .unwrap()
            .affine(3.0, 2.0)
            .unwrap();
        let eval_before = m.forward_t(&x, false).unwrap();
        let train_out = m.forward_t(&x, true).unwrap();
        let rm = vm.data().lock().unwrap()["bn1.running_mean"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(rm.iter().any(|&v| v != 0.0), "running mean was not updated");
        // Batch statistics in training differ from the (fresh) running stats in evaluation.
        let d = (train_out - &eval_before)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() > 1e-3);
        // The running mean moved by momentum 0.1 towards the batch mean of conv1's output.
        let c1 = m.conv1.forward(&x, 1).unwrap();
        let bm = c1.mean((0, 2, 3)).unwrap().to_vec1::<f32>().unwrap();
        for (r, b) in rm.iter().zip(&bm) {
            assert!((r - 0.1 * b).abs() < 1e-5, "{r} vs {b}");
        }
        // Eval is now different (running stats used) and deterministic.
        let e1 = m
            .forward_t(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let e2 = m
            .forward_t(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(e1, e2);
        let b0 = eval_before.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(e1, b0);
    }

    /// Every trainable tensor gets a non-zero gradient through the training-mode forward
    /// (batch-stat BatchNorm, the custom max-pool, dropout); the running stats get none.
    #[test]
    fn training_gradient_reaches_every_parameter() {
        let vm = VarMap::new();
        let cfg = tiny(Arch::ResNet50, false).with_dropout(0.2);
        let m = ResNet::seeded(&cfg, &vm, DType::F32, &Device::Cpu, 5).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 1, 32, 32), &Device::Cpu).unwrap();
        let target = Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu).unwrap();
        let logits = m.forward_t(&x, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in named_vars(&vm) {
            let g = grads.get(var.as_tensor());
            if is_running_stat(&name) {
                assert!(g.is_none(), "{name} got a gradient");
                continue;
            }
            let g = g.unwrap_or_else(|| panic!("no gradient for {name}"));
            let s = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(s > 0.0 && s.is_finite(), "{name}: |grad| sum {s}");
        }
    }

    /// Blocked activations (oneDNN's nChw16c / nChw8c between the convolutions, the default
    /// where oneDNN runs) against the NCHW path in the same process: eval logits, the eval input
    /// gradient (the study's learning-priority pass) and every parameter's gradient and running
    /// statistic after a training-mode step, for a basic-block and a bottleneck ResNet.
    #[test]
    fn blocked_activations_match_nchw() {
        if !crate::kernels::conv::onednn::loaded_for_test() {
            return;
        }
        let dev = Device::Cpu;
        // ResNet-18 and -50 blocked throughout; the embedded study's width-4 net (small-input
        // stem, 1 channel) NCHW in its 4- and 8-channel stages and blocked after them
        for (arch, width, cin, small) in [
            (Arch::ResNet18, 16, 3, false),
            (Arch::ResNet50, 16, 3, false),
            (Arch::ResNet18, 4, 1, true),
        ] {
            let cfg = ResNetConfig {
                arch,
                base_width: width,
                in_channels: cin,
                num_classes: 3,
                dropout: 0.0,
                small_input: small,
            };
            let x = Tensor::randn(0f32, 1.0, (3, cin, 35, 33), &dev).unwrap();
            let lanes = crate::kernels::layout::blocked_lanes(&x);
            if lanes.is_none() {
                eprintln!("blocked activations not offered here (oneDNN's ISA block): skipped");
                return;
            }
            let target = Tensor::new(&[0u32, 2, 1], &dev).unwrap();
            let run = |nchw: bool| {
                let go = || {
                    let vm = VarMap::new();
                    let m = ResNet::seeded(&cfg, &vm, DType::F32, &dev, 9).unwrap();
                    let xv = Var::from_tensor(&x).unwrap();
                    let eval = m.logits(xv.as_tensor(), false).unwrap();
                    let dx = eval.sum_all().unwrap().backward().unwrap();
                    let dx = dx.get(xv.as_tensor()).unwrap().clone();
                    let logits = m.logits(&x, true).unwrap();
                    let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
                    let grads = loss.backward().unwrap();
                    let mut params = Vec::new();
                    for (name, var) in named_vars(&vm) {
                        let t = if is_running_stat(&name) {
                            var.as_tensor().clone()
                        } else {
                            grads.get(var.as_tensor()).unwrap().clone()
                        };
                        params.push((name, t));
                    }
                    (eval, dx, params)
                };
                if nchw {
                    crate::kernels::layout::with_nchw(go)
                } else {
                    go()
                }
            };
            let rel = |a: &Tensor, b: &Tensor| -> f32 {
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                let s = b
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                d.to_scalar::<f32>().unwrap() / s.max(1e-6)
            };
            let (ea, da, pa) = run(false);
            let (eb, db, pb) = run(true);
            assert!(rel(&ea, &eb) < 1e-4, "{arch:?} logits: {}", rel(&ea, &eb));
            assert!(
                rel(&da, &db) < 1e-3,
                "{arch:?} input gradient: {}",
                rel(&da, &db)
            );
            assert_eq!(pa.len(), pb.len());
            for ((name, a), (_, b)) in pa.iter().zip(&pb) {
                let d = rel(a, b);
                assert!(d < 2e-3, "{arch:?} {name}: {d}");
            }
        }
    }

    #[test]
    fn dropout_is_seeded_and_training_only() {
        let vm = VarMap::new();
        let cfg = tiny(Arch::ResNet18, true).with_dropout(0.5);
        let m = ResNet::seeded(&cfg, &vm, DType::F32, &Device::Cpu, 3).unwrap();
        let x = Tensor::ones((4, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let f = m.features(&x, false).unwrap();
        let d = m
            .dropout(&f)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let fv = f.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(d
            .iter()
            .zip(&fv)
            .all(|(a, b)| *a == 0.0 || (a - 2.0 * b).abs() < 1e-6));
        m.reseed_dropout(3);
        let d2 = m
            .dropout(&f)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(d, d2);
    }

    #[test]
    fn greyscale_is_replicated_and_bad_shapes_are_named() {
        let vm = VarMap::new();
        let cfg = tiny(Arch::ResNet18, true).with_in_channels(3);
        let m = ResNet::seeded(&cfg, &vm, DType::F32, &Device::Cpu, 3).unwrap();
        let g = Tensor::randn(0f32, 1.0, (2, 1, 8, 8), &Device::Cpu).unwrap();
        let rgb = Tensor::cat(&[&g, &g, &g], 1).unwrap();
        let a = m
            .forward_t(&g, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = m
            .forward_t(&rgb, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b);
        let bad = Tensor::zeros((2, 2, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let e = m.features(&bad, false).unwrap_err().to_string();
        assert!(e.contains("ResNet input"), "{e}");
        let e = ResNet::new(
            &cfg.clone().with_dropout(1.0),
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dropout"), "{e}");
    }
}
