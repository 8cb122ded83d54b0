//! Choosing where tensors live, and libtorch's thread count.

use std::ffi::{c_char, c_void};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tch::{Cuda, Device, Kind, Tensor};

use crate::ffi::{self, ERROR_CAPACITY};
use crate::options::{Amp, DeviceChoice, Devices};

extern "C" {
    fn amfmn_empty_pinned(sizes: *const i64, dims: usize) -> *mut torch_sys::C_tensor;
    fn amfmn_event_record(index: i32, timing: i32, out: *mut *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_event_elapsed(
        start: *mut c_void,
        end: *mut c_void,
        ms: *mut f64,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_event_query(event: *mut c_void, done: *mut i32, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_event_free(event: *mut c_void);
    fn amfmn_side_stream_new(index: i32, out: *mut *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_side_stream_enter(side: *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_side_stream_leave(side: *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_side_stream_free(side: *mut c_void);
    fn amfmn_graph_pool(first: *mut u64, second: *mut u64, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_graph_begin(first: u64, second: u64, out: *mut *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_graph_end(graph: *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_graph_replay(graph: *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_graph_free(graph: *mut c_void);
}

/// The one device of `devices`, for the commands that run on one: several are refused.
pub fn resolve(devices: &Devices) -> Result<Device> {
    match devices.list() {
        [one] => resolve_one(*one),
        _ => bail!(
            "device {devices}: only `amfmn train` runs on several devices; give this command one \
             (--device cpu, cuda or cuda:N)"
        ),
    }
}

/// The devices `amfmn train` puts its replicas on, the first holding the optimizer. A list
/// names its devices explicitly, all CUDA devices (each once) or all the CPU (`cpu,cpu`: several
/// replicas on the CPU, which is how data-parallel training is tested without GPUs).
pub fn resolve_replicas(devices: &Devices) -> Result<Vec<Device>> {
    let list = devices.list();
    if let [one] = list {
        return Ok(vec![resolve_one(*one)?]);
    }
    if list.contains(&DeviceChoice::Auto) {
        bail!("device {devices}: list the devices explicitly (cuda:0,cuda:1 or cpu,cpu), without auto");
    }
    if list.contains(&DeviceChoice::Cpu) && list.iter().any(|d| matches!(d, DeviceChoice::Cuda(_))) {
        bail!("device {devices}: the replicas must be all CUDA devices or all the CPU, not a mix");
    }
    for (i, d) in list.iter().enumerate() {
        if matches!(d, DeviceChoice::Cuda(_)) && list[..i].contains(d) {
            bail!("device {devices}: {d} is listed twice; name each GPU once");
        }
    }
    list.iter().map(|&d| resolve_one(d)).collect()
}

/// The device of the process of local rank `local_rank` in a launch (torchrun, SLURM): the CPU
/// for `cpu` (and for `auto` without a GPU), else its own GPU, `cuda:<local_rank>` (or the only
/// one the process sees, as under `srun --gpus-per-task=1`). A list of devices is refused: a
/// launch runs one process per device.
pub fn for_rank(devices: &Devices, local_rank: usize) -> Result<Device> {
    let cuda = if Cuda::is_available() { Cuda::device_count() as usize } else { 0 };
    match devices.list() {
        [DeviceChoice::Cpu] => Ok(Device::Cpu),
        [DeviceChoice::Auto] if cuda == 0 => Ok(Device::Cpu),
        [DeviceChoice::Auto | DeviceChoice::Cuda(_)] => match cuda {
            0 => bail!("device {devices}: this process (local rank {local_rank}) sees no GPU; use --device cpu"),
            1 => Ok(Device::Cuda(0)),
            n if local_rank < n => Ok(Device::Cuda(local_rank)),
            n => bail!(
                "device {devices}: local rank {local_rank} has no GPU of its own (this machine shows {n}): start at \
                 most {n} processes per machine (torchrun --nproc-per-node {n})"
            ),
        },
        _ => bail!(
            "device {devices}: under a launcher each process takes one device (its local rank's GPU, or the CPU); \
             start one process per GPU (torchrun --nproc-per-node) instead of listing several"
        ),
    }
}

/// The warning for a run whose `device: auto` found no GPU: amfmn always links libtorch's CUDA
/// library, so this means no driver or no visible device, and a run meant for a GPU would go on
/// for days on the CPU. `None` when the devices were named or a GPU was found.
pub fn auto_fell_back(devices: &Devices, resolved: &[Device]) -> Option<String> {
    (devices.list() == [DeviceChoice::Auto] && resolved == [Device::Cpu]).then(|| {
        "device auto found no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides every device): this runs on the \
         CPU, many times slower; set device: cpu (or --device cpu) if that is meant, or --device cuda to stop \
         instead"
            .to_owned()
    })
}

/// The device for `choice`: `auto` is the first CUDA device when libtorch sees one, else the
/// CPU; an explicit CUDA device must exist (`CUDA_VISIBLE_DEVICES` is applied by CUDA itself).
fn resolve_one(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda(n) => {
            let count = if Cuda::is_available() { Cuda::device_count() as usize } else { 0 };
            if n >= count {
                bail!(
                    "--device cuda:{n}: libtorch sees {count} CUDA device(s){}; use --device cpu or another index",
                    if count == 0 { " (no GPU, or a CPU-only libtorch)" } else { "" }
                );
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// Checks and applies the training precision for `device`: fp16 needs CUDA; `tf32` lets CUDA
/// matrix products use TF32 (PyTorch's `allow_tf32` for matmul, through libtorch's
/// `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE`, read before the first product); on CUDA, cuDNN picks its
/// fastest kernels for the training shapes (`cudnn.benchmark`; see [`Autotune`]).
pub fn set_precision(amp: Amp, tf32: bool, device: Device) -> Result<()> {
    if amp == Amp::Fp16 && device == Device::Cpu {
        bail!(
            "optim.amp: fp16 needs a CUDA device (libtorch's fp16 kernels on the CPU are incomplete); use bf16 or off"
        );
    }
    if let Device::Cuda(_) = device {
        if tf32 {
            // Once, at the start of training, before the loader's threads exist.
            std::env::set_var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1");
        }
        Cuda::cudnn_set_benchmark(true);
    }
    Ok(())
}

/// Whether cuDNN times its candidate kernels for a training step's new input shapes
/// (`cudnn.benchmark`, which training turns on for CUDA): the step of a full batch autotunes;
/// one whose batch is not full, an epoch's last, leaves the choice to cuDNN's heuristics, because
/// its shape returns once an epoch and timing every kernel of its forward and backward (as long
/// as several steps) would mostly slow the first epoch down. Autotuning is back when the guard is
/// dropped; on the CPU it does nothing.
#[must_use = "autotuning is back as soon as the guard is dropped"]
pub struct Autotune {
    paused: bool,
}

impl Autotune {
    /// Pauses cuDNN's autotuning on a CUDA `device` when the batch is not `full`.
    pub fn for_batch(device: Device, full: bool) -> Autotune {
        let paused = device.is_cuda() && !full;
        if paused {
            Cuda::cudnn_set_benchmark(false);
        }
        Autotune { paused }
    }
}

impl Drop for Autotune {
    fn drop(&mut self) {
        if self.paused {
            Cuda::cudnn_set_benchmark(true);
        }
    }
}

/// Sets libtorch's intra-op threads (0 keeps its default of one per core). More than 4 per core
/// is refused: OpenMP then spends its time switching threads (1,000 on 2 cores take minutes per
/// step), and far more cannot be created at all.
pub fn set_threads(threads: usize) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > 4 * cores {
        bail!(
            "threads {threads} (--threads or the option file's `threads`): this machine has {cores} cores; \
             give at most {} (0 = one per core)",
            4 * cores
        );
    }
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    Ok(())
}

/// Keeps freed tensor memory in the process instead of returning it to the system after every
/// step: glibc maps allocations above a moving threshold with mmap and unmaps them on free, so
/// each training step would page-fault its activations in again (about 15 % of a CPU step).
/// Blocks up to 32 MiB come from the heap, which is trimmed only above 2 GiB of free space.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any tensor exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The replicas' devices for logs: `cpu (2 threads)`, or `2 data-parallel replicas (cuda:0, cuda:1)`.
pub fn describe_replicas(devices: &[Device]) -> String {
    match devices {
        [one] => describe(*one),
        _ => {
            let names: Vec<String> = devices.iter().map(|&d| describe(d)).collect();
            format!("{} data-parallel replicas ({})", devices.len(), names.join(", "))
        }
    }
}

/// A short name for tables and logs.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}"),
    }
}

/// A small host tensor (a lookup table, sampling taps) on `device`, copied without making the
/// host wait: on CUDA through pinned memory (PyTorch's caching host allocator keeps the pinned
/// block until the copy has run), where a copy from pageable memory would wait for the work
/// queued before it; elsewhere `to_device`.
pub fn upload(host: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() && host.device() == Device::Cpu {
        host.pin_memory(device).to_device_(device, host.kind(), true, false)
    } else {
        host.to_device(device)
    }
}

/// An uninitialised float tensor of `size` on the CPU for a batch filled in place: in pinned
/// memory on a CUDA machine (PyTorch's caching host allocator, as `torch.empty(...,
/// pin_memory=True)`), so that it is copied to the GPU without blocking and with no host copy
/// in between; in pageable memory otherwise, or when pinned memory runs out.
pub fn host_batch(size: &[i64]) -> Tensor {
    if Cuda::is_available() {
        // SAFETY: `sizes` points to `size.len()` dimensions; the shim returns a new tensor that
        // the `Tensor` takes ownership of, or null.
        let pinned = unsafe { amfmn_empty_pinned(size.as_ptr(), size.len()) };
        if !pinned.is_null() {
            return unsafe { Tensor::from_ptr(pinned) };
        }
    }
    Tensor::empty(size, (Kind::Float, Device::Cpu))
}

/// Waits until `device` has run the work queued on it (nothing to wait for on the CPU), so that
/// a clock read next has counted that work.
pub fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        Cuda::synchronize(index as i64);
    }
}

/// A CUDA event recorded on a device's current stream (c10's, through the shim).
#[derive(Debug)]
struct Event(*mut c_void);

impl Event {
    /// An event recorded now on the current stream of CUDA device `index`: it completes when the
    /// device has run the work queued before it. Only a `timing` event can be read by
    /// [`Event::seconds_to`]; one without timing is cheaper to wait for.
    fn record(index: usize, timing: bool) -> Result<Event> {
        let mut event = std::ptr::null_mut();
        ffi::call(|error| unsafe {
            amfmn_event_record(index as i32, i32::from(timing), &mut event, error, ERROR_CAPACITY)
        })
        .context("recording a CUDA event")?;
        Ok(Event(event))
    }

    /// Seconds from this event to `end`, once the device has passed `end` (waits for it).
    fn seconds_to(&self, end: &Event) -> Result<f64> {
        let mut ms = 0.0;
        ffi::call(|error| unsafe { amfmn_event_elapsed(self.0, end.0, &mut ms, error, ERROR_CAPACITY) })
            .context("reading the time between two CUDA events")?;
        Ok(ms / 1e3)
    }

    /// Whether the device has passed the event (no waiting).
    fn passed(&self) -> Result<bool> {
        let mut done = 0;
        ffi::call(|error| unsafe { amfmn_event_query(self.0, &mut done, error, ERROR_CAPACITY) })
            .context("querying a CUDA event")?;
        Ok(done != 0)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from amfmn_event_record and is freed once.
        unsafe { amfmn_event_free(self.0) };
    }
}

/// A point in a device's queue of work, which the host can wait for with a bound: on a GPU, an
/// event recorded on the current stream, polled (reading a tensor instead would block in the
/// driver for as long as the device takes, a collective that never completes included); on the
/// CPU, where work is done once queued, nothing to wait for.
pub struct QueueMark(Option<Event>);

impl QueueMark {
    /// How long the host sleeps between two looks at the event.
    const POLL: Duration = Duration::from_micros(100);

    /// The point that the work queued on `device` so far reaches.
    pub fn now(device: Device) -> Result<QueueMark> {
        Ok(QueueMark(match device {
            Device::Cuda(index) => Some(Event::record(index, false)?),
            _ => None,
        }))
    }

    /// Waits until the device has run the work queued before the mark, at most `timeout`:
    /// whether it has.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let Some(event) = &self.0 else { return Ok(true) };
        let start = Instant::now();
        loop {
            if event.passed()? {
                return Ok(true);
            }
            if start.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(QueueMark::POLL);
        }
    }
}

/// How many timed pieces a [`DeviceClock`] keeps unread before it counts the finished ones.
const CLOCK_PENDING: usize = 64;

/// The device time of pieces of work, read without making the host wait for the device
/// between them (so it queues the next piece while the device runs this one): on a GPU, a pair
/// of CUDA events around each piece, read at the end (the time from the device's reaching the
/// piece to its finishing it, gaps where the host queued too slowly included); on the CPU, where
/// work is done when its call returns, the wall clock.
#[derive(Debug)]
pub struct DeviceClock {
    device: Device,
    /// Each timed piece's events, not read yet.
    pending: Vec<(Event, Event)>,
    /// Seconds read so far.
    seconds: f64,
}

impl DeviceClock {
    /// A clock of the work queued on `device`, at zero.
    pub fn new(device: Device) -> DeviceClock {
        DeviceClock { device, pending: Vec::new(), seconds: 0.0 }
    }

    /// Runs `work` (which queues work on the device) and counts the device's time for it.
    pub fn time<T>(&mut self, work: impl FnOnce() -> T) -> Result<T> {
        let Device::Cuda(index) = self.device else {
            let start = Instant::now();
            let out = work();
            self.seconds += start.elapsed().as_secs_f64();
            return Ok(out);
        };
        let start = Event::record(index, true)?;
        let out = work();
        self.pending.push((start, Event::record(index, true)?));
        if self.pending.len() >= CLOCK_PENDING {
            self.count(false)?;
        }
        Ok(out)
    }

    /// Counts the timed pieces the device has finished and forgets their events: every piece,
    /// once the device has run it, when `wait`; otherwise only those already run, so that a clock
    /// timing every step of a long run holds the pieces in flight only.
    fn count(&mut self, wait: bool) -> Result<()> {
        let mut in_flight = Vec::new();
        for (start, end) in self.pending.drain(..) {
            if wait || end.passed()? {
                self.seconds += start.seconds_to(&end)?;
            } else {
                in_flight.push((start, end));
            }
        }
        self.pending = in_flight;
        Ok(())
    }

    /// The seconds counted so far, once the device has run every timed piece (waits for it).
    pub fn seconds(&mut self) -> Result<f64> {
        self.count(true)?;
        Ok(self.seconds)
    }
}

/// A stream of a CUDA device from c10's pool, beside the current one: CUDA graphs are captured,
/// and their warm-up steps run, on it (as `torch.cuda.graph` does; a graph cannot be captured on
/// the default stream, and lazily made resources such as cuBLAS's workspaces are made for this
/// stream before a capture).
pub struct SideStream(*mut c_void);

impl SideStream {
    /// A side stream of CUDA device `index`.
    pub fn new(index: usize) -> Result<SideStream> {
        let mut side = std::ptr::null_mut();
        ffi::call(|error| unsafe { amfmn_side_stream_new(index as i32, &mut side, error, ERROR_CAPACITY) })
            .context("taking a CUDA stream for graphs")?;
        Ok(SideStream(side))
    }

    /// Runs `work` with this stream current: it starts once the device has run everything queued
    /// before, and its kernels have run when this returns (the two waits a capture needs; a few
    /// per run, never per step).
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> Result<T> {
        ffi::call(|error| unsafe { amfmn_side_stream_enter(self.0, error, ERROR_CAPACITY) })
            .context("switching to the graphs' CUDA stream")?;
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let left = ffi::call(|error| unsafe { amfmn_side_stream_leave(self.0, error, ERROR_CAPACITY) });
        let out = out.map_err(|panic| anyhow::anyhow!("{}", panic_message(&panic)))?;
        left.context("leaving the graphs' CUDA stream")?;
        Ok(out)
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from amfmn_side_stream_new and is freed once.
        unsafe { amfmn_side_stream_free(self.0) };
    }
}

/// The first line of a caught panic's message: for a libtorch error (which reaches Rust as tch's
/// panic, `... Torch("<message>\n<C++ frames>")`, its line breaks escaped), libtorch's message.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied());
    let line = text.unwrap_or("a panic").lines().next().unwrap_or_default();
    let line = line.split("\\n").next().unwrap_or_default();
    line.rsplit("Torch(\"").next().unwrap_or_default().to_owned()
}

/// The id of a memory pool that CUDA graphs share (`torch.cuda.graph_pool_handle()`): each
/// graph's temporaries are free again once it has run, so graphs replayed one after the other on
/// one stream can use the same memory.
pub struct GraphPool(u64, u64);

impl GraphPool {
    /// A new pool.
    pub fn new() -> Result<GraphPool> {
        let (mut first, mut second) = (0, 0);
        ffi::call(|error| unsafe { amfmn_graph_pool(&mut first, &mut second, error, ERROR_CAPACITY) })
            .context("making a memory pool for CUDA graphs")?;
        Ok(GraphPool(first, second))
    }
}

/// A captured CUDA graph (libtorch's `at::cuda::CUDAGraph`): the kernels some work queued, with
/// their arguments (the addresses of the tensors they read and write), replayed in one launch.
/// Random draws inside it (dropout) follow the CUDA generator's seed at each replay.
pub struct Graph(*mut c_void);

impl Graph {
    /// Captures what `work` queues, on `side` with memory from `pool`; nothing runs. Returns the
    /// graph and `work`'s result, whose tensors the graph writes on each replay. A panic or an
    /// error in `work` (an operation a capture forbids, such as reading a value back) ends the
    /// capture and is returned as the error.
    pub fn capture<T>(side: &SideStream, pool: &GraphPool, work: impl FnOnce() -> Result<T>) -> Result<(Graph, T)> {
        side.run(|| {
            let mut raw = std::ptr::null_mut();
            ffi::call(|error| unsafe { amfmn_graph_begin(pool.0, pool.1, &mut raw, error, ERROR_CAPACITY) })
                .context("starting a CUDA graph capture")?;
            let graph = Graph(raw);
            // A failed capture is returned as one error, without the panic's report.
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            std::panic::set_hook(report);
            let ended = ffi::call(|error| unsafe { amfmn_graph_end(graph.0, error, ERROR_CAPACITY) });
            let out = out.map_err(|panic| anyhow::anyhow!("{}", panic_message(&panic)))??;
            ended.context("ending a CUDA graph capture")?;
            Ok((graph, out))
        })?
    }

    /// Queues the captured work on the current stream.
    pub fn replay(&self) -> Result<()> {
        ffi::call(|error| unsafe { amfmn_graph_replay(self.0, error, ERROR_CAPACITY) })
            .context("replaying a CUDA graph")?;
        Ok(())
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from amfmn_graph_begin and is freed once.
        unsafe { amfmn_graph_free(self.0) };
    }
}

/// Where the unit tests of the device paths (batched transforms, crops) put their tensors:
/// the CPU, or the first GPU with `AMFMN_TEST_DEVICE=cuda` (exec/gpu_check.sh runs them so).
#[cfg(test)]
pub(crate) fn test_device() -> Device {
    match std::env::var("AMFMN_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            assert!(Cuda::is_available(), "AMFMN_TEST_DEVICE=cuda, but libtorch sees no CUDA device");
            Device::Cuda(0)
        }
        Ok("cpu") | Err(_) => Device::Cpu,
        Ok(other) => panic!("AMFMN_TEST_DEVICE={other}: give cpu or cuda"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A libtorch error caught as tch's panic reads as libtorch's one-line message.
    #[test]
    fn a_caught_libtorch_error_reads_as_its_message() {
        let caught = std::panic::catch_unwind(|| Tensor::zeros([2], (Kind::Float, Device::Cpu)).view([3]));
        assert_eq!(panic_message(&caught.unwrap_err()), "shape '[3]' is invalid for input of size 2");
        let plain: Box<dyn std::any::Any + Send> = Box::new("a plain panic\nsecond line");
        assert_eq!(panic_message(&plain), "a plain panic");
    }

    /// A wait for a mark returns once the work queued before it has run (its result is there);
    /// on a GPU busy with long work, a wait of a microsecond says that it has not yet (on the
    /// CPU, work is done once queued).
    #[test]
    fn queue_marks_are_waited_for_with_a_bound_on_device() {
        let device = test_device();
        let (n, products) = if device.is_cuda() { (4096, 200) } else { (64, 3) };
        let a = Tensor::randn([n, n], (Kind::Float, device)) / (n as f64).sqrt();
        let mut b = a.shallow_clone();
        for _ in 0..products {
            b = b.matmul(&a).clamp(-1.0, 1.0);
        }
        let mark = QueueMark::now(device).unwrap();
        assert_eq!(mark.wait(Duration::from_micros(1)).unwrap(), !device.is_cuda(), "busy on a GPU, done on the CPU");
        assert!(mark.wait(Duration::from_secs(60)).unwrap());
        assert!(bool::try_from(b.isfinite().all()).unwrap());
    }

    /// The clock counts the device's time for each piece, a wait of the host inside a piece
    /// included (the device reaches the piece's end only then), and nothing between pieces.
    #[test]
    fn the_device_clock_counts_work_on_device() {
        let device = test_device();
        let mut clock = DeviceClock::new(device);
        let a = Tensor::randn([256, 256], (Kind::Float, device));
        let product = clock.time(|| a.matmul(&a).sum(Kind::Float)).unwrap();
        let first = clock.seconds().unwrap();
        assert!(first > 0.0 && product.double_value(&[]).is_finite(), "{first}");
        std::thread::sleep(std::time::Duration::from_millis(30));
        clock.time(|| std::thread::sleep(std::time::Duration::from_millis(20))).unwrap();
        let second = clock.seconds().unwrap() - first;
        assert!((0.019..0.045).contains(&second), "the piece's 20 ms, not the 30 ms before it: {second}");
        if !Cuda::is_available() {
            let error = format!("{:#}", Event::record(0, true).expect_err("no CUDA device here"));
            assert!(error.starts_with("recording a CUDA event: "), "{error}");
        }
    }

    /// A clock that times many pieces holds the events of those in flight only, and counts each
    /// finished piece once: as much as a clock around the same pieces that is read after each.
    #[test]
    fn a_clock_of_many_pieces_keeps_those_in_flight_on_device() {
        let device = test_device();
        let (mut folding, mut reading) = (DeviceClock::new(device), DeviceClock::new(device));
        let a = Tensor::randn([128, 128], (Kind::Float, device));
        let mut read = 0.0;
        for _ in 0..3 * CLOCK_PENDING {
            let _ = reading.time(|| folding.time(|| a.matmul(&a).sum(Kind::Float))).unwrap().unwrap();
            synchronize(device);
            read = reading.seconds().unwrap();
            assert!(folding.pending.len() < CLOCK_PENDING, "{} pieces kept", folding.pending.len());
        }
        let counted = folding.seconds().unwrap();
        assert!(folding.pending.is_empty());
        assert!(counted > 0.0 && counted <= read && counted > 0.8 * read, "{counted} s counted, {read} s around");
    }

    #[test]
    fn host_batches_are_contiguous_cpu_floats_pinned_on_device_machines() {
        let batch = host_batch(&[2, 3, 4, 4]);
        assert_eq!((batch.size(), batch.kind(), batch.device()), (vec![2, 3, 4, 4], Kind::Float, Device::Cpu));
        assert!(batch.is_contiguous());
        let device = test_device();
        assert_eq!(batch.is_pinned(device), device.is_cuda(), "pinned exactly where a GPU takes it");
        let _ = batch.shallow_clone().fill_(1.5);
        assert_eq!(upload(&batch, device).sum(Kind::Float).double_value(&[]), 144.0);
    }

    #[test]
    fn only_an_auto_that_found_no_gpu_warns() {
        let devices = |text: &str| text.parse::<Devices>().unwrap();
        assert!(auto_fell_back(&devices("auto"), &[Device::Cpu]).is_some());
        assert!(auto_fell_back(&devices("auto"), &[Device::Cuda(0)]).is_none());
        assert!(auto_fell_back(&devices("cpu"), &[Device::Cpu]).is_none());
        assert!(auto_fell_back(&devices("cpu,cpu"), &[Device::Cpu, Device::Cpu]).is_none());
    }
}
