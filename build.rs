//! Finds the system OpenBLAS for the fast CPU kernels' GEMM (feature `openblas`, on by default).
//! Found: links it and sets `cfg(spectral_openblas)`. Not found: a build warning, and the kernels
//! use the `gemm` crate (slower, same results up to rounding), so that `cargo run` works on any
//! machine. Which OpenBLAS build (serial, pthreads, OpenMP) is loaded is only known at run time
//! (Debian switches them with update-alternatives), so the serial one, which concurrent callers
//! cannot share, is refused there (`kernels::gemm::openblas_is_thread_safe`), not here.
//! Hand-written (a file probe) instead of the `openblas-src` crate: its `system` mode
//! still builds a source downloader (ureq + TLS) as a build dependency.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(spectral_openblas)");
    println!("cargo:rerun-if-env-changed=SPECTRAL_OPENBLAS_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_OPENBLAS").is_none() {
        return;
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = env::var_os("SPECTRAL_OPENBLAS_LIB_DIR") {
        dirs.push(d.into());
    }
    for d in [
        format!("/usr/lib/{arch}-linux-gnu"),
        "/usr/lib64".into(),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
        "/opt/homebrew/opt/openblas/lib".into(),
        "/usr/local/opt/openblas/lib".into(),
    ] {
        dirs.push(d.into());
    }
    let names = ["libopenblas.so", "libopenblas.dylib", "libopenblas.a"];
    match dirs
        .iter()
        .find(|d| names.iter().any(|n| d.join(n).exists()))
    {
        Some(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=openblas");
            println!("cargo:rustc-cfg=spectral_openblas");
        }
        None => println!(
            "cargo:warning=OpenBLAS not found (looked for libopenblas in {}; set \
             SPECTRAL_OPENBLAS_LIB_DIR, or install it: apt-get install libopenblas-pthread-dev); the fast \
             CPU kernels use the gemm crate, 3-4x slower per core",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
