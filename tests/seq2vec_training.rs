//! BayesianUniSkip's training pass (gates stacked, hidden-weight gradients deferred) against the
//! same encoder written out step by step with plain autograd, dropout on; and every encoder's
//! training pass in bf16 against fp32 (no dropout). Apart from other tests' binaries, and one at
//! a time: the first reseeds libtorch's global generator to draw the same masks twice, which a
//! test running beside it in another thread could interleave with.

use amfmn::model::layers::Linear;
use amfmn::model::seq2vec::{BayesianGruCell, Encoder, Seq2Vec, SENTENCE_DIM, WORD_DIM};
use amfmn::model::Pass;
use amfmn::options::Seq2VecType;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// One test at a time: one reseeds libtorch's global generator, the other counts the operators
/// every thread dispatches.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A variational dropout mask, as the encoder draws it: Bernoulli(1 - p) / (1 - p).
fn dropout_mask(p: f64, shape: [i64; 2]) -> Tensor {
    Tensor::empty(shape, (Kind::Float, Device::Cpu)).bernoulli_float_(1.0 - p) / (1.0 - p)
}

/// BayesianUniSkip with plain autograd (every weight used directly, nothing stacked or
/// deferred), the masks drawn in the encoder's order (ir, ii, in, hr, hi, hn); the state after
/// each row's last word.
fn plain_bayesian(cell: &BayesianGruCell, x: &Tensor, lengths: &Tensor, p: f64) -> Tensor {
    let (b, steps, _) = x.size3().unwrap();
    let masks = |dim| [0, 1, 2].map(|_| dropout_mask(p, [b, dim]));
    let (xm, hm) = (masks(WORD_DIM), masks(SENTENCE_DIM));
    let input = |l: &Linear, g: usize| (x * xm[g].unsqueeze(1)).linear(&l.weight, l.bias.as_ref());
    let (xr, xz, xn) = (input(&cell.weight_ir, 0), input(&cell.weight_ii, 1), input(&cell.weight_in, 2));
    let mut h = Tensor::zeros([b, SENTENCE_DIM], (Kind::Float, Device::Cpu));
    let mut outputs = Vec::new();
    for t in 0..steps {
        let hidden = |l: &Linear, g: usize| (&h * &hm[g]).matmul(&l.weight.tr());
        let r = (xr.select(1, t) + hidden(&cell.weight_hr, 0)).sigmoid();
        let z = (xz.select(1, t) + hidden(&cell.weight_hi, 1)).sigmoid();
        let n = (xn.select(1, t) + r * hidden(&cell.weight_hn, 2)).tanh();
        h = (1.0 - &z) * n + z * &h;
        outputs.push(h.shallow_clone());
    }
    let index = (lengths - 1).view([b, 1, 1]).expand([b, 1, SENTENCE_DIM], false);
    Tensor::stack(&outputs, 1).gather(1, &index, false).squeeze_dim(1)
}

#[test]
fn stacked_deferred_training_equals_plain_autograd() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let vs = VarStore::new(Device::Cpu);
    let encoder = Seq2Vec::new(vs.root(), Seq2VecType::BayesianUniSkip, 30, 0.25, false);
    let Encoder::BayesianUniSkip(cell) = &encoder.encoder else { unreachable!() };
    let ids = Tensor::from_slice(&[3i64, 7, 1, 9, 4, 2, 8, 0, 5, 6, 0, 0]).view([3, 4]);
    let lengths = Tensor::from_slice(&[4i64, 3, 2]);
    let weight = Tensor::randn([3, SENTENCE_DIM], (Kind::Float, Device::Cpu));
    let grads = || -> Vec<Tensor> { vs.trainable_variables().iter().map(|v| v.grad().copy()).collect() };
    // Twice, so that the second backward adds into gradients the first created.
    for _ in 0..2 {
        tch::manual_seed(11);
        encoder.forward(&ids, &lengths, Pass::training(None)).map(|t| (t * &weight).sum(Kind::Float)).backward();
    }
    let ours = grads();
    vs.trainable_variables().iter().for_each(|v| {
        let _ = v.grad().zero_();
    });
    for _ in 0..2 {
        tch::manual_seed(11);
        let x = ids.narrow(1, 0, 4).apply(&encoder.embedding);
        (plain_bayesian(cell, &x, &lengths, 0.25) * &weight).sum(Kind::Float).backward();
    }
    // The two sum the same products in another order, and MKL's own order varies from run to
    // run with the alignment of its buffers: 1.1e-5 of the largest entry was seen once. A wrong
    // mask differs by as much as the gradient itself (tried: 4.2 against 3.8).
    for (ours, plain) in ours.iter().zip(grads()) {
        let scale = plain.abs().max().double_value(&[]).max(1e-6);
        let diff = (ours - &plain).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "gradient differs by {diff:e} (largest {scale:e})");
    }
}

/// The sentence vectors and every gradient of one training pass of `encoder` in `precision`,
/// with the ATen operators it dispatched (forward, backward, deferred weight gradients).
fn pass_in(encoder: &Seq2Vec, vs: &VarStore, precision: Option<Kind>) -> (Vec<Tensor>, amfmn::profile::OpCount) {
    let ids = Tensor::from_slice(&[3i64, 7, 1, 9, 4, 2, 8, 0, 5, 6, 0, 0]).view([3, 4]);
    let lengths = Tensor::from_slice(&[4i64, 3, 2]);
    let weight = Tensor::linspace(-1.0, 1.0, 3 * SENTENCE_DIM, (Kind::Float, Device::Cpu)).view([3, SENTENCE_DIM]);
    for v in vs.trainable_variables() {
        let grad = v.grad();
        if grad.defined() {
            let _ = grad.detach().zero_();
        }
    }
    let (vectors, ops) = amfmn::profile::count_ops(|| {
        let out = encoder.forward(&ids, &lengths, Pass::training(precision));
        let vectors = out.detached();
        out.map(|t| (t * &weight).sum(Kind::Float)).backward();
        vectors
    })
    .unwrap();
    let mut all = vec![vectors];
    all.extend(vs.trainable_variables().iter().map(|v| v.grad().copy()));
    (all, ops)
}

/// In bf16 (`optim.amp: bf16`) every product of the text encoder's training pass runs on 16-bit
/// operands, as under PyTorch's autocast: the input side, each step's hidden side, their backward
/// and the deferred hidden-weight gradients; the state and the gates stay fp32, so the vectors
/// and gradients stay within 2 % of fp32's (of the largest value) without equalling them.
#[test]
fn in_bf16_every_product_of_the_text_encoder_is_16_bit() {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    for kind in [Seq2VecType::BayesianUniSkip, Seq2VecType::UniSkip, Seq2VecType::DropUniSkip, Seq2VecType::BiSkip] {
        let vs = VarStore::new(Device::Cpu);
        let encoder = Seq2Vec::new(vs.root(), kind, 30, 0.0, false);
        let (fp32, fp32_ops) = pass_in(&encoder, &vs, None);
        let (bf16, bf16_ops) = pass_in(&encoder, &vs, Some(Kind::BFloat16));
        assert_eq!(fp32_ops.products().1, 0, "{kind:?} in fp32: {:?}", fp32_ops.by_input_type);
        let (products, sixteen_bit) = bf16_ops.products();
        assert!(products > 0 && sixteen_bit == products, "{kind:?}: {:?}", bf16_ops.by_input_type);
        let mut changed = false;
        for (i, (a, b)) in bf16.iter().zip(&fp32).enumerate() {
            assert_eq!(a.kind(), Kind::Float, "{kind:?} tensor {i} is fp32");
            let scale = b.abs().max().double_value(&[]).max(1e-12);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff <= 0.02 * scale, "{kind:?} tensor {i}: {diff:e} of {scale:e}");
            changed |= diff > 0.0;
        }
        assert!(changed, "{kind:?}: bf16 changed nothing");
    }
}
