// Integer requantization of the integer inference path (src/quant/int_model.h), with
// 64-bit intermediates built from 32-bit halves (imulExtended / uaddCarry), so no
// shaderInt64 is needed. Must equal ref::int_requant bit for bit.
struct I64 {
  int hi;
  uint lo;
};

I64 mul64(int a, int b) {
  int hi, lo;
  imulExtended(a, b, hi, lo);
  return I64(hi, uint(lo));
}

I64 add64(I64 a, I64 b) {
  uint carry;
  const uint lo = uaddCarry(a.lo, b.lo, carry);
  return I64(a.hi + b.hi + int(carry), lo);
}

// clamp((v + 2^(shift-1)) >> shift, 0, levels), shift in 1..62.
int requant_code(I64 v, int shift, int levels) {
  v = add64(v, shift > 32 ? I64(1 << (shift - 33), 0u) : I64(0, 1u << (shift - 1)));
  if (v.hi < 0) return 0;
  uint q;
  if (shift >= 32) {
    q = uint(v.hi >> (shift - 32));
  } else {
    if ((uint(v.hi) >> shift) != 0u) return levels;  // >= 2^32
    q = (v.lo >> shift) | (uint(v.hi) << (32 - shift));
  }
  return int(min(q, uint(levels)));
}

// Requantization parameters of channel c: rq[2c] = (mult, mult2, shift, 0),
// rq[2c + 1] = (bias low word, bias high word, 0, 0).
#define RQ_BIAS(b) I64((b).y, uint((b).x))
