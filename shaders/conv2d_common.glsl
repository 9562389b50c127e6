// Shared by every conv2d*.comp: the push-constant block (mirrors ConvPush in conv2d.cpp).
// Shapes follow PyTorch: x [n, c_in, h, w], w [c_out, c_in / groups, kh, kw],
// y [n, c_out, oh, ow]; every kernel gets the forward shape, whatever it computes.
layout(push_constant) uniform Params {
  int n, c_in, h, w, c_out, kh, kw, stride, pad, oh, ow;
  int accumulate;  // backward kernels: 1 = add into the existing gradient
} p;
