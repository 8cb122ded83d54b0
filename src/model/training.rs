//! The output of a forward pass together with the gradients it defers. The skip-thoughts
//! recurrence uses each hidden-side weight at every step; in training, instead of one outer
//! product per step, it computes that weight's gradient in one product over all steps after the
//! backward pass ([`super::seq2vec`]). Only [`Training::backward`] backpropagates from such an
//! output, and it adds those gradients: the value itself is reachable only detached, so a plain
//! `loss.backward()` that would silently miss them cannot be written. The same holds for an output
//! computed from codes gathered from several processes: its backward continues into this
//! process's share of them ([`Training::continued`]).

use tch::{Kind, Tensor};

use super::amp::{to_fp32, within};

/// The deferred gradients of `k` hidden-side weights used at every step:
/// `dW_g = Σ_t sink.grad[t, g]ᵀ x_{t, g}`, where the forward pass added the zero-valued leaf
/// `sink[t]` to each step's `x_t Wᵀ` (computed with detached weights) so that autograd leaves
/// dL/du_t in `sink.grad[t]`.
#[derive(Debug)]
pub(super) struct DeferredGradient {
    /// The `k` weights, `[out, in]` each.
    pub(super) weights: Vec<Tensor>,
    /// `[T, k, B, out]`.
    pub(super) sink: Tensor,
    /// `x_{t, g}` of every step, `[T, k, B, in]`.
    pub(super) inputs: Tensor,
    /// The 16-bit kind the product rounds its operands to (`optim.amp`), as the forward's did.
    pub(super) precision: Option<Kind>,
}

impl DeferredGradient {
    /// Adds `Σ_t sink.grad[t, g]ᵀ x_{t, g}` to each weight's gradient: one batched product, then
    /// [`add_to_gradient`].
    fn apply(self) {
        let grad = self.sink.grad();
        if !grad.defined() {
            return;
        }
        let (k, out, input) = (self.weights.len() as i64, grad.size()[3], self.inputs.size()[3]);
        let dw = tch::no_grad(|| {
            let grad = grad.permute([1, 3, 0, 2]).reshape([k, out, -1]);
            let inputs = self.inputs.permute([1, 0, 2, 3]).reshape([k, -1, input]);
            to_fp32(within(&grad, &inputs, None, self.precision, |g, x, _| g.bmm(x)))
        });
        for (weight, dw) in self.weights.iter().zip(dw.unbind(0)) {
            add_to_gradient(weight, &dw);
        }
    }
}

/// Adds `grad` (on `param`'s device) into `param`'s gradient: in place when it has one, else
/// through autograd (d(param · grad)/d param = grad), which creates it.
pub fn add_to_gradient(param: &Tensor, grad: &Tensor) {
    let mut existing = param.grad();
    if existing.defined() {
        let _ = tch::no_grad(|| existing.g_add_(grad));
    } else {
        tch::with_grad(|| (param * grad).sum(Kind::Float).backward());
    }
}

/// Where an output computed from gathered copies of this process's codes continues: the codes
/// `branch` (`[b, d]` each, still in their graph) were copied, detached, into rows
/// `start..start + b` of the leaves `gathered`; once the output's backward has filled the leaves'
/// gradients, the branch backpropagates those rows, multiplied by `scale`.
#[derive(Debug)]
struct Branch {
    gathered: Vec<Tensor>,
    start: i64,
    scale: f64,
    branch: Training<Vec<Tensor>>,
}

impl Branch {
    fn apply(self) {
        let (gathered, start, scale) = (self.gathered, self.start, self.scale);
        self.branch
            .map(|codes| {
                let terms = codes.iter().zip(&gathered).filter_map(|(code, leaf)| {
                    let grad = leaf.grad();
                    grad.defined().then(|| (code * grad.narrow(0, start, code.size()[0]) * scale).sum(Kind::Float))
                });
                terms.fold(Tensor::zeros([], (Kind::Float, codes[0].device())), |a, b| a + b)
            })
            .backward();
    }
}

/// What a training output's backward does after autograd's.
#[derive(Debug)]
enum Deferred {
    Gradient(DeferredGradient),
    Branch(Box<Branch>),
}

/// A forward pass's output `T` with the gradients it defers (none in evaluation mode).
#[must_use = "backpropagate a training forward's output with Training::backward"]
#[derive(Debug)]
pub struct Training<T> {
    value: T,
    deferred: Vec<Deferred>,
}

impl<T> Training<T> {
    pub(super) fn new(value: T, deferred: Vec<DeferredGradient>) -> Training<T> {
        Training { value, deferred: deferred.into_iter().map(Deferred::Gradient).collect() }
    }

    /// An output that defers nothing.
    pub fn plain(value: T) -> Training<T> {
        Training { value, deferred: Vec::new() }
    }

    /// The output mapped by `f` (the loss of scores), still with the deferred gradients.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Training<U> {
        Training { value: f(self.value), deferred: self.deferred }
    }

    /// Both outputs, with the gradients both defer.
    pub fn zip<U>(mut self, other: Training<U>) -> Training<(T, U)> {
        self.deferred.extend(other.deferred);
        Training { value: (self.value, other.value), deferred: self.deferred }
    }

    /// Several outputs as one.
    pub fn collect(items: impl IntoIterator<Item = Training<T>>) -> Training<Vec<T>> {
        let (mut values, mut deferred) = (Vec::new(), Vec::new());
        for item in items {
            values.push(item.value);
            deferred.extend(item.deferred);
        }
        Training { value: values, deferred }
    }

    /// The output of a pass that deferred nothing (evaluation mode). Panics on a training pass's
    /// output, whose gradients only [`Training::backward`] completes.
    pub fn evaluated(self) -> T {
        assert!(self.deferred.is_empty(), "a training forward's output is backpropagated with Training::backward");
        self.value
    }
}

impl Training<Vec<Tensor>> {
    /// The values, detached from the graph (to copy them elsewhere).
    pub fn detached(&self) -> Vec<Tensor> {
        self.value.iter().map(Tensor::detach).collect()
    }

    /// `value`, computed from the leaves `gathered` into which these codes were copied (detached)
    /// at rows `start..`: its backward, after filling the leaves' gradients, backpropagates
    /// `scale` times their rows through these codes' graph.
    pub fn continued<U>(self, value: U, gathered: Vec<Tensor>, start: i64, scale: f64) -> Training<U> {
        let branch = Branch { gathered, start, scale, branch: self };
        Training { value, deferred: vec![Deferred::Branch(Box::new(branch))] }
    }
}

impl Training<Tensor> {
    /// Backpropagates into every parameter's gradient, the deferred ones included.
    pub fn backward(self) {
        self.value.backward();
        for deferred in self.deferred {
            match deferred {
                Deferred::Gradient(gradient) => gradient.apply(),
                Deferred::Branch(branch) => branch.apply(),
            }
        }
    }

    /// The value, detached from the graph (to read or log it).
    pub fn detached(&self) -> Tensor {
        self.value.detach()
    }
}
