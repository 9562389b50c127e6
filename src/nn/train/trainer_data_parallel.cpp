// The trainer's data-parallel parts (under mpirun; see distributed.h and README "Several
// GPUs"): the recorded step with its gradient buckets, and the start and check of the
// ranks' common state.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/error.h"
#include "nn/train/distributed.h"
#include "nn/train/gradient_buckets.h"
#include "nn/train/trainer_internal.h"

namespace vkqat::nn {

// Data-parallel: forward + loss + backward, the gradients leaving the device into grad_flat
// (host-visible) bucket by bucket (gradient_buckets.h). With --bucket-mb > 0 a first,
// never-submitted recording of the same calls finds the command after which each bucket's
// gradients are final; the real recording then copies the bucket out right there and
// splits with an async host step that starts the bucket's all-reduce: the device goes on
// with the backward (the next segment is already submitted) while MPI sums the bucket,
// progressed by MPI_Test whenever the host waits on a segment's fence. With 0, one copy of
// everything at the end and one blocking all-reduce after the step (the step loop).
void Trainer::record_data_parallel_step(Recording& rec) {
  Impl& s = *impl_;
  Impl::StepSlot& slot = s.slots[0];
  const StepBuffers buffers{&s.labels, &slot.step_params, &s.loss_sum, &s.correct, &s.aux_loss_sum, &s.aux_correct};
  auto record_forward_backward_of_slot = [&](Recording& r) {
    r.copy(slot.host_x.view(), net_->input().view(), "upload batch");
    r.copy(slot.host_y.view(), s.labels.view(), "upload labels");
    record_forward_backward(r, *net_, aux_.get(), cfg_, buffers);
  };
  const std::vector<Parameter*> params = trained_parameters(*net_, aux_.get());
  const uint64_t align = std::max<uint64_t>(256, s.ctx.info().min_storage_offset_alignment);
  const uint64_t bucket_bytes = uint64_t(double(cfg_.bucket_mb) * 1e6);
  std::vector<int64_t> final_after(params.size(), -1);
  if (bucket_bytes > 0) {
    Recording probe(s.ctx);
    record_forward_backward_of_slot(probe);
    final_after = gradient_final_commands(probe, params);
  }
  s.grad_layout = plan_gradient_buckets(params, final_after, bucket_bytes, align);
  agree_on_buckets(s.grad_layout, params, final_after, align);
  s.grad_floats = int64_t(s.grad_layout.bytes / 4);
  s.grad_flat = Tensor(s.ctx, {int(std::max<int64_t>(1, s.grad_floats))}, DType::F32, MemoryKind::Host);
  std::memset(s.grad_flat.view().mapped, 0, s.grad_flat.bytes());
  auto copy_bucket_out = [&s, params](Recording& r, const GradientLayout::Bucket& b) {
    for (size_t i : b.params)
      r.copy(params[i]->grad.view(), s.grad_flat.view().sub(s.grad_layout.offsets[i], params[i]->grad.bytes()),
             "gradients to host");
  };
  if (bucket_bytes == 0) {
    s.bucket_sums.reset();
    record_forward_backward_of_slot(rec);
    for (const GradientLayout::Bucket& b : s.grad_layout.buckets) copy_bucket_out(rec, b);  // the one bucket
    return;
  }
  if (!s.bucket_sums) s.bucket_sums = std::make_unique<dist::GradientBuckets>();
  dist::GradientBuckets* sums = s.bucket_sums.get();
  for (const GradientLayout::Bucket& b : s.grad_layout.buckets) {
    float* data = static_cast<float*>(s.grad_flat.view().mapped) + b.offset / 4;
    const size_t n = size_t(b.bytes / 4);
    rec.at_command(size_t(std::max<int64_t>(0, b.ready_after)), [&rec, copy_bucket_out, &b, sums, data, n] {
      copy_bucket_out(rec, b);
      rec.host_step_async([sums, data, n] { sums->start(data, n); });
    });
  }
  // MPI_Test while waiting moves the all-reduces on during the backward, but on a CPU driver
  // (lavapipe) the host's polling takes the cores the "device" runs on: measured quiet, 2 ranks x
  // 1 thread ran 1.43-1.58x one rank with it and 1.70-2.07x without. So it is on for GPUs only;
  // VKQAT_BUCKET_POLL=1 / 0 forces it on / off.
  const char* poll = std::getenv("VKQAT_BUCKET_POLL");
  if (poll && std::string(poll) != "0" && std::string(poll) != "1")
    throw Error(std::string("VKQAT_BUCKET_POLL=") + poll + ": expected 0 or 1");
  const bool polling = poll ? std::string(poll) == "1" : !s.ctx.info().is_cpu();
  if (s.world > 1 && polling) rec.while_waiting([sums] { sums->progress(); });
  record_forward_backward_of_slot(rec);
}

void Trainer::broadcast_state() {
  Impl& s = *impl_;
  auto send = [](Tensor& t) {
    std::vector<float> v = t.download();
    dist::broadcast(v.data(), v.size() * sizeof(float));
    t.upload(v);
  };
  for (const auto& [name, t] : net_->state()) send(*t);
  if (aux_)
    for (const auto& [name, t] : aux_->state()) send(*t);
  for (Parameter* p : trained_parameters(*net_, aux_.get())) send(p->momentum);
  for (Tensor* t : {&s.loss_sum, &s.aux_loss_sum, &s.correct, &s.aux_correct})  // host-visible, 4 bytes each
    dist::broadcast(t->view().mapped, 4);
}

void Trainer::check_ranks_agree() {
  // FNV-1a over the bytes of every parameter and momentum: the all-reduced gradients are
  // the same on every rank, so the weights must stay bit-identical.
  uint64_t h = 1469598103934665603ull;
  for (Parameter* p : trained_parameters(*net_, aux_.get()))
    for (const Tensor* t : {&p->value, &p->momentum})
      for (float f : t->download()) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        for (int k = 0; k < 4; ++k) h = (h ^ ((u >> (8 * k)) & 0xff)) * 1099511628211ull;
      }
  uint64_t root = h;
  dist::broadcast(&root, sizeof root);
  if (root != h)
    throw Error("the parameters of rank " + std::to_string(impl_->rank) + " differ from rank 0's at step " +
                std::to_string(impl_->step) + " (the all-reduce did not give every rank the same gradients)");
}

}  // namespace vkqat::nn
