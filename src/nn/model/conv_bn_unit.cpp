#include "nn/model/conv_bn_unit.h"

namespace vkqat::nn {

ConvBnUnit::ConvBnUnit(Context& ctx, const std::string& conv_name, const std::string& bn_name, const Conv2dShape& s,
                       bool relu_after)
    : conv(ctx, conv_name, s),
      bn(ctx, bn_name, s.n, s.c_out),
      relu(relu_after),
      conv_out(ctx, s.y_shape()),
      out(ctx, s.y_shape()),
      d_conv_out(ctx, s.y_shape()) {}

void ConvBnUnit::forward(Recording& rec, const Tensor& x, bool train) {
  conv.forward(rec, x, conv_out, train);
  bn.forward(rec, conv_out, out, train, relu);
}

void ConvBnUnit::backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx) {
  bn.backward(rec, conv_out, out, dy, d_conv_out, relu, false);
  conv.backward(rec, x, d_conv_out, dx, accumulate_dx);
}

}  // namespace vkqat::nn
