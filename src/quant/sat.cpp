#include "quant/sat.h"

#include <cmath>

#include "backend/error.h"
#include "quant/plan.h"

namespace vkqat::quant {
namespace {

using detail::Plan;
using detail::PlanKind;
using detail::PlanPush;

struct ForwardPush {
  PlanPush plan;
  float n;
};
struct BackwardPush {
  PlanPush plan;
  uint32_t accumulate;
};

}  // namespace

int64_t sat_fc_n(const std::vector<int>& weight_shape) {
  if (weight_shape.size() != 2)
    throw Error("sat_fc_n: the last FC's weight must be [out, in], got " + nn::shape_str(weight_shape));
  return weight_shape[0];
}

int64_t sat_conv_fan_out(const std::vector<int>& weight_shape) {
  if (weight_shape.size() != 4)
    throw Error("sat_conv_fan_out: conv weight must be OIHW, got " + nn::shape_str(weight_shape));
  return int64_t(weight_shape[0]) * weight_shape[2] * weight_shape[3];
}

void sat_forward(Recording& rec, const Tensor& wq, Tensor& w_star, Tensor& stats, Tensor& scratch, int64_t n) {
  const char* op = "sat_forward";
  detail::require_shape(op, wq, "wq", wq.shape());
  detail::require_shape(op, w_star, "w_star", wq.shape());
  detail::require_numel(op, stats, "stats [factor, var]", 2);
  if (n < 1) throw Error(std::string(op) + ": n must be >= 1, got " + std::to_string(n));
  Context& ctx = rec.context();
  detail::require_scratch(op, scratch, ctx, wq.shape(), ReduceScope::Tensor);
  nn::ReduceOptions opt;
  opt.out_index = 1;  // population variance into stats[1]
  nn::reduce_var(rec, wq, stats, scratch, opt);
  const Plan plan = detail::make_plan(ctx, wq.shape(), ReduceScope::Tensor, PlanKind::Elementwise, false);
  ForwardPush push{plan.push, float(n)};
  detail::dispatch_plan(rec, "quant_sat", plan, {wq.view(), stats.view(), w_star.view()}, push, "sat");
}

void sat_backward(Recording& rec, const Tensor& stats, const Tensor& dw_star, Tensor& dwq, bool accumulate) {
  const char* op = "sat_backward";
  detail::require_numel(op, stats, "stats [factor, var]", 2);
  detail::require_shape(op, dw_star, "dw_star", dw_star.shape());
  detail::require_shape(op, dwq, "dwq", dw_star.shape());
  const Plan plan = detail::make_plan(rec.context(), dw_star.shape(), ReduceScope::Tensor, PlanKind::Elementwise, false);
  BackwardPush push{plan.push, accumulate ? 1u : 0u};
  detail::dispatch_plan(rec, "quant_sat_bwd", plan, {stats.view(), dw_star.view(), dwq.view()}, push, "sat_bwd");
}

namespace ref {

SatScaled sat_forward(const std::vector<float>& wq, int64_t n) {
  SatScaled out;
  double mean = 0;
  for (float v : wq) mean += v;
  mean /= double(wq.size());
  for (float v : wq) out.var += (v - mean) * (v - mean);
  out.var /= double(wq.size());
  out.factor = out.var > 0 ? 1.0 / std::sqrt(double(n) * out.var) : 1.0;
  out.w_star.resize(wq.size());
  for (size_t i = 0; i < wq.size(); ++i) out.w_star[i] = wq[i] * out.factor;
  return out;
}

}  // namespace ref
}  // namespace vkqat::quant
