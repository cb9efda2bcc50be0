//! Plain image containers shared by every module: a single-channel [`Image`] (H x W) and an
//! [`ImageBatch`] (N x C x H x W). Both are row-major `f32`; intensities of the embedded data are
//! in [0, 1] (CT artifacts map [0, 1] to the HU window [-1200, 800], see `artifact`).

use crate::error::{Error, Result};

/// One single-channel image, row-major: pixel (y, x) is `data[y * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    /// An image from its pixels; the length must be `height * width`.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if height == 0 || width == 0 {
            return Err(Error::Shape {
                what: "image".into(),
                expected: "height > 0 and width > 0".into(),
                got: format!("{height} x {width}"),
            });
        }
        if data.len() != height * width {
            return Err(Error::Shape {
                what: "image pixels".into(),
                expected: format!("{height} x {width} = {}", height * width),
                got: data.len().to_string(),
            });
        }
        Ok(Self {
            height,
            width,
            data,
        })
    }

    /// A black image.
    pub fn zeros(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            data: vec![0.0; height * width],
        }
    }

    /// An image from a function of (y, x).
    pub fn from_fn(height: usize, width: usize, f: impl Fn(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(height * width);
        for y in 0..height {
            for x in 0..width {
                data.push(f(y, x));
            }
        }
        Self {
            height,
            width,
            data,
        }
    }

    /// Pixel (y, x).
    #[inline]
    pub fn get(&self, y: usize, x: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// Errors with [`Error::NonFinite`] if any pixel is NaN or infinite.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if self.data.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(Error::NonFinite(what.to_string()))
        }
    }

    /// Mean and (population) standard deviation of the pixels.
    pub fn mean_std(&self) -> (f64, f64) {
        let n = self.data.len() as f64;
        let mean = self.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self
            .data
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }
}

/// A batch of images, N x C x H x W, row-major (the layout of a candle/PyTorch tensor).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    /// (N, C, H, W)
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl ImageBatch {
    /// A batch from its values; the length must be the product of the shape.
    pub fn new(shape: [usize; 4], data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n == 0 || data.len() != n {
            return Err(Error::Shape {
                what: "image batch".into(),
                expected: format!("{:?} = {n} values (all dims > 0)", shape),
                got: data.len().to_string(),
            });
        }
        Ok(Self { shape, data })
    }

    /// A batch of single-channel images (N x 1 x H x W); all must share one size.
    pub fn from_images(images: &[Image]) -> Result<Self> {
        let first = images.first().ok_or_else(|| Error::Shape {
            what: "image batch".into(),
            expected: "at least one image".into(),
            got: "0".into(),
        })?;
        let (h, w) = (first.height, first.width);
        let mut data = Vec::with_capacity(images.len() * h * w);
        for (i, im) in images.iter().enumerate() {
            if (im.height, im.width) != (h, w) {
                return Err(Error::Shape {
                    what: format!("image {i} of the batch"),
                    expected: format!("{h} x {w}"),
                    got: format!("{} x {}", im.height, im.width),
                });
            }
            data.extend_from_slice(&im.data);
        }
        Self::new([images.len(), 1, h, w], data)
    }

    /// Channel `c` of image `n`, as a slice of H * W values.
    pub fn plane(&self, n: usize, c: usize) -> &[f32] {
        let [_, cc, h, w] = self.shape;
        let start = (n * cc + c) * h * w;
        &self.data[start..start + h * w]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(Image::new(2, 2, vec![0.0; 3]).is_err());
        assert!(Image::new(0, 2, vec![]).is_err());
        assert!(ImageBatch::new([1, 1, 2, 2], vec![0.0; 5]).is_err());
        let a = Image::zeros(2, 2);
        let b = Image::zeros(3, 2);
        let err = ImageBatch::from_images(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("image 1"), "{err}");
    }

    #[test]
    fn plane_indexing() {
        let b = ImageBatch::new([2, 2, 1, 2], (0..8).map(|v| v as f32).collect()).unwrap();
        assert_eq!(b.plane(1, 0), &[4.0, 5.0]);
        assert_eq!(b.plane(0, 1), &[2.0, 3.0]);
    }
}
