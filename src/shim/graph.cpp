// CUDA graphs of a training step: libtorch's `at::cuda::CUDAGraph` (what `torch.cuda.CUDAGraph`
// wraps), which cooperates with the caching allocator (the graph's memory in a private pool) and
// with the CUDA generator (dropout masks drawn on replay as they would be without the graph).
// Capture happens on a side stream, as `torch.cuda.graph` does; warm-up steps run there too.
// The capture is thread-local (`capture_error_mode="thread_local"`): the loader's threads may
// allocate pinned memory while the main thread captures.
//
// C interface for src/device.rs: a side stream (new, enter, leave, free), a pool handle, and a
// graph (begin, end, replay, free). Without CUDA headers at build time every call fails.

#include <cstdint>
#include <optional>

#include "guarded.h"

#ifdef AMFMN_CUDA

#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <memory>

namespace {

// A stream of CUDA device `index` from c10's pool, and, while entered, the guard that makes it
// the calling thread's current stream. c10's device-generic interface reaches them without
// calling the CUDA runtime from here.
struct SideStream {
    c10::Stream stream;
    std::optional<c10::StreamGuard> guard;
};

}  // namespace

extern "C" {

// A side stream of CUDA device `index`, into `*out`.
int amfmn_side_stream_new(int index, void** out, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
        const c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
        *out = new SideStream{guard.getStreamFromGlobalPool(device, false), std::nullopt};
    });
}

// Makes `side` the current stream, once the device has run everything queued before.
int amfmn_side_stream_enter(void* side, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        auto* s = static_cast<SideStream*>(side);
        TORCH_CHECK(!s->guard.has_value(), "the side stream is already entered");
        c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).synchronizeDevice(s->stream.device_index());
        s->guard.emplace(s->stream);
    });
}

// Waits for the work queued on `side` and makes the stream current before `enter` current again.
int amfmn_side_stream_leave(void* side, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        auto* s = static_cast<SideStream*>(side);
        TORCH_CHECK(s->guard.has_value(), "the side stream is not entered");
        // The stream before `enter` is current again even when the wait fails.
        struct Restore {
            SideStream* s;
            ~Restore() { s->guard.reset(); }
        } restore{s};
        s->stream.synchronize();
    });
}

void amfmn_side_stream_free(void* side) noexcept {
    delete static_cast<SideStream*>(side);
}

// A new memory pool for graphs to share (`torch.cuda.graph_pool_handle()`): its id.
int amfmn_graph_pool(uint64_t* first, uint64_t* second, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        const auto pool = at::cuda::graph_pool_handle();
        *first = pool.first;
        *second = pool.second;
    });
}

// Starts capturing the current stream (an entered side stream) into a new graph, `*out`, whose
// memory comes from the pool `first`/`second`.
int amfmn_graph_begin(uint64_t first, uint64_t second, void** out, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        auto graph = std::make_unique<at::cuda::CUDAGraph>();
        graph->capture_begin({first, second}, cudaStreamCaptureModeThreadLocal);
        *out = graph.release();
    });
}

// Ends the capture `graph` began, and instantiates the graph.
int amfmn_graph_end(void* graph, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] { static_cast<at::cuda::CUDAGraph*>(graph)->capture_end(); });
}

// Queues the captured work on the current stream.
int amfmn_graph_replay(void* graph, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] { static_cast<at::cuda::CUDAGraph*>(graph)->replay(); });
}

void amfmn_graph_free(void* graph) noexcept {
    delete static_cast<at::cuda::CUDAGraph*>(graph);
}

}  // extern "C"

#else  // no CUDA headers: every call fails with one message; nothing is ever made to free.

namespace {

int no_cuda(char* error, size_t capacity) {
    return amfmn::fail(error, capacity, "amfmn was built without CUDA headers: no CUDA graphs");
}

}  // namespace

extern "C" {

int amfmn_side_stream_new(int, void**, char* error, size_t capacity) { return no_cuda(error, capacity); }
int amfmn_side_stream_enter(void*, char* error, size_t capacity) { return no_cuda(error, capacity); }
int amfmn_side_stream_leave(void*, char* error, size_t capacity) { return no_cuda(error, capacity); }
void amfmn_side_stream_free(void*) noexcept {}
int amfmn_graph_pool(uint64_t*, uint64_t*, char* error, size_t capacity) { return no_cuda(error, capacity); }
int amfmn_graph_begin(uint64_t, uint64_t, void**, char* error, size_t capacity) { return no_cuda(error, capacity); }
int amfmn_graph_end(void*, char* error, size_t capacity) { return no_cuda(error, capacity); }
int amfmn_graph_replay(void*, char* error, size_t capacity) { return no_cuda(error, capacity); }
void amfmn_graph_free(void*) noexcept {}

}  // extern "C"

#endif
