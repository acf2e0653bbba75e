// L2 flush between timed replays (l2_flush.cu); the modes are in options.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "options.h"

namespace mla_bench {

// Empties L2 of earlier data as `mode` says, on `stream`. The buffer must have been zeroed once
// before the first kRead flush.
void flush_l2(FlushMode mode, void* buffer, size_t bytes, cudaStream_t stream);

}  // namespace mla_bench
