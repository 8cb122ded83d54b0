// One way for every shim function to report a C++ exception through its C interface: the first
// line of the message (libtorch appends C++ stack frames to some) written into the caller's
// buffer `error` (at most `capacity` bytes, NUL-terminated) and -1 returned.

#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>

namespace amfmn {

inline int fail(char* error, size_t capacity, const std::string& what) {
    if (error != nullptr && capacity > 0) {
        std::string line = what.substr(0, what.find('\n'));
        size_t n = std::min(capacity - 1, line.size());
        std::memcpy(error, line.data(), n);
        error[n] = '\0';
    }
    return -1;
}

// Runs `body`: 0 when it returns nothing, else what it returns; -1 and the message when it throws.
template <typename F>
int guarded(char* error, size_t capacity, F body) noexcept {
    try {
        if constexpr (std::is_void_v<decltype(body())>) {
            body();
            return 0;
        } else {
            return body();
        }
    } catch (const c10::Error& e) {
        return fail(error, capacity, e.what_without_backtrace());
    } catch (const std::exception& e) {
        return fail(error, capacity, e.what());
    } catch (...) {
        return fail(error, capacity, "unknown C++ exception");
    }
}

}  // namespace amfmn
