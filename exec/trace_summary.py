"""Where the GPU time of one traced piece of work goes, side by side for several traces: the
Chrome traces libtorch's profiler writes (amfmn's benches/train_step.rs with AMFMN_TRACE, and
torch.profiler's export_chrome_trace in exec/bench_train_step.py).

Usage: trace_summary.py LABEL=TRACE.json [LABEL=TRACE.json ...] [--top N]   (TRACE.json.gz too)

Prints one aligned table: per kind of kernel (convolution, matrix product, batch norm, ...) the
device milliseconds of the kernels, copies and fills the GPU ran (`"cat"` kernel, gpu_memcpy,
gpu_memset); their total and number; the GPU's busy time (the union of those intervals) and the
span of the traced work (from its first CPU operator to its last event), whose ratio says how much
of the time the GPU worked rather than waited for the host. Then, per trace, the N kernels (10 by
default) with the most device time. A trace without GPU events (a CPU run) says so.
"""
import gzip
import json
import re
import sys

# The kind of a kernel from its name, first matching rule first: cuDNN's convolution kernels are
# implicit GEMMs, so convolutions come before matrix products; a layout change before both.
KINDS = [
    ("optimizer", ("adam", "multi_tensor_apply")),
    ("recurrence (GRU cell)", ("gru",)),
    ("layout (NCHW/NHWC)", ("nchwtonhwc", "nhwctonchw", "nchw2nhwc", "nhwc2nchw", "transpose")),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "winograd", "implicit_gemm", "implicit_convolve")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford")),
    ("matrix product", ("gemm", "gemv", "nvjet", "cutlass", "splitkreduce")),
    ("copy, fill", ("memcpy", "memset", "copy", "fill")),
    ("reduction", ("reduce",)),
    ("pooling", ("pool",)),
    ("elementwise", ("elementwise",)),
]
OTHER = "other"
GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}


def kind(name):
    lower = name.lower()
    for label, needles in KINDS:
        if any(needle in lower for needle in needles):
            return label
    return OTHER


def short(name, width=72):
    """A kernel's name without namespaces and, for a C++ function, `void ` and its parameters
    (template arguments, which name an elementwise kernel's functor, are kept), at most `width`
    long."""
    if name.startswith("void "):
        name = re.sub(r"\([^()]*\)$", "", name.removeprefix("void ").strip()).strip()
    name = name.replace("(anonymous namespace)::", "")
    name = re.sub(r"\b(\w+::)+", "", name)
    return name if len(name) <= width else name[: width - 3] + "..."


def union_length(intervals):
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def summary(path):
    """Per kind the device µs, per kernel name (µs, calls), the GPU's busy µs, the span µs."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rt") as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    gpu = [e for e in events if e.get("cat") in GPU_CATEGORIES]
    by_kind, by_name = {}, {}
    for e in gpu:
        by_kind[kind(e["name"])] = by_kind.get(kind(e["name"]), 0.0) + e["dur"]
        spent, calls = by_name.get(e["name"], (0.0, 0))
        by_name[e["name"]] = (spent + e["dur"], calls + 1)
    busy = union_length([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    starts = [e["ts"] for e in events if e.get("cat") == "cpu_op"] or [e["ts"] for e in events]
    span = max(e["ts"] + e["dur"] for e in events) - min(starts) if events else 0.0
    return {"kinds": by_kind, "names": by_name, "events": len(gpu), "busy": busy, "span": span}


def main(args):
    top = 10
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        args = args[:i] + args[i + 2 :]
    traces = [arg.split("=", 1) for arg in args]
    if not traces or any(len(t) != 2 for t in traces):
        sys.exit("usage: trace_summary.py LABEL=TRACE.json [LABEL=TRACE.json ...] [--top N]")
    done = [(label, summary(path)) for label, path in traces]
    if not any(s["events"] for _, s in done):
        print("(no GPU kernels in these traces: a CPU run)")
        return
    ms = lambda us: f"{us / 1000:.2f}"  # noqa: E731
    rows = [(label, [ms(s["kinds"].get(label, 0.0)) for _, s in done]) for label, _ in KINDS + [(OTHER, ())]]
    rows = [row for row in rows if any(v != "0.00" for v in row[1])]
    rows.append(("GPU time, all kernels (ms)", [ms(sum(s["kinds"].values())) for _, s in done]))
    rows.append(("kernels, copies, fills", [str(s["events"]) for _, s in done]))
    rows.append(("GPU busy (ms)", [ms(s["busy"]) for _, s in done]))
    rows.append(("span of the work (ms)", [ms(s["span"]) for _, s in done]))
    rows.append(("GPU busy / span", [f"{100 * s['busy'] / s['span']:.0f} %" if s["span"] else "-" for _, s in done]))
    width = max(len(r[0]) for r in rows)
    columns = [max(len(label), 9) for label, _ in done]
    print(f"{'kernels (ms)':<{width}}  " + "  ".join(f"{label:>{w}}" for (label, _), w in zip(done, columns)))
    for name, values in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, columns)))
    for label, s in done:
        print(f"{label}: the {top} kernels with the most device time (ms, calls, kind, name)")
        ranked = sorted(s["names"].items(), key=lambda item: -item[1][0])[:top]
        for name, (spent, calls) in ranked:
            print(f"  {ms(spent):>8} {calls:>6}  {kind(name):<22} {short(name)}")


if __name__ == "__main__":
    main(sys.argv[1:])
