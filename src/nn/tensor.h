#pragma once
// A dense tensor on the device: shape + dtype + its own sub-allocated buffer.
// Layouts follow PyTorch: activations NCHW, conv weights OIHW, linear weights [out, in].
#include <cstdint>
#include <string>
#include <vector>

#include "backend/context.h"

namespace vkqat::nn {

enum class DType { F32, I32, U32 };  // all 4 bytes wide

class Tensor {
 public:
  Tensor() = default;
  Tensor(Context& ctx, std::vector<int> shape, DType dtype = DType::F32,
         MemoryKind kind = MemoryKind::Device);

  // A non-owning tensor of `shape` over the elements of `storage` from `byte_offset` on
  // (scratch memory shared by ops that run one after another, GraphNetwork's gradient pool):
  // `storage` must outlive it and hold it. Bound offsets must respect the device's
  // minStorageBufferOffsetAlignment.
  static Tensor alias(const Tensor& storage, std::vector<int> shape, uint64_t byte_offset = 0);

  const std::vector<int>& shape() const { return shape_; }
  int dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  uint64_t bytes() const { return uint64_t(numel_) * 4; }
  BufferView view() const { return buffer_.view(); }
  bool defined() const { return buffer_.valid(); }
  Context& context() const { return *ctx_; }
  std::string shape_str() const;  // "[128, 16, 28, 28]"

  void upload(const std::vector<float>& data);     // F32; size must equal numel
  void upload_u32(const std::vector<uint32_t>& data);  // I32/U32
  std::vector<float> download() const;
  std::vector<uint32_t> download_u32() const;
  void zero();  // synchronous

 private:
  Context* ctx_ = nullptr;
  std::vector<int> shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
  Buffer buffer_;
};

std::string shape_str(const std::vector<int>& shape);

}  // namespace vkqat::nn
