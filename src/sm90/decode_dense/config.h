// Compile-time constants of the sm90 dense MLA decode kernel.
#pragma once

#include <cstdint>

namespace mla::sm90::decode_dense {

inline constexpr int kHeadDimQK = 576;
inline constexpr int kHeadDimV = 512;
inline constexpr int kBlockM = 64;          // query rows per CTA (one wgmma M)
inline constexpr int kBlockN = 64;          // KV tokens per pipeline stage (= page size)
inline constexpr int kTileDim = 64;         // dims per 128-byte swizzled tile (64 x 2 bytes)
inline constexpr int kNumTilesQK = kHeadDimQK / kTileDim;  // 9 tiles hold one K block
inline constexpr int kNumTilesV = kHeadDimV / kTileDim;    // V = the first 8 of them
inline constexpr int kTileBytes = kBlockN * kTileDim * 2;   // 8 KiB: one TMA box
inline constexpr int kNumStages = 2;        // K blocks in flight
inline constexpr int kThreads = 384;        // WG0, WG1: consumers; WG2: TMA producer
inline constexpr int kConsumerRegs = 232;   // setmaxnreg budgets: 2*128*232 + 128*40 <= 64K
inline constexpr int kProducerRegs = 40;
inline constexpr int kHalfV = kHeadDimV / 2;  // each consumer warpgroup owns 256 output dims
inline constexpr int kHalfN = kBlockN / 2;    // and computes S for 32 of a block's 64 tokens

static_assert(kHeadDimQK % kTileDim == 0, "d_qk must be a whole number of 64-dim tiles");
static_assert(kHeadDimV % (2 * kTileDim) == 0, "d_v must split evenly over two warpgroups");
static_assert(2 * 128 * kConsumerRegs + 128 * kProducerRegs <= 65536, "register budget overflow");

// Named barriers (id 0 is __syncthreads); all are full barriers of the 256 consumer threads.
enum class NamedBarrier : int {
  kQReady = 1,  // Q of a request is in shared memory
  kMax = 2,     // both warpgroups' block row maxima (or a request's row sums) are published
  kPReady = 3,  // both halves of P are written (and the tail V rows zeroed)
};

}  // namespace mla::sm90::decode_dense
