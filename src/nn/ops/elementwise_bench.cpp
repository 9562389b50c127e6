// `vkqat bench` entries for the non-convolution layer ops on a ResNet-sized activation
// (128x16x28x28): achieved bandwidth (bytes the kernels actually read + write / time) and,
// for the linear layer, GFLOP/s.
#include <string>

#include "nn/bench.h"
#include "nn/ops/add.h"
#include "nn/ops/batchnorm2d.h"
#include "nn/ops/cross_entropy.h"
#include "nn/ops/linear.h"
#include "nn/ops/pool.h"
#include "nn/ops/relu.h"
#include "nn/tensor.h"

namespace vkqat::nn {
std::vector<BenchRecord> bench_elementwise(Context& ctx, bool quick) {
  std::vector<BenchRecord> records;
  const std::vector<int> shape{128, 16, 28, 28};
  const std::string size = " n128 c16 28x28";
  Tensor x(ctx, shape), y(ctx, shape), dy(ctx, shape), dx(ctx, shape), other(ctx, shape);
  const double n = double(x.numel()), f = 4.0;  // elements, bytes per element
  x.upload(bench_ramp(x.numel(), 2.f, 0.5f));
  dy.upload(bench_ramp(x.numel(), 0.1f));
  other.upload(bench_ramp(x.numel(), 1.f));
  const std::string flat = "vec4, 4 per thread";

  records.push_back(bench_op(ctx, quick, "relu_fwd" + size, 2 * f * n, 0, flat,
                            [&](Recording& r) { relu_forward(r, x, y); }));
  if (!quick) {
    records.push_back(bench_op(ctx, quick, "relu_bwd" + size, 3 * f * n, 0, flat,
                              [&](Recording& r) { relu_backward(r, x, dy, dx, false); }));
    records.push_back(bench_op(ctx, quick, "add_fwd" + size, 3 * f * n, 0, flat,
                              [&](Recording& r) { add_forward(r, x, other, y); }));
    records.push_back(bench_op(ctx, quick, "add_bwd" + size, 3 * f * n, 0, flat,
                              [&](Recording& r) { add_backward(r, dy, dx, false, other, false); }));
  }

  {
    const int c = shape[1];
    Tensor gamma(ctx, {c}), beta(ctx, {c}), rm(ctx, {c}), rv(ctx, {c}), mean(ctx, {c}), invstd(ctx, {c}),
        dgamma(ctx, {c}), dbeta(ctx, {c});
    gamma.upload(std::vector<float>(c, 1.f));
    beta.upload(std::vector<float>(c, 0.f));
    rm.upload(std::vector<float>(c, 0.f));
    rv.upload(std::vector<float>(c, 1.f));
    const std::string variant = "vec4, 1 workgroup/channel, 2 sweeps";
    for (bool relu : {false, true}) {
      if (quick && relu) continue;
      const std::string tag = relu ? "_relu" : "";
      // forward: x is read by the statistics sweep and the normalize sweep, y written once
      records.push_back(bench_op(ctx, quick, "batchnorm2d_fwd_train" + tag + size, 3 * f * n, 0, variant,
                                [&](Recording& r) {
                                  batchnorm2d_forward_train(r, x, gamma, beta, rm, rv, mean, invstd, y,
                                                            1e-5f, 0.1f, relu);
                                }));
      // backward: x, dy (and y for the ReLU mask) read by both sweeps, dx written once
      records.push_back(bench_op(ctx, quick, "batchnorm2d_bwd" + tag + size, (relu ? 7 : 5) * f * n, 0, variant,
                                [&](Recording& r) {
                                  batchnorm2d_backward(r, x, y, dy, gamma, mean, invstd, dx, false, dgamma,
                                                       dbeta, false, relu);
                                }));
    }
    if (!quick)
      records.push_back(bench_op(ctx, quick, "batchnorm2d_fwd_eval" + size, 2 * f * n, 0, "vec4, channel x batch tiles",
                                [&](Recording& r) { batchnorm2d_forward_eval(r, x, gamma, beta, rm, rv, y); }));
  }

  {
    Tensor pooled(ctx, {shape[0], shape[1]}), d_pooled(ctx, {shape[0], shape[1]});
    d_pooled.upload(bench_ramp(d_pooled.numel(), 1.f));
    const double planes = double(pooled.numel());
    records.push_back(bench_op(ctx, quick, "global_avg_pool_fwd" + size, f * (n + planes), 0, "vec4, 1 plane/thread",
                              [&](Recording& r) { global_avg_pool_forward(r, x, pooled); }));
    if (!quick)
      records.push_back(bench_op(ctx, quick, "global_avg_pool_bwd" + size, f * (n + planes), 0, flat,
                                [&](Recording& r) { global_avg_pool_backward(r, d_pooled, dx, false); }));
  }

  {
    const std::vector<int> out{shape[0], shape[1], shape[2] / 2, shape[3] / 2};
    Tensor pooled(ctx, out), d_pooled(ctx, out);
    d_pooled.upload(bench_ramp(d_pooled.numel(), 1.f));
    const double outs = double(pooled.numel());
    records.push_back(bench_op(ctx, quick, "maxpool2x2_fwd" + size, f * (n + outs), 0, "vec4, 1 row/thread",
                              [&](Recording& r) { maxpool2x2_forward(r, x, pooled); }));
    if (!quick)
      records.push_back(bench_op(ctx, quick, "maxpool2x2_bwd" + size, f * (2 * n + outs), 0, "vec4, 2 rows/thread",
                                [&](Recording& r) { maxpool2x2_backward(r, x, d_pooled, dx, false); }));
  }

  {
    const int batch = 128, in = 64, out = 10;
    Tensor lx(ctx, {batch, in}), w(ctx, {out, in}), b(ctx, {out}), ly(ctx, {batch, out}), ldy(ctx, {batch, out}),
        ldx(ctx, {batch, in}), dw(ctx, {out, in}), db(ctx, {out});
    lx.upload(bench_ramp(lx.numel(), 1.f));
    w.upload(bench_ramp(w.numel(), 0.1f));
    b.upload(bench_ramp(b.numel(), 0.1f));
    ldy.upload(bench_ramp(ldy.numel(), 0.01f));
    const double gemm = 2.0 * batch * in * out;
    const std::string name = " n128 64->10";
    records.push_back(bench_op(ctx, quick, "linear_fwd" + name, 0, gemm, "4x4 register block",
                              [&](Recording& r) { linear_forward(r, lx, w, b, ly); }));
    records.push_back(bench_op(ctx, quick, "linear_bwd" + name, 0, 2 * gemm + batch * out, "4x4 register block",
                              [&](Recording& r) { linear_backward(r, lx, w, ldy, &ldx, false, dw, db, false); }));
    if (!quick) {
      Tensor labels(ctx, {batch}, DType::U32), loss(ctx, {1}), correct(ctx, {1}, DType::U32);
      std::vector<uint32_t> lv(batch);
      for (int i = 0; i < batch; ++i) lv[size_t(i)] = uint32_t(i % out);
      labels.upload_u32(lv);
      records.push_back(bench_op(ctx, quick, "cross_entropy" + name.substr(0, 5) + " k10", f * (2.0 * batch * out + batch),
                                0, "1 workgroup", [&](Recording& r) {
                                  cross_entropy(r, ly, labels, loss, correct, &ldy, 1.f);
                                }));
    }
  }
  return records;
}

}  // namespace vkqat::nn
