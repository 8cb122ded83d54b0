//! CUDA graphs of the training step (`cuda_graphs: True`). On a GPU the step is bound by the
//! host's launches of its ~900 kernels, not by their arithmetic; a graph captures the kernels
//! that one step queues (forward, loss, backward, clipping, Adam) and replays them in one
//! launch. A step reads nothing but its [`StepInputs`] (the batch's tensors on the device and
//! the dynamic margins), so each graph owns a copy of them, refilled before each replay; the
//! parameters, gradients and Adam's moments and step counts are updated in place and keep their
//! addresses. One graph per shape of the inputs (the captions' width changes from batch to
//! batch): the first step of a shape runs as without graphs, on the graphs' side stream (warming
//! cuDNN's autotuning and the lazily made resources up), the second is captured, and every later
//! one replayed. The graphs share one memory pool; a new learning rate (a number inside the
//! captured Adam) drops them, and each shape is captured again at its next step. Dropout masks
//! follow the CUDA generator's seed at each replay, so a replayed step draws the masks that the
//! step would draw without the graph.
//!
//! On the CPU there is no graph: a "captured" step is run again from the graph's copy of the
//! inputs at each "replay", which tests everything up to the capture itself (the copies, the
//! shapes, the schedule) against steps run without graphs.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::replicas::BatchInputs;
use crate::device::{Graph, GraphPool, SideStream};

/// Everything a training step reads: the batch's inputs on the devices and, with the dynamic
/// margin, the per-pair margins `[B, B]`.
pub struct StepInputs {
    pub batch: BatchInputs,
    pub margins: Option<Tensor>,
}

impl StepInputs {
    /// Every tensor, in a fixed order.
    fn tensors(&self) -> Vec<&Tensor> {
        let mut all = self.batch.tensors();
        all.extend(&self.margins);
        all
    }

    /// The shapes and kinds of [`StepInputs::tensors`]: a graph replays only on inputs of its own.
    fn key(&self) -> Key {
        self.tensors().into_iter().map(|t| (t.size(), t.kind())).collect()
    }

    /// The same inputs with each tensor replaced by `f` of it.
    fn map(&self, f: &mut dyn FnMut(&Tensor) -> Tensor) -> StepInputs {
        StepInputs { batch: self.batch.map(f), margins: self.margins.as_ref().map(f) }
    }

    /// Copies these inputs into `target`'s tensors (of the same shapes).
    fn copy_to(&self, target: &StepInputs) {
        tch::no_grad(|| {
            for (from, to) in self.tensors().into_iter().zip(target.tensors()) {
                to.shallow_clone().copy_(from);
            }
        });
    }
}

/// The shapes and kinds of a step's inputs.
type Key = Vec<(Vec<i64>, Kind)>;

/// How the steps given to [`StepGraphs::step`] ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GraphCounts {
    /// Steps run without a graph (the first of each shape).
    pub warm_ups: usize,
    /// Graphs captured.
    pub captures: usize,
    /// Steps replayed (a captured step is replayed at once, so each capture counts here too).
    pub replays: usize,
}

/// A captured step: its graph (none on the CPU), its copy of the inputs and, on CUDA, the loss it
/// writes.
struct Captured {
    graph: Option<(Graph, Tensor)>,
    inputs: StepInputs,
}

/// The CUDA graphs of a run's training steps, by shape of their inputs.
pub struct StepGraphs {
    /// On CUDA: the side stream that captures and warms up, and the graphs' memory pool.
    cuda: Option<(SideStream, GraphPool)>,
    /// The learning rate of the captured graphs.
    lr: Option<f64>,
    /// The shapes whose first step has run.
    warmed: HashSet<Key>,
    captured: HashMap<Key, Captured>,
    /// The graphs' copies of the inputs, shared by the graphs whose inputs have the same shape at
    /// the same place (images, lengths, margins), which are replayed one at a time.
    buffers: HashMap<(usize, Vec<i64>, Kind), Tensor>,
    pub counts: GraphCounts,
}

impl StepGraphs {
    /// Graphs of steps that run on `device`.
    pub fn new(device: Device) -> Result<StepGraphs> {
        let cuda = match device {
            Device::Cuda(index) => Some((SideStream::new(index)?, GraphPool::new()?)),
            _ => None,
        };
        Ok(StepGraphs {
            cuda,
            lr: None,
            warmed: HashSet::new(),
            captured: HashMap::new(),
            buffers: HashMap::new(),
            counts: GraphCounts::default(),
        })
    }

    /// One training step on `inputs`, at learning rate `lr`: `step` queues it (reading only its
    /// argument) and returns the loss on the device. The first step of a shape runs `step` on
    /// the side stream, the second captures it and replays the graph, later ones replay it.
    /// Returns the loss, in a tensor of its own.
    pub fn step(
        &mut self,
        lr: f64,
        inputs: StepInputs,
        mut step: impl FnMut(&StepInputs) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.lr.is_some_and(|captured_at| captured_at != lr) {
            self.captured.clear();
            if let Some((_, pool)) = &mut self.cuda {
                *pool = GraphPool::new()?;
            }
        }
        self.lr = Some(lr);
        let key = inputs.key();
        if !self.captured.contains_key(&key) {
            if self.warmed.insert(key.clone()) {
                self.counts.warm_ups += 1;
                return match &self.cuda {
                    Some((side, _)) => side.run(|| step(&inputs))?,
                    None => step(&inputs),
                };
            }
            let captured = self.capture(&inputs, &mut step)?;
            self.captured.insert(key.clone(), captured);
        }
        let captured = &self.captured[&key];
        inputs.copy_to(&captured.inputs);
        self.counts.replays += 1;
        match &captured.graph {
            Some((graph, loss)) => {
                graph.replay()?;
                Ok(loss.copy())
            }
            None => step(&captured.inputs),
        }
    }

    /// Captures `step` on a copy of `inputs` (on the CPU, only the copy is made).
    fn capture(
        &mut self,
        inputs: &StepInputs,
        step: &mut impl FnMut(&StepInputs) -> Result<Tensor>,
    ) -> Result<Captured> {
        let mut position = 0;
        let buffers = &mut self.buffers;
        let copies = inputs.map(&mut |t| {
            position += 1;
            let buffer = buffers.entry((position, t.size(), t.kind())).or_insert_with(|| t.empty_like());
            buffer.shallow_clone()
        });
        self.counts.captures += 1;
        let graph = match &self.cuda {
            Some((side, pool)) => Some(
                Graph::capture(side, pool, || step(&copies))
                    .context("capturing a training step in a CUDA graph failed; train with cuda_graphs: False")?,
            ),
            None => None,
        };
        Ok(Captured { graph, inputs: copies })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::data::{Images, PairBatch};
    use crate::loss::{contrastive_loss, Margin};
    use crate::model::{Model, Pass};
    use crate::optim::Adam;
    use crate::train::Replicas;

    /// The demo model at 32² on `device`, from `weights` when given; with dropout on CUDA, so
    /// that the masks a graph draws at each replay are checked there. (On the CPU the masks would
    /// come from the generator that the tests running beside this one draw from too; the GPU
    /// check runs the device tests one at a time.)
    fn model(device: Device, weights: Option<&BTreeMap<String, Tensor>>) -> Model {
        let dropout = if device.is_cuda() { "model.seq2vec.dropout=0.25" } else { "model.seq2vec.dropout=0.0" };
        let sets = [dropout, "dataset.image_size=32", "dataset.resize=35"];
        let mut model = crate::model::demo_model(&sets, 12, device, 5);
        if let Some(weights) = weights {
            model.load_state_dict(weights).unwrap();
        }
        model
    }

    /// Four pairs of made images whose longest caption has `width` words (of 6 columns of ids),
    /// with the per-pair margins `[4, 4]` of the dynamic margin; nothing drawn at random.
    fn batch(seed: i64, width: i64) -> (PairBatch, Tensor) {
        let wave = |n: i64, scale: f64| (Tensor::arange(n, (Kind::Float, Device::Cpu)) * scale + seed as f64).sin();
        let lengths = [width, 1, (width - 1).max(1), 2];
        let ids: Vec<i64> = (0..4)
            .flat_map(|row| {
                (0..6).map(move |t| if t < lengths[row] { 1 + (seed + row as i64 * 5 + t) % 11 } else { 0 })
            })
            .collect();
        let pairs = PairBatch {
            images: Images::Ready(wave(4 * 3 * 32 * 32, 0.37).view([4, 3, 32, 32])),
            images_from: 0,
            captions: Tensor::from_slice(&ids).view([4, 6]),
            lengths: Tensor::from_slice(&lengths),
            caption_ids: (0..4).collect(),
            image_ids: (0..4).collect(),
            keywords: None,
        };
        (pairs, (wave(16, 1.3).view([4, 4]) + 1.0) * 0.2)
    }

    /// The losses of ten steps over batches of three caption widths, the learning rate changed
    /// after the sixth, and the variables after them: through `graphs`, or without.
    fn ten_steps(
        device: Device,
        initial: &BTreeMap<String, Tensor>,
        graphs: Option<&mut StepGraphs>,
    ) -> (Vec<f64>, BTreeMap<String, Tensor>) {
        let replicas = Replicas::new(model(device, Some(initial)), &[]).unwrap();
        let mut adam = Adam::new(replicas.primary.trainable(), 1e-2).with_eps(1e-2);
        let mut graphs = graphs;
        let mut losses = Vec::new();
        for (k, width) in [5i64, 3, 5, 5, 3, 5, 5, 3, 4, 5].into_iter().enumerate() {
            if k == 6 {
                adam.set_lr(5e-3);
            }
            let (pairs, margins) = batch(k as i64, width);
            tch::manual_seed(100 + k as i64);
            let inputs =
                StepInputs { batch: replicas.inputs(&pairs).unwrap(), margins: Some(margins.to_device(device)) };
            let lr = adam.lr();
            let step = |inputs: &StepInputs| {
                let scores = replicas.scores_of(&inputs.batch, Pass::training(None))?;
                let margin = Margin::PerPair(inputs.margins.as_ref().unwrap().shallow_clone());
                let loss = scores.map(|scores| contrastive_loss(&scores[0], &margin, false));
                let detached = loss.detached();
                replicas.update(&mut adam, loss, 2.0)?;
                Ok(detached)
            };
            let loss = match graphs.as_deref_mut() {
                Some(graphs) => graphs.step(lr, inputs, step).unwrap(),
                None => {
                    let mut step = step;
                    step(&inputs).unwrap()
                }
            };
            losses.push(loss.double_value(&[]));
        }
        (losses, replicas.primary.state_dict())
    }

    /// Training steps through CUDA graphs (on the CPU, steps run again from the graphs' copies
    /// of their inputs) equal the same steps without graphs: the losses of each step and the
    /// variables after ten, with dynamic margins, clipping, three caption widths, a change of
    /// learning rate (which drops the graphs) and, on CUDA, dropout. The GPU check runs this test on the GPU,
    /// where the graphs are captured and replayed for real.
    #[test]
    fn graphed_steps_equal_steps_without_graphs_on_device() {
        let device = crate::device::test_device();
        let initial = model(device, None).state_dict();
        let (eager_losses, eager) = ten_steps(device, &initial, None);
        let mut graphs = StepGraphs::new(device).unwrap();
        let (graphed_losses, graphed) = ten_steps(device, &initial, Some(&mut graphs));
        // Widths 5 3 5 5 3 5 | 5 3 4 5: warm-ups of 5, 3 and 4; captures of 5 and 3, then of 5
        // and 3 again at the new rate; every step after a shape's first replayed.
        assert_eq!(graphs.counts, GraphCounts { warm_ups: 3, captures: 4, replays: 7 });
        // The same kernels on the same inputs; a GPU's atomic sums may round otherwise.
        let tolerance = if device.is_cuda() { 1e-5 } else { 0.0 };
        for (k, (a, b)) in eager_losses.iter().zip(&graphed_losses).enumerate() {
            assert!((a - b).abs() <= tolerance * a.abs().max(1.0), "step {k}: loss {a} without graphs, {b} with");
        }
        let mut worst = 0f64;
        for (name, value) in &eager {
            let diff = (value - &graphed[name]).abs().max().double_value(&[]);
            assert!(diff <= tolerance, "{name} differs by {diff}");
            worst = worst.max(diff);
        }
        let moved = eager.iter().map(|(n, v)| (v - &initial[n]).abs().max().double_value(&[])).fold(0f64, f64::max);
        assert!(moved > 1e-3, "the steps moved the weights ({moved})");
        assert!(eager_losses.windows(2).any(|w| w[0] != w[1]), "the steps saw different batches");
        println!(
            "{}: largest difference {worst:.1e} over ten steps",
            if device.is_cuda() { "CUDA graphs" } else { "CPU" }
        );
    }
}
