// Declarations of the Gloo types that libtorch's c10d/ProcessGroupGloo.hpp names. The PyTorch
// wheel ships that header but not Gloo's own: libtorch_cpu contains Gloo compiled, and the header
// uses its types only behind pointers (std::shared_ptr, std::unique_ptr), so these declarations
// are all that compiling against it needs. Nothing here is defined or called by amfmn.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {

// Its members are named by inline code of the header; libtorch's compiled code is what runs.
class Context {
   public:
    void setTimeout(std::chrono::milliseconds timeout);
};

namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport

namespace rendezvous {
// The key-value store interface c10d's GlooStore implements (declared for its `override`s).
class Store {
   public:
    virtual ~Store() = default;
    virtual void set(const std::string& key, const std::vector<char>& data) = 0;
    virtual std::vector<char> get(const std::string& key) = 0;
    virtual void wait(const std::vector<std::string>& keys) = 0;
    virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};
}  // namespace rendezvous

}  // namespace gloo
