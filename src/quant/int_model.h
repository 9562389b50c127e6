#pragma once
// The deployable integer model of `vkqat export` / `vkqat infer`: a CIFAR-style ResNet
// (resnet20/32/56) trained with DoReFa weights and PACT / CG-PACT / DoReFa activations,
// with BN folded, weights as packed integer codes and every activation quantizer turned
// into an integer requantization. Arithmetic (see int_reference.h for the exact pipeline):
//   weight code i in [0, nw] (nw = 2^wbits - 1) stands for (2i - nw) / nw (DoReFa);
//   activations are codes a in [0, n] (n = 2^abits - 1) standing for a * alpha / n;
//   conv: acc = sum (2i - nw) a  (int32; zero padding contributes 0)
//   requant: v = acc * mult + extra * mult2 + bias          (int64)
//            code = clamp((v + 2^(shift-1)) >> shift, 0, n') (round half up; v < 0 -> 0)
//   extra: the stem's sum of (2i - nw) over the taps inside the image (the normalization
//   offset: pixels p in 0..255 are fed unnormalized), a block's shortcut (its input codes,
//   or the raw accumulator of its 1x1 downsample conv), or nothing.
//   pool + fc.act: code = requant(sum of the last block's codes over H x W)
//   fc: logits = float(sum (2i - nw) code) * logit_scale + bias   (SAT factor folded in)
//
// File (safetensors, metadata "vkqat_int" = JSON {format, model, normalization, quant,
// layers: {name: {wbits, levels}}, source}); tensors, for every conv layer L (conv1,
// layerS.B.conv1, layerS.B.conv2, layerS.B.downsample.0) and the fc:
//   L.weight_codes        U32 [c_out, kh*kw, words]  codes of in channels packed LSB first,
//                         32/container_bits per word (container 2, 4 or 8 bits; words =
//                         ceil(c_in / codes per word), the last word zero-padded)
//   L.requant.multiplier  I32 [c_out]   (not for downsample.0: folded into conv2's)
//   L.requant.multiplier2 I32 [c_out]   conv1 (border term) and conv2 (shortcut) only
//   L.requant.shift       I32 [c_out]   1..62
//   L.requant.bias        I64 [c_out]
//   fc.act.requant.multiplier / .shift  I32 [1]
//   fc.weight_codes U32 [classes, 1, words], fc.logit_scale F32 [1], fc.bias F32 [classes]
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nn/model/network.h"

namespace vkqat::quant {

constexpr const char* kIntModelFormat = "vkqat-int-1";

// Storage width of a code of `bits` (1..8): 2, 4 or 8.
int int_container_bits(int bits);
// Packs codes [rows, taps, c_in] (each < 2^bits) into [rows, taps, words] 32-bit words.
std::vector<uint32_t> pack_codes(const std::vector<int>& codes, int rows, int taps, int c_in, int bits);
std::vector<int> unpack_codes(const std::vector<uint32_t>& words, int rows, int taps, int c_in, int bits);
int packed_words_per_tap(int c_in, int bits);

// Per output channel integer requantization (empty vectors for a raw-accumulator layer).
struct Requant {
  std::vector<int32_t> mult, mult2, shift;
  std::vector<int64_t> bias;
};

struct IntConv {
  std::string name;
  int c_in = 0, c_out = 0, k = 3, stride = 1, pad = 1;
  int wbits = 4;                // trained bits of the weight codes
  std::vector<uint32_t> codes;  // packed, see pack_codes
  Requant rq;                   // empty for downsample.0 (it outputs its raw accumulator)
  int levels = 0;               // n of the output codes (0: raw accumulator)
  int wlevels() const { return (1 << wbits) - 1; }
};

struct IntBlock {
  IntConv c1, c2;
  std::optional<IntConv> down;  // else the shortcut is the block input
};

struct IntModel {
  nn::ModelConfig model;
  std::array<float, 3> mean{0, 0, 0}, std{1, 1, 1};
  nlohmann::json quant;  // the checkpoint's quantization config (for reports)
  std::string source;    // checkpoint it was exported from
  IntConv stem;
  std::vector<IntBlock> blocks;
  int32_t pool_mult = 0, pool_shift = 1;
  int fc_levels = 0;  // n of fc.act
  int fc_wbits = 8;
  std::vector<uint32_t> fc_codes;  // [classes, 1, words]
  float fc_logit_scale = 1;
  std::vector<float> fc_bias;
  int fc_in() const;  // channels of the last stage
};

// The block structure of a CIFAR-style ResNet (as nn::ResNet builds it); throws Error for
// models the integer path does not support.
struct BlockSpec {
  std::string name;  // "layerS.B"
  int c_in, c_out, stride;
  bool down;
};
std::vector<BlockSpec> int_resnet_blocks(const nn::ModelConfig& m);

void write_int_model(const std::string& path, const IntModel& m);
// Validates everything (format, shapes, dtypes, ranges); Error names the file and tensor.
IntModel read_int_model(const std::string& path);

}  // namespace vkqat::quant
