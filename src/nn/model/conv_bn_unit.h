#pragma once
// conv -> BN (-> ReLU fused into BN's pass), full precision: the unit the auxiliary module
// (quant/aux_module.h) builds its adaptors and downsamplers from. The models themselves are
// descriptions run by GraphNetwork (graph_network.h).
#include <string>

#include "nn/model/layers.h"

namespace vkqat::nn {

struct ConvBnUnit {
  ConvBnUnit(Context& ctx, const std::string& conv_name, const std::string& bn_name, const Conv2dShape& s, bool relu);
  void forward(Recording& rec, const Tensor& x, bool train);
  // dy: gradient w.r.t. out. dx null: input needs no gradient.
  void backward(Recording& rec, const Tensor& x, const Tensor& dy, Tensor* dx, bool accumulate_dx);
  Conv2dLayer conv;
  BatchNorm2dLayer bn;
  bool relu = false;
  Tensor conv_out, out, d_conv_out;
};

}  // namespace vkqat::nn
