//! With the `cuda` feature, compiles the fused NADE op's kernels (src/nade_op/nade_op.cu) to PTX
//! with nvcc; `src/nade_op/cuda.rs` embeds it. Without the feature this does nothing.
//!
//! nvcc is `$CUDA_HOME/bin/nvcc` (or `$CUDA_PATH/bin/nvcc`, else `nvcc` on PATH). The PTX
//! targets `compute_$CUDA_COMPUTE_CAP` (e.g. 90 for H100/H200), default 80: PTX is JIT-compiled
//! by the driver for the GPU it runs on, so it loads on that architecture and newer ones.
//! `scripts/cuda-env.sh` sets up a toolkit and both variables.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/nade_op/nade_op.cu");
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_COMPUTE_CAP", "NVCC"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var_os("NVCC").map(PathBuf::from).unwrap_or_else(|| {
        ["CUDA_HOME", "CUDA_PATH"]
            .iter()
            .filter_map(std::env::var_os)
            .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("nvcc"))
    });
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(|c| c.is_ascii_digit()).collect();
    if cap.is_empty() {
        panic!("CUDA_COMPUTE_CAP must be a compute capability such as 90");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("nade_op.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&out)
        .arg("src/nade_op/nade_op.cu")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run nvcc ({}): {e}; set CUDA_HOME to a CUDA toolkit (see scripts/cuda-env.sh)",
                nvcc.display()
            )
        });
    if !status.success() {
        panic!("nvcc failed ({status}) compiling src/nade_op/nade_op.cu");
    }
}
