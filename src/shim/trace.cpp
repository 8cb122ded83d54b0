// A Kineto trace of a piece of work: libtorch's profiler, the one `torch.profiler` drives, with
// its CPU activities (the operators the work dispatches, its backward's included) and, when
// asked, its CUDA activities (each kernel, copy and fill the GPU ran, with its device time,
// through CUPTI), saved as the Chrome trace `torch.profiler`'s `export_chrome_trace` writes. A
// trace of amfmn's step and one of PyTorch's can so be read by the same script
// (exec/trace_summary.py).
//
// C interface for src/profile.rs: start, then stop and save.

#include <torch/csrc/autograd/profiler_kineto.h>

#include <set>
#include <string>

#include "guarded.h"

namespace {

using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

std::set<ActivityType> activities(bool cuda) {
    std::set<ActivityType> chosen{ActivityType::CPU};
    if (cuda) {
        chosen.insert(ActivityType::CUDA);
    }
    return chosen;
}

}  // namespace

extern "C" {

// Starts tracing CPU operators, and the GPU's work when `cuda` is non-zero.
int amfmn_trace_start(int cuda, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        const ProfilerConfig config(ProfilerState::KINETO);
        const std::set<ActivityType> chosen = activities(cuda != 0);
        torch::autograd::profiler::prepareProfiler(config, chosen);
        torch::autograd::profiler::enableProfiler(config, chosen);
    });
}

// Stops tracing and writes the trace as Chrome trace JSON to `path`.
int amfmn_trace_stop(const char* path, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
            torch::autograd::profiler::disableProfiler();
        TORCH_CHECK(result != nullptr, "the profiler was not running");
        result->save(path);
    });
}

}  // extern "C"
