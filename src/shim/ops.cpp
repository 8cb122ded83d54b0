// Counting the ATen operations libtorch dispatches, through its RecordFunction callbacks: the
// mechanism torch.profiler uses, so a count here and a count of `aten::` events in a PyTorch
// profile of the same work are the same quantity. Every dispatched `aten::` operator counts,
// nested ones included (a `linear` and the `addmm` it calls are two), in every thread; and, as
// kernels, the operators that compute (not named in the caller's list of views, allocations and
// metadata) while no computing operator runs beneath them: about one GPU kernel launch each.
//
// Each kernel is also counted by the type of its first tensor input (`aten::mm BFloat16`), so a
// profile shows whether mixed precision really runs the products in 16 bits.
//
// C interface for src/profile.rs: start, stop, read the totals, the per-operator counts and the
// kernels per operator and input type.

#include <ATen/record_function.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace {

struct Frame {
    bool computes;
    bool computed_below;
    // The type of the first tensor input ("-" without one).
    const char* input_type;
};

struct Calls {
    int64_t all = 0;
    int64_t kernels = 0;
};

std::atomic<int64_t> total{0};
std::atomic<int64_t> kernels{0};
// Per thread, the operators open now (outermost first).
thread_local std::vector<Frame> open_ops;
std::mutex lock;
std::map<std::string, Calls> by_name;
// "name type" -> kernels.
std::map<std::string, int64_t> by_input_type;
std::set<std::string> no_kernel;
bool counting = false;
at::CallbackHandle handle = 0;

bool is_aten(const char* name) {
    return name != nullptr && std::strncmp(name, "aten::", 6) == 0;
}

const char* first_tensor_type(const at::RecordFunction& fn) {
    for (const c10::IValue& input : fn.inputs()) {
        if (input.isTensor() && input.toTensor().defined()) {
            return c10::toString(input.toTensor().scalar_type());
        }
    }
    return "-";
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
    const char* name = fn.name();
    if (!is_aten(name)) {
        return nullptr;
    }
    total.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> guard(lock);
    by_name[name].all += 1;
    bool computes = no_kernel.count(name) == 0;
    open_ops.push_back(Frame{computes, false, computes ? first_tensor_type(fn) : "-"});
    return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
    const char* name = fn.name();
    if (!is_aten(name) || open_ops.empty()) {
        return;
    }
    Frame frame = open_ops.back();
    open_ops.pop_back();
    if (frame.computes && !frame.computed_below) {
        kernels.fetch_add(1, std::memory_order_relaxed);
        std::lock_guard<std::mutex> guard(lock);
        by_name[name].kernels += 1;
        by_input_type[std::string(name) + " " + frame.input_type] += 1;
    }
    if (!open_ops.empty()) {
        open_ops.back().computed_below |= frame.computes || frame.computed_below;
    }
}

}  // namespace

extern "C" {

// Starts counting from zero; `views` names the operators that do not compute, one per line.
// Returns 0, or -1 when libtorch refused the callback.
int amfmn_ops_start(const char* views) noexcept {
    try {
        std::lock_guard<std::mutex> guard(lock);
        if (counting) {
            at::removeCallback(handle);
        }
        total.store(0);
        kernels.store(0);
        by_name.clear();
        by_input_type.clear();
        open_ops.clear();
        no_kernel.clear();
        std::string names(views == nullptr ? "" : views);
        for (size_t start = 0; start < names.size();) {
            size_t end = std::min(names.find('\n', start), names.size());
            no_kernel.insert(names.substr(start, end - start));
            start = end + 1;
        }
        handle = at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end)
                                           .scopes({at::RecordScope::FUNCTION})
                                           .needsInputs(true));
        counting = true;
        return 0;
    } catch (...) {
        return -1;
    }
}

// Stops counting (the counts stay readable); returns the total and, in `kernel_count`, the
// kernels.
int64_t amfmn_ops_stop(int64_t* kernel_count) noexcept {
    try {
        std::lock_guard<std::mutex> guard(lock);
        if (counting) {
            at::removeCallback(handle);
            counting = false;
        }
    } catch (...) {
    }
    *kernel_count = kernels.load();
    return total.load();
}

// The per-operator counts as "name calls kernels\n" lines, most frequent first, into `buffer`
// (at most `capacity` bytes, not terminated); returns the length the whole text needs.
size_t amfmn_ops_report(char* buffer, size_t capacity) noexcept {
    try {
        std::multimap<int64_t, std::string, std::greater<int64_t>> ordered;
        {
            std::lock_guard<std::mutex> guard(lock);
            for (const auto& entry : by_name) {
                ordered.emplace(entry.second.all, entry.first + " " + std::to_string(entry.second.all) + " " +
                                                      std::to_string(entry.second.kernels) + "\n");
            }
        }
        std::string text;
        for (const auto& entry : ordered) {
            text += entry.second;
        }
        if (buffer != nullptr) {
            std::memcpy(buffer, text.data(), std::min(capacity, text.size()));
        }
        return text.size();
    } catch (...) {
        return 0;
    }
}

// The kernels per operator and type of its first tensor input, as "name type kernels\n" lines
// (sorted by name), into `buffer` as amfmn_ops_report does; returns the length the text needs.
size_t amfmn_ops_input_types(char* buffer, size_t capacity) noexcept {
    try {
        std::string text;
        {
            std::lock_guard<std::mutex> guard(lock);
            for (const auto& entry : by_input_type) {
                text += entry.first + " " + std::to_string(entry.second) + "\n";
            }
        }
        if (buffer != nullptr) {
            std::memcpy(buffer, text.data(), std::min(capacity, text.size()));
        }
        return text.size();
    } catch (...) {
        return 0;
    }
}

}  // extern "C"
