// libmla public API: error values.
//
// Every libmla entry point reports failure through a Status; nothing calls exit() or throws
// across the API boundary. The message names the offending argument and the expected value.
#pragma once

#include <string>
#include <utility>

namespace mla {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // an argument violates the documented contract
  kUnsupported = 2,      // valid in principle, not implemented (page size, alignment, ...)
  kNoDevice = 3,         // no CUDA device, or not a Hopper (sm_90) device
  kCudaError = 4,        // a CUDA runtime call failed
  kInvalidContents = 5,  // validate_contents() found a bad block_table / cache_seqlens entry
};

const char* status_code_name(StatusCode code);

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: batch must be > 0 (got 0)"
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace mla
