//! Adam as `torch.optim.Adam` computes it, gradient-norm clipping, fp16 loss scaling as
//! `torch.amp.GradScaler` does it, and the learning-rate schedule of the original
//! (docs/ARCHITECTURE.md, Training). The state (moments and steps per parameter, the loss scale)
//! is saved with checkpoints so a resumed run continues the same curve.

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
        found_inf: *const c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_unscale(
        grads: *const *const c_void,
        n: usize,
        found_inf: *const c_void,
        inv_scale: *const c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// A parameter's step count: on the host for the updates made one by one, a 0-d float tensor on
/// the parameter's device for PyTorch's fused Adam, which advances it there (as
/// `torch.optim.Adam(fused=True)` keeps `state["step"]`; one tensor for a flat group).
enum Step {
    Host(i64),
    Device(Tensor),
}

impl Step {
    /// The count (for a count on a GPU, a read of the device).
    fn count(&self) -> i64 {
        match self {
            Step::Host(n) => *n,
            Step::Device(count) => count.double_value(&[]) as i64,
        }
    }

    /// The same count (shared, for one on the device).
    fn shared(&self) -> Step {
        match self {
            Step::Host(n) => Step::Host(*n),
            Step::Device(count) => Step::Device(count.shallow_clone()),
        }
    }
}

/// Moments and step count of one parameter.
struct State {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: Step,
}

impl State {
    /// Zero moments laid out as `param`, at step 0.
    fn new(param: &Tensor) -> State {
        State { exp_avg: param.zeros_like(), exp_avg_sq: param.zeros_like(), step: Step::Host(0) }
    }

    /// The same moments (shared: an update of either changes both) and step.
    fn shared(&self) -> State {
        State {
            exp_avg: self.exp_avg.shallow_clone(),
            exp_avg_sq: self.exp_avg_sq.shallow_clone(),
            step: self.step.shared(),
        }
    }

    /// The same moments (shared) at the next step, counted on the host.
    fn advanced(&self) -> State {
        State { step: Step::Host(self.step.count() + 1), ..self.shared() }
    }
}

/// One update of a parameter or flat group: the tensors it changes in place, and its step (the
/// one it brings them to when updated one by one; the one before for the fused Adam, which
/// advances it).
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

    /// Its step count on the device, as the fused Adam reads it.
    fn device_count(&self) -> &Tensor {
        match &self.state.step {
            Step::Device(count) => count,
            Step::Host(_) => panic!("fused Adam: a step count on the host"),
        }
    }
}

/// Dynamic loss scaling for fp16 training, as `torch.amp.GradScaler` does it, on the training
/// device: the loss is multiplied by the scale before the backward pass and the gradients divided
/// by it after, a device flag recording whether any of them holds an inf or NaN; such a step is
/// skipped (by the fused Adam reading the flag) and the scale halved; after `growth_interval`
/// clean steps in a row the scale doubles (`_amp_update_scale_`). Nothing is read back from the
/// device, so a step is queued without waiting for the one before.
pub struct GradScaler {
    /// The scale, a 0-d f32 tensor.
    scale: Tensor,
    /// Clean steps since the scale last changed, 0-d i32 (as `_amp_update_scale_` keeps it).
    growth_tracker: Tensor,
    /// Steps skipped for inf/NaN gradients, 0-d f32.
    skipped: Tensor,
    /// 1 when the gradients last unscaled held an inf or NaN, else 0 (0-d f32).
    found_inf: Tensor,
    growth_interval: i64,
}

/// What a [`GradScaler`] holds, read from its device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerState {
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: i64,
    /// Steps skipped for inf/NaN gradients.
    pub skipped: i64,
}

impl GradScaler {
    pub const INITIAL_SCALE: f64 = 65536.0;
    pub const GROWTH_INTERVAL: i64 = 2000;

    /// PyTorch's defaults (scale 2^16, doubled after 2000 clean steps), on `device`.
    pub fn new(device: Device) -> GradScaler {
        GradScaler::with_growth_interval(device, GradScaler::GROWTH_INTERVAL)
    }

    /// A scaler on `device` that doubles the scale after `growth_interval` clean steps.
    pub fn with_growth_interval(device: Device, growth_interval: i64) -> GradScaler {
        let scalar = |value: f64, kind: Kind| Tensor::full([], value, (kind, device));
        GradScaler {
            scale: scalar(GradScaler::INITIAL_SCALE, Kind::Float),
            growth_tracker: scalar(0.0, Kind::Int),
            skipped: scalar(0.0, Kind::Float),
            found_inf: scalar(0.0, Kind::Float),
            growth_interval,
        }
    }

    /// Its state, read from the device.
    pub fn state(&self) -> ScalerState {
        ScalerState {
            scale: self.scale.double_value(&[]),
            growth_tracker: self.growth_tracker.int64_value(&[]),
            skipped: self.skipped.double_value(&[]) as i64,
        }
    }

    /// Continues from `state` (a resumed run's).
    fn restore(&mut self, state: ScalerState) {
        let _ = self.scale.fill_(state.scale);
        let _ = self.growth_tracker.fill_(state.growth_tracker);
        let _ = self.skipped.fill_(state.skipped as f64);
    }

    /// `loss` times the scale.
    fn scale(&self, loss: &Tensor) -> Tensor {
        loss * self.scale.to_device(loss.device())
    }

    /// Divides `grads` (on the scaler's device) by the scale in place, setting the flag when any
    /// holds an inf or NaN and clearing it otherwise.
    fn unscale(&self, grads: &[Tensor]) {
        let _ = self.found_inf.shallow_clone().zero_();
        if grads.is_empty() {
            return;
        }
        let inv_scale = self.scale.reciprocal();
        let pointers: Vec<*const c_void> = grads.iter().map(ffi::ptr).collect();
        // SAFETY: `pointers` holds `grads.len()` live tensors and the flag and the inverse scale
        // are live tensors, all borrowed for the call; the shim writes its message into the
        // error buffer.
        ffi::call(|error| unsafe {
            let (found_inf, inv_scale) = (ffi::ptr(&self.found_inf), ffi::ptr(&inv_scale));
            amfmn_unscale(pointers.as_ptr(), pointers.len(), found_inf, inv_scale, error, ERROR_CAPACITY)
        })
        .unwrap_or_else(|e| panic!("loss scaling: {e}"));
    }

    /// After a step: the scale halved when the flag is set (the step was skipped), doubled after
    /// `growth_interval` clean steps.
    fn update(&mut self) {
        let (tracker, found_inf) = (&self.growth_tracker, &self.found_inf);
        let _ = self.scale.internal_amp_update_scale_(tracker, found_inf, 2.0, 0.5, self.growth_interval);
        let _ = self.skipped.g_add_(&self.found_inf);
    }

    /// Whether the gradients last unscaled held an inf or NaN (a read of the device).
    fn found_inf(&self) -> bool {
        self.found_inf.double_value(&[]) != 0.0
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
    /// Whether parameters off CUDA too are updated by PyTorch's fused Adam (CUDA ones always are).
    fused: bool,
    pub scaler: Option<GradScaler>,
}

impl Adam {
    /// Adam at learning rate `lr` with PyTorch's defaults (betas 0.9, 0.999; eps 1e-8).
    pub fn new(params: BTreeMap<String, Tensor>, lr: f64) -> Adam {
        Adam { params, state: BTreeMap::new(), flat: None, lr, eps: EPS, fused: false, scaler: None }
    }

    /// The same optimizer with another `eps`. A large one (about the gradients' size) makes the
    /// first steps continuous in the gradient instead of `lr · sign(g)`, which tests comparing two
    /// runs whose gradients differ by rounding need.
    pub fn with_eps(self, eps: f64) -> Adam {
        Adam { eps, ..self }
    }

    /// The same optimizer updating every parameter by PyTorch's fused Adam, as
    /// `torch.optim.Adam(fused=True)`: on the CPU too (libtorch's CPU kernel), where the
    /// default is amfmn's own pass, equal to the for-loop Adam bit for bit. On CUDA it always is.
    pub fn with_fused(self) -> Adam {
        Adam { fused: true, ..self }
    }

    /// The loss to backpropagate: scaled when a scaler is set.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        match &self.scaler {
            Some(scaler) => scaler.scale(loss),
            None => loss.shallow_clone(),
        }
    }

    /// One optimizer step from the gradients of a [`Adam::scale_loss`]d loss, as PyTorch's loop
    /// with a `GradScaler` makes it: the gradients unscaled (fp16), clipped to `grad_clip` (0: not
    /// clipped), Adam (skipped when the unscaled gradients hold an inf or NaN), the scale updated.
    /// On the fused path (CUDA) nothing is read back from the device.
    pub fn clip_and_step(&mut self, grad_clip: f64) {
        if let Some(scaler) = &self.scaler {
            tch::no_grad(|| scaler.unscale(&self.grad_spans()));
        }
        if grad_clip > 0.0 {
            let _ = self.clip_grad_norm(grad_clip);
        }
        self.step();
        if let Some(scaler) = &mut self.scaler {
            tch::no_grad(|| scaler.update());
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

    /// One update of every parameter that has a gradient: on CUDA (and everywhere
    /// [`Adam::with_fused`]) all of a device's parameters by PyTorch's fused Adam
    /// ([`fused_update`]), elsewhere one pass per flat group or parameter. With a scaler whose
    /// flag says the gradients were not finite, nothing changes.
    pub fn step(&mut self) {
        let layout = self.flat.take().unwrap_or_else(|| self.flatten());
        tch::no_grad(|| {
            let updates = self.updates(&layout);
            let fused_here = |u: &Update| self.fused || u.param.device().is_cuda();
            let (fused, one_by_one): (Vec<_>, Vec<_>) = updates.into_iter().partition(|(_, u)| fused_here(u));
            self.fused_step(fused);
            self.one_by_one_step(one_by_one);
        });
        self.flat = Some(layout);
    }

    /// The update of each flat group of `layout` and of each single parameter that has a
    /// gradient, at its current step, with the names whose state it carries; a parameter's first
    /// update gets zero moments at step 0.
    fn updates<'a>(&mut self, layout: &'a Layout) -> Vec<(&'a [String], Update)> {
        let mut updates = Vec::new();
        for group in &layout.groups {
            let step = self.state[&group.names[0]].step.shared();
            let state =
                State { exp_avg: group.exp_avg.shallow_clone(), exp_avg_sq: group.exp_avg_sq.shallow_clone(), step };
            let (param, grad) = (group.param.shallow_clone(), group.grad.shallow_clone());
            updates.push((group.names.as_slice(), Update { param, grad, state }));
        }
        for name in &layout.singles {
            let param = self.params[name].shallow_clone();
            let grad = param.grad();
            if grad.defined() {
                let state = self.state.entry(name.clone()).or_insert_with(|| State::new(&param)).shared();
                updates.push((std::slice::from_ref(name), Update { param, grad, state }));
            }
        }
        updates
    }

    /// Runs `updates` by PyTorch's fused Adam, one call per device and kind, obeying the
    /// scaler's flag. A step count still on the host moves to the device first (once, one tensor
    /// for the names an update carries); a gradient laid out unlike its parameter is copied to
    /// the parameter's layout, as the kernel requires.
    fn fused_step(&mut self, updates: Vec<(&[String], Update)>) {
        let mut buckets: BTreeMap<String, Vec<Update>> = BTreeMap::new();
        for (names, mut update) in updates {
            if let Step::Host(n) = update.state.step {
                let count = Tensor::full([], n as f64, (Kind::Float, update.param.device()));
                for name in names {
                    self.state.get_mut(name).expect("an updated parameter has its state").step =
                        Step::Device(count.shallow_clone());
                }
                update.state.step = Step::Device(count);
            }
            if !update.shares_one_layout() {
                let mut grad = update.param.empty_like();
                grad.copy_(&update.grad);
                update.grad = grad;
            }
            let key = format!("{:?} {:?}", update.param.device(), update.param.kind());
            buckets.entry(key).or_default().push(update);
        }
        let found_inf = self.scaler.as_ref().map(|s| &s.found_inf);
        for bucket in buckets.values() {
            let found_inf = found_inf.map(|flag| flag.to_device(bucket[0].param.device()));
            fused_update(bucket, self.lr, self.eps, found_inf.as_ref());
        }
    }

    /// Runs `updates` one by one, each brought to its next step (counted on the host); none when
    /// the scaler's flag says the gradients were not finite (a read of the flag, which lives on
    /// these updates' device: the CPU, where the reading costs nothing).
    fn one_by_one_step(&mut self, updates: Vec<(&[String], Update)>) {
        if updates.is_empty() || self.scaler.as_ref().is_some_and(GradScaler::found_inf) {
            return;
        }
        for (names, update) in updates {
            let update = Update { state: update.state.advanced(), ..update };
            self.update(&update);
            for name in names {
                self.state.get_mut(name).expect("an updated parameter has its state").step = update.state.step.shared();
            }
        }
    }

    /// Adam's update of one parameter (or one flat group) to its state's step.
    fn update(&self, update: &Update) {
        let (mut param, grad, mut state) = (update.param.shallow_clone(), &update.grad, update.state.shared());
        let step = state.step.count() as i32;
        let bias1 = 1.0 - BETA1.powi(step);
        let bias2_sqrt = (1.0 - BETA2.powi(step)).sqrt();
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
                let step = self.state.get(name).map_or(0, |s| s.step.count());
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
            let state =
                State { exp_avg: span(&group.exp_avg), exp_avg_sq: span(&group.exp_avg_sq), step: Step::Host(step) };
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
            out.insert(format!("step.{name}"), Tensor::from(s.step.count()));
        }
        if let Some(scaler) = &self.scaler {
            let state = scaler.state();
            out.insert("scaler.scale".into(), Tensor::from(state.scale));
            out.insert("scaler.growth_tracker".into(), Tensor::from(state.growth_tracker));
            out.insert("scaler.skipped".into(), Tensor::from(state.skipped));
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
            let (growth_tracker, skipped) = (get("scaler.growth_tracker"), get("scaler.skipped"));
            scaler.restore(ScalerState { scale: scale.double_value(&[]), growth_tracker, skipped });
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
                State {
                    exp_avg: get("exp_avg")?,
                    exp_avg_sq: get("exp_avg_sq")?,
                    step: Step::Host(step.int64_value(&[])),
                },
            );
        }
        Ok(())
    }
}

/// The updates `updates` (one device, one kind, their step counts on that device) in one call of
/// PyTorch's fused Adam, `_fused_adam_` (`torch.optim.Adam(fused=True)`): each distinct step
/// count advanced by one on the device, then on CUDA a multi-tensor kernel or a few for all of
/// them; with `found_inf` (a 0-d flag on that device) set, nothing changes, step counts included.
/// Its arithmetic is Adam's, rounded in another order than the for-loop Adam's (within 1e-6 of
/// it, tested on the CPU, where libtorch has the same operator). Panics when the operator fails,
/// as a tch operator does.
fn fused_update(updates: &[Update], lr: f64, eps: f64, found_inf: Option<&Tensor>) {
    let pointers =
        |f: &dyn Fn(&Update) -> &Tensor| -> Vec<*const c_void> { updates.iter().map(|u| ffi::ptr(f(u))).collect() };
    let params = pointers(&|u| &u.param);
    let grads = pointers(&|u| &u.grad);
    let exp_avgs = pointers(&|u| &u.state.exp_avg);
    let exp_avg_sqs = pointers(&|u| &u.state.exp_avg_sq);
    let steps = pointers(&Update::device_count);
    let found_inf = found_inf.map_or(std::ptr::null(), ffi::ptr);
    // SAFETY: the five arrays hold `updates.len()` live tensors each and `found_inf` is null or a
    // live tensor, all borrowed for the call; the shim writes its message into the error buffer.
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
            found_inf,
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

    /// Sets the scaler's flag as unscaling would and updates the scale.
    fn after_step(scaler: &mut GradScaler, found_inf: bool) {
        let _ = scaler.found_inf.fill_(f64::from(u8::from(found_inf)));
        scaler.update();
    }

    #[test]
    fn the_loss_scale_backs_off_grows_and_resumes() {
        let mut scaler = GradScaler::with_growth_interval(Device::Cpu, 3);
        let state = |scale, growth_tracker, skipped| ScalerState { scale, growth_tracker, skipped };
        assert_eq!(scaler.state(), state(65536.0, 0, 0));
        after_step(&mut scaler, true);
        assert_eq!(scaler.state(), state(32768.0, 0, 1), "inf: halved, skipped");
        after_step(&mut scaler, false);
        after_step(&mut scaler, false);
        assert_eq!(scaler.state(), state(32768.0, 2, 1));
        after_step(&mut scaler, false);
        assert_eq!(scaler.state(), state(65536.0, 0, 1), "3 clean steps: doubled");
        after_step(&mut scaler, false);
        after_step(&mut scaler, true);
        assert_eq!(scaler.state(), state(32768.0, 0, 2), "an inf resets the run");
        assert_eq!(GradScaler::new(Device::Cpu).growth_interval, 2000, "PyTorch's default");

        for fused in [false, true] {
            let weight = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
            let mut adam = Adam::new(BTreeMap::from([("w".to_string(), weight.shallow_clone())]), 0.1);
            if fused {
                adam = adam.with_fused();
            }
            let mut scaler = GradScaler::with_growth_interval(Device::Cpu, 3);
            scaler.restore(state(32768.0, 0, 2));
            adam.scaler = Some(scaler);
            // A clean step: the loss is scaled, the gradient unscaled back to d(sum w²)/dw = 2w.
            let loss = weight.square().sum(Kind::Float);
            let scaled = adam.scale_loss(&loss);
            assert_eq!(scaled.double_value(&[]), 5.0 * 32768.0);
            scaled.backward();
            adam.clip_and_step(0.0);
            assert_eq!(Vec::<f32>::try_from(weight.grad()).unwrap(), [2.0, -4.0], "fused {fused}");
            let after_clean = Vec::<f32>::try_from(&weight).unwrap();
            assert!((after_clean[0] - 0.9).abs() < 1e-6 && (after_clean[1] + 1.9).abs() < 1e-6, "{after_clean:?}");
            // An overflowing step is skipped: the weights and the step count stay, the scale halves.
            adam.zero_grad();
            (adam.scale_loss(&weight.sum(Kind::Float)) * f64::INFINITY).backward();
            adam.clip_and_step(1.0);
            assert_eq!(Vec::<f32>::try_from(&weight).unwrap(), after_clean, "fused {fused}");
            let scaler = adam.scaler.as_ref().unwrap();
            assert_eq!(scaler.state(), state(16384.0, 0, 3), "fused {fused}");
            let saved = adam.state_dict();
            assert_eq!(saved["step.w"].int64_value(&[]), 1, "fused {fused}: the skipped step does not count");
            // Resume: the scaler's state travels with the optimizer's.
            let mut resumed = Adam::new(BTreeMap::from([("w".to_string(), weight.shallow_clone())]), 0.1);
            resumed.scaler = Some(GradScaler::with_growth_interval(Device::Cpu, 3));
            resumed.load_state_dict(&saved).unwrap();
            assert_eq!(resumed.scaler.as_ref().map(GradScaler::state), Some(state(16384.0, 0, 3)));
            let keys: Vec<String> = resumed.state_dict().into_keys().collect();
            assert_eq!(keys, saved.into_keys().collect::<Vec<_>>());
        }
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
            let new_state = || State::new(&w);
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
        let mut states: Vec<State> = single.iter().map(State::new).collect();
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
                    state.step = Step::Host(step);
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
    /// three steps, for tensors of several shapes and two step counts in one call (the shim
    /// advances them): each argument reaches the operator in its place (a swapped beta or step
    /// count moves the result far more). A raised flag changes nothing, step counts included.
    #[test]
    fn pytorchs_fused_adam_is_the_same_update() {
        let shapes: [&[i64]; 3] = [&[300], &[7, 5], &[4, 3, 2, 2]];
        let params: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu))).collect();
        let grads: Vec<Tensor> = params.iter().map(Tensor::randn_like).collect();
        // The last one starts a step ahead, so one call mixes step counts; the first two share one.
        let shared = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let updates = |on_device: bool| -> Vec<Update> {
            let step = |k: usize| match (on_device, k) {
                (false, k) => Step::Host(i64::from(k == 2)),
                (true, 2) => Step::Device(Tensor::ones([], (Kind::Float, Device::Cpu))),
                (true, _) => Step::Device(shared.shallow_clone()),
            };
            let update = |(k, (p, g)): (usize, (&Tensor, &Tensor))| Update {
                param: p.copy(),
                grad: g.copy(),
                state: State { step: step(k), ..State::new(p) },
            };
            params.iter().zip(&grads).enumerate().map(update).collect()
        };
        let adam = Adam::new(BTreeMap::new(), 0.01);
        let (mut fused, mut looped) = (updates(true), updates(false));
        let regraded = |updates: &[Update], step: i64, advance: bool| -> Vec<Update> {
            let state = |u: &Update| if advance { u.state.advanced() } else { u.state.shared() };
            let next =
                |u: &Update| Update { param: u.param.shallow_clone(), grad: &u.grad * step as f64, state: state(u) };
            updates.iter().map(next).collect()
        };
        for step in 1..=3 {
            (fused, looped) = (regraded(&fused, step, false), regraded(&looped, step, true));
            fused_update(&fused, adam.lr, adam.eps, None);
            looped.iter().for_each(|u| adam.update(u));
        }
        for ((a, b), p) in fused.iter().zip(&looped).zip(&params) {
            assert!((&a.param - &b.param).abs().max().double_value(&[]) < 1e-6, "{:?}", p.size());
            assert!((&a.state.exp_avg_sq - &b.state.exp_avg_sq).abs().max().double_value(&[]) < 1e-6);
            assert!((&a.param - p).abs().max().double_value(&[]) > 1e-3, "the parameter moved");
        }
        let counts: Vec<i64> = fused.iter().map(|u| u.state.step.count()).collect();
        assert_eq!(counts, [3, 3, 4], "a shared count advances once a step");

        let before: Vec<Tensor> = fused.iter().map(|u| u.param.copy()).collect();
        fused_update(&fused, adam.lr, adam.eps, Some(&Tensor::ones([], (Kind::Float, Device::Cpu))));
        assert!(fused.iter().zip(&before).all(|(u, b)| u.param.equal(b)), "skipped: the parameters stay");
        assert_eq!(fused.iter().map(|u| u.state.step.count()).collect::<Vec<_>>(), counts, "and the counts");
        fused_update(&fused, adam.lr, adam.eps, Some(&Tensor::zeros([], (Kind::Float, Device::Cpu))));
        assert!(!fused[0].param.equal(&before[0]), "a clear flag: updated");
        assert_eq!(fused[2].state.step.count(), 5);
    }

    #[test]
    fn one_layout_means_one_kind_sizes_and_strides() {
        let param = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
        let state = State { step: Step::Host(1), ..State::new(&param) };
        let update = |grad: Tensor| Update { param: param.shallow_clone(), grad, state: state.shared() };
        assert!(update(param.zeros_like()).shares_one_layout());
        assert!(!update(Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)).tr()).shares_one_layout(), "strides");
        assert!(!update(param.to_kind(Kind::BFloat16)).shares_one_layout(), "kind");
    }

    /// Adam on the test device (on CUDA, PyTorch's fused Adam for a flat group, for parameters
    /// that share a storage and for one whose gradient is laid out otherwise, in one call), and
    /// the fused Adam on the CPU, equal the CPU's Adam over three steps.
    #[test]
    fn adam_on_device_equals_the_cpu_adam() {
        let values = Tensor::randn([6, 3], (Kind::Float, Device::Cpu));
        let run = |device: Device, fused: bool| -> Vec<Tensor> {
            let base = values.to_device(device).copy();
            let own = base.copy().set_requires_grad(true);
            let rows = [base.narrow(0, 0, 3), base.narrow(0, 3, 3)].map(|r| r.set_requires_grad(true));
            let strided = base.view([3, 6]).copy().set_requires_grad(true);
            let named = [("own", &own), ("rows.0", &rows[0]), ("rows.1", &rows[1]), ("strided", &strided)];
            let params = BTreeMap::from(named.map(|(n, p)| (n.to_string(), p.shallow_clone())));
            let mut adam = Adam::new(params, 0.01);
            if fused {
                adam = adam.with_fused();
            }
            for step in 1..=3 {
                adam.zero_grad();
                let loss = named.iter().map(|(_, p)| (*p * *p * step as f64).sum(Kind::Float));
                loss.reduce(|a, b| a + b).unwrap().backward();
                // The same values in column-major strides for the step (and back for the next
                // backward, which would warn of the layout).
                let grad = strided.grad();
                tch::no_grad(|| grad.shallow_clone().set_data(&grad.tr().contiguous().tr()));
                assert_ne!(strided.grad().stride(), strided.stride());
                adam.step();
                tch::no_grad(|| grad.shallow_clone().set_data(&grad.contiguous()));
            }
            named.iter().map(|(_, p)| p.detach().to_device(Device::Cpu)).collect()
        };
        let on_cpu = run(Device::Cpu, false);
        for (a, b) in
            run(crate::device::test_device(), false).iter().chain(&run(Device::Cpu, true)).zip(on_cpu.iter().cycle())
        {
            assert!((a - b).abs().max().double_value(&[]) < 1e-6);
        }
        assert!((&on_cpu[0] - &values).abs().max().double_value(&[]) > 1e-3, "the parameters moved");
    }

    /// fp16's loss scaling on the test device (on CUDA the scaler and the fused Adam on the GPU,
    /// nothing read back) equals the CPU's one-by-one path, which reads the flag: five steps with
    /// clipping, the third overflowing, the scale growing every two clean steps.
    #[test]
    fn loss_scaling_on_device_equals_the_cpu_path() {
        let values = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
        let run = |device: Device, fused: bool| -> (Tensor, ScalerState, i64) {
            let w = values.to_device(device).copy().set_requires_grad(true);
            let mut adam = Adam::new(BTreeMap::from([("w".to_string(), w.shallow_clone())]), 0.01);
            if fused {
                adam = adam.with_fused();
            }
            adam.scaler = Some(GradScaler::with_growth_interval(device, 2));
            for step in 0..5 {
                adam.zero_grad();
                let loss = (&w * &w).sum(Kind::Float);
                let loss = if step == 2 { loss * f64::INFINITY } else { loss };
                adam.scale_loss(&loss).backward();
                adam.clip_and_step(1.0);
            }
            let steps = adam.state_dict()["step.w"].int64_value(&[]);
            (w.detach().to_device(Device::Cpu), adam.scaler.as_ref().unwrap().state(), steps)
        };
        let (on_device, on_cpu) = (run(crate::device::test_device(), true), run(Device::Cpu, false));
        assert!((&on_device.0 - &on_cpu.0).abs().max().double_value(&[]) < 1e-6);
        let expected = ScalerState { scale: 131072.0, growth_tracker: 0, skipped: 1 };
        assert_eq!((on_device.1, on_device.2), (expected, 4));
        assert_eq!((on_cpu.1, on_cpu.2), (expected, 4));
        assert!((&on_cpu.0 - &values).abs().max().double_value(&[]) > 1e-3, "the weights moved");
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
