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
inline constexpr int kNumBuffers = 2;       // K blocks in smem: the A and B block of a pair
inline constexpr int kThreads = 256;        // two warpgroups, no producer (they issue the TMA)
inline constexpr int kHalfV = kHeadDimV / 2;  // each warpgroup owns 256 output dims
// A K block is requested in two halves (each tile completing its own mbarrier), because the
// halves are freed at different times: tiles [0, 4) hold V[:, 0:256) (read by WG0's P V), tiles
// [4, 9) hold V[:, 256:512) (WG1's P V) and the rope dims.
inline constexpr int kTilesLeft = kHalfV / kTileDim;            // 4
inline constexpr int kTilesRight = kNumTilesQK - kTilesLeft;    // 5
// An epilogue may stage its rows in the (then free) K buffers and write each row with one bulk
// copy (kernel.cuh, store_rows_staged). Row pitches in shared memory: a row plus 32 bytes (fp32
// partials) or 16 bytes (16-bit output), so that the 8 rows one store instruction of the
// accumulator layout covers fall in different banks. 16-bit rows fit in one K buffer, fp32 rows
// in the two.
inline constexpr int kStagePitchF32 = kHeadDimV * 4 + 32;
inline constexpr int kStagePitch16 = kHeadDimV * 2 + 16;
static_assert(kBlockM * kStagePitch16 <= kNumTilesQK * kTileBytes, "16-bit rows fit one buffer");
static_assert(kBlockM * kStagePitchF32 <= kNumBuffers * kNumTilesQK * kTileBytes,
              "fp32 rows fit both K buffers");
// Registers per thread of Q's rope tile as wgmma A fragments (64 x 64 16-bit over 128 threads).
inline constexpr int kQRopeRegs = kBlockM * kTileDim / 2 / 128;  // 16

static_assert(kHeadDimQK % kTileDim == 0, "d_qk must be a whole number of 64-dim tiles");
static_assert(kHeadDimV % (2 * kTileDim) == 0, "d_v must split evenly over two warpgroups");

// Named barriers (id 0 is __syncthreads), 256 threads unless noted; all are full bar.sync.
enum class NamedBarrier : int {
  kQReady = 1,     // Q of a request written by plain loads
  kScaleA = 2,     // WG0 -> WG1: running max after block A, and P_A in smem
  kScaleB = 3,     // WG1 -> WG0: running max after block B, and P_B in smem
  kSegmentEnd = 4, // both warpgroups finished a request's blocks; row sums exchanged
  kWarpgroup0 = 5, // 128 threads of one warpgroup (tail V rows zeroed before its P V)
  kWarpgroup1 = 6,
  kStageRead = 7,  // threads 0..63 (64): their bulk copies of staged rows have read shared memory
};

}  // namespace mla::sm90::decode_dense
