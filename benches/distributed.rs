//! Data-parallel training over processes (PyTorch's c10d, Gloo on 127.0.0.1) beside one process:
//! the step time with 1 and with 2 ranks at the same batch per rank (random `SIZE`² images,
//! 15-token captions, the trainer's `Replicas`), and the time each rank spends in collectives
//! per step (the all-gathers of the codes, the all-reduce of the gradients, the broadcast of the
//! batch-norm buffers, waiting for the other rank included).
//!
//! `cargo bench --bench distributed -- [BATCH_PER_RANK=100] [STEPS=2] [SIZE=256]`; the ranks
//! share the machine's cores. `exec/bench_distributed.sh` runs it.

use std::net::TcpListener;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use amfmn::data::{Images, PairBatch};
use amfmn::dist::{Launch, ProcessGroup};
use amfmn::loss::{contrastive_loss, Margin};
use amfmn::model::{Model, ModelConfig, Pass};
use amfmn::optim::Adam;
use amfmn::options::Options;
use amfmn::train::Replicas;
use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

/// Set in a rank's environment: its number of libtorch threads.
const CHILD: &str = "AMFMN_BENCH_RANK_THREADS";

fn args() -> Result<(i64, usize, i64)> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let get = |i: usize, default: &str| args.get(i).map_or(default.to_owned(), String::clone);
    Ok((get(0, "100").parse()?, get(1, "2").parse()?, get(2, "256").parse()?))
}

/// A global batch of `b` random pairs (the same on every rank).
fn pair_batch(b: i64, size: i64, vocab: i64) -> PairBatch {
    tch::manual_seed(0);
    let rows: Vec<usize> = (0..b as usize).collect();
    PairBatch {
        images_from: 0,
        images: Images::Ready(Tensor::randn([b, 3, size, size], (Kind::Float, Device::Cpu))),
        captions: Tensor::randint_low(1, vocab, [b, 15], (Kind::Int64, Device::Cpu)),
        lengths: Tensor::full([b], 15, (Kind::Int64, Device::Cpu)),
        caption_ids: rows.clone(),
        image_ids: rows,
        keywords: None,
    }
}

/// One rank (or the single process): trains `steps` steps after a warm-up one and prints its
/// seconds per step and in collectives per step.
fn rank() -> Result<()> {
    let (per_rank, steps, size) = args()?;
    let launch = Launch::from_env()?;
    let (rank, world) = launch.as_ref().map_or((0, 1), |l| (l.rank, l.world));
    tch::set_num_threads(std::env::var(CHILD)?.parse()?);
    let text = std::fs::read_to_string("option/RSITMD_AMFMN.yaml")?;
    let options = Options::parse(&text, &["model.seq2vec.dropout=0.25".into(), format!("dataset.image_size={size}")])?;
    let model = Model::new(&ModelConfig::new(&options, 1349), Device::Cpu, 0)?.with_channels_last(true);
    let mut adam = Adam::new(model.trainable(), 2e-4);
    let mut replicas = Replicas::new(model, &[])?;
    if let Some(launch) = &launch {
        replicas = replicas.with_peers(Rc::new(ProcessGroup::join(launch, Duration::from_secs(600), Device::Cpu)?))?;
    }
    let batch = pair_batch(per_rank * world as i64, size, 1349);
    let collectives = |r: &Replicas| r.peers().map_or(Ok(Duration::ZERO), ProcessGroup::time_in_collectives);
    let (mut spent, mut in_collectives) = (Duration::ZERO, Duration::ZERO);
    for step in 0..=steps {
        let (start, before) = (Instant::now(), collectives(&replicas)?);
        let scores = replicas.scores(&batch, Pass::training(None))?;
        replicas.update(&mut adam, scores.map(|s| contrastive_loss(&s[0], &Margin::Fixed(0.2), false)), 0.0)?;
        if step > 0 {
            spent += start.elapsed();
            in_collectives += collectives(&replicas)? - before;
        }
    }
    let per_step = |d: Duration| d.as_secs_f64() / steps as f64;
    println!(
        "world={world} rank={rank} step_seconds={:.4} collective_seconds={:.4}",
        per_step(spent),
        per_step(in_collectives)
    );
    Ok(())
}

/// Runs this bench as `world` ranks (torchrun's variables), each with its share of the cores.
fn launch(world: usize) -> Result<Vec<String>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port().to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / world).max(1).to_string();
    let children = (0..world)
        .map(|rank| {
            let mut command = Command::new(std::env::current_exe()?);
            command.args(std::env::args().skip(1)).env(CHILD, &threads);
            if world > 1 {
                command.env("RANK", rank.to_string()).env("WORLD_SIZE", world.to_string());
                command.env("MASTER_ADDR", "127.0.0.1").env("MASTER_PORT", &port).env("GLOO_SOCKET_IFNAME", "lo");
            }
            Ok(command.stdout(std::process::Stdio::piped()).spawn()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut lines = Vec::new();
    for child in children {
        let output = child.wait_with_output()?;
        anyhow::ensure!(output.status.success(), "a rank failed");
        lines.extend(String::from_utf8(output.stdout)?.lines().map(str::to_owned));
    }
    Ok(lines)
}

fn main() -> Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return rank();
    }
    let (per_rank, steps, size) = args()?;
    println!("batch {per_rank} per rank, {size}x{size}, mean of {steps} steps after a warm-up one");
    for world in [1, 2] {
        for line in launch(world).with_context(|| format!("{world} rank(s)"))? {
            println!("{line}");
        }
    }
    Ok(())
}
