"""Training-step time of the PyTorch reference of AMFMN (tests/reference/amfmn_reference.py, the
original's modules and loss) with torch.optim.Adam, on random SIZExSIZE images and 15-token
captions, and of its parts: the CNN with MVSA (forward + backward), the text encoder (forward +
backward) and Adam's step.

Usage: bench_train_step.py BATCHES STEPS [DEVICE=cpu] [AMP=off|bf16|fp16] [SIZE=256]; BATCHES is
one batch size or several, comma-separated. For each it prints a line `batch=<b>` and then
step_seconds, image_seconds, text_seconds, adam_seconds (medians), each followed by the number of
ATen operators one more run dispatches and of those that compute (step_ops, step_kernels, ...:
the `aten::` events of a torch.profiler profile, nested ones included, counted as amfmn's
src/profile.rs counts them) and, on CUDA, peak_mb (peak allocated memory). AMFMN_OPS_TOP=n also
prints the n most frequent operators of each part (calls, kernels). AMP runs the forward and the loss under torch.autocast (fp16 with
torch.amp.GradScaler), as a PyTorch user would switch it on. AMFMN_TRACE=<prefix> traces one more
step per batch with torch.profiler (on CUDA each kernel with its device time) into
<prefix>-<batch>.json, whose path it prints (trace=), as amfmn's benches/train_step.rs does
(AMFMN_TRACE_BATCH=<b>: batch b alone); exec/trace_summary.py reads both.
"""
import collections
import os
import statistics
import sys
import time

# Kineto's start-up complaint on a machine without a GPU is not ours to print.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
from amfmn_reference import AMFMN, contrastive_loss  # noqa: E402

batches, steps = [int(b) for b in sys.argv[1].split(",")], int(sys.argv[2])
device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
amp = sys.argv[4] if len(sys.argv) > 4 else "off"
size = int(sys.argv[5]) if len(sys.argv) > 5 else 256
dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
torch.manual_seed(0)
model = AMFMN(1349, dropout=0.25, image_size=size).to(device)
model.train()
adam = torch.optim.Adam(model.parameters(), lr=2e-4)
scaler = torch.amp.GradScaler(device, enabled=amp == "fp16")
if device != "cpu":
    torch.backends.cudnn.benchmark = True


def timed(fn):
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# Operators that compute nothing themselves (the list of src/profile.rs, NO_KERNEL): an `aten::`
# event not named here, with no such event beneath it, is a kernel (about one GPU launch).
NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::as_strided", "aten::as_strided_",
    "aten::view", "aten::_reshape_alias", "aten::_unsafe_view", "aten::reshape", "aten::alias",
    "aten::detach", "aten::detach_", "aten::resize_", "aten::set_", "aten::unsqueeze", "aten::squeeze",
    "aten::select", "aten::slice", "aten::narrow", "aten::transpose", "aten::t", "aten::permute",
    "aten::expand", "aten::split", "aten::split_with_sizes", "aten::unbind", "aten::chunk", "aten::resolve_conj",
    "aten::resolve_neg", "aten::result_type", "aten::lift_fresh",
}


def computes(event):
    return event.name.startswith("aten::") and event.name not in NO_KERNEL


def computed_below(event):
    return any(computes(c) or computed_below(c) for c in event.cpu_children)


def measure(part, fn):
    print(f"{part}_seconds={timed(fn):.4f}")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], acc_events=True) as prof:
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    kernels = collections.Counter(e.name for e in aten if computes(e) and not computed_below(e))
    print(f"{part}_ops={len(aten)}")
    print(f"{part}_kernels={sum(kernels.values())}")
    for name, count in collections.Counter(e.name for e in aten).most_common(int(os.environ.get("AMFMN_OPS_TOP", "0"))):
        print(f"  {name} {count} {kernels[name]}")
    sys.stdout.flush()


def trace(fn, path):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device != "cpu":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, acc_events=True) as prof:
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
    prof.export_chrome_trace(path)
    if not os.path.isfile(path):  # Kineto reports a failed write in its log only
        raise OSError(f"the profiler wrote no trace to {path}")
    print(f"trace={path}")


def autocast():
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None)


def step(images, ids):
    with autocast():
        loss = contrastive_loss(model(images, ids), 0.2)
    adam.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(adam)
    scaler.update()


def image_part(images):
    with autocast():
        visual = model.mvsa(*model.extract_feature(images))
    visual.float().sum().backward()


def text_part(ids):
    with autocast():
        text = model.text_feature(ids)
    text.float().sum().backward()


for batch in batches:
    torch.manual_seed(0)
    images = torch.randn(batch, 3, size, size, device=device)
    ids = torch.randint(1, 1349, (batch, 15), device=device)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    print(f"batch={batch}")
    measure("step", lambda: step(images, ids))
    if os.environ.get("AMFMN_TRACE") and os.environ.get("AMFMN_TRACE_BATCH", str(batch)) == str(batch):
        try:  # a trace that fails (a profiler the machine refuses) costs the trace, not the rows
            trace(lambda: step(images, ids), f"{os.environ['AMFMN_TRACE']}-{batch}.json")
        except Exception as e:  # noqa: BLE001
            print(f"bench_train_step: no trace of batch {batch}: {e}", file=sys.stderr)
    measure("image", lambda: image_part(images))
    measure("text", lambda: text_part(ids))
    measure("adam", adam.step)
    if device != "cpu":
        print(f"peak_mb={torch.cuda.max_memory_allocated() / 2**20:.0f}")
    sys.stdout.flush()
