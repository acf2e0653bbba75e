#include "mla/status.h"

namespace mla {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "Ok";
    case StatusCode::kInvalidArgument: return "InvalidArgument";
    case StatusCode::kUnsupported: return "Unsupported";
    case StatusCode::kNoDevice: return "NoDevice";
    case StatusCode::kCudaError: return "CudaError";
    case StatusCode::kInvalidContents: return "InvalidContents";
  }
  return "Unknown";
}

std::string Status::to_string() const {
  if (ok()) return "Ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

}  // namespace mla
