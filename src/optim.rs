//! Adam as `torch.optim.Adam` computes it, gradient-norm clipping, and the learning-rate
//! schedule of the original (docs/ARCHITECTURE.md, Training). The state (moments and steps per
//! parameter) is saved with checkpoints so a resumed run continues the same curve.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::ffi::{self, ERROR_CAPACITY};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn amfmn_fused_adam(
        params: *const *const c_void,
        grads: *const *const c_void,
        exp_avgs: *const *const c_void,
        exp_avg_sqs: *const *const c_void,
        steps: *const *const c_void,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Moments and step count of one parameter.
struct State {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: i64,
}

impl State {
    /// The same moments (shared: an update of either changes both) and step.
    fn shared(&self) -> State {
        State { exp_avg: self.exp_avg.shallow_clone(), exp_avg_sq: self.exp_avg_sq.shallow_clone(), step: self.step }
    }

    /// The same moments (shared) at the next step.
    fn advanced(&self) -> State {
        State { step: self.step + 1, ..self.shared() }
    }
}

/// One update of a parameter or flat group: the tensors it changes in place, and the step it
/// brings them to.
struct Update {
    param: Tensor,
    grad: Tensor,
    state: State,
}

impl Update {
    /// Whether the gradient and moments have the parameter's kind, sizes and strides exactly, as
    /// PyTorch's fused Adam requires.
    fn shares_one_layout(&self) -> bool {
        let p = &self.param;
        [&self.grad, &self.state.exp_avg, &self.state.exp_avg_sq]
            .iter()
            .all(|t| t.kind() == p.kind() && t.size() == p.size() && t.stride() == p.stride())
    }
}

/// Dynamic loss scaling for fp16 training, as `torch.cuda.amp.GradScaler` does it: the loss is
/// multiplied by the scale before the backward pass and the gradients divided by it after; a
/// step whose gradients hold an inf or NaN is skipped and the scale halved; after
/// `growth_interval` clean steps in a row the scale doubles.
#[derive(Debug, Clone, PartialEq)]
pub struct GradScaler {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: i64,
    /// Steps skipped for inf/NaN gradients.
    pub skipped: i64,
    growth_interval: i64,
}

impl GradScaler {
    pub const INITIAL_SCALE: f64 = 65536.0;
    pub const GROWTH_INTERVAL: i64 = 2000;

    pub fn new() -> GradScaler {
        GradScaler::with_growth_interval(GradScaler::GROWTH_INTERVAL)
    }

    pub fn with_growth_interval(growth_interval: i64) -> GradScaler {
        GradScaler { scale: GradScaler::INITIAL_SCALE, growth_tracker: 0, skipped: 0, growth_interval }
    }

    /// After a step: halve on inf/NaN gradients (the step was skipped), double after
    /// `growth_interval` clean steps (PyTorch's `_amp_update_scale_`).
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= 0.5;
            self.growth_tracker = 0;
            self.skipped += 1;
        } else if self.growth_tracker + 1 == self.growth_interval {
            if (self.scale * 2.0).is_finite() {
                self.scale *= 2.0;
            }
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
        }
    }
}

impl Default for GradScaler {
    fn default() -> GradScaler {
        GradScaler::new()
    }
}

/// Parameters of one device, kind and step count updated together: at the first step their
/// values, gradients and moments are moved into four flat buffers, each parameter (and its
/// gradient, which autograd then accumulates in place) becoming a view of its span, so that a
/// step, and zeroing the gradients, is a handful of kernels whatever the number of parameters.
/// Each element is computed as before, so the results are bit for bit those of one update per
/// parameter.
struct Flat {
    names: Vec<String>,
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// How Adam's parameters are laid out once it has stepped: the flat groups, and the names of
/// the parameters updated one by one (fixed at the first step, so a step does not search).
struct Layout {
    groups: Vec<Flat>,
    singles: Vec<String>,
}

/// Adam over named parameters (no weight decay, no amsgrad: the original's settings), with a
/// loss scaler when training in fp16.
pub struct Adam {
    params: BTreeMap<String, Tensor>,
    state: BTreeMap<String, State>,
    /// The parameters moved into flat buffers at the first step ([`Flat`]); the others are
    /// updated one by one.
    flat: Option<Layout>,
    lr: f64,
    /// The term added to the denominator (PyTorch's `eps`).
    eps: f64,
    pub scaler: Option<GradScaler>,
}

impl Adam {
    /// Adam at learning rate `lr` with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
    pub fn new(params: BTreeMap<String, Tensor>, lr: f64) -> Adam {
        Adam { params, state: BTreeMap::new(), flat: None, lr, eps: EPS, scaler: None }
    }

    /// The same optimizer with another `eps`. A large one (about the gradients' size) makes the
    /// first steps continuous in the gradient instead of `lr · sign(g)`, which tests comparing two
    /// runs whose gradients differ by rounding need.
    pub fn with_eps(self, eps: f64) -> Adam {
        Adam { eps, ..self }
    }

    /// The loss to backpropagate: scaled when a scaler is set.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        match &self.scaler {
            Some(scaler) => loss * scaler.scale,
            None => loss.shallow_clone(),
        }
    }

    /// With a scaler: divides every gradient by the scale and reports whether all are finite
    /// (`true` without a scaler).
    pub fn unscale_gradients(&self) -> bool {
        let Some(scaler) = &self.scaler else { return true };
        tch::no_grad(|| {
            let checks: Vec<Tensor> = self
                .params
                .values()
                .map(Tensor::grad)
                .filter(Tensor::defined)
                .map(|grad| grad.shallow_clone().g_div_scalar_(scaler.scale).isfinite().all())
                .collect();
            // One read of the device for the whole step, not one per parameter.
            checks.is_empty() || Tensor::stack(&checks, 0).all().int64_value(&[]) == 1
        })
    }

    /// Updates the scaler after a step (`skipped`: its gradients were not finite).
    pub fn update_scale(&mut self, skipped: bool) {
        if let Some(scaler) = &mut self.scaler {
            scaler.update(skipped);
        }
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Zeroes every gradient (in place, keeping the buffers).
    pub fn zero_grad(&self) {
        for group in self.flat.iter().flat_map(|l| &l.groups) {
            let _ = group.grad.shallow_clone().zero_();
        }
        for p in self.singles() {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// The parameters updated one by one: all of them before the first step.
    fn singles(&self) -> Vec<&Tensor> {
        match &self.flat {
            Some(layout) => layout.singles.iter().map(|n| &self.params[n]).collect(),
            None => self.params.values().collect(),
        }
    }

    /// `torch.nn.utils.clip_grad_norm_(params, max_norm)` as PyTorch computes it: the 2-norm of
    /// each gradient, the 2-norm of those norms, `coef = min(1, max_norm / (total + 1e-6))` in
    /// fp32, every gradient multiplied by `coef`. Nothing is read back from the device (the
    /// coefficient stays a tensor), and a step's flat gradient buffers are scaled whole. Returns
    /// the total norm before clipping (a 0-d tensor on the gradients' device).
    pub fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.values().map(Tensor::grad).filter(Tensor::defined).collect();
            let Some(first) = grads.first() else { return Tensor::zeros([], (Kind::Float, Device::Cpu)) };
            // ATen's `norm` is `linalg_vector_norm`, as PyTorch's clipping calls it.
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_device(first.device())).collect();
            let total = Tensor::stack(&norms, 0).norm();
            // Python's `max_norm / t` is `t.reciprocal() * max_norm`.
            let coef = ((&total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
            for grad in self.grad_spans() {
                let _ = grad.shallow_clone().g_mul_(&coef.to_device(grad.device()));
            }
            total
        })
    }

    /// Every gradient once: the flat groups' buffers and the single parameters' gradients.
    fn grad_spans(&self) -> Vec<Tensor> {
        let flat = self.flat.iter().flat_map(|l| &l.groups).map(|group| group.grad.shallow_clone());
        flat.chain(self.singles().into_iter().map(Tensor::grad).filter(Tensor::defined)).collect()
    }

    /// One update of every parameter that has a gradient: on CUDA all of a device's parameters
    /// by PyTorch's fused Adam ([`fused_update`]), elsewhere one fused pass per flat group or
    /// parameter.
    pub fn step(&mut self) {
        let layout = self.flat.take().unwrap_or_else(|| self.flatten());
        tch::no_grad(|| {
            let mut updates = Vec::new();
            for group in &layout.groups {
                let state = State {
                    exp_avg: group.exp_avg.shallow_clone(),
                    exp_avg_sq: group.exp_avg_sq.shallow_clone(),
                    step: self.state[&group.names[0]].step + 1,
                };
                let (param, grad) = (group.param.shallow_clone(), group.grad.shallow_clone());
                updates.push((group.names.as_slice(), Update { param, grad, state }));
            }
            for name in &layout.singles {
                let param = self.params[name].shallow_clone();
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let state = self.state.entry(name.clone()).or_insert_with(|| State {
                    exp_avg: param.zeros_like(),
                    exp_avg_sq: param.zeros_like(),
                    step: 0,
                });
                updates.push((std::slice::from_ref(name), Update { param, grad, state: state.advanced() }));
            }
            self.apply(&updates);
            for (names, update) in &updates {
                for name in *names {
                    self.state.get_mut(name).expect("an updated parameter has its state").step = update.state.step;
                }
            }
        });
        self.flat = Some(layout);
    }

    /// Runs `updates`: those on CUDA whose tensors share one layout by PyTorch's fused Adam, one
    /// call per device and kind; the others one by one.
    fn apply(&self, updates: &[(&[String], Update)]) {
        let mut fused: BTreeMap<String, Vec<&Update>> = BTreeMap::new();
        for (_, update) in updates {
            if update.param.device().is_cuda() && update.shares_one_layout() {
                let key = format!("{:?} {:?}", update.param.device(), update.param.kind());
                fused.entry(key).or_default().push(update);
            } else {
                self.update(update);
            }
        }
        for bucket in fused.values() {
            fused_update(bucket, self.lr, self.eps);
        }
    }

    /// Adam's update of one parameter (or one flat group) to its state's step.
    fn update(&self, update: &Update) {
        let (mut param, grad, mut state) = (update.param.shallow_clone(), &update.grad, update.state.shared());
        let bias1 = 1.0 - BETA1.powi(state.step as i32);
        let bias2_sqrt = (1.0 - BETA2.powi(state.step as i32)).sqrt();
        let step_size = self.lr / bias1;
        if !fused_cpu_update(&mut param, grad, &mut state, step_size, bias2_sqrt, self.eps) {
            tensor_update(&mut param, grad, &mut state, step_size, bias2_sqrt, self.eps);
        }
    }

    /// Moves the parameters that have a dense gradient of their own layout into flat buffers,
    /// one group per device, kind and step count ([`Flat`]); their moments (zero, or those of
    /// a loaded state) move with them; the others stay single.
    fn flatten(&mut self) -> Layout {
        let mut groups: BTreeMap<(String, String, i64), Vec<String>> = BTreeMap::new();
        let mut singles = Vec::new();
        for (name, param) in &self.params {
            let grad = param.grad();
            let flattenable = grad.defined()
                && is_dense(param)
                && owns_storage(param)
                && same_layout(&grad, param)
                && grad.kind() == param.kind()
                && param.numel() > 0;
            if flattenable {
                let step = self.state.get(name).map_or(0, |s| s.step);
                let key = (format!("{:?}", param.device()), format!("{:?}", param.kind()), step);
                groups.entry(key).or_default().push(name.clone());
            } else {
                singles.push(name.clone());
            }
        }
        let groups =
            tch::no_grad(|| groups.into_iter().map(|((_, _, step), names)| self.flat_group(names, step)).collect());
        Layout { groups, singles }
    }

    /// One [`Flat`] group of `names` (same device and kind) at `step`.
    fn flat_group(&mut self, names: Vec<String>, step: i64) -> Flat {
        let first = &self.params[&names[0]];
        let total: i64 = names.iter().map(|n| self.params[n].numel() as i64).sum();
        let buffer = || Tensor::zeros([total], (first.kind(), first.device()));
        let group = Flat { param: buffer(), grad: buffer(), exp_avg: buffer(), exp_avg_sq: buffer(), names };
        let mut offset = 0;
        for name in &group.names {
            let mut param = self.params[name].shallow_clone();
            let (size, stride) = (param.size(), param.stride());
            let span = |flat: &Tensor| flat.as_strided(size.as_slice(), stride.as_slice(), Some(offset));
            span(&group.param).copy_(&param);
            param.set_data(&span(&group.param));
            let mut grad = param.grad();
            span(&group.grad).copy_(&grad);
            grad.set_data(&span(&group.grad));
            if let Some(state) = self.state.get(name) {
                span(&group.exp_avg).copy_(&state.exp_avg);
                span(&group.exp_avg_sq).copy_(&state.exp_avg_sq);
            }
            let state = State { exp_avg: span(&group.exp_avg), exp_avg_sq: span(&group.exp_avg_sq), step };
            self.state.insert(name.clone(), state);
            offset += param.numel() as i64;
        }
        group
    }

    /// The optimizer state as tensors: `exp_avg.<name>`, `exp_avg_sq.<name>`, `step.<name>`.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, s) in &self.state {
            out.insert(format!("exp_avg.{name}"), s.exp_avg.to_device(Device::Cpu).contiguous());
            out.insert(format!("exp_avg_sq.{name}"), s.exp_avg_sq.to_device(Device::Cpu).contiguous());
            out.insert(format!("step.{name}"), Tensor::from(s.step));
        }
        if let Some(scaler) = &self.scaler {
            out.insert("scaler.scale".into(), Tensor::from(scaler.scale));
            out.insert("scaler.growth_tracker".into(), Tensor::from(scaler.growth_tracker));
            out.insert("scaler.skipped".into(), Tensor::from(scaler.skipped));
        }
        out
    }

    /// Restores a state written by [`Adam::state_dict`] for the same parameters (a scaler
    /// continues from its saved state; one saved without starts afresh).
    pub fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        self.state.clear();
        self.flat = None;
        if let (Some(scaler), Some(scale)) = (&mut self.scaler, tensors.get("scaler.scale")) {
            let get = |key: &str| tensors.get(key).map_or(0, |t| t.int64_value(&[]));
            scaler.scale = scale.double_value(&[]);
            scaler.growth_tracker = get("scaler.growth_tracker");
            scaler.skipped = get("scaler.skipped");
        }
        for (key, step) in tensors.iter().filter(|(k, _)| k.starts_with("step.")) {
            let name = &key["step.".len()..];
            let param =
                self.params.get(name).with_context(|| format!("optimizer state for unknown parameter {name}"))?;
            let get = |prefix: &str| -> Result<Tensor> {
                let t = tensors.get(&format!("{prefix}.{name}")).with_context(|| format!("missing {prefix}.{name}"))?;
                if t.size() != param.size() {
                    bail!("{prefix}.{name}: shape {:?}, parameter {:?}", t.size(), param.size());
                }
                let like = param.zeros_like();
                tch::no_grad(|| like.shallow_clone().copy_(&t.to_device(param.device())));
                Ok(like)
            };
            self.state.insert(
                name.to_owned(),
                State { exp_avg: get("exp_avg")?, exp_avg_sq: get("exp_avg_sq")?, step: step.int64_value(&[]) },
            );
        }
        Ok(())
    }
}

/// The updates `updates` (one device, one kind) in one call of PyTorch's fused Adam, `_fused_adam_`
/// (`torch.optim.Adam(fused=True)`): on CUDA a multi-tensor kernel or a few for all of them. Its
/// arithmetic is Adam's, rounded in another order than the for-loop Adam's (within 1e-6 of it,
/// tested on the CPU, where libtorch has the same operator). Panics when the operator fails, as a
/// tch operator does.
fn fused_update(updates: &[&Update], lr: f64, eps: f64) {
    let Some(first) = updates.first() else { return };
    // One float step count per distinct step, on the device, as the kernel reads it.
    let mut counts: BTreeMap<i64, Tensor> = BTreeMap::new();
    for update in updates {
        let step = update.state.step;
        counts.entry(step).or_insert_with(|| Tensor::full([], step as f64, (Kind::Float, first.param.device())));
    }
    let pointers = |f: &dyn Fn(&Update) -> &Tensor| -> Vec<*const c_void> {
        updates.iter().map(|u| f(u).as_ptr() as *const c_void).collect()
    };
    let params = pointers(&|u| &u.param);
    let grads = pointers(&|u| &u.grad);
    let exp_avgs = pointers(&|u| &u.state.exp_avg);
    let exp_avg_sqs = pointers(&|u| &u.state.exp_avg_sq);
    let steps: Vec<*const c_void> = updates.iter().map(|u| counts[&u.state.step].as_ptr() as *const c_void).collect();
    // SAFETY: the five arrays hold `updates.len()` live tensors each (borrowed for the call);
    // the shim writes its message into the error buffer.
    ffi::call(|error| unsafe {
        amfmn_fused_adam(
            params.as_ptr(),
            grads.as_ptr(),
            exp_avgs.as_ptr(),
            exp_avg_sqs.as_ptr(),
            steps.as_ptr(),
            updates.len(),
            lr,
            BETA1,
            BETA2,
            eps,
            error,
            ERROR_CAPACITY,
        )
    })
    .unwrap_or_else(|e| panic!("fused Adam: {e}"));
}

/// Adam's update with tensor operations (any device and layout), as PyTorch's for-loop Adam.
fn tensor_update(param: &mut Tensor, grad: &Tensor, state: &mut State, step_size: f64, bias2_sqrt: f64, eps: f64) {
    let _ = state.exp_avg.lerp_(grad, 1.0 - BETA1);
    let _ = state.exp_avg_sq.g_mul_scalar_(BETA2).g_add_(&(grad.square() * (1.0 - BETA2)));
    let denom = state.exp_avg_sq.sqrt() / bias2_sqrt + eps;
    let _ = param.g_add_(&(&state.exp_avg / denom * -step_size));
}

/// Adam's update in one pass over the four buffers of a CPU float parameter (parameter,
/// gradient and both moments share one dense layout), on all cores; `false` when the tensors
/// do not qualify and the tensor-op path must run.
fn fused_cpu_update(
    param: &mut Tensor,
    grad: &Tensor,
    state: &mut State,
    step_size: f64,
    bias2_sqrt: f64,
    eps: f64,
) -> bool {
    let tensors = [&*param, grad, &state.exp_avg, &state.exp_avg_sq];
    if tensors.iter().any(|t| t.device() != Device::Cpu || t.kind() != Kind::Float || !same_layout(t, param))
        || !is_dense(param)
    {
        return false;
    }
    let n = param.numel();
    // SAFETY: the four tensors are distinct dense float buffers of `n` elements with identical
    // layouts (checked above), so element i of each is at the same offset; no other reference
    // reads or writes them during the update (autograd is off).
    let (p, g, m, v) = unsafe {
        (
            std::slice::from_raw_parts_mut(param.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts(grad.data_ptr() as *const f32, n),
            std::slice::from_raw_parts_mut(state.exp_avg.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts_mut(state.exp_avg_sq.data_ptr() as *mut f32, n),
        )
    };
    let (b1, b2, eps) = ((1.0 - BETA1) as f32, BETA2 as f32, eps as f32);
    let (one_minus_b2, step_size, bias2_sqrt) = ((1.0 - BETA2) as f32, step_size as f32, bias2_sqrt as f32);
    let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for i in 0..p.len() {
            let gi = g[i];
            m[i] += b1 * (gi - m[i]);
            v[i] = v[i] * b2 + one_minus_b2 * gi * gi;
            p[i] += -step_size * (m[i] / (v[i].sqrt() / bias2_sqrt + eps));
        }
    };
    let threads = if n > 1 << 16 { std::thread::available_parallelism().map_or(1, |t| t.get()) } else { 1 };
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        for (((p, g), m), v) in
            p.chunks_mut(chunk).zip(g.chunks(chunk)).zip(m.chunks_mut(chunk)).zip(v.chunks_mut(chunk))
        {
            s.spawn(move || update(p, g, m, v));
        }
    });
    true
}

/// A tensor whose storage holds nothing else: moving it into a flat buffer would otherwise
/// cut it off from the tensors that share that storage (the skip-thoughts GRU's projections
/// are rows of one weight its inference uses whole). ATen refuses a view past the end of a
/// storage, which is how its end is found.
fn owns_storage(t: &Tensor) -> bool {
    let numel = t.numel() as i64;
    let starts_storage = numel > 0 && t.as_strided([1], [1], Some(0)).data_ptr() == t.data_ptr();
    starts_storage && is_dense(t) && t.f_as_strided([numel + 1], [1], None::<i64>).is_err()
}

/// Whether element i of `a` and of `b` sit at the same offset: the same sizes and the same
/// strides along every dimension longer than 1 (a 1x1 convolution's channels-last weight and
/// its gradient may differ in the others).
fn same_layout(a: &Tensor, b: &Tensor) -> bool {
    let (size, a_stride, b_stride) = (a.size(), a.stride(), b.stride());
    size == b.size() && size.iter().zip(a_stride.iter().zip(&b_stride)).all(|(&n, (x, y))| n == 1 || x == y)
}

/// A tensor whose elements fill its storage span exactly once (any dimension order).
fn is_dense(t: &Tensor) -> bool {
    let mut dims: Vec<(i64, i64)> = t.size().into_iter().zip(t.stride()).filter(|&(s, _)| s != 1).collect();
    dims.sort_by_key(|&(_, stride)| stride);
    let mut expected = 1;
    for (size, stride) in dims {
        if stride != expected {
            return false;
        }
        expected *= size;
    }
    true
}

/// The learning rate of epoch `epoch` (0-based): the original multiplies it by `decay` at the
/// start of every epoch `e` with `e % every == every - 1`, compounding.
pub fn learning_rate(lr: f64, decay: f64, every: usize, epoch: usize) -> f64 {
    let decays = (epoch + 1) / every;
    lr * decay.powi(decays as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_scale_backs_off_grows_and_resumes() {
        let mut scaler = GradScaler::with_growth_interval(3);
        assert_eq!(scaler.scale, 65536.0);
        scaler.update(true);
        assert_eq!((scaler.scale, scaler.growth_tracker, scaler.skipped), (32768.0, 0, 1), "inf: halved, skipped");
        scaler.update(false);
        scaler.update(false);
        assert_eq!((scaler.scale, scaler.growth_tracker), (32768.0, 2));
        scaler.update(false);
        assert_eq!((scaler.scale, scaler.growth_tracker), (65536.0, 0), "3 clean steps: doubled");
        scaler.update(false);
        scaler.update(true);
        assert_eq!((scaler.scale, scaler.growth_tracker, scaler.skipped), (32768.0, 0, 2), "an inf resets the run");
        assert_eq!(GradScaler::new().growth_interval, 2000, "PyTorch's default");

        let weight = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut adam = Adam::new(BTreeMap::from([("w".to_string(), weight.shallow_clone())]), 0.1);
        adam.scaler = Some(scaler.clone());
        // A clean step: the loss is scaled, the gradient unscaled back to d(sum w²)/dw = 2w.
        adam.scale_loss(&weight.square().sum(Kind::Float)).backward();
        assert!(adam.unscale_gradients());
        assert_eq!(Vec::<f32>::try_from(weight.grad()).unwrap(), [2.0, -4.0]);
        adam.step();
        adam.update_scale(false);
        let after_clean = Vec::<f32>::try_from(&weight).unwrap();
        assert_ne!(after_clean, [1.0, -2.0]);
        // An overflowing step is skipped: the weights stay, the scale halves.
        adam.zero_grad();
        (adam.scale_loss(&weight.sum(Kind::Float)) * f64::INFINITY).backward();
        let finite = adam.unscale_gradients();
        assert!(!finite);
        adam.update_scale(!finite);
        assert_eq!(Vec::<f32>::try_from(&weight).unwrap(), after_clean);
        assert_eq!(adam.scaler.as_ref().map(|s| (s.scale, s.skipped)), Some((16384.0, 3)));
        // Resume: the scaler's state travels with the optimizer's.
        let saved = adam.state_dict();
        let mut resumed = Adam::new(BTreeMap::from([("w".to_string(), weight.shallow_clone())]), 0.1);
        resumed.scaler = Some(GradScaler::with_growth_interval(3));
        resumed.load_state_dict(&saved).unwrap();
        assert_eq!(resumed.scaler, adam.scaler);
        let keys: Vec<String> = resumed.state_dict().into_keys().collect();
        assert_eq!(keys, saved.into_keys().collect::<Vec<_>>());
    }

    #[test]
    fn schedule_over_70_epochs() {
        let lrs: Vec<f64> = (0..70).map(|e| learning_rate(2e-4, 0.7, 20, e)).collect();
        assert!(lrs[..19].iter().all(|&l| l == 2e-4));
        assert!(lrs[19..39].iter().all(|&l| (l - 1.4e-4).abs() < 1e-12), "{:?}", &lrs[19..39]);
        assert!(lrs[39..59].iter().all(|&l| (l - 0.98e-4).abs() < 1e-12));
        assert!(lrs[59..].iter().all(|&l| (l - 0.686e-4).abs() < 1e-12));
        // The original's loop: adjust at the start of each epoch, compounding.
        let mut lr = 2e-4;
        for (e, &want) in lrs.iter().enumerate() {
            if e % 20 == 19 {
                lr *= 0.7;
            }
            assert!((lr - want).abs() < 1e-15, "epoch {e}");
        }
    }

    /// Three steps on `sum(w²)` against PyTorch's formula, with its eps and with `eps`.
    fn adam_after_three_steps(eps: Option<f64>) -> Adam {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).set_requires_grad(true);
        let mut adam = Adam::new(BTreeMap::from([("w".to_string(), p.shallow_clone())]), 0.1);
        if let Some(eps) = eps {
            adam = adam.with_eps(eps);
        }
        let mut expected = [1.0f64, -2.0, 0.5];
        let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
        for step in 1..=3 {
            adam.zero_grad();
            let loss = (&p * &p).sum(Kind::Float);
            loss.backward();
            adam.step();
            for i in 0..3 {
                let g = 2.0 * expected[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(step)).sqrt() + eps.unwrap_or(1e-8);
                expected[i] -= 0.1 / (1.0 - 0.9f64.powi(step)) * m[i] / denom;
            }
        }
        let got: Vec<f32> = Vec::try_from(p.detach()).unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "eps {eps:?}: {got:?} vs {expected:?}");
        }
        adam
    }

    #[test]
    fn adam_equals_the_pytorch_formula() {
        adam_after_three_steps(Some(3.0));
        let adam = adam_after_three_steps(None);
        let state = adam.state_dict();
        assert_eq!(state["step.w"].int64_value(&[]), 3);
    }

    #[test]
    fn layouts_differing_only_along_unit_dimensions_are_the_same() {
        let weight = Tensor::zeros([4, 3, 1, 1], (Kind::Float, Device::Cpu));
        let channels_last = weight.as_strided([4, 3, 1, 1], [3, 1, 3, 3], None::<i64>);
        let collapsed = weight.as_strided([4, 3, 1, 1], [3, 1, 1, 1], None::<i64>);
        assert!(same_layout(&channels_last, &collapsed));
        assert!(!same_layout(&weight.view([3, 4, 1, 1]), &collapsed), "sizes differ");
        let transposed = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)).tr();
        assert!(!same_layout(&transposed, &Tensor::zeros([4, 3], (Kind::Float, Device::Cpu))), "strides differ");
    }

    #[test]
    fn fused_and_tensor_paths_agree() {
        for channels_last in [false, true] {
            tch::manual_seed(1);
            let w = Tensor::randn([4, 3, 2, 2], (Kind::Float, Device::Cpu));
            let w = if channels_last { crate::model::amfmn::to_channels_last(&w) } else { w.contiguous() };
            let grad = (&w * 3.0 + 1.0).to_kind(Kind::Float);
            let grad = if channels_last { crate::model::amfmn::to_channels_last(&grad) } else { grad };
            let new_state = || State { exp_avg: w.zeros_like(), exp_avg_sq: w.zeros_like(), step: 0 };
            let (mut a, mut b) = (w.copy(), w.copy());
            let (mut sa, mut sb) = (new_state(), new_state());
            for step in 1..=4 {
                let bias1 = 1.0 - BETA1.powi(step);
                let bias2_sqrt = (1.0 - BETA2.powi(step)).sqrt();
                assert!(fused_cpu_update(&mut a, &grad, &mut sa, 0.01 / bias1, bias2_sqrt, EPS));
                tensor_update(&mut b, &grad, &mut sb, 0.01 / bias1, bias2_sqrt, EPS);
            }
            assert!((&a - &b).abs().max().double_value(&[]) < 1e-6, "channels_last {channels_last}");
            assert!((&sa.exp_avg_sq - &sb.exp_avg_sq).abs().max().double_value(&[]) < 1e-6);
            assert!((a - w).abs().max().double_value(&[]) > 1e-3, "the parameter moved");
        }
    }

    #[test]
    fn flat_groups_update_as_one_update_per_parameter() {
        let shapes: [&[i64]; 3] = [&[4, 3, 2, 2], &[5], &[2, 3]];
        let weights: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu))).collect();
        let flat: Vec<Tensor> =
            shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)).set_requires_grad(true)).collect();
        // The 4-d one in channels-last strides, as the CNN's weights are.
        let channels_last = flat[0].permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        tch::no_grad(|| flat[0].shallow_clone().set_data(&channels_last));
        // The same values and strides, drawn once (a second seeded draw races other tests).
        let single: Vec<Tensor> = flat.iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
        let loss = |ps: &[Tensor]| {
            let terms = ps.iter().zip(&weights).map(|(p, w)| (p * w).square().sum(Kind::Float));
            terms.reduce(|a, b| a + b).unwrap()
        };
        let frozen = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut named: BTreeMap<String, Tensor> =
            ["a", "b", "c"].iter().zip(&flat).map(|(n, p)| (n.to_string(), p.shallow_clone())).collect();
        named.insert("frozen".into(), frozen.shallow_clone());
        // Rows of one tensor used whole elsewhere (as the GRU's projections are): they stay in it.
        let whole = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
        let rows = [whole.narrow(0, 0, 2).set_requires_grad(true), whole.narrow(0, 2, 2).set_requires_grad(true)];
        named.insert("row0".into(), rows[0].shallow_clone());
        named.insert("row1".into(), rows[1].shallow_clone());
        let mut adam = Adam::new(named, 0.01);
        let reference = Adam::new(BTreeMap::new(), 0.01);
        let mut states: Vec<State> =
            single.iter().map(|p| State { exp_avg: p.zeros_like(), exp_avg_sq: p.zeros_like(), step: 0 }).collect();
        for step in 1..=3 {
            adam.zero_grad();
            (loss(&flat) + rows.iter().map(|r| r.sum(Kind::Float)).reduce(|a, b| a + b).unwrap()).backward();
            adam.step();
            for p in &single {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            loss(&single).backward();
            tch::no_grad(|| {
                for (p, state) in single.iter().zip(&mut states) {
                    state.step = step;
                    reference.update(&Update { param: p.shallow_clone(), grad: p.grad(), state: state.shared() });
                }
            });
        }
        for (name, (a, b)) in ["a", "b", "c"].iter().zip(flat.iter().zip(&single)) {
            assert!(a.equal(b) && a.stride() == b.stride(), "{name}: the flat update differs");
        }
        assert!(frozen.equal(&Tensor::ones([3], (Kind::Float, Device::Cpu))), "no gradient, no update");
        assert!(
            whole.narrow(0, 2, 2).equal(&rows[1]) && whole.double_value(&[0, 0]) < 1.0,
            "rows stay in their tensor"
        );
        let state = adam.state_dict();
        assert!(!state.contains_key("step.frozen") && state["step.a"].int64_value(&[]) == 3);
        assert!(state["exp_avg_sq.b"].equal(&states[1].exp_avg_sq), "the moments are saved as before");
        // One buffer: each parameter and gradient is the span after the previous one.
        for pair in flat.windows(2) {
            assert_eq!(pair[0].data_ptr() as usize + 4 * pair[0].numel(), pair[1].data_ptr() as usize);
            assert_eq!(pair[0].grad().data_ptr() as usize + 4 * pair[0].numel(), pair[1].grad().data_ptr() as usize);
        }
    }

    /// PyTorch's fused Adam through the shim (its CPU kernel) equals the for-loop update over
    /// three steps, for tensors of several shapes and two step counts in one call: each argument
    /// reaches the operator in its place (a swapped beta or step count moves the result far more).
    #[test]
    fn pytorchs_fused_adam_is_the_same_update() {
        let shapes: [&[i64]; 3] = [&[300], &[7, 5], &[4, 3, 2, 2]];
        let params: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu))).collect();
        let grads: Vec<Tensor> = params.iter().map(Tensor::randn_like).collect();
        // The last one starts a step ahead, so one call mixes step counts.
        let updates = || -> Vec<Update> {
            let start = |k: usize| i64::from(k == 2);
            let state = |p: &Tensor, k| State { exp_avg: p.zeros_like(), exp_avg_sq: p.zeros_like(), step: start(k) };
            let update = |(k, (p, g)): (usize, (&Tensor, &Tensor))| Update {
                param: p.copy(),
                grad: g.copy(),
                state: state(p, k),
            };
            params.iter().zip(&grads).enumerate().map(update).collect()
        };
        let adam = Adam::new(BTreeMap::new(), 0.01);
        let (mut fused, mut looped) = (updates(), updates());
        for step in 1..=3 {
            let next = |updates: &[Update]| -> Vec<Update> {
                let grad = |u: &Update| &u.grad * (step as f64);
                updates
                    .iter()
                    .map(|u| Update { param: u.param.shallow_clone(), grad: grad(u), state: u.state.advanced() })
                    .collect()
            };
            (fused, looped) = (next(&fused), next(&looped));
            fused_update(&fused.iter().collect::<Vec<_>>(), adam.lr, adam.eps);
            looped.iter().for_each(|u| adam.update(u));
        }
        for ((a, b), p) in fused.iter().zip(&looped).zip(&params) {
            assert!((&a.param - &b.param).abs().max().double_value(&[]) < 1e-6, "{:?}", p.size());
            assert!((&a.state.exp_avg_sq - &b.state.exp_avg_sq).abs().max().double_value(&[]) < 1e-6);
            assert!((&a.param - p).abs().max().double_value(&[]) > 1e-3, "the parameter moved");
        }
    }

    #[test]
    fn only_tensors_of_one_layout_go_to_the_fused_adam() {
        let param = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        let state = State { exp_avg: param.zeros_like(), exp_avg_sq: param.zeros_like(), step: 1 };
        let update = |grad: Tensor| Update { param: param.shallow_clone(), grad, state: state.shared() };
        assert!(update(param.zeros_like()).shares_one_layout());
        assert!(!update(Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)).tr()).shares_one_layout(), "strides");
        assert!(!update(param.to_kind(Kind::BFloat16)).shares_one_layout(), "kind");
    }

    /// Adam on the test device (on CUDA, PyTorch's fused Adam for a flat group and for
    /// parameters that share a storage, in one call) equals the CPU's over three steps.
    #[test]
    fn adam_on_device_equals_the_cpu_adam() {
        let values = Tensor::randn([6, 3], (Kind::Float, Device::Cpu));
        let run = |device: Device| -> Vec<Tensor> {
            let base = values.to_device(device).copy();
            let own = base.copy().set_requires_grad(true);
            let rows = [base.narrow(0, 0, 3), base.narrow(0, 3, 3)].map(|r| r.set_requires_grad(true));
            let named = [("own", &own), ("rows.0", &rows[0]), ("rows.1", &rows[1])];
            let params = BTreeMap::from(named.map(|(n, p)| (n.to_string(), p.shallow_clone())));
            let mut adam = Adam::new(params, 0.01);
            for step in 1..=3 {
                adam.zero_grad();
                let loss = named.iter().map(|(_, p)| (*p * *p * step as f64).sum(Kind::Float));
                loss.reduce(|a, b| a + b).unwrap().backward();
                adam.step();
            }
            named.iter().map(|(_, p)| p.detach().to_device(Device::Cpu)).collect()
        };
        let (on_device, on_cpu) = (run(crate::device::test_device()), run(Device::Cpu));
        for (a, b) in on_device.iter().zip(&on_cpu) {
            assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        }
        assert!((&on_cpu[0] - &values).abs().max().double_value(&[]) > 1e-3, "the parameters moved");
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let adam = Adam::new(BTreeMap::from([("w".to_string(), p.shallow_clone())]), 0.1);
        (&p * 1.0).sum(Kind::Float).backward();
        p.grad().copy_(&Tensor::from_slice(&[3.0f32, 4.0]));
        assert_eq!(adam.clip_grad_norm(1.0).double_value(&[]), 5.0);
        let g: Vec<f32> = Vec::try_from(p.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6, "{g:?}");
        assert!((adam.clip_grad_norm(10.0).double_value(&[]) - 1.0).abs() < 1e-6, "no scaling below the max");
        assert!((Vec::<f32>::try_from(p.grad()).unwrap()[1] - 0.8).abs() < 1e-6);
    }
}
