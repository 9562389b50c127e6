#pragma once
// GraphNetwork's per-layer state (graph_network.cpp records it, graph_network_buffers.cpp
// plans its buffers); internal to nn/model.
#include <memory>
#include <vector>

#include "nn/model/graph_network.h"
#include "nn/ops/dropout.h"
#include "nn/ops/pool.h"

namespace vkqat::nn {

// The fused kernels plan() chose for a node (graph_network.h).
namespace graph_detail {
enum class Mode {
  Plain,
  Skip,      // a relu whose work the batchnorm before it does
  BnRelu,    // batchnorm writing relu(bn(x)) into its relu's output
  BnAct,     // batchnorm + its relu's activation quantizer (forward_quantized)
  Residual,  // an add whose batchnorm input computes the sum (and the relu / quantizer after it)
};

inline std::vector<int> batched(int batch, const std::vector<int>& s) {
  std::vector<int> r{batch};
  r.insert(r.end(), s.begin(), s.end());
  return r;
}
}  // namespace graph_detail

struct GraphNetwork::Node {
  LayerDesc d;
  std::vector<int> consumers;
  Tensor out, grad;
  std::unique_ptr<Conv2dLayer> conv;
  std::unique_ptr<BatchNorm2dLayer> bn;
  std::unique_ptr<LinearLayer> linear;
  std::unique_ptr<ActQuantizer> act;  // relu: replaces it; the last linear: quantizes its input
  Tensor q_in, d_q_in;                // the last linear's quantized input and its gradient
  // A linear bottleneck (an add / batchnorm feeding a conv or linear with no relu between):
  // its signed quantizer "LAYER.act"; every consumer reads q_out and writes d_q_out, while
  // out / grad stay the value before the quantizer (what the aux taps read, METHODS.md §4).
  std::unique_ptr<ActQuantizer> signed_act;
  Tensor q_out, d_q_out;
  bool q_written = false;
  Pool2dShape pool;                   // maxpool
  DropoutParams dropout;              // dropout (seed set by init_layers)
  bool last = false, classifier = false;
  bool tapped = false;   // the aux module writes this output's gradient first
  graph_detail::Mode mode = graph_detail::Mode::Plain;
  int relu = -1;        // BnRelu / BnAct: the relu; Residual (on the add): the relu after it
  int bn_node = -1;     // Residual (on the add): the batchnorm input
  int shortcut = -1;    // Residual: which input (0/1) is the shortcut
  bool written = false;  // while recording backward: the gradient buffer holds a value
  int drop_input = -1;   // tests: an add input whose gradient is left out
  int grad_from_add = -1;  // this output's only consumer is that add: its gradient is the add's
  bool grad_is_alias = false;
};

}  // namespace vkqat::nn
