//! Counting the ATen operations a piece of work dispatches: on a GPU each is host work, and each
//! that computes is a kernel launch, so their number is what a launch-bound step pays for. The
//! counts come from libtorch's RecordFunction callbacks (the C++ shim `src/shim/ops.cpp`), the
//! mechanism `torch.profiler` reads, so they compare with the `aten::` events of a PyTorch profile
//! of the same work (`exec/bench_train_step.py` counts those the same way). And tracing a piece
//! of work with libtorch's Kineto profiler, the one `torch.profiler` drives: on a GPU, the device
//! time of each kernel, in the Chrome trace format PyTorch writes ([`trace`]).

use std::ffi::{c_char, CString};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::ffi::{self, ERROR_CAPACITY};

extern "C" {
    fn amfmn_ops_start(views: *const c_char) -> i32;
    fn amfmn_ops_stop(kernel_count: *mut i64) -> i64;
    fn amfmn_ops_report(buffer: *mut u8, capacity: usize) -> usize;
    fn amfmn_ops_input_types(buffer: *mut u8, capacity: usize) -> usize;
    fn amfmn_trace_start(cuda: i32, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_trace_stop(path: *const c_char, error: *mut c_char, capacity: usize) -> i32;
}

/// Operators that compute nothing themselves: views, allocations and metadata. Any other
/// operator under which no computing operator runs is counted as a kernel (about one launch on a
/// GPU). `exec/bench_train_step.py` holds the same list.
pub const NO_KERNEL: [&str; 31] = [
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::as_strided",
    "aten::as_strided_",
    "aten::view",
    "aten::_reshape_alias",
    "aten::_unsafe_view",
    "aten::reshape",
    "aten::alias",
    "aten::detach",
    "aten::detach_",
    "aten::resize_",
    "aten::set_",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::select",
    "aten::slice",
    "aten::narrow",
    "aten::transpose",
    "aten::t",
    "aten::permute",
    "aten::expand",
    "aten::split",
    "aten::split_with_sizes",
    "aten::unbind",
    "aten::chunk",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::result_type",
    "aten::lift_fresh",
];

/// One count or trace at a time: the callback and the profiler are global to the process.
static COUNTING: Mutex<()> = Mutex::new(());

/// How often one operator was dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpCalls {
    /// `aten::mm`.
    pub name: String,
    /// Every dispatch, nested ones included.
    pub calls: i64,
    /// The dispatches that were kernels ([`OpCount::kernels`]).
    pub kernels: i64,
}

/// The operators dispatched while a closure ran, in every thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpCount {
    /// All `aten::` operators dispatched, nested ones included (a `linear` and the `addmm` it
    /// calls are two).
    pub total: i64,
    /// The operators that computed, not through another one: not in [`NO_KERNEL`], and no
    /// operator outside it ran beneath them. About the kernels a GPU launches.
    pub kernels: i64,
    /// Per operator, most frequent first.
    pub by_name: Vec<OpCalls>,
    /// The kernels per operator and type of their first tensor input (`BFloat16`, `Float`; `-`
    /// without one), by name.
    pub by_input_type: Vec<(String, String, i64)>,
}

impl OpCount {
    /// The kernels that are matrix products or convolutions (forward or backward; oneDNN's,
    /// cuDNN's, and ATen's own `_slow_conv2d_*`, which a CPU without oneDNN's bf16 kernels runs),
    /// and those of them whose first input is 16-bit (bf16 or fp16): what mixed precision should
    /// lower.
    pub fn products(&self) -> (i64, i64) {
        let product = |name: &str| name.contains("convolution") || name.contains("conv2d") || name.ends_with("mm");
        let sixteen = |kind: &str| kind == "BFloat16" || kind == "Half";
        self.by_input_type
            .iter()
            .filter(|(name, _, _)| product(name))
            .fold((0, 0), |(all, low), (_, kind, n)| (all + n, low + if sixteen(kind) { *n } else { 0 }))
    }
}

/// Runs `work` and counts the ATen operators it (and any thread meanwhile) dispatches.
pub fn count_ops<T>(work: impl FnOnce() -> T) -> Result<(T, OpCount)> {
    let _guard = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the shim's functions take no pointers but the ones below, valid for their sizes.
    let views = std::ffi::CString::new(NO_KERNEL.join("\n")).expect("operator names have no NUL");
    if unsafe { amfmn_ops_start(views.as_ptr()) } != 0 {
        bail!("libtorch refused the operator-counting callback");
    }
    let value = work();
    let mut kernels = 0;
    let total = unsafe { amfmn_ops_stop(&mut kernels) };
    let by_name = lines(amfmn_ops_report)
        .iter()
        .filter_map(|line| {
            let [name, calls, kernels] = fields(line)?;
            Some(OpCalls { name: name.to_owned(), calls: calls.parse().ok()?, kernels: kernels.parse().ok()? })
        })
        .collect();
    let by_input_type = lines(amfmn_ops_input_types)
        .iter()
        .filter_map(|line| {
            let [name, kind, kernels] = fields(line)?;
            Some((name.to_owned(), kind.to_owned(), kernels.parse().ok()?))
        })
        .collect();
    Ok((value, OpCount { total, kernels, by_name, by_input_type }))
}

/// Runs `work` under libtorch's Kineto profiler and writes its trace to `path` as Chrome trace
/// JSON, the format of `torch.profiler`'s `export_chrome_trace`: the operators `work` dispatches,
/// its backward's included (`"cat": "cpu_op"`), and, with `cuda`, each kernel, copy and fill the
/// GPUs ran with its device time (`"cat": "kernel"`, `"gpu_memcpy"`, `"gpu_memset"`). Work queued
/// on a GPU must be waited for inside `work` to be in the trace. One trace or count at a time:
/// `work` must not call [`trace`] or [`count_ops`].
pub fn trace<T>(path: &Path, cuda: bool, work: impl FnOnce() -> T) -> Result<T> {
    let _guard = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Kineto reports a failed write in its log only: it writes a fresh file, checked, then renamed.
    let staged = tempfile::Builder::new()
        .suffix(".json")
        .tempfile_in(folder)
        .with_context(|| format!("cannot write the trace {}", path.display()))?;
    let target = CString::new(staged.path().as_os_str().as_encoded_bytes()).context("a trace path has no NUL byte")?;
    // SAFETY: the shim writes at most ERROR_CAPACITY bytes into the buffer `call` passes.
    ffi::call(|error| unsafe { amfmn_trace_start(i32::from(cuda), error, ERROR_CAPACITY) })
        .context("starting libtorch's profiler")?;
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    // SAFETY: as above; `target` is a NUL-terminated path.
    let stopped = ffi::call(|error| unsafe { amfmn_trace_stop(target.as_ptr(), error, ERROR_CAPACITY) });
    let value = value.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    stopped.with_context(|| format!("writing the trace {}", path.display()))?;
    if std::fs::metadata(staged.path()).map_or(true, |m| m.len() == 0) {
        bail!("libtorch's profiler wrote no trace to {}", staged.path().display());
    }
    staged.persist(path).with_context(|| format!("writing the trace {}", path.display()))?;
    Ok(value)
}

/// The lines one of the shim's report functions writes.
fn lines(report: unsafe extern "C" fn(*mut u8, usize) -> usize) -> Vec<String> {
    // SAFETY: the shim writes at most `capacity` bytes into `buffer`.
    let needed = unsafe { report(std::ptr::null_mut(), 0) };
    let mut buffer = vec![0u8; needed];
    let written = unsafe { report(buffer.as_mut_ptr(), buffer.len()) };
    buffer.truncate(written.min(needed));
    String::from_utf8_lossy(&buffer).lines().map(str::to_owned).collect()
}

/// The three space-separated fields of a report line.
fn fields(line: &str) -> Option<[&str; 3]> {
    line.split(' ').collect::<Vec<_>>().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::amp::{to_fp32, within};
    use tch::{Device, Kind, Tensor};

    fn calls(count: &OpCount, name: &str) -> (i64, i64) {
        count.by_name.iter().find(|op| op.name == name).map_or((0, 0), |op| (op.calls, op.kernels))
    }

    #[test]
    fn counts_each_dispatch_and_the_operators_that_compute() {
        let a = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        let (_, mm) = count_ops(|| a.mm(&b)).unwrap();
        assert_eq!(calls(&mm, "aten::mm"), (1, 1), "{mm:?}");
        let (_, chain) = count_ops(|| (a.mm(&b) + 1.0).relu()).unwrap();
        assert!(chain.total >= mm.total + 2, "{chain:?} vs {mm:?}");
        assert_eq!(calls(&chain, "aten::relu"), (1, 0), "relu dispatches clamp_min: {chain:?}");
        assert_eq!(calls(&chain, "aten::clamp_min").1, 1);
        assert_eq!(chain.kernels, 3, "mm, add, clamp_min: {chain:?}");
        let (_, views) = count_ops(|| a.transpose(0, 1).unsqueeze(0).select(0, 0)).unwrap();
        assert!(views.total >= 3 && views.kernels == 0, "{views:?}");
        let (_, copy) = count_ops(|| a.tr().reshape([12])).unwrap();
        assert_eq!(copy.kernels, 1, "a reshape that copies is one kernel, not two: {copy:?}");
        let bench = std::fs::read_to_string("exec/bench_train_step.py").unwrap();
        assert!(NO_KERNEL.iter().all(|name| bench.contains(&format!("\"{name}\""))), "the PyTorch side's list differs");
        let (_, none) = count_ops(|| 1 + 1).unwrap();
        assert_eq!(none.total, 0);
        let (_, after) = count_ops(|| a.sum(Kind::Float)).unwrap();
        assert_eq!(calls(&after, "aten::mm"), (0, 0), "counts start from zero: {after:?}");
    }

    #[test]
    fn kernels_are_counted_by_input_type_and_lowered_products_found() {
        let x = Tensor::ones([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let conv = |x: &Tensor, w: &Tensor, _: Option<&Tensor>| x.conv2d::<Tensor>(w, None, [1, 1], [1, 1], [1, 1], 1);
        let lowered = |precision| to_fp32(within(&x, &w, None, precision, conv));
        let (_, fp32) = count_ops(|| lowered(None)).unwrap();
        assert_eq!(fp32.products(), (1, 0), "{:?}", fp32.by_input_type);
        let (_, bf16) = count_ops(|| lowered(Some(Kind::BFloat16))).unwrap();
        assert_eq!(bf16.products(), (1, 1), "{:?}", bf16.by_input_type);
        // The casts: input and weight into bf16, the output back (copy_'s first input is its
        // destination).
        let copies = |kind: &str, n: i64| bf16.by_input_type.contains(&("aten::copy_".into(), kind.into(), n));
        assert!(copies("BFloat16", 2) && copies("Float", 1), "{:?}", bf16.by_input_type);
        let (_, mm) =
            count_ops(|| x.view([6, 64]).to_kind(Kind::Half).mm(&x.view([64, 6]).to_kind(Kind::Half))).unwrap();
        assert_eq!(mm.products(), (1, 1), "{:?}", mm.by_input_type);
        assert!(mm.by_input_type.contains(&("aten::mm".into(), "Half".into(), 1)), "{:?}", mm.by_input_type);
    }

    #[test]
    fn a_trace_holds_the_operators_with_their_times_as_pytorch_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mm.json");
        let a = Tensor::ones([64, 64], (Kind::Float, Device::Cpu));
        let product = trace(&path, false, || a.mm(&a).sum(Kind::Float).double_value(&[])).unwrap();
        assert_eq!(product, 64.0 * 64.0 * 64.0);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let events = json["traceEvents"].as_array().expect("a Chrome trace");
        let named = |name: &str| {
            events
                .iter()
                .filter(move |e| e["name"] == name && e["cat"] == "cpu_op" && e["ph"] == "X")
                .collect::<Vec<_>>()
        };
        let mm = named("aten::mm");
        assert_eq!(mm.len(), 1, "{mm:?}");
        assert!(mm[0]["dur"].as_f64().is_some_and(|d| d >= 0.0), "{:?}", mm[0]);
        assert!(!named("aten::sum").is_empty(), "the operators after it too");
        let (_, after) = count_ops(|| a.mm(&a)).unwrap();
        assert_eq!(calls(&after, "aten::mm"), (1, 1), "the profiler left nothing behind: {after:?}");
        let second = trace(&dir.path().join("none.json"), false, || 1 + 1).unwrap();
        assert_eq!(second, 2, "tracing starts again after a trace");
        let missing = trace(&dir.path().join("no/such/folder.json"), false, || ());
        assert!(missing.is_err(), "a trace that cannot be written is an error");
    }
}
