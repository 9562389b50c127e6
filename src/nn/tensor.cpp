#include "nn/tensor.h"

#include "backend/error.h"

namespace vkqat::nn {

std::string shape_str(const std::vector<int>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor::Tensor(Context& ctx, std::vector<int> shape, DType dtype, MemoryKind kind)
    : ctx_(&ctx), shape_(std::move(shape)), dtype_(dtype) {
  numel_ = 1;
  for (int d : shape_) {
    if (d <= 0) throw Error("tensor shape " + nn::shape_str(shape_) + " has a non-positive dimension");
    numel_ *= d;
  }
  buffer_ = ctx.alloc(bytes(), kind);
}

Tensor Tensor::alias(const Tensor& storage, std::vector<int> shape, uint64_t byte_offset) {
  Tensor t;
  t.ctx_ = storage.ctx_;
  t.shape_ = std::move(shape);
  t.dtype_ = storage.dtype_;
  t.numel_ = 1;
  for (int d : t.shape_) {
    if (d <= 0) throw Error("tensor shape " + nn::shape_str(t.shape_) + " has a non-positive dimension");
    t.numel_ *= d;
  }
  if (byte_offset % 4 != 0 || byte_offset + t.bytes() > storage.bytes())
    throw Error("alias " + t.shape_str() + " at byte " + std::to_string(byte_offset) + " does not fit in its storage " +
                storage.shape_str());
  t.buffer_ = Buffer::borrowed(storage.view().sub(byte_offset, t.bytes()));
  return t;
}

std::string Tensor::shape_str() const { return nn::shape_str(shape_); }

void Tensor::upload(const std::vector<float>& data) {
  if (int64_t(data.size()) != numel_)
    throw Error("upload of " + std::to_string(data.size()) + " values into tensor " + shape_str());
  ctx_->upload(view(), data.data(), bytes());
}

void Tensor::upload_u32(const std::vector<uint32_t>& data) {
  if (int64_t(data.size()) != numel_)
    throw Error("upload of " + std::to_string(data.size()) + " values into tensor " + shape_str());
  ctx_->upload(view(), data.data(), bytes());
}

std::vector<float> Tensor::download() const {
  std::vector<float> out(numel_);
  ctx_->download(view(), out.data(), bytes());
  return out;
}

std::vector<uint32_t> Tensor::download_u32() const {
  std::vector<uint32_t> out(numel_);
  ctx_->download(view(), out.data(), bytes());
  return out;
}

void Tensor::zero() {
  std::vector<uint32_t> z(numel_, 0);
  ctx_->upload(view(), z.data(), bytes());
}

}  // namespace vkqat::nn
