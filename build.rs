//! Builds the C++ shim (`src/shim/`: what libtorch offers that tch does not expose) against the
//! headers of the libtorch tch links, and sets the link flags: keep `libtorch_cuda` as a
//! dependency even though no symbol of it is referenced directly (otherwise CUDA is silently
//! unavailable), and record an rpath to the libtorch library folder so the binary runs without
//! `LD_LIBRARY_PATH`.
use std::path::PathBuf;

const SHIM: [&str; 9] = [
    "src/shim/ops.cpp",
    "src/shim/dist.cpp",
    "src/shim/packed.cpp",
    "src/shim/pinned.cpp",
    "src/shim/gru.cpp",
    "src/shim/adam.cpp",
    "src/shim/trace.cpp",
    "src/shim/event.cpp",
    "src/shim/graph.cpp",
];

/// Declarations of the Gloo types libtorch's `ProcessGroupGloo.hpp` names (the wheel ships no
/// Gloo headers; see `src/shim/gloo_decl/gloo/context.h`).
const GLOO_DECLARATIONS: &str = "src/shim/gloo_decl";

/// The folders of the headers `ProcessGroupNCCL.hpp` and `CUDAGraph.h` need beyond libtorch's own, as the PyTorch
/// wheel's environment holds them (`nvidia/cu13/include` with the `nvidia-cuda-crt` and
/// `nvidia-cuda-cccl` header wheels, `nvidia/nccl/include`); `None` when one is missing.
fn nccl_headers(lib_dir: &std::path::Path) -> Option<[PathBuf; 2]> {
    let site = lib_dir.parent()?.parent()?;
    let cuda = site.join("nvidia/cu13/include");
    let nccl = site.join("nvidia/nccl/include");
    let needed = [cuda.join("cuda_runtime_api.h"), cuda.join("crt/host_config.h"), cuda.join("nv/target")];
    (needed.iter().all(|p| p.exists()) && nccl.join("nccl.h").exists()).then_some([cuda, nccl])
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    for file in SHIM {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-changed=src/shim/guarded.h");
    let lib_dir =
        PathBuf::from(std::env::var_os("DEP_TCH_LIBTORCH_LIB").expect("torch-sys names libtorch's lib folder"));
    let include = lib_dir.parent().expect("libtorch's lib folder has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    println!("cargo:rerun-if-changed={GLOO_DECLARATIONS}");
    // libtorch's wheels are built with NDEBUG, and some of its classes have members only without
    // it (at::RecordFunction's `inputs_valid_`): the shim must see the library's layout.
    build
        .cpp(true)
        .pic(true)
        .define("NDEBUG", None)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(GLOO_DECLARATIONS)
        .files(SHIM);
    if let Some(dirs) = nccl_headers(&lib_dir) {
        build.define("AMFMN_NCCL", None).define("AMFMN_CUDA", None).flag_if_supported("-Wno-interference-size");
        for dir in dirs {
            build.include(dir);
        }
    } else {
        println!(
            "cargo:warning=no NCCL or CUDA headers next to libtorch: processes on GPUs will exchange through Gloo \
             and training has no CUDA graphs (exec/env.sh installs the headers)"
        );
    }
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
