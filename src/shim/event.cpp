// Timing the work queued on a GPU without waiting for it between pieces: c10's device-generic
// events with timing on (what `torch.cuda.Event(enable_timing=True)` makes), recorded on the
// current stream of a CUDA device. c10's device interface reaches them without CUDA headers.
//
// C interface for src/device.rs: record, elapsed time, query, free.

#include <c10/core/Device.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <memory>

#include "guarded.h"

extern "C" {

// A timing event recorded now on the current stream of CUDA device `index`, into `*out`.
int amfmn_event_record(int index, void** out, char* error, size_t capacity) {
    return amfmn::guarded(error, capacity, [&] {
        const c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
        const c10::impl::VirtualGuardImpl guard(c10::DeviceType::CUDA);
        auto event = std::make_unique<c10::Event>(c10::DeviceType::CUDA, c10::EventFlag::BACKEND_DEFAULT);
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
