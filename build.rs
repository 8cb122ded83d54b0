//! Builds the C++ shim (`src/shim/`: what libtorch offers that tch does not expose) against the
//! headers of the libtorch tch links, and sets the link flags: keep `libtorch_cuda` as a
//! dependency even though no symbol of it is referenced directly (otherwise CUDA is silently
//! unavailable), and record an rpath to the libtorch library folder so the binary runs without
//! `LD_LIBRARY_PATH`.
use std::path::PathBuf;

const SHIM: [&str; 2] = ["src/shim/ops.cpp", "src/shim/dist.cpp"];

/// Declarations of the Gloo types libtorch's `ProcessGroupGloo.hpp` names (the wheel ships no
/// Gloo headers; see `src/shim/gloo_decl/gloo/context.h`).
const GLOO_DECLARATIONS: &str = "src/shim/gloo_decl";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    for file in SHIM {
        println!("cargo:rerun-if-changed={file}");
    }
    let lib_dir =
        PathBuf::from(std::env::var_os("DEP_TCH_LIBTORCH_LIB").expect("torch-sys names libtorch's lib folder"));
    let include = lib_dir.parent().expect("libtorch's lib folder has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    println!("cargo:rerun-if-changed={GLOO_DECLARATIONS}");
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(GLOO_DECLARATIONS)
        .files(SHIM);
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        build.flag("/std:c++17");
    } else {
        build.flag("-std=c++17").flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"));
    }
    build.compile("amfmn_shim");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    println!("cargo:rustc-link-arg=-ltorch");
}
