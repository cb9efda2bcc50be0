//! Finds the system OpenBLAS for the fast CPU kernels' GEMM (feature `openblas`, on by default).
//! Found: links it and sets `cfg(spectral_openblas)`. Not found: a build warning, and the kernels
//! use the `gemm` crate (slower, same results up to rounding), so that `cargo run` works on any
//! machine. Which OpenBLAS build (serial, pthreads, OpenMP) is loaded is only known at run time
//! (Debian switches them with update-alternatives), so the serial one, which concurrent callers
//! cannot share, is refused there (`kernels::gemm::openblas_is_thread_safe`), not here.
//! Hand-written (a file probe) instead of the `openblas-src` crate: its `system` mode
//! still builds a source downloader (ureq + TLS) as a build dependency.
//!
//! Also finds oneDNN (feature `onednn`, on by default: header `oneapi/dnnl/dnnl.h` and
//! `libdnnl`, Debian/Ubuntu `libdnnl-dev`, 2.x API). Found: compiles `src/kernels/conv/onednn.c`
//! with the `cc` crate, links it, and sets `cfg(spectral_onednn)`. Not found: a warning, and f32
//! convolutions use the GEMM kernels.

use std::env;
use std::path::PathBuf;

fn main() {
    onednn();
    println!("cargo::rustc-check-cfg=cfg(spectral_openblas)");
    println!("cargo:rerun-if-env-changed=SPECTRAL_OPENBLAS_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_OPENBLAS").is_none() {
        return;
    }
    let mut dirs = lib_dirs("SPECTRAL_OPENBLAS_LIB_DIR");
    dirs.push("/opt/homebrew/opt/openblas/lib".into());
    dirs.push("/usr/local/opt/openblas/lib".into());
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

/// `$var` (if set), then the system library directories.
fn lib_dirs(var: &str) -> Vec<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::var_os(var).map(PathBuf::from).into_iter().collect();
    for d in [
        format!("/usr/lib/{arch}-linux-gnu"),
        "/usr/lib64".into(),
        "/usr/lib".into(),
        "/usr/local/lib".into(),
    ] {
        dirs.push(d.into());
    }
    dirs
}

fn onednn() {
    println!("cargo::rustc-check-cfg=cfg(spectral_onednn)");
    println!("cargo:rerun-if-env-changed=SPECTRAL_ONEDNN_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SPECTRAL_ONEDNN_INCLUDE_DIR");
    println!("cargo:rerun-if-changed=src/kernels/conv/onednn.c");
    if env::var_os("CARGO_FEATURE_ONEDNN").is_none() {
        return;
    }
    let includes: Vec<PathBuf> = env::var_os("SPECTRAL_ONEDNN_INCLUDE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/include".into(), "/usr/local/include".into()])
        .collect();
    let include = includes
        .iter()
        .find(|d| d.join("oneapi/dnnl/dnnl.h").exists());
    let libs = lib_dirs("SPECTRAL_ONEDNN_LIB_DIR");
    let lib = libs.iter().find(|d| d.join("libdnnl.so").exists());
    match (include, lib) {
        (Some(include), Some(lib)) => {
            cc::Build::new()
                .file("src/kernels/conv/onednn.c")
                .include(include)
                .opt_level(2)
                .warnings(true)
                .compile("spectral_onednn");
            println!("cargo:rustc-link-search=native={}", lib.display());
            println!("cargo:rustc-link-lib=dnnl");
            println!("cargo:rustc-link-lib=gomp");
            println!("cargo:rustc-cfg=spectral_onednn");
        }
        _ => {
            println!(
            "cargo:warning=oneDNN not found (header oneapi/dnnl/dnnl.h in {}, libdnnl.so in {}; \
             set SPECTRAL_ONEDNN_INCLUDE_DIR / SPECTRAL_ONEDNN_LIB_DIR, or install it: \
             apt-get install libdnnl-dev); f32 convolutions use the GEMM kernels",
            includes.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            libs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )
        }
    }
}
