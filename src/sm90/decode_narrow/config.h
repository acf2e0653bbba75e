// Compile-time constants of the sm90 "narrow" MLA decode kernel: the variant for at most 16
// query rows per kv head (s_q * h_q / h_kv <= 16, e.g. h_q = 16 with s_q = 1, the DeepSeek
// heads of one GPU under 8-way tensor parallelism).
#pragma once

#include "sm90/decode_dense/config.h"

namespace mla::sm90::decode_narrow {

using decode_dense::kBlockN;
using decode_dense::kHeadDimQK;
using decode_dense::kHeadDimV;
using decode_dense::kNumTilesQK;
using decode_dense::kNumTilesV;
using decode_dense::kTileBytes;
using decode_dense::kTileDim;

// Query rows per CTA: the N of the transposed products S^T = K Q^T and O^T = V^T P^T. The
// dense kernel's Q K^T puts the rows in wgmma's M, which is at least 64: with 16 rows three
// quarters of its tensor work and of its Q operand traffic are padding.
inline constexpr int kRows = 16;
inline constexpr int kQTileBytes = kRows * kTileDim * 2;  // 2 KiB: 16 rows x 64 dims

// KV tiles (64 tokens x 64 dims, 8 KiB, one TMA box) in a ring; a block is 9 consecutive ring
// positions. 22 tiles (2.4 blocks) is what fits next to two Q slots and the S^T exchange: the
// consumers hold at most one block, so 13 or more tiles (104 KiB) are always being loaded.
inline constexpr int kRingTiles = 22;
inline constexpr int kNumQSlots = 2;  // Q of the current request and the next one

// Two consumer warpgroups share every block: WG0 owns tiles 0..3 (V dims 0..255) and the rope
// tile 8, WG1 tiles 4..7 (V dims 256..511). Each computes S^T over its own tiles, the partial
// scores are summed through shared memory, both run the (identical) softmax, and each computes
// O^T for its own 256 dims. So each ring tile is read by exactly one warpgroup.
inline constexpr int kWarpgroupThreads = 128;
inline constexpr int kConsumerWarpgroups = 2;
inline constexpr int kConsumerThreads = kWarpgroupThreads * kConsumerWarpgroups;
inline constexpr int kWarpgroupWarps = kWarpgroupThreads / 32;
inline constexpr int kThreads = kConsumerThreads + 32;  // + one producer warp issuing the TMA
inline constexpr int kVTilesPerWarpgroup = kNumTilesV / kConsumerWarpgroups;  // 4

static_assert(kRows % 8 == 0 && kRows <= 256, "kRows must be a valid wgmma N");

// Named barriers (id 0 is __syncthreads). "Both": the 256 consumer threads; the per-warpgroup
// ones are id + warpgroup over 128 threads.
enum class NamedBarrier : int {
  kScoresExchanged = 1,  // both: partial S^T of a block published by each warpgroup
  kColumnMax = 2,        // both: per-warp column maxima of a block's scores published
  kQReady = 3,           // both: Q of a request written by plain loads
  kPReady = 4,           // 4, 5: P of a block (and zeroed tail V rows) in shared memory
  kColumnSum = 6,        // 6, 7: per-warp column sums published at a request's end
  kStage = 8,            // 8, 9: output rows staged in shared memory (and read back)
};

}  // namespace mla::sm90::decode_narrow
