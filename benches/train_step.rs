//! Training-step time of the AMFMN model (forward, loss, backward, Adam: the trainer's step,
//! through `train::Replicas`) on random images (256x256 by default) and 15-token captions, batches made
//! beforehand and fed as the loader feeds them (normalized f32 for the CPU; for CUDA decoded u8
//! levels in pinned memory, which the step resizes to 278/256 of SIZE, crops and normalizes on
//! the device); and, on the first device, the text encoder alone (forward + backward), the CNN
//! alone (from its input), Adam alone, and the batched transform of decoded images (the
//! device's share of the data path, [`Images::input_on`]; `transform_seconds`).
//!
//! `cargo bench --bench train_step -- BATCHES STEPS [DEVICE] [AMP] [SIZE]`: BATCHES one batch
//! size or several, comma-separated; DEVICE as `--device` (`cpu`, `cuda`, `cuda:0,cuda:1`,
//! `cpu,cpu`; default cpu), AMP as `optim.amp` (default off), SIZE the image side (default 256).
//! Prints, for each batch, `batch=<b>`; `back_to_back_seconds`, the time per step of STEPS steps
//! queued as `amfmn train` queues them (each loss read once the next step is queued), and
//! `back_to_back_host_wait`, the share of it the host waited for the device (near 1:
//! device-bound; near 0: host-bound); and the medians `step_seconds`, `image_seconds`,
//! `text_seconds`, `adam_seconds`, `transform_seconds`, each line as soon as it is measured, each followed by the
//! number of ATen operators one such run dispatches and of those that compute (`step_ops`,
//! `step_kernels`, ...: [`amfmn::profile`]), and of its product and convolution kernels, all and
//! those on 16-bit inputs (`step_products`, `step_products_16bit`, ...). With
//! `AMFMN_TRACE=<prefix>`, one more step per batch is traced with libtorch's profiler
//! ([`amfmn::profile::trace`]: on CUDA each kernel with its device time) into
//! `<prefix>-<batch>.json`, whose path it prints (`trace=`); `exec/trace_summary.py` reads it.
//! `AMFMN_TRACE_BATCH=<b>` traces batch `b` alone. With `AMFMN_CUDA_GRAPHS=1` the step (and
//! the steps queued back to back) runs through CUDA graphs as `train` runs it with
//! `cuda_graphs: True` ([`amfmn::train::StepGraphs`]; on the CPU, without graphs through the same
//! copies of the inputs); one more step before the timing is the graph's capture.
//! `exec/bench_train.sh` runs it beside the PyTorch reference; `exec/gpu_check.sh` runs it as
//! amfmn's step without decoding.

use std::time::Instant;

use amfmn::data::transforms::Transform;
use amfmn::data::{Images, PairBatch};
use amfmn::loss::{contrastive_loss, Margin};
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::optim::{Adam, GradScaler};
use amfmn::options::{Amp, Devices, Options};
use amfmn::train::{Replicas, StepGraphs, StepInputs};
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits for `device`'s queued work, so that a timer reads the work done.
fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// The median seconds of `steps` runs of `f` after one warm-up run.
fn time(steps: usize, device: Device, mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    for i in 0..=steps {
        let start = Instant::now();
        f();
        synchronize(device);
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    median(times)
}

/// `steps` steps queued as `amfmn train` queues them, after one warm-up step: each step's loss
/// (returned on the device by `queue_step`) read once the next step is queued. Returns the
/// seconds per step and the share of that time the host spent waiting for the device in the
/// reads: near 1 the device is the bottleneck (the host queues faster than it computes), near 0
/// the host is (launches, dispatch). On the CPU, which computes as it queues, the share is 0.
fn back_to_back(steps: usize, mut queue_step: impl FnMut() -> Tensor) -> (f64, f64) {
    let _ = queue_step().double_value(&[]);
    let (start, mut waited) = (Instant::now(), 0f64);
    let mut read = |loss: Tensor| {
        let began = Instant::now();
        let _ = loss.double_value(&[]);
        waited += began.elapsed().as_secs_f64();
    };
    let mut previous: Option<Tensor> = None;
    for _ in 0..steps.max(1) {
        if let Some(loss) = previous.replace(queue_step()) {
            read(loss);
        }
    }
    read(previous.expect("one step at least"));
    let total = start.elapsed().as_secs_f64();
    (total / steps.max(1) as f64, waited / total)
}

/// Prints `<part>_seconds`, the median time of `steps` runs of `f`, then `<part>_ops` and
/// `<part>_kernels`, the ATen operators one more run dispatches and those of them that compute
/// ([`amfmn::profile::OpCount`]; with `AMFMN_OPS_TOP=n`, the n most frequent, calls and kernels),
/// and `<part>_products` and `<part>_products_16bit`, its matrix-product and convolution kernels
/// and those of them that ran on 16-bit inputs ([`amfmn::profile::OpCount::products`]).
fn measure(part: &str, steps: usize, device: Device, mut f: impl FnMut()) -> anyhow::Result<()> {
    println!("{part}_seconds={:.4}", time(steps, device, &mut f));
    let ((), ops) = amfmn::profile::count_ops(|| {
        f();
        synchronize(device);
    })?;
    println!("{part}_ops={}", ops.total);
    println!("{part}_kernels={}", ops.kernels);
    let (products, sixteen_bit) = ops.products();
    println!("{part}_products={products}");
    println!("{part}_products_16bit={sixteen_bit}");
    let top = std::env::var("AMFMN_OPS_TOP").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    for op in ops.by_name.iter().take(top) {
        println!("  {} {} {}", op.name, op.calls, op.kernels);
    }
    Ok(())
}

/// A batch of `b` random pairs of `size`² images as the loader delivers it for `device`.
fn pair_batch(b: i64, size: i64, vocab: i64, device: Device) -> PairBatch {
    tch::manual_seed(0);
    let images = if device.is_cuda() {
        decoded(b, size, device)
    } else {
        Images::Ready(Tensor::randn([b, 3, size, size], (Kind::Float, Device::Cpu)))
    };
    let rows: Vec<usize> = (0..b as usize).collect();
    PairBatch {
        images_from: 0,
        images,
        captions: Tensor::randint_low(1, vocab, [b, 15], (Kind::Int64, Device::Cpu)),
        lengths: Tensor::full([b], 15, (Kind::Int64, Device::Cpu)),
        caption_ids: rows.clone(),
        image_ids: rows,
        keywords: None,
    }
}

/// `b` random decoded `size`² images in pinned memory for CUDA, to be resized to 278/256 of
/// `size`, cropped and normalized where the model is.
fn decoded(b: i64, size: i64, device: Device) -> Images {
    let transform = Transform::Train { resize: (size * 278 / 256) as u32, crop: size as u32, rotation: [0.0, 0.0] };
    let draws = (0..b as u64).map(|k| transform.draw(&mut amfmn::rng::stream(0, &[k]))).collect();
    let levels = Tensor::randint(256, [b, size, size, 3], (Kind::Uint8, Device::Cpu));
    let levels = if device.is_cuda() { levels.pin_memory(device) } else { levels };
    Images::Decoded { levels, draws, transform }
}

fn main() -> anyhow::Result<()> {
    amfmn::device::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let batches: Vec<i64> =
        args.first().map_or("10", String::as_str).split(',').map(str::parse).collect::<Result<_, _>>()?;
    let steps: usize = args.get(1).map_or(Ok(4), |s| s.parse())?;
    let devices: Devices = args.get(2).map_or("cpu", String::as_str).parse().map_err(anyhow::Error::msg)?;
    let precision: Amp = serde_yaml::from_str(args.get(3).map_or("off", String::as_str))?;
    let size: i64 = args.get(4).map_or(Ok(256), |s| s.parse())?;
    let devices = amfmn::device::resolve_replicas(&devices)?;
    let device = devices[0];
    amfmn::device::set_precision(precision, false, device)?;
    let text = std::fs::read_to_string("option/RSITMD_AMFMN.yaml")?;
    let options = Options::parse(&text, &["model.seq2vec.dropout=0.25".into(), format!("dataset.image_size={size}")])?;
    let vocab = 1349;
    let layout = options.channels_last.applies(device, precision);
    let model = Model::new(&ModelConfig::new(&options, vocab), device, 0)?.with_channels_last(layout);
    let mut adam = Adam::new(model.trainable(), 2e-4);
    if precision == Amp::Fp16 {
        adam.scaler = Some(GradScaler::new(device));
    }
    let replicas = Replicas::new(model, &devices[1..])?;
    let pass = Pass::training(precision.kind());
    let graphed = std::env::var("AMFMN_CUDA_GRAPHS").is_ok_and(|v| v == "1");
    let mut graphs = graphed.then(|| StepGraphs::new(device)).transpose()?;
    for batch in batches {
        let pairs = pair_batch(batch, size, vocab as i64, device);
        println!("batch={batch}");
        // The trainer's step, its loss still on the device: through CUDA graphs with
        // AMFMN_CUDA_GRAPHS=1, as `train` with `cuda_graphs: True`.
        let mut queue_step = || {
            let inputs = StepInputs { batch: replicas.inputs(&pairs).expect("one process"), margins: None };
            let lr = adam.lr();
            let mut step = |inputs: &StepInputs| {
                let scores = replicas.scores_of(&inputs.batch, pass)?;
                let loss = scores.map(|s| contrastive_loss(&s[0], &Margin::Fixed(0.2), false));
                let detached = loss.detached();
                replicas.update(&mut adam, loss, 0.0)?;
                Ok(detached)
            };
            match graphs.as_mut() {
                Some(graphs) => graphs.step(lr, inputs, step),
                None => step(&inputs),
            }
            .expect("a training step")
        };
        if graphed {
            // A shape's first step warms up, its second is captured: steps replay from the third.
            let _ = queue_step().double_value(&[]);
        }
        let (seconds, host_wait) = back_to_back(steps, &mut queue_step);
        println!("back_to_back_seconds={seconds:.4}");
        println!("back_to_back_host_wait={host_wait:.3}");
        let mut train_step = || {
            let _ = queue_step().double_value(&[]);
        };
        measure("step", steps, device, &mut train_step)?;
        if let Some(prefix) = trace_prefix(batch) {
            let path = std::path::PathBuf::from(format!("{prefix}-{batch}.json"));
            // A trace that fails (a profiler the machine refuses) costs the trace, not the rows.
            match amfmn::profile::trace(&path, device.is_cuda(), || {
                train_step();
                synchronize(device);
            }) {
                Ok(()) => println!("trace={}", path.display()),
                Err(e) => eprintln!("train_step: no trace of batch {batch}: {e:#}"),
            }
        }
        let model = &replicas.primary;
        let images = model.prepare_images(&pairs.images.input_on(device));
        measure("image", steps, device, || model.net.encode_images(&images, pass).sum(Kind::Float).backward())?;
        let (ids, lengths) = (pairs.captions.to_device(device), pairs.lengths.to_device(device));
        measure("text", steps, device, || {
            model.net.encode_texts_with(&ids, &lengths, pass).map(|t| t.sum(Kind::Float)).backward();
        })?;
        measure("adam", steps, device, || adam.step())?;
        let images = decoded(batch, size, device);
        measure("transform", steps, device, || drop(images.input_on(device)))?;
    }
    Ok(())
}

/// The prefix of the trace files (`AMFMN_TRACE`, unset or empty: no trace) when batch `batch` is
/// traced: every batch, or the one `AMFMN_TRACE_BATCH` names.
fn trace_prefix(batch: i64) -> Option<String> {
    let prefix = std::env::var("AMFMN_TRACE").ok().filter(|p| !p.is_empty())?;
    match std::env::var("AMFMN_TRACE_BATCH") {
        Ok(only) if only != batch.to_string() => None,
        _ => Some(prefix),
    }
}
