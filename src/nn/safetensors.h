#pragma once
// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {string: string}} (space-padded), then the data buffer; offsets are
// relative to the start of the data buffer. Data is little-endian (as is every host
// this project runs on).
//
// write_safetensors lays files out exactly as the reference (Rust/Python) writer does:
// "__metadata__" first, tensors sorted by descending dtype (reference enum order) then
// by name, packed back to back (natural alignment without gaps, since the header is
// padded to a multiple of 8), header padded with spaces to a multiple of 8. The output is
// therefore deterministic and byte-identical to safetensors.torch.save_file for the same
// tensors and metadata.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vkqat::nn {

struct StTensor {
  std::string dtype;           // "F32", "I64", "I32", "U8", "F16", "BF16", ...
  std::vector<int64_t> shape;  // [] = scalar (one element)
  std::vector<uint8_t> data;   // numel * dtype_size bytes, little-endian
  int64_t numel() const;
};

struct SafeTensors {
  std::map<std::string, StTensor> tensors;
  std::map<std::string, std::string> metadata;
  std::string source;  // file it was read from ("" if built in memory); used in errors

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  // Throws vkqat::Error naming the source file and tensor if absent.
  const StTensor& at(const std::string& name) const;
  // F32 tensor data; throws if absent or of another dtype. If shape is given, it must match.
  std::vector<float> get_f32(const std::string& name) const;
  std::vector<float> get_f32(const std::string& name, const std::vector<int64_t>& shape) const;
  // I64 tensor data (e.g. BatchNorm num_batches_tracked); throws if absent / other dtype.
  std::vector<int64_t> get_i64(const std::string& name) const;
  // Add or replace. data.size() must equal the product of shape.
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& data);
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  void add_i64(const std::string& name, const std::vector<int64_t>& shape, const std::vector<int64_t>& data);
};

// Bytes per element of a safetensors dtype name; 0 if unknown (sub-byte F4/F6 types
// included: unsupported here).
size_t st_dtype_size(const std::string& dtype);

// Validates everything (size, header length, JSON, fields, dtypes, offsets vs shape,
// overlaps, duplicate names); errors are vkqat::Error naming the file and the tensor.
// Gaps between tensors and trailing bytes are tolerated (the reference reader is stricter).
SafeTensors read_safetensors(const std::string& path);

// Writes to path + ".tmp", then renames it over path: path never holds a partial file.
void write_safetensors(const std::string& path, const SafeTensors& st);

// The exact bytes write_safetensors would produce.
std::vector<uint8_t> serialize_safetensors(const SafeTensors& st);

}  // namespace vkqat::nn
