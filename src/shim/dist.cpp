// PyTorch's own distributed engine (c10d) for several amfmn processes: the TCPStore rendezvous
// that `init_process_group("env://")` uses, Gloo's process group for CPU tensors or NCCL's for
// CUDA tensors (when built against the CUDA and NCCL headers: AMFMN_NCCL), and the
// collectives training needs, each bounded by the group's timeout. Nothing here transports
// a byte itself: libtorch does, exactly as for a PyTorch job.
//
// C interface for src/dist.rs. Every function that can fail returns 0 on success, or -1 with one
// line of explanation written into `error` (at most `capacity` bytes, NUL-terminated).

#define USE_C10D_GLOO
#ifdef AMFMN_NCCL
#define USE_C10D_NCCL
#endif

#include <c10/util/Logging.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef AMFMN_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "guarded.h"

namespace {

struct Group {
    c10::intrusive_ptr<c10d::Store> store;
    c10::intrusive_ptr<c10d::Backend> backend;
    std::chrono::milliseconds timeout;
    bool nccl;
};

// c10d logs its own view of a failure (a socket timeout, a closed peer) on stderr, beside the
// one line amfmn makes of the exception: unless TORCH_CPP_LOG_LEVEL asks otherwise, a process
// that joins a group logs only libtorch's fatal messages, or its errors too with NCCL (whose
// watchdog explains a timeout only in its log before it ends the process).
void quiet_c10d_logs(bool nccl) {
    if (std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) {
        FLAGS_caffe2_log_level = std::max(FLAGS_caffe2_log_level, nccl ? 2 : 3);
    }
}

// Gloo's collectives run on the host: wait for them, at most the timeout. NCCL's run on the GPU
// on NCCL's stream: a wait without a timeout makes the current stream wait for them and lets the
// host go on queueing the step (with a timeout, NCCL's wait blocks the host until the collective
// has run). Their bound is then NCCL's watchdog (the group's timeout) and the host's own bounded
// waits for the device (src/train).
void finish(Group* group, const c10::intrusive_ptr<c10d::Work>& work) {
    if (group->nccl) {
        work->wait();
    } else {
        work->wait(group->timeout);
    }
}

}  // namespace

extern "C" {

// Whether this build has NCCL's process group (built against the CUDA and NCCL headers).
int amfmn_dist_has_nccl() noexcept {
#ifdef AMFMN_NCCL
    return 1;
#else
    return 0;
#endif
}

// Joins the group of `world` processes as `rank`: the store at host:port (served by rank 0
// unless `server` is 0, as under torchrun, whose agent serves it), keys under `prefix`; then
// Gloo's process group on it, or NCCL's when `nccl` is set (collectives on CUDA tensors).
// `timeout_ms` bounds the rendezvous and every collective.
int amfmn_dist_open(const char* host, int port, int rank, int world, int server, const char* prefix,
                    int64_t timeout_ms, int nccl, void** out, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        quiet_c10d_logs(nccl != 0);
        auto timeout = std::chrono::milliseconds(timeout_ms);
        c10d::TCPStoreOptions options;
        options.port = static_cast<std::uint16_t>(port);
        options.isServer = server != 0;
        options.numWorkers = static_cast<std::size_t>(world);
        options.waitWorkers = false;
        options.timeout = timeout;
        auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
        auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
        c10::intrusive_ptr<c10d::Backend> backend;
        if (nccl != 0) {
#ifdef AMFMN_NCCL
            // The watchdog, which ends the process with a line in c10d's log, waits twice the
            // timeout: the trainer's bounded wait for a step (one line naming the lost ranks)
            // comes first.
            auto options = c10d::ProcessGroupNCCL::Options::create();
            options->timeout = 2 * timeout;
            backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
            throw std::runtime_error("this amfmn was built without NCCL's headers");
#endif
        } else {
            auto gloo = c10d::ProcessGroupGloo::Options::create_default(timeout);
            backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, gloo);
        }
        *out = new Group{store, backend, timeout, nccl != 0};
    });
}

// Leaves the group: after a clean finish it shuts the backend down (what
// `destroy_process_group` does: NCCL's communicators destroyed once their work is done);
// otherwise (`abort` set: a rank was lost, or this one stopped with an error) it aborts the
// backend, so that NCCL's collectives left waiting on a lost rank are cancelled instead of
// waited for by the destructor. Both are bounded by the group's timeout; Gloo has nothing to do.
void amfmn_dist_close(void* group, int abort) noexcept {
    auto g = static_cast<Group*>(group);
    try {
        if (abort != 0) {
            g->backend->abort();
        } else {
            g->backend->shutdown();
        }
    } catch (...) {
        // The process is leaving the group either way; the error that ended the run is reported.
    }
    delete g;
}

// Sums `tensor` over all ranks, in place.
int amfmn_dist_all_reduce(void* group, at::Tensor* tensor, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto g = static_cast<Group*>(group);
        std::vector<at::Tensor> tensors{*tensor};
        finish(g, g->backend->allreduce(tensors));
    });
}

// Every rank's `input` into `output`, whose first dimension is `world` times the input's: rank
// k's rows at block k.
int amfmn_dist_all_gather(void* group, at::Tensor* output, at::Tensor* input, char* error,
                          size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto g = static_cast<Group*>(group);
        std::vector<std::vector<at::Tensor>> outputs{output->chunk(g->backend->getSize(), 0)};
        std::vector<at::Tensor> inputs{*input};
        finish(g, g->backend->allgather(outputs, inputs));
    });
}

// Rank `root`'s `tensor` into every rank's, in place.
int amfmn_dist_broadcast(void* group, at::Tensor* tensor, int root, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto g = static_cast<Group*>(group);
        std::vector<at::Tensor> tensors{*tensor};
        c10d::BroadcastOptions options;
        options.rootRank = root;
        finish(g, g->backend->broadcast(tensors, options));
    });
}

// Returns when every rank has called it (the host waits, at most the timeout, with either
// backend).
int amfmn_dist_barrier(void* group, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto g = static_cast<Group*>(group);
        g->backend->barrier()->wait(g->timeout);
    });
}

// Writes `length` bytes under `key` in the group's store.
int amfmn_dist_store_set(void* group, const char* key, const uint8_t* value, size_t length, char* error,
                         size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        static_cast<Group*>(group)->store->set(key, std::vector<uint8_t>(value, value + length));
    });
}

// Waits (up to the timeout) for `key` and copies at most `length` bytes of its value into
// `value`; `*size` is the value's whole length.
int amfmn_dist_store_get(void* group, const char* key, uint8_t* value, size_t length, size_t* size, char* error,
                         size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        auto bytes = static_cast<Group*>(group)->store->get(key);
        *size = bytes.size();
        std::memcpy(value, bytes.data(), std::min(length, bytes.size()));
    });
}

// Whether `key` is in the group's store now (no waiting): `*present` is 1 or 0.
int amfmn_dist_store_check(void* group, const char* key, int* present, char* error, size_t capacity) noexcept {
    return amfmn::guarded(error, capacity, [&] {
        *present = static_cast<Group*>(group)->store->check({std::string(key)}) ? 1 : 0;
    });
}

}  // extern "C"
