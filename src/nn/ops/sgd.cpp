#include "nn/ops/sgd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <string>

#include "backend/error.h"
#include "backend/kernel.h"

namespace vkqat::nn {
namespace {

struct SgdPush {
  uint32_t n, lr_index;
  float momentum, weight_decay;
  uint32_t nesterov;
};

void check_param(const Tensor& t, const Tensor& w, const char* what) {
  if (!t.defined() || t.dtype() != DType::F32)
    throw Error(std::string("sgd_update: ") + what + " " + t.shape_str() + " must be a defined F32 tensor");
  if (t.numel() != w.numel())
    throw Error(std::string("sgd_update: ") + what + " " + t.shape_str() + " does not match weight " + w.shape_str());
}

void check_arguments(const Tensor& w, const Tensor& grad, const Tensor& momentum_buf, const Tensor& step_params,
                     uint32_t lr_index, const SgdOptions& opt) {
  check_param(w, w, "weight");
  check_param(grad, w, "gradient");
  check_param(momentum_buf, w, "momentum buffer");
  if (!step_params.defined() || step_params.dtype() != DType::F32 || lr_index >= step_params.numel())
    throw Error("sgd_update: step params " + step_params.shape_str() + " must be F32 with an element at lr index " +
                std::to_string(lr_index));
  if (!std::isfinite(opt.momentum) || opt.momentum < 0 || !std::isfinite(opt.weight_decay) || opt.weight_decay < 0)
    throw Error("sgd_update: momentum " + std::to_string(opt.momentum) + " and weight decay " +
                std::to_string(opt.weight_decay) + " must be finite and >= 0");
  if (opt.nesterov && opt.momentum <= 0) throw Error("sgd_update: Nesterov momentum needs momentum > 0");
  if (w.numel() >= (int64_t(1) << 32)) throw Error("sgd_update: weight " + w.shape_str() + " too large");
}

struct SgdMultiPush {
  uint32_t chunks, lr_index;
  float momentum;
  uint32_t nesterov;
};

// Floats per workgroup of sgd_multi: 8 per invocation of 64, enough work per group to hide
// the table read, small enough that ResNet-20 width 16 fills a large GPU (> 500 groups).
constexpr uint32_t kMultiLocal = 64, kMultiChunk = 512;

// The byte range [begin, end) of one role (weight, gradient or momentum) in a group.
struct Span {
  VkBuffer buffer = VK_NULL_HANDLE;
  uint64_t begin = 0, end = 0;
  void add(const BufferView& v) {
    if (buffer == VK_NULL_HANDLE) buffer = v.buffer, begin = v.offset, end = v.offset + v.size;
    begin = std::min(begin, v.offset), end = std::max(end, v.offset + v.size);
  }
};

}  // namespace

void sgd_update(Recording& rec, Tensor& w, const Tensor& grad, Tensor& momentum_buf, const Tensor& step_params,
                uint32_t lr_index, const SgdOptions& opt) {
  check_arguments(w, grad, momentum_buf, step_params, lr_index, opt);

  Context& ctx = rec.context();
  // vec4 loads where the size allows: fewer, wider memory operations (4x on CPU drivers).
  const bool vec4 = w.numel() % 4 == 0;
  const uint32_t units = uint32_t(vec4 ? w.numel() / 4 : w.numel());
  const Kernel& k = ctx.kernel(vec4 ? "sgd_vec4" : "sgd", {64, 1, 1});
  SgdPush push{units, lr_index, opt.momentum, opt.weight_decay, opt.nesterov ? 1u : 0u};
  rec.dispatch_1d(k, {w.view(), grad.view(), momentum_buf.view(), step_params.view()}, push, units, "sgd_update");
}

int sgd_update_multi(Recording& rec, const std::vector<SgdTensor>& tensors, const Tensor& step_params,
                     uint32_t lr_index, float momentum, bool nesterov, uint64_t max_span_bytes) {
  Context& ctx = rec.context();
  for (const SgdTensor& t : tensors) {
    if (!t.w || !t.grad || !t.momentum) throw Error("sgd_update_multi: a tensor without weight, gradient or momentum");
    SgdOptions opt;
    opt.momentum = momentum, opt.nesterov = nesterov, opt.weight_decay = t.weight_decay;
    check_arguments(*t.w, *t.grad, *t.momentum, step_params, lr_index, opt);
  }
  const DeviceInfo& info = ctx.info();
  uint64_t limit = std::min<uint64_t>(info.max_storage_buffer_range, uint64_t(UINT32_MAX) / 4 * 4);
  if (max_span_bytes > 0) limit = std::min(limit, max_span_bytes);
  const uint64_t align = std::max<uint64_t>(4, info.min_storage_offset_alignment);
  // Tensors whose three buffers agree can share a dispatch; within those, by weight offset.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto key = [&](size_t i) {
    const SgdTensor& t = tensors[i];
    return std::make_tuple(t.w->view().buffer, t.grad->view().buffer, t.momentum->view().buffer, t.w->view().offset);
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  auto span_bytes = [&](const Span& s) { return s.end - s.begin / align * align; };
  int dispatches = 0;
  for (size_t first = 0; first < order.size();) {
    // Greedy: the longest run of tensors whose spans stay within the limit.
    Span sw, sg, sm;
    size_t last = first;
    for (; last < order.size(); ++last) {
      const SgdTensor& t = tensors[order[last]];
      if (last > first && (t.w->view().buffer != sw.buffer || t.grad->view().buffer != sg.buffer ||
                           t.momentum->view().buffer != sm.buffer))
        break;
      Span nw = sw, ng = sg, nm = sm;
      nw.add(t.w->view()), ng.add(t.grad->view()), nm.add(t.momentum->view());
      if (std::max({span_bytes(nw), span_bytes(ng), span_bytes(nm)}) > limit) {
        if (last == first)
          throw Error("sgd_update_multi: parameter " + t.w->shape_str() + " spans more than the " +
                      std::to_string(limit) + "-byte storage buffer range" + info.profile_note());
        break;
      }
      sw = nw, sg = ng, sm = nm;
    }
    for (Span* s : {&sw, &sg, &sm}) s->begin = s->begin / align * align;
    std::vector<uint32_t> table;
    for (size_t j = first; j < last; ++j) {
      const SgdTensor& t = tensors[order[j]];
      uint32_t wd_bits;
      std::memcpy(&wd_bits, &t.weight_decay, 4);
      const uint64_t n = uint64_t(t.w->numel());
      for (uint64_t start = 0; start < n; start += kMultiChunk)
        table.insert(table.end(), {uint32_t((t.w->view().offset - sw.begin) / 4 + start),
                                   uint32_t((t.grad->view().offset - sg.begin) / 4 + start),
                                   uint32_t((t.momentum->view().offset - sm.begin) / 4 + start),
                                   uint32_t(std::min<uint64_t>(kMultiChunk, n - start)), wd_bits});
    }
    const uint32_t chunks = uint32_t(table.size() / 5);
    if (chunks > 0) {
      BufferView table_view = rec.transient(table.size() * 4);
      ctx.upload(table_view, table.data(), table.size() * 4);
      auto whole = [](const Span& s, const BufferView& any) {
        BufferView v = any;
        v.offset = s.begin, v.size = s.end - s.begin, v.mapped = nullptr;
        return v;
      };
      const SgdTensor& t0 = tensors[order[first]];
      const Kernel& k = ctx.kernel("sgd_multi", {kMultiLocal, 1, 1});
      SgdMultiPush push{chunks, lr_index, momentum, nesterov ? 1u : 0u};
      rec.dispatch(k,
                   {whole(sw, t0.w->view()), whole(sg, t0.grad->view()), whole(sm, t0.momentum->view()),
                    step_params.view(), table_view},
                   push, Groups{chunks, 1, 1}, "sgd_update");
      ++dispatches;
    }
    first = last;
  }
  return dispatches;
}

namespace ref {
void sgd_update(std::vector<float>& w, const std::vector<float>& grad, std::vector<float>& momentum_buf, float lr,
                const SgdOptions& opt) {
  for (size_t i = 0; i < w.size(); ++i) {
    double g = double(grad[i]) + double(opt.weight_decay) * double(w[i]);
    double buf = double(opt.momentum) * double(momentum_buf[i]) + g;
    momentum_buf[i] = float(buf);
    double d = opt.nesterov ? g + double(opt.momentum) * buf : buf;
    w[i] = float(double(w[i]) - double(lr) * d);
  }
}
}  // namespace ref

}  // namespace vkqat::nn
