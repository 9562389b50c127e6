#include "quant/bench.h"

#include <string>

#include "nn/ops/relu.h"
#include "quant/dorefa.h"
#include "quant/lsq.h"
#include "quant/minmax.h"
#include "quant/pact.h"
#include "quant/sat.h"

namespace vkqat::quant {
namespace {

template <class Op>
nn::BenchRecord measure(Context& ctx, bool quick, const std::string& name, double bytes, const std::string& variant,
                        Op op) {
  return nn::bench_op(ctx, quick, name, bytes, 0.0, variant, op);
}

void bench_activation(Context& ctx, bool quick, std::vector<nn::BenchRecord>& out) {
  const std::vector<int> shape{128, 16, 28, 28};
  const std::string size = " n128 c16 28x28 4bit";
  Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), dx(ctx, shape);
  Tensor alpha(ctx, {1}), dalpha(ctx, {1}), s(ctx, {1}), ds(ctx, {1}), s16(ctx, {16}), ds16(ctx, {16});
  Tensor scratch = make_quant_scratch(ctx, shape, ReduceScope::Channels);
  Tensor scratch_t = make_quant_scratch(ctx, shape, ReduceScope::Tensor);
  Tensor range = make_minmax_range(ctx, 1);
  x.upload(nn::bench_ramp(x.numel(), 2.f, 0.5f));
  dy.upload(nn::bench_ramp(x.numel(), 0.1f));
  alpha.upload({2.f});
  s.upload({0.2f});
  s16.upload(std::vector<float>(16, 0.2f));
  const double n = double(x.numel()), f = 4.0;
  const std::string v = "vec4 walk";
  out.push_back(measure(ctx, quick, "relu_fwd (reference point)" + size, 2 * f * n, "nn",
                        [&](Recording& r) { nn::relu_forward(r, x, y); }));
  out.push_back(measure(ctx, quick, "pact_fwd" + size, 2 * f * n, v, [&](Recording& r) { pact_forward(r, x, alpha, y, 4); }));
  out.push_back(measure(ctx, quick, "pact_bwd cg (dx + dalpha)" + size, 3 * f * n, v, [&](Recording& r) {
    pact_backward(r, x, alpha, dy, dx, false, dalpha, false, scratch_t, 4, PactGradient::Calibrated);
  }));
  out.push_back(measure(ctx, quick, "dorefa_act_fwd" + size, 2 * f * n, v, [&](Recording& r) { dorefa_act_forward(r, x, y, 4); }));
  out.push_back(measure(ctx, quick, "dorefa_act_bwd" + size, 3 * f * n, v,
                        [&](Recording& r) { dorefa_act_backward(r, x, dy, dx, false); }));
  const LsqConfig lsq_t{4, QuantTarget::Activation, false}, lsq_c{4, QuantTarget::Activation, true};
  out.push_back(measure(ctx, quick, "lsq_act_fwd per-tensor" + size, 2 * f * n, v, [&](Recording& r) { lsq_forward(r, x, s, y, lsq_t); }));
  out.push_back(measure(ctx, quick, "lsq_act_bwd per-tensor (dx + ds)" + size, 3 * f * n, v, [&](Recording& r) {
    lsq_backward(r, x, s, dy, dx, false, ds, false, scratch_t, lsq_t);
  }));
  out.push_back(measure(ctx, quick, "lsq_act_fwd per-channel" + size, 2 * f * n, v, [&](Recording& r) { lsq_forward(r, x, s16, y, lsq_c); }));
  out.push_back(measure(ctx, quick, "lsq_act_bwd per-channel (dx + ds)" + size, 3 * f * n, v, [&](Recording& r) {
    lsq_backward(r, x, s16, dy, dx, false, ds16, false, scratch, lsq_c);
  }));
  out.push_back(measure(ctx, quick, "lsq_act_init per-tensor" + size, f * n, v,
                        [&](Recording& r) { lsq_init_step(r, x, s, scratch_t, lsq_t); }));
  const MinMaxConfig mm{4, false};
  out.push_back(measure(ctx, quick, "minmax_act_fwd train (observe + quantize)" + size, 3 * f * n, v,
                        [&](Recording& r) { minmax_act_forward(r, x, y, range, scratch_t, mm, true); }));
  out.push_back(measure(ctx, quick, "minmax_act_fwd eval" + size, 2 * f * n, v,
                        [&](Recording& r) { minmax_act_forward(r, x, y, range, scratch_t, mm, false); }));
  out.push_back(measure(ctx, quick, "minmax_act_bwd" + size, 3 * f * n, v,
                        [&](Recording& r) { minmax_act_backward(r, x, range, dy, dx, false, mm); }));
}

void bench_weight(Context& ctx, bool quick, const std::vector<int>& shape, std::vector<nn::BenchRecord>& out) {
  const std::string size = " " + std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + "x3x3 4bit";
  Tensor w(ctx, shape), wq(ctx, shape), g(ctx, shape), dw(ctx, shape), stat(ctx, {1}), stats(ctx, {2});
  Tensor s(ctx, {shape[0]}), ds(ctx, {shape[0]}), maxabs(ctx, {shape[0]});
  Tensor scratch = make_quant_scratch(ctx, shape, ReduceScope::Rows);
  Tensor scratch_t = make_quant_scratch(ctx, shape, ReduceScope::Tensor);
  w.upload(nn::bench_ramp(w.numel(), 0.3f));
  g.upload(nn::bench_ramp(w.numel(), 0.01f));
  s.upload(std::vector<float>(size_t(shape[0]), 0.05f));
  const double n = double(w.numel()), f = 4.0;
  const std::string v = "float walk";
  out.push_back(measure(ctx, quick, "dorefa_w_fwd (max|w| + quantize)" + size, 3 * f * n, v,
                        [&](Recording& r) { dorefa_weight_forward(r, w, wq, stat, scratch_t, 4); }));
  out.push_back(measure(ctx, quick, "dorefa_w_bwd" + size, 3 * f * n, v,
                        [&](Recording& r) { dorefa_weight_backward(r, w, stat, g, dw, false, 4); }));
  const LsqConfig lsq{4, QuantTarget::Weight, true};
  out.push_back(measure(ctx, quick, "lsq_w_fwd per-channel" + size, 2 * f * n, v, [&](Recording& r) { lsq_forward(r, w, s, wq, lsq); }));
  out.push_back(measure(ctx, quick, "lsq_w_bwd per-channel (dw + ds)" + size, 3 * f * n, v, [&](Recording& r) {
    lsq_backward(r, w, s, g, dw, false, ds, false, scratch, lsq);
  }));
  out.push_back(measure(ctx, quick, "minmax_w_fwd per-channel" + size, 3 * f * n, v, [&](Recording& r) {
    minmax_weight_forward(r, w, wq, maxabs, scratch, MinMaxConfig{4, true});
  }));
  out.push_back(measure(ctx, quick, "sat_fwd conv (var + scale)" + size, 3 * f * n, v,
                        [&](Recording& r) { sat_forward(r, w, wq, stats, scratch_t, sat_conv_fan_out(shape)); }));
  out.push_back(measure(ctx, quick, "sat_bwd" + size, 3 * f * n, v, [&](Recording& r) { sat_backward(r, stats, g, dw, false); }));
}

}  // namespace

std::vector<nn::BenchRecord> bench_quant(Context& ctx, bool quick) {
  std::vector<nn::BenchRecord> out;
  bench_activation(ctx, quick, out);
  bench_weight(ctx, quick, {16, 16, 3, 3}, out);
  if (!quick) bench_weight(ctx, quick, {64, 64, 3, 3}, out);
  return out;
}

}  // namespace vkqat::quant
