//! Finds the system OpenBLAS for the fast CPU kernels' GEMM (feature `openblas`, on by default).
//! Found: links it and sets `cfg(spectral_openblas)`. Not found: a build warning, and the kernels
//! use the `gemm` crate (slower, same results up to rounding), so that `cargo run` works on any
//! machine. Which OpenBLAS build (serial, pthreads, OpenMP) is loaded is only known at run time
//! (Debian switches them with update-alternatives), so the serial one, which concurrent callers
//! cannot share, is refused there (`kernels::gemm::openblas_is_thread_safe`), not here.
//! Hand-written (a file probe) instead of the `openblas-src` crate: its `system` mode
//! still builds a source downloader (ureq + TLS) as a build dependency.
//!
//! Also finds oneDNN (feature `onednn`, on by default): first the 3.x build from PyPI that
//! `scripts/fetch-onednn.sh` unpacks into `target/onednn`, then the system's (Debian/Ubuntu
//! `libdnnl-dev`, 2.x API). Found: compiles `src/kernels/conv/onednn.c` with the `cc` crate
//! against that header, with the library's path for it to open at run time (no link-time
//! dependency), and sets `cfg(spectral_onednn)`. Not found: a warning, and f32 convolutions use
//! the GEMM kernels.

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
    // (header directory, library directories) in order of preference: the environment, the
    // PyPI build that scripts/fetch-onednn.sh unpacks (oneDNN 3.x), the system's (Debian 2.6).
    let fetched = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("target/onednn");
    if fetched.exists() {
        println!("cargo:rerun-if-changed={}", fetched.display());
    }
    let libs = lib_dirs("SPECTRAL_ONEDNN_LIB_DIR");
    let mut places: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    if let Some(inc) = env::var_os("SPECTRAL_ONEDNN_INCLUDE_DIR") {
        places.push((inc.into(), libs.clone()));
    }
    places.push((fetched.join("include"), vec![fetched.join("lib")]));
    for inc in ["/usr/include", "/usr/local/include"] {
        places.push((inc.into(), libs.clone()));
    }
    // the library file of the header's major version (libdnnl.so.2 or .so.3)
    let found = places.iter().find_map(|(inc, libs)| {
        let version = std::fs::read_to_string(inc.join("oneapi/dnnl/dnnl_version.h")).ok()?;
        let major = version.lines().find_map(|l| {
            l.strip_prefix("#define DNNL_VERSION_MAJOR")
                .map(|v| v.trim().to_string())
        })?;
        let lib = libs
            .iter()
            .map(|d| d.join(format!("libdnnl.so.{major}")))
            .find(|f| f.exists())?;
        Some((inc.clone(), lib))
    });
    match found {
        Some((include, lib)) => {
            cc::Build::new()
                .file("src/kernels/conv/onednn.c")
                .include(&include)
                .define("SPECTRAL_DNNL_LIB", format!("{:?}", lib.display().to_string()).as_str())
                .opt_level(2)
                .warnings(true)
                .compile("spectral_onednn");
            // opened at run time (dlopen, see onednn.c): nothing to link but the loader
            println!("cargo:rustc-link-lib=dl");
            println!("cargo:rustc-cfg=spectral_onednn");
        }
        None => println!(
            "cargo:warning=oneDNN not found (a header oneapi/dnnl/dnnl_version.h with libdnnl.so.<major> in: {}); \
             fetch it (scripts/fetch-onednn.sh, oneDNN 3.2 from PyPI), set SPECTRAL_ONEDNN_INCLUDE_DIR / \
             SPECTRAL_ONEDNN_LIB_DIR, or install it (apt-get install libdnnl-dev); f32 convolutions use \
             the GEMM kernels",
            places
                .iter()
                .map(|(i, l)| format!(
                    "{} + {}",
                    i.display(),
                    l.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}
