#pragma once
// Exact evaluation's wiring (nn/ops/grid.h): which conv reads values on which activation
// quantizer's grid. GraphNetwork decides it from the graph; this is the shared plumbing.
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "nn/model/layers.h"

namespace vkqat::nn {

// Wires each conv to the grid of the quantizer that produces its input (none: the float
// conv), all sharing `scratch`, sized here for the largest input on a grid.
void wire_input_grids(Context& ctx, const std::vector<std::pair<Conv2dLayer*, std::optional<Grid>>>& inputs,
                      Tensor& scratch);
// The grid of an activation quantizer's output (none without a quantizer).
inline std::optional<Grid> output_grid(const std::unique_ptr<ActQuantizer>& a) {
  return a ? a->grid() : std::nullopt;
}

}  // namespace vkqat::nn
