//! `text_feature.seq2vec`: the skip-thoughts sentence encoders (620-dim word embedding, GRU with
//! 2400 hidden units, output = hidden state after the last word).
//!
//! All variants compute the input side of every gate for all time steps in one matrix product
//! (dropout masks are constant over time) and loop only over the hidden side. In training, the
//! hidden-side weights get their gradient from one product over all steps after the backward
//! pass instead of one outer product per step: a training forward returns a [`Training`] that
//! only its `backward` backpropagates.

use anyhow::Result;
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::amp::{lower, to_fp32};
use super::fused_gru;
use super::layers::{linear, Embedding, Linear};
use super::packed::{PackedLinear, PACKED_ROWS};
use super::pass::Pass;
use super::training::{DeferredGradient, Training};
use crate::options::Seq2VecType;

/// Skip-thoughts word-embedding width.
pub const WORD_DIM: i64 = 620;
/// Skip-thoughts sentence-vector width (UniSkip hidden size; BiSkip 2 x 1200).
pub const SENTENCE_DIM: i64 = 2400;

/// The hidden state after step `lengths[b] - 1` of each row: `outputs` are `T` tensors `[B, H]`.
fn select_last(outputs: &[Tensor], lengths: &Tensor) -> Tensor {
    let stacked = Tensor::stack(outputs, 1);
    let (b, _, h) = stacked.size3().expect("[B, T, H]");
    let index = (lengths - 1).view([b, 1, 1]).expand([b, 1, h], false);
    stacked.gather(1, &index, false).squeeze_dim(1)
}

/// The hidden-side weights of a recurrence, `k` of them stacked and used at every step: `[k, B, in]`
/// → `[k, B, out]`, one batched product per step. When gradients are wanted, each step multiplies
/// by detached weights and adds a zero-valued leaf `sink[t]` (`[k, B, out]`, one slice of a
/// `[T, k, B, out]` tensor); autograd then leaves dL/du_t in `sink.grad[t]`, and each weight's
/// gradient is the single product `Σ_t sink.grad[t, g]ᵀ x_{t, g}` ([`DeferredGradient`]). The
/// values are those of `x_t Wᵀ`, and so are the gradients, up to summation order. In a 16-bit
/// `precision` (`optim.amp`) the products round their operands to it and return fp32, as linear
/// layers do: the state and the gates stay fp32.
struct HiddenProjection {
    weights: Vec<Tensor>,
    /// The detached weights, `[k, in, out]`, in `precision` when one is given.
    transposed: Tensor,
    precision: Option<Kind>,
    sink: Option<Tensor>,
    sinks: Vec<Tensor>,
    inputs: Vec<Tensor>,
}

impl HiddenProjection {
    /// `weights` `[out, in]` each, `stacked` the same values as `[k, out, in]`; a sink when
    /// training a `[k, B, in]` x `steps` recurrence; products in the pass's precision.
    fn new(weights: &[&Tensor], stacked: &Tensor, steps: i64, batch: i64, pass: Pass) -> HiddenProjection {
        let (k, out) = (weights.len() as i64, weights[0].size()[0]);
        let sink = (pass.train && weights.iter().all(|w| w.requires_grad())).then(|| {
            Tensor::zeros([steps, k, batch, out], (weights[0].kind(), weights[0].device())).set_requires_grad(true)
        });
        let sinks = sink.as_ref().map_or_else(Vec::new, |s| s.unbind(0));
        HiddenProjection {
            weights: weights.iter().map(|w| w.shallow_clone()).collect(),
            transposed: lower(&stacked.detach().transpose(1, 2), pass.precision),
            precision: pass.precision,
            sink,
            sinks,
            inputs: Vec::new(),
        }
    }

    /// `x_g W_gᵀ` for step `t` and every weight `g`: `[k, B, in]` → `[k, B, out]`.
    fn apply(&mut self, t: i64, x: &Tensor) -> Tensor {
        // The weights were lowered once in `new`; only the step's state is rounded here.
        let product = |x: &Tensor| to_fp32(lower(x, self.precision).bmm(&self.transposed));
        match self.sinks.get(t as usize) {
            Some(sink) => {
                self.inputs.push(x.detach());
                match self.precision {
                    None => sink.baddbmm(x, &self.transposed, 1.0, 1.0),
                    Some(_) => sink + product(x),
                }
            }
            None => product(x),
        }
    }

    fn into_deferred(self) -> Option<DeferredGradient> {
        let sink = self.sink?;
        let inputs = Tensor::stack(&self.inputs, 0);
        Some(DeferredGradient { weights: self.weights, sink, inputs, precision: self.precision })
    }
}

/// The rows `[k, out, in]` of `base` when `weights` are its consecutive `[out, in]` row blocks
/// (no copy), else the weights stacked.
fn stacked(base: &Tensor, weights: &[&Tensor]) -> Tensor {
    let out = weights[0].size()[0];
    let shared =
        weights.iter().enumerate().all(|(g, w)| w.data_ptr() == base.narrow(0, g as i64 * out, out).data_ptr());
    if shared {
        base.view([weights.len() as i64, out, -1])
    } else {
        Tensor::stack(weights, 0)
    }
}

/// A variational dropout mask of `shape`: Bernoulli(1 - p) / (1 - p).
fn dropout_mask(p: f64, shape: [i64; 2], like: &Tensor) -> Tensor {
    Tensor::empty(shape, (Kind::Float, like.device())).bernoulli_float_(1.0 - p) / (1.0 - p)
}

/// `rnn.gru_cell.*` of BayesianUniSkip: six projections, the input ones with bias. The three
/// input weights (and biases) are rows of one `[3H, 620]` tensor and the three hidden weights
/// rows of one `[3H, H]` tensor, so inference uses them without copying; each projection is a
/// separate parameter (a view of those rows) with its original name.
#[derive(Debug)]
pub struct BayesianGruCell {
    pub weight_ir: Linear,
    pub weight_ii: Linear,
    pub weight_in: Linear,
    pub weight_hr: Linear,
    pub weight_hi: Linear,
    pub weight_hn: Linear,
    input_weight: Tensor,
    input_bias: Tensor,
    hidden_weight: Tensor,
    /// The three hidden weights packed for inference on a few captions ([`Seq2Vec::pack_hidden_weights`]).
    packed: Option<PackedLinear>,
}

impl BayesianGruCell {
    /// PyTorch's `nn.Linear` initialisation (uniform ±1/√in) for every projection.
    fn new(vs: &Path) -> BayesianGruCell {
        let h = SENTENCE_DIM;
        let options = (Kind::Float, vs.device());
        let uniform = |dims: &[i64], input: i64| {
            let bound = 1.0 / (input as f64).sqrt();
            Tensor::empty(dims, options).uniform_(-bound, bound)
        };
        let input_weight = uniform(&[3 * h, WORD_DIM], WORD_DIM);
        let input_bias = uniform(&[3 * h], WORD_DIM);
        let hidden_weight = uniform(&[3 * h, h], h);
        let part = |t: &Tensor, g: i64| t.narrow(0, g * h, h);
        let input = |name: &str, g: i64| Linear {
            weight: (vs / name).add("weight", part(&input_weight, g), true),
            bias: Some((vs / name).add("bias", part(&input_bias, g), true)),
        };
        let hidden = |name: &str, g: i64| Linear {
            weight: (vs / name).add("weight", part(&hidden_weight, g), true),
            bias: None,
        };
        BayesianGruCell {
            weight_ir: input("weight_ir", 0),
            weight_ii: input("weight_ii", 1),
            weight_in: input("weight_in", 2),
            weight_hr: hidden("weight_hr", 0),
            weight_hi: hidden("weight_hi", 1),
            weight_hn: hidden("weight_hn", 2),
            input_weight,
            input_bias,
            hidden_weight,
            packed: None,
        }
    }

    /// Every step's state for `x` `[B, T, 620]`. In training each of the six gate inputs gets
    /// its own dropout mask, drawn once and reused at every step; in inference the three input
    /// projections and the three hidden projections are each one matrix product.
    fn run(&self, x: &Tensor, p: f64, pass: Pass, deferred: &mut Vec<DeferredGradient>) -> Vec<Tensor> {
        if pass.train {
            self.train(x, p, pass, deferred)
        } else {
            self.infer(x)
        }
    }

    /// The inference recurrence: the three input projections in one product for all steps,
    /// the three hidden projections in one product per step.
    fn infer(&self, x: &Tensor) -> Vec<Tensor> {
        let (b, steps, _) = x.size3().expect("[B, T, 620]");
        let mut h = Tensor::zeros([b, SENTENCE_DIM], (x.kind(), x.device()));
        let mut outputs = Vec::with_capacity(steps as usize);
        for (t, gates) in x.linear(&self.input_weight, Some(&self.input_bias)).unbind(1).iter().enumerate() {
            // The state starts at zero, so the first hidden projection is zero too.
            let projected = if t == 0 {
                Tensor::zeros([b, 3 * SENTENCE_DIM], (x.kind(), x.device()))
            } else {
                match suited(&self.packed, b) {
                    Some(packed) => packed.forward(&h),
                    None => h.linear::<Tensor>(&self.hidden_weight, None),
                }
            };
            h = gru_row_step(gates, &projected, &h);
            outputs.push(h.shallow_clone());
        }
        outputs
    }

    /// The training recurrence: the input side of each gate for all steps in one product (laid
    /// out `[B, T, 3H]`, gates r, z, n), then per step one batched product for the three hidden
    /// projections (`[3, B, H]`, each gate's masked state), its rows `[B, 3H]` and one update
    /// ([`gru_train_step`]). Each of the six gate inputs gets its own dropout mask (drawn in the
    /// order ir, ii, in, hr, hi, hn), reused at every step.
    fn train(&self, x: &Tensor, p: f64, pass: Pass, deferred: &mut Vec<DeferredGradient>) -> Vec<Tensor> {
        let (b, steps, _) = x.size3().expect("[B, T, 620]");
        let masks = |dim| (p > 0.0).then(|| [0, 1, 2].map(|_| dropout_mask(p, [b, dim], x)));
        let (input_masks, hidden_masks) = (masks(WORD_DIM), masks(SENTENCE_DIM).map(|m| Tensor::stack(&m, 0)));
        let projected: Vec<Tensor> = [&self.weight_ir, &self.weight_ii, &self.weight_in]
            .into_iter()
            .enumerate()
            .map(|(g, l)| match &input_masks {
                Some(m) => l.forward(&(x * m[g].unsqueeze(1)), pass),
                None => l.forward(x, pass),
            })
            .collect();
        let gates = Tensor::stack(&projected, 2).view([b, steps, 3 * SENTENCE_DIM]).unbind(1);
        let hidden = [&self.weight_hr.weight, &self.weight_hi.weight, &self.weight_hn.weight];
        let mut projection = HiddenProjection::new(&hidden, &stacked(&self.hidden_weight, &hidden), steps, b, pass);
        let mut h = Tensor::zeros([b, SENTENCE_DIM], (x.kind(), x.device()));
        let mut outputs = Vec::with_capacity(steps as usize);
        for (t, gates) in gates.iter().enumerate() {
            let input = match &hidden_masks {
                Some(m) => h.unsqueeze(0) * m,
                None => h.unsqueeze(0).expand([3, b, SENTENCE_DIM], false),
            };
            let hidden = projection.apply(t as i64, &input).permute([1, 0, 2]).reshape([b, 3 * SENTENCE_DIM]);
            h = gru_train_step(gates, &hidden, &h);
            outputs.push(h.shallow_clone());
        }
        deferred.extend(projection.into_deferred());
        outputs
    }
}

/// The packed weight when one is held and a product of `rows` rows is faster with it: 2 to
/// `2 x PACKED_ROWS` rows (one row is a matrix-vector product, and larger batches pack cheaply
/// for themselves).
fn suited(packed: &Option<PackedLinear>, rows: i64) -> Option<&PackedLinear> {
    packed.as_ref().filter(|_| (2..=2 * PACKED_ROWS).contains(&rows))
}

/// One step of a training recurrence from the gate pre-activations `x`, `u` `[B, 3H]` (input and
/// hidden side, gates r, z, n) and the state `carry` `[B, H]` it interpolates with: on CUDA
/// PyTorch's fused GRU cell (one kernel forward and one backward, where [`gru_row_step`] launches
/// about ten each way; the same function rounded in another order, docs/PARITY.md), elsewhere
/// [`gru_row_step`]. Inference keeps [`gru_row_step`] everywhere, the original's arithmetic.
fn gru_train_step(x: &Tensor, u: &Tensor, carry: &Tensor) -> Tensor {
    if fused_gru::available(x.device()) {
        fused_gru::step(x, u, carry)
    } else {
        gru_row_step(x, u, carry)
    }
}

/// One GRU step from the gate pre-activations `x`, `u` `[B, 3H]` (input and hidden side, gates
/// r, z, n) and the state `carry` `[B, H]` it interpolates with; r and z take one sum and one
/// sigmoid together.
fn gru_row_step(x: &Tensor, u: &Tensor, carry: &Tensor) -> Tensor {
    let h = carry.size()[1];
    let split = |t: &Tensor| -> [Tensor; 2] { t.split_with_sizes([2 * h, h], 1).try_into().expect("r and z, n") };
    let ([xrz, xn], [urz, un]) = (split(x), split(u));
    let [r, z]: [Tensor; 2] = (xrz + urz).sigmoid().split(h, 1).try_into().expect("r, z");
    gru_update(&r, z, &xn, &un, carry)
}

/// With `r = σ(x_r + u_r)` and `z = σ(x_z + u_z)`: `n = tanh(x_n + r ⊙ u_n)`,
/// `h' = (1 − z) ⊙ n + z ⊙ carry`.
fn gru_update(r: &Tensor, z: Tensor, xn: &Tensor, un: &Tensor, carry: &Tensor) -> Tensor {
    let n = (xn + r * un).tanh();
    (1.0 - &z) * n + z * carry
}

/// PyTorch `nn.GRU` / `nn.GRUCell` weights: `[3H, in]`, `[3H, H]`, biases `[3H]`, gates r, z, n.
#[derive(Debug)]
pub struct GruWeights {
    pub weight_ih: Tensor,
    pub weight_hh: Tensor,
    pub bias_ih: Tensor,
    pub bias_hh: Tensor,
    /// `weight_hh` packed for inference on a few captions ([`Seq2Vec::pack_hidden_weights`]).
    packed: Option<PackedLinear>,
}

impl GruWeights {
    /// `suffix` is `_l0`, `_l0_reverse` (nn.GRU) or empty (nn.GRUCell); init uniform ±1/√H.
    fn new(vs: &Path, suffix: &str, input: i64, hidden: i64) -> GruWeights {
        let b = 1.0 / (hidden as f64).sqrt();
        let init = Init::Uniform { lo: -b, up: b };
        GruWeights {
            weight_ih: vs.var(&format!("weight_ih{suffix}"), &[3 * hidden, input], init),
            weight_hh: vs.var(&format!("weight_hh{suffix}"), &[3 * hidden, hidden], init),
            bias_ih: vs.var(&format!("bias_ih{suffix}"), &[3 * hidden], init),
            bias_hh: vs.var(&format!("bias_hh{suffix}"), &[3 * hidden], init),
            packed: None,
        }
    }

    /// Runs the GRU over `x` `[B, T, in]` (inputs multiplied by `x_mask`, hidden states by
    /// `h_mask` before use, as DropUniSkip does) and returns every step's state; the input and
    /// hidden products in the pass's precision.
    fn run(
        &self,
        x: &Tensor,
        x_mask: &Option<Tensor>,
        h_mask: &Option<Tensor>,
        pass: Pass,
        deferred: &mut Vec<DeferredGradient>,
    ) -> Vec<Tensor> {
        let (b, steps, _) = x.size3().expect("[B, T, in]");
        let (hidden, train) = (self.weight_hh.size()[1], pass.train);
        let x = match x_mask {
            Some(m) => x * m.unsqueeze(1),
            None => x.shallow_clone(),
        };
        let gates = linear(&x, &self.weight_ih, Some(&self.bias_ih), pass).unbind(1);
        let hh = [&self.weight_hh];
        let mut projection = HiddenProjection::new(&hh, &self.weight_hh.unsqueeze(0), steps, b, pass);
        let mut h = Tensor::zeros([b, hidden], (x.kind(), x.device()));
        let mut outputs = Vec::with_capacity(steps as usize);
        for (t, gates) in gates.iter().enumerate() {
            let hd = match h_mask {
                Some(m) => &h * m,
                None => h.shallow_clone(),
            };
            let projected = match suited(&self.packed, b).filter(|_| !train) {
                Some(packed) => packed.forward(&hd),
                None => projection.apply(t as i64, &hd.unsqueeze(0)).squeeze_dim(0),
            } + &self.bias_hh;
            h = match train {
                true => gru_train_step(gates, &projected, &hd),
                false => gru_row_step(gates, &projected, &hd),
            };
            outputs.push(h.shallow_clone());
        }
        deferred.extend(projection.into_deferred());
        outputs
    }
}

/// One skip-thoughts encoder variant (`model.seq2vec.type`).
#[derive(Debug)]
pub enum Encoder {
    /// GRU with variational dropout on each of the six gate inputs (the default).
    BayesianUniSkip(BayesianGruCell),
    /// Plain `nn.GRU` (dropout has no effect on one layer).
    UniSkip(GruWeights),
    /// `nn.GRUCell` with one dropout mask on the inputs and one on the hidden state.
    DropUniSkip(GruWeights),
    /// Bidirectional `nn.GRU`, 2 x 1200 hidden units, final states concatenated.
    BiSkip(GruWeights, GruWeights),
}

impl Encoder {
    /// The `seq2vec.type` this encoder is.
    pub fn kind(&self) -> Seq2VecType {
        match self {
            Encoder::BayesianUniSkip(_) => Seq2VecType::BayesianUniSkip,
            Encoder::UniSkip(_) => Seq2VecType::UniSkip,
            Encoder::DropUniSkip(_) => Seq2VecType::DropUniSkip,
            Encoder::BiSkip(..) => Seq2VecType::BiSkip,
        }
    }
}

/// `text_feature.seq2vec`: word embedding plus a skip-thoughts encoder.
#[derive(Debug)]
pub struct Seq2Vec {
    pub embedding: Embedding,
    pub encoder: Encoder,
    pub kind: Seq2VecType,
    dropout: f64,
}

impl Seq2Vec {
    /// `vocab_size` words (ids 1..=vocab_size, 0 = padding).
    pub fn new(vs: Path, kind: Seq2VecType, vocab_size: i64, dropout: f64, fixed_emb: bool) -> Seq2Vec {
        let embedding = Embedding::new(&vs / "embedding", vocab_size + 1, WORD_DIM, !fixed_emb);
        let rnn = &vs / "rnn";
        let encoder = match kind {
            Seq2VecType::BayesianUniSkip => Encoder::BayesianUniSkip(BayesianGruCell::new(&(&rnn / "gru_cell"))),
            Seq2VecType::UniSkip => Encoder::UniSkip(GruWeights::new(&rnn, "_l0", WORD_DIM, SENTENCE_DIM)),
            Seq2VecType::DropUniSkip => Encoder::DropUniSkip(GruWeights::new(&rnn, "", WORD_DIM, SENTENCE_DIM)),
            Seq2VecType::BiSkip => Encoder::BiSkip(
                GruWeights::new(&rnn, "_l0", WORD_DIM, SENTENCE_DIM / 2),
                GruWeights::new(&rnn, "_l0_reverse", WORD_DIM, SENTENCE_DIM / 2),
            ),
        };
        Seq2Vec { embedding, encoder, kind, dropout }
    }

    /// Packs the hidden-side GRU weights for inference on a few captions at a time on the CPU
    /// (MKL's packed GEMM, [`PackedLinear`]): a search service encoding a handful of queries
    /// together. Nothing is packed off the CPU or where libtorch has no MKL. The packed copy does
    /// not follow later changes of the weights: only a model that is no longer trained is packed.
    pub fn pack_hidden_weights(&mut self) -> Result<()> {
        match &mut self.encoder {
            Encoder::BayesianUniSkip(cell) => cell.packed = PackedLinear::new(&cell.hidden_weight)?,
            Encoder::UniSkip(w) | Encoder::DropUniSkip(w) => w.packed = PackedLinear::new(&w.weight_hh)?,
            Encoder::BiSkip(forward, backward) => {
                forward.packed = PackedLinear::new(&forward.weight_hh)?;
                backward.packed = PackedLinear::new(&backward.weight_hh)?;
            }
        }
        Ok(())
    }

    /// ids `[B, L]` (0-padded), lengths `[B]` (1 to `L`) → sentence vectors `[B, 2400]`; in
    /// training mode with dropout and the hidden-side weight gradients deferred. The recurrence
    /// runs `L` steps, known without reading the device (a GPU queues the whole pass): callers
    /// pad to the longest caption, as the data loader's `pad_captions` does; wider ids give the same
    /// vectors after steps that change nothing.
    pub fn forward(&self, ids: &Tensor, lengths: &Tensor, pass: Pass) -> Training<Tensor> {
        let steps = ids.size()[1];
        let x = ids.apply(&self.embedding);
        let b = x.size()[0];
        let p = self.dropout;
        let mut deferred = Vec::new();
        let out = match &self.encoder {
            Encoder::BayesianUniSkip(cell) => select_last(&cell.run(&x, p, pass, &mut deferred), lengths),
            Encoder::UniSkip(w) => select_last(&w.run(&x, &None, &None, pass, &mut deferred), lengths),
            Encoder::DropUniSkip(w) => {
                let dropout = pass.train && p > 0.0;
                let x_mask = dropout.then(|| dropout_mask(p, [b, WORD_DIM], &x));
                let h_mask = dropout.then(|| dropout_mask(p, [b, SENTENCE_DIM], &x));
                select_last(&w.run(&x, &x_mask, &h_mask, pass, &mut deferred), lengths)
            }
            Encoder::BiSkip(forward, backward) => {
                let fwd = select_last(&forward.run(&x, &None, &None, pass, &mut deferred), lengths);
                let reversed = x.gather(1, &reverse_within_length(lengths, steps, WORD_DIM), false);
                let bwd = select_last(&backward.run(&reversed, &None, &None, pass, &mut deferred), lengths);
                Tensor::cat(&[fwd, bwd], 1)
            }
        };
        Training::new(out, deferred)
    }
}

/// Gather index `[B, T, dim]` that reverses each row's first `lengths[b]` steps (padding stays
/// after them), so a forward pass over the result is the reverse direction of a packed GRU.
fn reverse_within_length(lengths: &Tensor, steps: i64, dim: i64) -> Tensor {
    let b = lengths.size()[0];
    let t = Tensor::arange(steps, (Kind::Int64, lengths.device())).unsqueeze(0).expand([b, steps], false);
    let len = lengths.unsqueeze(1);
    let reversed = &len - 1 - &t;
    let index = reversed.where_self(&t.lt_tensor(&len), &t);
    index.unsqueeze(2).expand([b, steps, dim], false)
}

#[cfg(test)]
mod tests {
    use tch::nn::VarStore;
    use tch::Device;

    use super::*;

    /// Sentence vectors and gradients of one training pass of `kind` without dropout (each
    /// device draws its masks from its own generator) on `device`, with `weights`' values.
    fn training_pass(kind: Seq2VecType, weights: &VarStore, device: Device) -> Vec<Tensor> {
        let mut vs = VarStore::new(device);
        let encoder = Seq2Vec::new(vs.root(), kind, 30, 0.0, false);
        vs.copy(weights).unwrap();
        let ids = Tensor::from_slice(&[3i64, 7, 1, 9, 4, 2, 8, 0, 5, 6, 0, 0]).view([3, 4]).to_device(device);
        let lengths = Tensor::from_slice(&[4i64, 3, 2]).to_device(device);
        let weight = Tensor::linspace(-1.0, 1.0, 3 * SENTENCE_DIM, (Kind::Float, device)).view([3, SENTENCE_DIM]);
        let out = encoder.forward(&ids, &lengths, Pass::training(None));
        let vectors = out.detached();
        out.map(|t| (t * &weight).sum(Kind::Float)).backward();
        let mut all = vec![vectors];
        all.extend(vs.trainable_variables().iter().map(|v| v.grad()));
        all.iter().map(|t| t.to_device(Device::Cpu)).collect()
    }

    /// The training recurrences on the test device (on CUDA through PyTorch's fused GRU cell)
    /// equal the CPU's composite ones: sentence vectors and every gradient, for the two ways the
    /// hidden side is laid out (BayesianUniSkip's three masked products, UniSkip's one). On the
    /// CPU both sides run the composite step; the check is the GPU's (exec/gpu_check.sh).
    #[test]
    fn training_recurrences_on_device_equal_the_cpu_ones() {
        for kind in [Seq2VecType::BayesianUniSkip, Seq2VecType::UniSkip] {
            tch::manual_seed(5);
            let weights = VarStore::new(Device::Cpu);
            let _ = Seq2Vec::new(weights.root(), kind, 30, 0.0, false);
            let on_device = training_pass(kind, &weights, crate::device::test_device());
            let on_cpu = training_pass(kind, &weights, Device::Cpu);
            for (i, (a, b)) in on_device.iter().zip(&on_cpu).enumerate() {
                let scale = b.abs().max().double_value(&[]).max(1e-6);
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff <= 1e-5 * scale, "{kind:?} tensor {i}: differs by {diff:e} (largest {scale:e})");
            }
        }
    }
}
