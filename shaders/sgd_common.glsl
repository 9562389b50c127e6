// SGD update with PyTorch's torch.optim.SGD semantics (dampening 0):
//   g = grad + wd * w;  buf = momentum * buf + g;  g = nesterov ? g + momentum * buf : buf;
//   w -= lr * g
// lr is read from a device buffer so one recorded step can be replayed under a schedule.
// The includer defines T (float or vec4); p.n counts T elements.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(std430, binding = 0) buffer Wb { T w[]; };
layout(std430, binding = 1) readonly buffer Gb { T grad[]; };
layout(std430, binding = 2) buffer Bufb { T buf[]; };
layout(std430, binding = 3) readonly buffer Sb { float step_params[]; };

layout(push_constant) uniform Params {
  uint n;
  uint lr_index;
  float momentum;
  float weight_decay;
  uint nesterov;
} p;

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= p.n) return;
  float lr = step_params[p.lr_index];
  T wi = w[i];
  T g = grad[i] + p.weight_decay * wi;
  T m = p.momentum * buf[i] + g;
  buf[i] = m;
  T d = p.nesterov != 0u ? g + p.momentum * m : m;
  w[i] = wi - lr * d;
}
