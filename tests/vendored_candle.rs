//! The vendored candle-core (vendor/README.md) stores the first gradient reaching a node as it
//! is instead of adding it to fresh zeros. These check what that must not change: the values
//! of gradients with one consumer, with fan-in, through broadcasts, views and a gather (whose
//! backward scatters and needs a contiguous gradient), and that stored gradients are contiguous
//! like the stock sums were.

use candle_core::{Device, Tensor, Var};

fn v(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn single_consumer_and_fan_in_gradients_are_unchanged() {
    let x = Var::from_tensor(&Tensor::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
    // one consumer: d/dx Σ 2x = 2
    let g = (x.as_tensor() * 2.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(v(g.get(&x).unwrap()), [2.0, 2.0, 2.0]);
    // fan-in: d/dx Σ (2x + 3x + x²) = 5 + 2x
    let a = (x.as_tensor() * 2.0).unwrap();
    let b = (x.as_tensor() * 3.0).unwrap();
    let c = x.as_tensor().sqr().unwrap();
    let y = ((a + b).unwrap() + c).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(v(g.get(&x).unwrap()), [7.0, 1.0, 11.0]);
}

#[test]
fn views_broadcasts_and_gather_get_contiguous_exact_gradients() {
    let dev = Device::Cpu;
    let x = Var::from_tensor(
        &Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap(),
    )
    .unwrap();
    // broadcast: each element is used 4 times
    let y = x
        .as_tensor()
        .broadcast_as((4, 2, 3))
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert!(gx.is_contiguous());
    assert_eq!(v(gx), [4.0; 6]);
    // a transposed view weighted by a matrix: the gradient is the weights transposed back
    let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &dev).unwrap();
    let y = (x.as_tensor().t().unwrap() * &w)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = y.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert!(gx.is_contiguous());
    assert_eq!(v(gx), [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    // gather (cross-entropy's pick of the label's log-probability): its backward scatters the
    // gradient, which the stock sum had made contiguous; here it arrives as a broadcast view
    let idx = Tensor::new(&[[2u32], [0]], &dev).unwrap();
    let y = x.as_tensor().gather(&idx, 1).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(v(g.get(&x).unwrap()), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    // and a narrow: the gradient lands in the narrowed columns only
    let y = x.as_tensor().narrow(1, 1, 2).unwrap().sum_all().unwrap();
    let g = y.backward().unwrap();
    assert_eq!(v(g.get(&x).unwrap()), [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
}
