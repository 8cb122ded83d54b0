// Timing the work queued on a GPU without waiting for it between pieces, and waiting for it with
// a bound: c10's device-generic events, with timing on (what
// `torch.cuda.Event(enable_timing=True)` makes) or off, recorded on the current stream of a CUDA
// device. c10's device interface reaches them without CUDA headers.
//
// C interface for src/device.rs: record, elapsed time, query, free.

#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <memory>

#include "guarded.h"

extern "C" {

// An event (with timing when `timing` is set) recorded now on the current stream of CUDA device
// `index`, into `*out`.
int amfmn_event_record(int index, int timing, void** out, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
        const c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
        // BACKEND_DEFAULT is CUDA's default event (timing on); PYTORCH_DEFAULT disables timing,
        // the cheaper event for waiting alone.
        const auto flag = timing != 0 ? c10::EventFlag::BACKEND_DEFAULT : c10::EventFlag::PYTORCH_DEFAULT;
        auto event = std::make_unique<c10::Event>(c10::DeviceType::CUDA, flag);
        event->record(guard.getStream(device));
        *out = event.release();
    });
}

// Waits until the device has passed `end`, then writes the milliseconds from `start` to `end`
// into `*ms`.
int amfmn_event_elapsed(void* start, void* end, double* ms, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        const auto* last = static_cast<const c10::Event*>(end);
        last->synchronize();
        *ms = static_cast<const c10::Event*>(start)->elapsedTime(*last);
    });
}

// Whether the device has passed `event` (no waiting): `*done` is 1 or 0.
int amfmn_event_query(void* event, int* done, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] { *done = static_cast<const c10::Event*>(event)->query() ? 1 : 0; });
}

void amfmn_event_free(void* event) noexcept {
    delete static_cast<c10::Event*>(event);
}

}  // extern "C"
