#pragma once
// The deployable integer model of `vkqat export` / `vkqat infer`: a list of integer layers
// derived from the model description (nn/model/model_desc.h) of a network trained with
// DoReFa weights and PACT / CG-PACT / DoReFa activations (symmetric PACT / CG-PACT on linear
// bottlenecks), with BN folded, weights as packed integer codes and every activation
// quantizer turned into an integer requantization.
// Every consumer (CPU reference, GPU engine, `vkqat infer`) walks the same list; none knows
// a model class. Arithmetic (see int_reference.h for the exact pipeline):
//   weight code i in [0, nw] (nw = 2^wbits - 1) stands for (2i - nw) / nw (DoReFa);
//   activations are codes a in [0, n] (n = 2^abits - 1) standing for a * alpha / n;
//   signed activations (symmetric PACT on a linear bottleneck, integer levels c in [-s, s],
//   s = 2^(abits-1) - 1) are offset codes a = c + s in [0, 2s]: the layer's levels are 2s and
//   its offset (zero point) s, so they pack and multiply like unsigned codes;
//   conv: acc = sum (2i - nw) (a - z)  (int32; z = the input's offset; zero padding
//         contributes 0, i.e. the sum runs over the taps inside the image, so a kernel adds
//         sum (2i - nw) a and subtracts z times the border sum below; grouped / depthwise
//         convs sum over their group's input channels only)
//   requant: v = acc * mult + extra * mult2 + bias          (int64)
//            code = clamp((v + 2^(shift-1)) >> shift, 0, n') (round half up; v < 0 -> 0)
//            (a signed output's bias holds + s 2^shift: the offset is added before the clamp,
//            so the clamp to [0, 2s] is symmetric PACT's clip)
//   extra (the conv's mode): stem: the sum of (2i - nw) over the taps inside the image (the
//   normalization offset: pixels p in 0..255 are fed unnormalized); residual: the second
//   input (codes of an identity shortcut, or the raw accumulator of a raw conv); else none.
//   A shortcut of offset codes adds (a - z) mult2: the export folds - z mult2 into the bias.
//   A raw conv outputs its accumulator (a BN'd shortcut conv, folded into the conv it adds to).
//   ReLU and ReLU6 are the requantization's clamp (PACT / CG-PACT replace them when quantized;
//   ReLU6's clip level is PACT's alpha).
//   maxpool: max of the codes (the requantization is monotone, so pooling codes = pooling
//            values; padding never wins);
//   avgpool (the classifier's input quantizer "NAME.act"): code = requant(sum over H x W);
//   fc: logits = float(sum (2i - nw) code) * logit_scale + bias   (SAT factor folded in).
//
// File format vkqat-int-3 (safetensors; metadata "vkqat_int" = JSON {format, model,
// normalization, quant, source, graph}). graph: the layers in execution order, each
//   {"name", "op": "conv"|"maxpool"|"avgpool"|"fc", "inputs": [names of earlier layers or
//    "input" (the image)], + conv: c_in, c_out, kernel, stride, padding, groups, wbits,
//    levels, offset (the output codes' zero point: 0, or levels / 2 for signed codes),
//    mode ("requant"|"stem"|"residual"|"raw"; residual has 2 inputs: x, shortcut);
//    maxpool: kernel, stride, padding; avgpool: levels; fc: c_in, classes, wbits}
// The last layer is the fc. Tensors, for conv / fc layer L and avgpool layer P:
//   L.weight_codes        U32 [c_out, kh*kw, words]  codes of one group's in channels packed
//                         LSB first, 32/container_bits per word (container 2, 4 or 8 bits;
//                         words = ceil(c_in/groups / codes per word), the last zero-padded)
//   L.requant.multiplier  I32 [c_out]   (conv, not raw)
//   L.requant.multiplier2 I32 [c_out]   stem and residual convs only
//   L.requant.shift       I32 [c_out]   1..62
//   L.requant.bias        I64 [c_out]
//   P.requant.multiplier / .shift  I32 [1]
//   fc: L.weight_codes U32 [classes, 1, words], L.logit_scale F32 [1], L.bias F32 [classes]
// vkqat-int-2 files (the same without signed codes) are read as written (every offset 0).
// vkqat-int-1 files (the ResNet-only layout) are refused with "re-export": the checkpoint is
// the source of truth and `vkqat export` rewrites it in seconds.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "nn/model/network.h"

namespace vkqat::quant {

constexpr const char* kIntModelFormat = "vkqat-int-3";

// Storage width of a code of `bits` (1..8): 2, 4 or 8.
int int_container_bits(int bits);
// Packs codes [rows, taps, c_in] (each < 2^bits) into [rows, taps, words] 32-bit words.
std::vector<uint32_t> pack_codes(const std::vector<int>& codes, int rows, int taps, int c_in, int bits);
std::vector<int> unpack_codes(const std::vector<uint32_t>& words, int rows, int taps, int c_in, int bits);
int packed_words_per_tap(int c_in, int bits);

// How a conv's requantization gets its second term (see above).
enum class IntConvMode { Requant, Stem, Residual, Raw };
const char* int_conv_mode_name(IntConvMode m);

// Per output channel integer requantization (empty vectors for a raw conv).
struct Requant {
  std::vector<int32_t> mult, mult2, shift;
  std::vector<int64_t> bias;
};

struct IntConv {
  std::string name;
  int c_in = 0, c_out = 0, k = 3, stride = 1, pad = 1, groups = 1;
  int wbits = 4;                // trained bits of the weight codes
  std::vector<uint32_t> codes;  // packed [c_out, k*k, words of c_in/groups], see pack_codes
  Requant rq;                   // empty for a raw conv
  int levels = 0;               // n of the output codes (0: raw accumulator)
  int x_offset = 0;             // zero point of the input codes (set by int_model_shapes)
  int wlevels() const { return (1 << wbits) - 1; }
  int group_in() const { return c_in / groups; }
  bool depthwise() const { return groups > 1 && groups == c_in && groups == c_out; }
};

enum class IntOp { Conv, MaxPool, AvgPool, Fc };
const char* int_op_name(IntOp op);

struct IntNode {
  std::string name;
  IntOp op = IntOp::Conv;
  std::vector<std::string> inputs;  // "input" (the image) or earlier layers
  // Conv; Fc reuses it (k 1, c_out = classes, codes [classes, 1, words], no requant).
  IntConv conv;
  IntConvMode mode = IntConvMode::Requant;
  int kernel = 0, stride = 1, pad = 0;  // MaxPool
  int32_t mult = 0, shift = 1;          // AvgPool: code = requant(sum * mult, shift, levels)
  int levels = 0;                       // AvgPool
  int offset = 0;  // zero point of the output codes: Conv (in the file), MaxPool (its input's)
  float logit_scale = 1;                // Fc
  std::vector<float> bias;              // Fc
  // Set by int_model_shapes: output per image (C, H, W; 1 x 1 after the avgpool and fc) and
  // the index of each input (-1: the image).
  int c = 0, h = 0, w = 0;
  std::vector<int> input_index;
};

struct IntModel {
  nn::ModelConfig model;
  std::array<float, 3> mean{0, 0, 0}, std{1, 1, 1};
  nlohmann::json quant;  // the checkpoint's quantization config (for reports)
  std::string source;    // checkpoint it was exported from
  std::vector<IntNode> nodes;
  int index_of(const std::string& name) const;  // -1 if none
  const IntNode& fc() const { return nodes.back(); }
  int count(IntOp op) const;
};

// Checks the layer list (inputs earlier and of the right kind, channel counts, groups,
// residual shapes, ranges, the fc last) and fills every node's shape and input indices;
// Error names `where` and the layer.
void int_model_shapes(IntModel& m, const std::string& where);

void write_int_model(const std::string& path, const IntModel& m);
// Validates everything (format, graph, shapes, dtypes, ranges); Error names the file and tensor.
IntModel read_int_model(const std::string& path);

}  // namespace vkqat::quant
