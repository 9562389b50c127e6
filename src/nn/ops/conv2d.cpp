// conv2d dispatch: shape validation, variant choice and the recording of the kernels.
//
// Kernels (shaders/conv2d_*):
//  - register-blocked (CPU drivers): conv2d_fwd_rb / conv2d_bwd_data_rb share
//    conv2d_rb_body.glsl (16 out channels x 2 rows x 4 or 7 columns per invocation, 4 in
//    channels per step); conv2d_bwd_weight_rb keeps 8 out channels x kh x kw of dw per
//    invocation and reduces over every n, oh, ow itself.
//  - 1x1 without padding on the register-blocked variant: conv2d_1x1_fwd / _bwd_data share
//    conv2d_1x1_body.glsl (a GEMM per image: 16 out channels x 8 pixels per invocation, 4
//    in channels per step); conv2d_1x1_bwd_weight keeps up to 16 x 16 of dw per invocation,
//    splits K = n * oh * ow into plane segments walked in order (an unaligned plane costs
//    one vec4 load per row and chunk too), sums the partials of a workgroup with
//    subgroupAdd and those of several workgroups with conv2d_split_sum.
//  - tiled (GPUs): conv2d_{fwd,bwd_data,bwd_weight}_tiled, 64x64 tiles through shared
//    memory, 16-deep k slices, 4x4 per invocation; backward-weight splits K over workgroup
//    layers when its tiles are few, merged by conv2d_split_sum.
//  - depthwise (both variants): conv2d_dw_{fwd,bwd_data}_blocked / conv2d_dw_bwd_weight_split
//    (conv2d_dw_blocked_body.glsl), or the direct one-output-per-invocation conv2d_dw_* kernels
//    (VKQAT_DW_VARIANT=direct, for comparison).
// Notes from tuning on lavapipe (Mesa 22.3, 2 cores, 8-wide subgroups): every SSBO load is
// a scalar loop over the SIMD lanes, uniform address or not, and costs as much as tens of
// multiply-adds; a vec4 load costs about 1.5 scalar ones; subgroupShuffle with a constant
// lane is almost free; loops that are not unrolled turn register arrays into memory. So
// the kernels unroll everything, load weights once per subgroup and shuffle them out, read
// inputs as vec4s, and let neighbour lanes share aligned input chunks. On the ResNet-20
// shape n128 c16 28x28 3x3 the forward pass went from 6 GFLOP/s (8x4 block, scalar loads)
// to ~35 GFLOP/s on an otherwise idle machine.
#include "nn/ops/conv2d.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {

namespace {

std::atomic<ConvVariant> g_variant{ConvVariant::Auto};
std::atomic<DepthwiseVariant> g_dw_variant{DepthwiseVariant::Auto};

// Mirrors the push-constant block of shaders/conv2d_common.glsl.
struct ConvPush {
  int32_t n, c_in, h, w, c_out, kh, kw, stride, pad, oh, ow, accumulate;
};

ConvPush make_push(const Conv2dShape& s, bool accumulate) {
  return {s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw, s.stride, s.pad, s.out_h(), s.out_w(), accumulate ? 1 : 0};
}

uint32_t ceil_div(int64_t a, int64_t b) { return uint32_t((a + b - 1) / b); }
uint32_t u32(int v) { return uint32_t(v); }

void check_tensor(const char* op, const Conv2dShape& s, const char* what, const Tensor& t,
                  const std::vector<int>& want) {
  if (!t.defined() || t.shape() != want)
    throw Error(std::string(op) + ": " + what + " is " + (t.defined() ? t.shape_str() : "undefined") +
                " but conv " + s.str() + " needs " + shape_str(want));
  if (t.dtype() != DType::F32) throw Error(std::string(op) + ": " + what + " must be float32");
}

// The same tensor viewed as vec4[]: the size is rounded up to whole vec4s. Shaders only
// use the padding floats at masked positions; they lie inside the tensor's own
// sub-allocation, which the block allocator rounds to its (>= 16 byte) alignment.
BufferView vec4_view(const Tensor& t) {
  BufferView v = t.view();
  if (t.context().allocator().alignment() % 16 != 0)
    throw Error("conv2d: the allocator alignment must be a multiple of 16 bytes");
  v.size = (v.size + 15) / 16 * 16;
  return v;
}

// ---- register-blocked variant (CPU drivers) --------------------------------------------

// Lanes that share weight / dy loads through subgroupShuffle: the subgroup, when the
// workgroup is made of whole subgroups and the device lets the kernel request that
// subgroup size with full subgroups (otherwise a driver may run it with another size and
// the lane arithmetic breaks). 1 disables sharing (the kernel then needs no subgroup size).
uint32_t sharing_lanes(const Context& ctx, uint32_t local_size) {
  const DeviceInfo& d = ctx.info();
  const uint32_t sg = d.subgroup_size;
  if (!d.subgroup_size_control || !d.subgroup_shuffle) return 1;
  return (sg >= 4 && sg <= local_size && local_size % sg == 0) ? sg : 1;
}
// The subgroup size to request for a kernel whose lanes share loads over `lanes` lanes.
uint32_t subgroup_request(uint32_t lanes) { return lanes > 1 ? lanes : 0; }

// Output columns per invocation: 4 (vec4 stores, neighbour exchange) unless the row is a
// multiple of 7 but not of 4 (14x14, 7x7 maps), where 7 leaves no idle columns.
int columns_per_block(int cols) { return (cols % 4 != 0 && cols % 7 == 0) ? 7 : 4; }

// Forward (bwd_data = false) or backward-data through conv2d_rb_body.glsl.
void record_rb_gemm(Recording& rec, const Conv2dShape& s, bool bwd_data, const Tensor& in, const Tensor& w,
                    Tensor& out, bool accumulate) {
  Context& ctx = rec.context();
  const int kk = s.kh * s.kw;
  // Roles: "in" is read through windows, "out" written.
  const int in_c = bwd_data ? s.c_out : s.c_in, in_w = bwd_data ? s.out_w() : s.w;
  const int out_c = bwd_data ? s.c_in : s.c_out;
  const int rows = bwd_data ? s.h : s.out_h(), cols = bwd_data ? s.w : s.out_w();

  const uint32_t LX = 64;
  const int MB = out_c > 8 ? 16 : out_c > 4 ? 8 : 4;
  // Backward-data tiles are whole multiples of the stride (see the shader).
  const int st = bwd_data ? s.stride : 1;
  const int NB = st == 1 ? columns_per_block(cols) : (4 + st - 1) / st * st;
  const int R = st == 1 ? std::min(rows, 2) : st;
  const int CG = in_c % 4 == 0 ? 4 : 1;
  const int VEC = bwd_data ? (s.c_in * kk) % 4 == 0 : CG == 4;
  const uint32_t WL = sharing_lanes(ctx, LX);
  // Neighbour exchange of aligned 4-column chunks (see the shader): stride-1 window walk,
  // aligned rows, a halo that fits one neighbour chunk, and 4-column blocks that cover
  // every input column (so a halo from another row is always masked padding).
  const int xpad = bwd_data ? s.kw - 1 - s.pad : s.pad;
  const int col_blocks = (cols + NB - 1) / NB;
  const bool xchg = WL > 1 && NB == 4 && s.stride == 1 && in_w % 4 == 0 && xpad >= 0 && xpad <= 4 &&
                    s.kw - xpad <= 5 && col_blocks * NB >= in_w;
  const Kernel& k = ctx.kernel(bwd_data ? "conv2d_bwd_data_rb" : "conv2d_fwd_rb", {LX, 1, 1},
                               {u32(MB), u32(NB), u32(R), u32(s.kh), u32(s.kw), u32(s.stride), u32(s.pad),
                                u32(s.pad), u32(CG), u32(VEC), WL, xchg ? 1u : 0u},
                               subgroup_request(WL));
  const int64_t blocks = int64_t(s.n) * ((rows + R - 1) / R) * col_blocks;
  rec.dispatch(k, {vec4_view(in), w.view(), vec4_view(w), out.view(), vec4_view(out)}, make_push(s, accumulate),
               Groups{ceil_div(blocks, LX), ceil_div(out_c, MB), 1},
               bwd_data ? "conv2d_bwd_data_rb" : "conv2d_fwd_rb");
}

void record_rb_weight(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw,
                      bool accumulate) {
  Context& ctx = rec.context();
  // One subgroup per workgroup: idle lanes cost as much as busy ones on a CPU driver,
  // and small workgroups spread the few invocations over all threads.
  const uint32_t LX = std::max<uint32_t>(ctx.info().subgroup_size, 1);
  const int MB = s.c_out >= 8 ? 8 : 4;
  const int NB = columns_per_block(s.out_w());
  const int R = NB == 4 ? std::min(s.out_h(), 2) : 1;
  const int VEC = s.out_w() % 4 == 0 && NB % 4 == 0;
  const uint32_t WL = sharing_lanes(ctx, LX);
  const Kernel& k = ctx.kernel("conv2d_bwd_weight_rb", {LX, 1, 1},
                               {u32(MB), u32(NB), u32(R), u32(s.kh), u32(s.kw), u32(s.stride), u32(s.pad),
                                u32(VEC), WL},
                               subgroup_request(WL));
  rec.dispatch(k, {vec4_view(x), dy.view(), vec4_view(dy), dw.view()}, make_push(s, accumulate),
               Groups{ceil_div(s.c_in, LX), ceil_div(s.c_out, MB), 1}, "conv2d_bwd_weight_rb");
}

// ---- 1x1 kernels (register-blocked variant) ------------------------------------------

bool uses_1x1_kernels(const Context& ctx, const Conv2dShape& s) {
  // Backward-weight merges its split sum with subgroupAdd over a workgroup of exactly one
  // subgroup: without subgroup arithmetic, or without a way to request that subgroup size,
  // the generic register-blocked kernels take 1x1 too.
  return s.kh == 1 && s.kw == 1 && s.pad == 0 && !s.depthwise() && ctx.info().subgroup_arithmetic &&
         ctx.info().subgroup_size_control && conv_variant(ctx) == ConvVariant::RegisterBlocked;
}

// Forward (bwd_data = false) or backward-data through conv2d_1x1_body.glsl.
void record_1x1_gemm(Recording& rec, const Conv2dShape& s, bool bwd_data, const Tensor& in, const Tensor& w,
                     Tensor& out, bool accumulate) {
  Context& ctx = rec.context();
  const int m = bwd_data ? s.c_in : s.c_out;
  const int in_hw = s.h * s.w, out_hw = s.out_h() * s.out_w();
  const uint32_t LX = 64;
  const int MB = m > 8 ? 16 : m > 4 ? 8 : 4;
  const int NP = 8;
  // Pixel blocks run along whole planes, except in the strided forward pass (along rows).
  const bool rows = !bwd_data && s.stride > 1;
  const int row_count = rows ? s.out_h() : 1, cols = rows ? s.out_w() : out_hw;
  const bool b_aligned = bwd_data ? out_hw % 4 == 0 : in_hw % 4 == 0 && (s.stride * s.w) % 4 == 0;
  const bool o_aligned = bwd_data ? s.stride == 1 && in_hw % 4 == 0
                                  : out_hw % 4 == 0 && (s.stride == 1 || s.out_w() % 4 == 0);
  const bool w_vec = s.c_in % 4 == 0;
  // A strided backward-data pass writes only the pixels under dy: zero the others first.
  if (bwd_data && s.stride > 1 && !accumulate) rec.fill(out.view(), 0, "conv2d_1x1_bwd_data zero");
  const char* name = bwd_data ? "conv2d_1x1_bwd_data" : "conv2d_1x1_fwd";
  const Kernel& k = ctx.kernel(name, {LX, 1, 1},
                               {u32(MB), u32(NP), u32(s.stride), b_aligned ? 1u : 0u, o_aligned ? 1u : 0u,
                                w_vec ? 1u : 0u, sharing_lanes(ctx, LX)},
                               subgroup_request(sharing_lanes(ctx, LX)));
  const int64_t blocks = int64_t(s.n) * row_count * ((cols + NP - 1) / NP);
  rec.dispatch(k, {vec4_view(in), w.view(), vec4_view(w), out.view(), vec4_view(out)}, make_push(s, accumulate),
               Groups{ceil_div(blocks, LX), ceil_div(m, MB), 1}, name);
}

void record_1x1_weight(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw,
                       bool accumulate) {
  Context& ctx = rec.context();
  // One subgroup per workgroup: the final reduction is then one subgroupAdd per output.
  const uint32_t LX = std::max<uint32_t>(ctx.info().subgroup_size, 1);
  // 16 x 16 dw blocks: per 4-pixel chunk 32 vec4 loads feed 1024 multiply-adds (the former
  // 16 x 8 kernel took 1.5x as long on lavapipe; 32 x 32 ran 32->32 14x14 and 64->64 7x7
  // ~10% faster still, but its unrolled body took LLVM minutes to compile).
  auto block = [](int c) { return c > 8 ? 16 : c > 4 ? 8 : 4; };
  int MB = block(s.c_out);
  const int CB = block(s.c_in);
  // The shared partial sums hold one row per subgroup: one, since the pipeline requests
  // subgroups of LX lanes (uses_1x1_kernels checked that the device can).
  const uint32_t subgroups = 1;
  while (subgroups * MB * CB * sizeof(float) > ctx.info().max_shared_memory && MB > 4) MB /= 2;
  const int out_hw = s.out_h() * s.out_w();
  const bool dy_aligned = out_hw % 4 == 0, x_aligned = s.stride == 1 && (s.h * s.w) % 4 == 0;
  const uint32_t gx = ceil_div(s.c_in, CB), gy = ceil_div(s.c_out, MB);
  // Few blocks (16 channels: 1) leave a CPU driver's threads idle: split K over enough
  // workgroups (z), each writing a partial dw merged by conv2d_split_sum, as long as every
  // invocation keeps a few dozen chunks to amortize its reduction.
  const int64_t chunks = ceil_div(out_hw, 4);
  constexpr int64_t kMinWorkgroups = 16, kMinChunksPerInvocation = 32;
  int64_t splits = ceil_div(kMinWorkgroups, int64_t(gx) * gy);
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, int64_t(s.n) * chunks / (kMinChunksPerInvocation * LX)));
  // Items (plane segments) for every invocation: split the planes when the batch is small.
  const int segments = int(std::clamp<int64_t>(ceil_div(splits * LX, s.n), 1, chunks));
  const Kernel& k = ctx.kernel("conv2d_1x1_bwd_weight", {LX, 1, 1},
                               {u32(MB), u32(CB), u32(s.stride), dy_aligned ? 1u : 0u, x_aligned ? 1u : 0u,
                                subgroups, u32(int(splits)), u32(segments)},
                               LX);
  if (splits == 1) {
    rec.dispatch(k, {vec4_view(x), x.view(), vec4_view(dy), dw.view()}, make_push(s, accumulate), Groups{gx, gy, 1},
                 "conv2d_1x1_bwd_weight");
    return;
  }
  const uint32_t count = uint32_t(dw.numel());
  const BufferView partial = rec.transient(uint64_t(splits) * count * sizeof(float));
  rec.dispatch(k, {vec4_view(x), x.view(), vec4_view(dy), partial}, make_push(s, false), Groups{gx, gy, u32(int(splits))},
               "conv2d_1x1_bwd_weight");
  const Kernel& merge = ctx.kernel("conv2d_split_sum", {64, 1, 1});
  struct { uint32_t count, splits, accumulate; } push{count, u32(int(splits)), accumulate ? 1u : 0u};
  rec.dispatch(merge, {partial, dw.view()}, push, Groups{ceil_div(count, 64), 1, 1}, "conv2d_1x1_bwd_weight merge");
}

// ---- tiled variant (GPUs) -------------------------------------------------------------

void record_tiled(Recording& rec, const Conv2dShape& s, const char* shader, const Tensor& a, const Tensor& b,
                  Tensor& out, bool accumulate, int64_t gemm_m, int64_t gemm_n, int64_t split_k = 0) {
  // 64x64 tiles (256 invocations, 4x4 each); 32x32 where a workgroup may hold fewer than
  // 256 invocations (the Vulkan minimum is 128).
  // Shared memory: (BM + BN) * BK floats, 8 KiB for 64x64 (the minimum limit is 16 KiB).
  uint32_t tile = pick_workgroup_size(rec.context().info(), 256, 0, 0) >= 256 ? 64 : 32;
  // A forward / backward-data grid of fewer 64x64 tiles than two per SM of a 132-SM GPU
  // (ResNet-20's third stage at batch 128: 98) takes 32x32 tiles: four times the
  // workgroups, each a quarter of the work (backward-weight splits K instead, below).
  constexpr int64_t kTargetWorkgroups = 264;
  if (tile == 64 && split_k == 0 && int64_t(ceil_div(gemm_n, 64)) * ceil_div(gemm_m, 64) < kTargetWorkgroups) tile = 32;
  const uint32_t BM = tile, BN = tile, BK = 16, TM = 4, TN = 4;
  const uint32_t gx = ceil_div(gemm_n, BN), gy = ceil_div(gemm_m, BM);
  // Split-K (backward-weight, K = split_k): when the tiles are fewer than two per SM of a
  // 132-SM GPU (ResNet-20's first stage: 3), cut K into chunks of at least 8 BK slices,
  // one workgroup layer (z) each, and add the partials in z order (conv2d_split_sum).
  int64_t splits = 1, chunk = 0;
  if (split_k > 0) {
    constexpr int64_t kMinChunk = 8 * 16;
    splits = std::clamp<int64_t>(ceil_div(kTargetWorkgroups, int64_t(gx) * gy), 1,
                                 std::max<int64_t>(1, split_k / kMinChunk));
    splits = std::min<int64_t>(splits, rec.context().info().max_workgroup_count[2]);
    if (splits > 1) {
      // Whole BK slices, rounded down so that the split still reaches the target.
      chunk = std::max<int64_t>(BK, split_k / splits / BK * BK);
      splits = ceil_div(split_k, chunk);
    }
  }
  const Kernel& k = rec.context().kernel(shader, {(BM / TM) * (BN / TN), 1, 1},
                                         {BM, BN, BK, TM, TN, u32(int(splits > 1 ? chunk : 0))});
  if (splits <= 1) {
    rec.dispatch(k, {a.view(), b.view(), out.view()}, make_push(s, accumulate), Groups{gx, gy, 1}, shader);
    return;
  }
  const uint32_t count = uint32_t(out.numel());
  const BufferView partial = rec.transient(uint64_t(splits) * count * sizeof(float));
  rec.dispatch(k, {a.view(), b.view(), partial}, make_push(s, false), Groups{gx, gy, u32(int(splits))}, shader);
  const Kernel& merge = rec.context().kernel("conv2d_split_sum", {64, 1, 1});
  struct { uint32_t count, splits, accumulate; } push{count, u32(int(splits)), accumulate ? 1u : 0u};
  rec.dispatch(merge, {partial, out.view()}, push, Groups{ceil_div(count, 64), 1, 1},
               "conv2d_bwd_weight_tiled merge");
}

// ---- depthwise (both variants) --------------------------------------------------------

void record_depthwise(Recording& rec, const Conv2dShape& s, const char* shader, const Tensor& a, const Tensor& b,
                      Tensor& out, bool accumulate, int64_t invocations) {
  const Kernel& k = rec.context().kernel(shader, {64, 1, 1});
  rec.dispatch_1d(k, {a.view(), b.view(), out.view()}, make_push(s, accumulate), uint64_t(invocations), shader);
}

// Columns per invocation of the blocked kernels: 8 on CPU drivers (a 3x3 stride-1 window
// row then loads 10 inputs for 24 multiply-adds; on lavapipe 8 ran the MobileNetV2 shapes
// ~1.8x (forward) to ~2.5x (backward-weight) faster than 4), 4 on GPUs (more invocations).
// A multiple of 4 (vec4 rows); backward-data rounds up to a multiple of the stride (see the
// shader).
int dw_columns(const Context& ctx) { return ctx.info().is_cpu() ? 8 : 4; }
int dw_bwd_data_columns(const Context& ctx, const Conv2dShape& s) {
  return (dw_columns(ctx) + s.stride - 1) / s.stride * s.stride;
}

std::vector<uint32_t> dw_spec(const Conv2dShape& s, int columns, int units_per_chunk = 1, uint32_t local = 64,
                              bool vec4 = false) {
  return {u32(s.kh), u32(s.kw), u32(s.stride), u32(s.pad), u32(columns), u32(units_per_chunk), local, vec4 ? 1u : 0u};
}
// x rows read as aligned vec4s (forward, backward-weight): every row starts on a vec4 and
// blocks of 4 outputs start their windows at the same offset within one (see the shader).
bool dw_vec4_rows(const Conv2dShape& s) { return s.w % 4 == 0; }

// Forward (bwd_data = false) or backward-data: one row segment of `columns` per invocation.
void record_dw_blocked(Recording& rec, const Conv2dShape& s, bool bwd_data, const Tensor& in, const Tensor& w,
                       Tensor& out, bool accumulate) {
  const int columns = bwd_data ? dw_bwd_data_columns(rec.context(), s) : dw_columns(rec.context());
  const int rows = bwd_data ? s.h : s.out_h(), cols = bwd_data ? s.w : s.out_w();
  const char* name = bwd_data ? "conv2d_dw_bwd_data_blocked" : "conv2d_dw_fwd_blocked";
  const uint32_t local = pick_workgroup_size(rec.context().info(), 64);
  const bool vec4 = !bwd_data && dw_vec4_rows(s);
  const Kernel& k = rec.context().kernel(name, {local, 1, 1}, dw_spec(s, columns, 1, 64, vec4));
  const int64_t units = int64_t(s.n) * s.c_in * rows * ((cols + columns - 1) / columns);
  if (bwd_data)
    rec.dispatch_1d(k, {in.view(), w.view(), out.view()}, make_push(s, accumulate), uint64_t(units), name);
  else
    rec.dispatch_1d(k, {in.view(), w.view(), out.view(), vec4_view(in)}, make_push(s, accumulate), uint64_t(units),
                    name);
}

// Backward-weight split over (chunk, channel) workgroups. Units (n, oh, column block) of a
// channel are cut into chunks so that there are enough workgroups to fill the device (a
// GPU wants hundreds; a CPU driver a few per thread) while every invocation keeps several
// units to amortize the workgroup reduction; the chunk partials are merged in order.
void record_dw_weight_split(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw,
                            bool accumulate) {
  Context& ctx = rec.context();
  const bool cpu = ctx.info().is_cpu();
  const uint32_t kk = u32(s.kh * s.kw);
  const uint32_t local = pick_workgroup_size(ctx.info(), 64, kk * uint32_t(sizeof(float)));
  const int columns = dw_columns(ctx);
  const int64_t units = int64_t(s.n) * s.out_h() * ((s.out_w() + columns - 1) / columns);
  const int64_t min_workgroups = cpu ? 16 : 528;           // GPU: 4 per SM of a 132-SM part
  const int64_t max_units_per_invocation = cpu ? 64 : 16;  // a GPU prefers more, shorter invocations
  const int64_t min_units_per_invocation = 4;
  int64_t chunks = std::max(ceil_div(min_workgroups, s.c_out), ceil_div(units, local * max_units_per_invocation));
  chunks = std::clamp<int64_t>(chunks, 1, std::max<int64_t>(1, units / (local * min_units_per_invocation)));
  chunks = std::min<int64_t>(chunks, int64_t(ctx.info().max_workgroup_count[0]));
  const int64_t per_chunk = (units + chunks - 1) / chunks;
  chunks = (units + per_chunk - 1) / per_chunk;  // no empty chunk
  const Kernel& k = ctx.kernel("conv2d_dw_bwd_weight_split", {local, 1, 1},
                               dw_spec(s, columns, int(per_chunk), local, dw_vec4_rows(s)));
  const Groups groups{u32(int(chunks)), u32(s.c_out), 1};
  if (chunks == 1) {
    rec.dispatch(k, {x.view(), dy.view(), dw.view(), vec4_view(x)}, make_push(s, accumulate), groups,
                 "conv2d_dw_bwd_weight_split");
    return;
  }
  const uint32_t count = uint32_t(dw.numel());
  const BufferView partial = rec.transient(uint64_t(chunks) * count * sizeof(float));
  rec.dispatch(k, {x.view(), dy.view(), partial, vec4_view(x)}, make_push(s, false), groups,
               "conv2d_dw_bwd_weight_split");
  const Kernel& merge = ctx.kernel("conv2d_split_sum", {64, 1, 1});
  struct { uint32_t count, splits, accumulate; } push{count, u32(int(chunks)), accumulate ? 1u : 0u};
  rec.dispatch(merge, {partial, dw.view()}, push, Groups{ceil_div(count, 64), 1, 1},
               "conv2d_dw_bwd_weight_split merge");
}

}  // namespace

void Conv2dShape::validate() const {
  auto fail = [&](const std::string& why) { throw Error("conv2d " + str() + ": " + why); };
  if (n < 1 || c_in < 1 || h < 1 || w < 1 || c_out < 1) fail("n, c_in, h, w, c_out must be >= 1");
  if (kh < 1 || kw < 1) fail("kernel size must be >= 1");
  if (stride < 1) fail("stride must be >= 1");
  if (pad < 0) fail("pad must be >= 0");
  if (groups != 1 && !(groups == c_in && groups == c_out))
    fail("groups must be 1 or depthwise (groups == c_in == c_out), got groups " + std::to_string(groups));
  if (kh > h + 2 * pad || kw > w + 2 * pad)
    fail("kernel " + std::to_string(kh) + "x" + std::to_string(kw) + " is bigger than the padded input " +
         std::to_string(h + 2 * pad) + "x" + std::to_string(w + 2 * pad));
  // The shaders index with 32-bit ints (with a little headroom for rounding to vec4s).
  const int64_t limit = (int64_t(1) << 31) - 64;
  if (int64_t(n) * c_in * h * w >= limit || int64_t(n) * c_out * out_h() * out_w() >= limit ||
      int64_t(c_out) * (c_in / groups) * kh * kw >= limit)
    fail("tensor too large for 32-bit indexing");
}

double Conv2dShape::flops() const {
  return 2.0 * n * c_out * out_h() * out_w() * double(c_in / groups) * kh * kw;
}

std::string Conv2dShape::str() const {
  std::string s = "n" + std::to_string(n) + " c" + std::to_string(c_in) + "->" + std::to_string(c_out) + " " +
                  std::to_string(h) + "x" + std::to_string(w) + " k" + std::to_string(kh);
  if (kw != kh) s += "x" + std::to_string(kw);
  s += "s" + std::to_string(stride) + "p" + std::to_string(pad);
  if (groups != 1) s += " g" + std::to_string(groups);
  return s;
}

void set_conv_variant(ConvVariant v) { g_variant = v; }

ConvVariant conv_variant(const Context& ctx) {
  ConvVariant v = g_variant;
  std::string source = "set_conv_variant";
  if (v == ConvVariant::Auto)
    if (const char* e = std::getenv("VKQAT_CONV_VARIANT"); e && *e) {
      source = std::string("VKQAT_CONV_VARIANT=") + e;
      if (!std::strcmp(e, "regblock"))
        v = ConvVariant::RegisterBlocked;
      else if (!std::strcmp(e, "regblock-generic"))
        v = ConvVariant::RegisterBlockedGeneric;
      else if (!std::strcmp(e, "tiled"))
        v = ConvVariant::Tiled;
      else
        throw Error(std::string("VKQAT_CONV_VARIANT must be regblock, regblock-generic or tiled, got '") + e + "'");
    }
  // A forced variant still needs what its shaders use: the register-blocked ones contain
  // subgroupShuffle (dead code when sharing is off, but a pipeline with it needs the feature).
  if ((v == ConvVariant::RegisterBlocked || v == ConvVariant::RegisterBlockedGeneric) && !ctx.info().subgroup_shuffle)
    throw Error(source + ": the register-blocked convolution needs subgroup shuffles in compute shaders, which " +
                ctx.info().name + ctx.info().profile_note() + " lacks; use tiled");
  if (v != ConvVariant::Auto) return v;
  // The register-blocked kernels hand weights between lanes with subgroupShuffle; a CPU
  // driver without it gets the tiled kernels (correct everywhere, slower there).
  return ctx.info().is_cpu() && ctx.info().subgroup_shuffle ? ConvVariant::RegisterBlocked : ConvVariant::Tiled;
}

void set_depthwise_variant(DepthwiseVariant v) { g_dw_variant = v; }

DepthwiseVariant depthwise_variant() {
  DepthwiseVariant v = g_dw_variant;
  if (v != DepthwiseVariant::Auto) return v;
  if (const char* e = std::getenv("VKQAT_DW_VARIANT"); e && *e) {
    if (!std::strcmp(e, "blocked")) return DepthwiseVariant::Blocked;
    if (!std::strcmp(e, "direct")) return DepthwiseVariant::Direct;
    throw Error(std::string("VKQAT_DW_VARIANT must be blocked or direct, got '") + e + "'");
  }
  return DepthwiseVariant::Blocked;
}

const char* depthwise_variant_name(DepthwiseVariant v) {
  switch (v) {
    case DepthwiseVariant::Blocked: return "blocked";
    case DepthwiseVariant::Direct: return "direct";
    default: return "auto";
  }
}

const char* conv_variant_name(ConvVariant v) {
  switch (v) {
    case ConvVariant::RegisterBlocked: return "regblock";
    case ConvVariant::RegisterBlockedGeneric: return "regblock-generic";
    case ConvVariant::Tiled: return "tiled";
    default: return "auto";
  }
}

void conv2d_forward(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& w, Tensor& y) {
  s.validate();
  const size_t first_dispatch = rec.dispatch_shapes().size();
  check_tensor("conv2d_forward", s, "x", x, s.x_shape());
  check_tensor("conv2d_forward", s, "w", w, s.w_shape());
  check_tensor("conv2d_forward", s, "y", y, s.y_shape());
  if (s.depthwise() && depthwise_variant() == DepthwiseVariant::Blocked)
    record_dw_blocked(rec, s, false, x, w, y, false);
  else if (s.depthwise())
    record_depthwise(rec, s, "conv2d_dw_fwd", x, w, y, false, int64_t(s.n) * s.c_out * s.out_h() * s.out_w());
  else if (uses_1x1_kernels(rec.context(), s))
    record_1x1_gemm(rec, s, false, x, w, y, false);
  else if (conv_variant(rec.context()) != ConvVariant::Tiled)
    record_rb_gemm(rec, s, false, x, w, y, false);
  else
    record_tiled(rec, s, "conv2d_fwd_tiled", x, w, y, false, s.c_out, int64_t(s.n) * s.out_h() * s.out_w());
  rec.annotate_flops(first_dispatch, s.flops());  // the GEMM (a 1x1 split-K merge follows it)
}

void conv2d_backward_data(Recording& rec, const Conv2dShape& s, const Tensor& dy, const Tensor& w, Tensor& dx,
                          bool accumulate) {
  s.validate();
  const size_t first_dispatch = rec.dispatch_shapes().size();
  check_tensor("conv2d_backward_data", s, "dy", dy, s.y_shape());
  check_tensor("conv2d_backward_data", s, "w", w, s.w_shape());
  check_tensor("conv2d_backward_data", s, "dx", dx, s.x_shape());
  if (s.depthwise() && depthwise_variant() == DepthwiseVariant::Blocked)
    record_dw_blocked(rec, s, true, dy, w, dx, accumulate);
  else if (s.depthwise())
    record_depthwise(rec, s, "conv2d_dw_bwd_data", dy, w, dx, accumulate, int64_t(s.n) * s.c_in * s.h * s.w);
  else if (uses_1x1_kernels(rec.context(), s))
    record_1x1_gemm(rec, s, true, dy, w, dx, accumulate);
  else if (conv_variant(rec.context()) != ConvVariant::Tiled)
    record_rb_gemm(rec, s, true, dy, w, dx, accumulate);
  else
    record_tiled(rec, s, "conv2d_bwd_data_tiled", dy, w, dx, accumulate, s.c_in, int64_t(s.n) * s.h * s.w);
  rec.annotate_flops(first_dispatch, s.flops());  // the GEMM (a 1x1 split-K merge follows it)
}

void conv2d_backward_weight(Recording& rec, const Conv2dShape& s, const Tensor& x, const Tensor& dy, Tensor& dw,
                            bool accumulate) {
  s.validate();
  const size_t first_dispatch = rec.dispatch_shapes().size();
  check_tensor("conv2d_backward_weight", s, "x", x, s.x_shape());
  check_tensor("conv2d_backward_weight", s, "dy", dy, s.y_shape());
  check_tensor("conv2d_backward_weight", s, "dw", dw, s.w_shape());
  if (s.depthwise() && depthwise_variant() == DepthwiseVariant::Blocked)
    record_dw_weight_split(rec, s, x, dy, dw, accumulate);
  else if (s.depthwise())
    record_depthwise(rec, s, "conv2d_dw_bwd_weight", x, dy, dw, accumulate, int64_t(s.c_out) * s.kh * s.kw);
  else if (uses_1x1_kernels(rec.context(), s))
    record_1x1_weight(rec, s, x, dy, dw, accumulate);
  else if (conv_variant(rec.context()) != ConvVariant::Tiled)
    record_rb_weight(rec, s, x, dy, dw, accumulate);
  else
    record_tiled(rec, s, "conv2d_bwd_weight_tiled", x, dy, dw, accumulate, s.c_out, int64_t(s.c_in) * s.kh * s.kw,
                 int64_t(s.n) * s.out_h() * s.out_w());
  rec.annotate_flops(first_dispatch, s.flops());  // the GEMM (a 1x1 split-K merge follows it)
}

}  // namespace vkqat::nn
