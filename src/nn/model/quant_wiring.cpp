#include "nn/model/quant_wiring.h"

#include <algorithm>

namespace vkqat::nn {

void wire_input_grids(Context& ctx, const std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>>& inputs,
                      Tensor& scratch) {
  int64_t most = 0;
  for (auto& [conv, grid] : inputs)
    if (grid) most = std::max(most, int64_t(conv->shape.n) * conv->shape.c_in * conv->shape.h * conv->shape.w);
  if (most > 0 && (!scratch.defined() || scratch.numel() < most)) scratch = Tensor(ctx, {int(most)});
  for (auto& [conv, grid] : inputs) conv->set_input_grid(ctx, grid, &scratch);
}

}  // namespace vkqat::nn
