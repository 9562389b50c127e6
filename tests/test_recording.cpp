// Recorder barriers for interleaved copies, fills and dispatches, under synchronization
// validation (any hazard message fails the test case): the two three-command chains that
// a barrier covering only the current command's stage gets wrong, and random
// interleavings checked bit for bit against a CPU simulation.
#include <algorithm>
#include <cstring>
#include <random>

#include "backend/error.h"
#include "backend/kernel.h"
#include "backend/recording.h"
#include "testutil.h"

using namespace vkqat;

namespace {
struct AxpbPush {
  uint32_t n;
  float a, b;
};

std::vector<float> download_floats(Context& ctx, const Buffer& b, uint32_t n) {
  std::vector<float> v(n);
  ctx.download(b.view(), v.data(), n * 4);
  return v;
}
// n random inputs x (seeded) and buffers a, c, ids for the axpb self-test kernel.
struct AxpbBuffers {
  Context& ctx;
  const uint32_t n;
  const Kernel& k;
  Buffer x, a, c, ids;
  std::vector<float> x0;
  AxpbBuffers(uint32_t count, uint32_t seed)
      : ctx(test::ctx()), n(count), k(ctx.kernel("backend_selftest_axpb", {64, 1, 1})), x(ctx.alloc(n * 4)),
        a(ctx.alloc(n * 4)), c(ctx.alloc(n * 4)), ids(ctx.alloc(n * 4)), x0(test::random_vector(n, seed)) {
    ctx.upload(x.view(), x0.data(), n * 4);
  }
};
// As test fixtures (the members by their names in the test body).
template <uint32_t N, uint32_t Seed>
struct Axpb : AxpbBuffers {
  Axpb() : AxpbBuffers(N, Seed) {}
};
using Axpb300 = Axpb<300, 13>;
using Axpb260 = Axpb<260, 17>;
using Axpb200 = Axpb<200, 19>;
}  // namespace

TEST_CASE("dispatch -> copy -> dispatch: the second dispatch waits for the first" * doctest::test_suite("recording")) {
  Context& ctx = test::ctx();
  const uint32_t n = 512;
  const Kernel& k = ctx.kernel("backend_selftest_axpb", {64, 1, 1});
  Buffer x = ctx.alloc(n * 4), a = ctx.alloc(n * 4), b = ctx.alloc(n * 4), c = ctx.alloc(n * 4);
  Buffer ids = ctx.alloc(n * 4);
  auto x0 = test::random_vector(n, 11);
  ctx.upload(x.view(), x0.data(), n * 4);
  Recording rec(ctx);
  rec.dispatch_1d(k, {x.view(), a.view(), ids.view()}, AxpbPush{n, 2.f, 1.f}, n);   // a = 2x + 1
  rec.copy(a.view(), b.view());                                                      // b = a (RAW on a)
  rec.dispatch_1d(k, {a.view(), c.view(), ids.view()}, AxpbPush{n, -1.f, 0.f}, n);  // c = -a (RAW a, WAW ids)
  rec.finish();
  // One barrier before the copy (compute -> transfer), one before the second dispatch: the
  // first one does not reach compute work, so the dispatch's hazards are still pending.
  CHECK(rec.barrier_count() == 2);
  rec.run();
  auto av = download_floats(ctx, a, n), bv = download_floats(ctx, b, n), cv = download_floats(ctx, c, n);
  for (uint32_t i = 0; i < n; ++i) {
    REQUIRE(av[i] == 2.f * x0[i] + 1.f);
    REQUIRE(bv[i] == av[i]);
    REQUIRE(cv[i] == -av[i]);
  }
}

TEST_CASE("copy -> dispatch -> copy and fill -> dispatch -> fill" * doctest::test_suite("recording")) {
  Context& ctx = test::ctx();
  const uint32_t n = 512;
  const Kernel& k = ctx.kernel("backend_selftest_axpb", {64, 1, 1});
  Buffer x = ctx.alloc(n * 4), a = ctx.alloc(n * 4), c = ctx.alloc(n * 4), d = ctx.alloc(n * 4);
  Buffer ids = ctx.alloc(n * 4);
  auto x0 = test::random_vector(n, 12);
  ctx.upload(x.view(), x0.data(), n * 4);
  {
    Recording rec(ctx);
    rec.copy(x.view(), a.view());                                                     // a = x
    rec.dispatch_1d(k, {a.view(), c.view(), ids.view()}, AxpbPush{n, 0.5f, 0.f}, n);  // c = a / 2 (RAW a)
    rec.copy(a.view(), d.view());  // d = a: RAW on the first copy's write (transfer -> transfer)
    rec.finish();
    CHECK(rec.barrier_count() == 2);
    rec.run();
    auto cv = download_floats(ctx, c, n), dv = download_floats(ctx, d, n);
    for (uint32_t i = 0; i < n; ++i) {
      REQUIRE(cv[i] == 0.5f * x0[i]);
      REQUIRE(dv[i] == x0[i]);
    }
  }
  {
    // fill -> dispatch reading it -> fill again (WAW with the first fill, WAR with the dispatch).
    Recording rec(ctx);
    rec.fill(a.view(), 0x3f800000u);                                                  // a = 1.0
    rec.dispatch_1d(k, {a.view(), c.view(), ids.view()}, AxpbPush{n, 3.f, 0.f}, n);  // c = 3a
    rec.fill(a.view(), 0x40000000u);                                                  // a = 2.0
    rec.copy(a.view(), d.view());                                                     // d = a
    rec.run();
    auto cv = download_floats(ctx, c, n), dv = download_floats(ctx, d, n);
    for (uint32_t i = 0; i < n; ++i) {
      REQUIRE(cv[i] == 3.f);
      REQUIRE(dv[i] == 2.f);
    }
  }
}

TEST_CASE("random interleavings of copies, fills and dispatches on overlapping ranges" *
          doctest::test_suite("recording")) {
  // Four buffers cut into chunks (one chunk = the storage offset alignment); each command
  // touches a random chunk range of random buffers. The CPU replays the same commands on
  // words; the device result must match bit for bit and validation must stay silent.
  Context& ctx = test::ctx();
  const Kernel& k = ctx.kernel("backend_selftest_axpb", {16, 1, 1});
  const uint32_t chunk_words = uint32_t(std::max<uint64_t>(16, ctx.info().min_storage_offset_alignment) / 4);
  const uint32_t chunks = 6, words = chunk_words * chunks, nbuf = 4;
  for (uint32_t seed = 0; seed < 6; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto pick = [&](uint32_t lo, uint32_t hi) { return std::uniform_int_distribution<uint32_t>(lo, hi)(rng); };
    std::vector<Buffer> bufs;
    std::vector<std::vector<uint32_t>> sim(nbuf, std::vector<uint32_t>(words));
    for (uint32_t i = 0; i < nbuf; ++i) {
      bufs.push_back(ctx.alloc(words * 4));
      auto init = test::random_vector(words, 100 + seed * 10 + i);
      std::memcpy(sim[i].data(), init.data(), words * 4);
      ctx.upload(bufs[i].view(), init.data(), words * 4);
    }
    struct Range {
      uint32_t buf, chunk, len;  // in chunks
      bool overlaps(const Range& o) const { return buf == o.buf && chunk < o.chunk + o.len && o.chunk < chunk + len; }
      BufferView view(const std::vector<Buffer>& b, uint32_t cw) const {
        return b[buf].view().sub(uint64_t(chunk) * cw * 4, uint64_t(len) * cw * 4);
      }
    };
    auto range = [&](uint32_t len) { return Range{pick(0, nbuf - 1), pick(0, chunks - len), len}; };
    Recording rec(ctx);
    int dispatches = 0, copies = 0, fills = 0;
    for (int cmd = 0; cmd < 60; ++cmd) {
      const uint32_t kind = pick(0, 2), len = pick(1, 2);
      if (kind == 0) {  // dispatch: y = a x + b, ids = i; the three ranges must not alias
        Range x = range(len), y = range(len), id = range(len);
        if (x.overlaps(y) || x.overlaps(id) || y.overlaps(id)) continue;
        const float as[] = {2.f, 0.5f, -1.f};
        const AxpbPush p{len * chunk_words, as[pick(0, 2)], float(pick(0, 4))};
        rec.dispatch_1d(k, {x.view(bufs, chunk_words), y.view(bufs, chunk_words), id.view(bufs, chunk_words)}, p, p.n);
        for (uint32_t i = 0; i < p.n; ++i) {
          float xv, yv;
          std::memcpy(&xv, &sim[x.buf][x.chunk * chunk_words + i], 4);
          yv = p.a * xv + p.b;  // a is a power of two (or -1): no rounding difference under FMA
          std::memcpy(&sim[y.buf][y.chunk * chunk_words + i], &yv, 4);
          sim[id.buf][id.chunk * chunk_words + i] = i;
        }
        ++dispatches;
      } else if (kind == 1) {  // copy between non-overlapping ranges
        Range s = range(len), d = range(len);
        if (s.overlaps(d)) continue;
        rec.copy(s.view(bufs, chunk_words), d.view(bufs, chunk_words));
        std::copy_n(&sim[s.buf][s.chunk * chunk_words], len * chunk_words, &sim[d.buf][d.chunk * chunk_words]);
        ++copies;
      } else {
        Range d = range(len);
        const uint32_t word = pick(0, 1u << 30);
        rec.fill(d.view(bufs, chunk_words), word);
        std::fill_n(&sim[d.buf][d.chunk * chunk_words], len * chunk_words, word);
        ++fills;
      }
    }
    CHECK(dispatches > 5);
    CHECK(copies > 5);
    CHECK(fills > 5);
    rec.run();
    for (uint32_t i = 0; i < nbuf; ++i) {
      std::vector<uint32_t> got(words);
      ctx.download(bufs[i].view(), got.data(), words * 4);
      size_t wrong = 0;
      for (uint32_t w = 0; w < words; ++w) wrong += got[w] != sim[i][w];
      CHECK_MESSAGE(wrong == 0, "buffer " << i << ": " << wrong << " words differ");
    }
  }
}

TEST_CASE_FIXTURE(Axpb300, "host_step: the host reads what the commands before wrote, the commands after read what it wrote" *
          doctest::test_suite("recording")) {
  Recording rec(ctx);
  const BufferView host = rec.transient(n * 4, MemoryKind::Host);
  int calls = 0;
  std::vector<float> seen(n);
  rec.dispatch_1d(k, {x.view(), a.view(), ids.view()}, AxpbPush{n, 2.f, 1.f}, n);  // a = 2x + 1
  rec.copy(a.view(), host);
  rec.host_step([&] {  // host = a seen on the host, then host = a + 10 + calls
    auto* h = static_cast<float*>(host.mapped);
    std::copy(h, h + n, seen.begin());
    for (uint32_t i = 0; i < n; ++i) h[i] += 10.f + float(calls);
    ++calls;
  });
  rec.copy(host, a.view());  // WAW on a, RAW on the host buffer: across the split
  rec.dispatch_1d(k, {a.view(), c.view(), ids.view()}, AxpbPush{n, -1.f, 0.f}, n);  // c = -a
  CHECK(rec.host_step_count() == 1);
  for (int replay = 0; replay < 2; ++replay) {  // the same segments and host step every replay
    rec.run();
    CHECK(calls == replay + 1);
    auto cv = download_floats(ctx, c, n);
    for (uint32_t i = 0; i < n; ++i) {
      REQUIRE(seen[i] == 2.f * x0[i] + 1.f);
      REQUIRE(cv[i] == -((2.f * x0[i] + 1.f) + (10.f + float(replay))));
    }
  }
}

TEST_CASE_FIXTURE(Axpb260, "host_step_async: the next segment goes on at once; host steps run in order once their segment completed" *
          doctest::test_suite("recording")) {
  Recording rec(ctx);
  const BufferView host_a = rec.transient(n * 4, MemoryKind::Host), host_c = rec.transient(n * 4, MemoryKind::Host);
  std::vector<int> order;
  std::vector<float> seen_a(n), seen_c(n);
  int polls = 0;  // the polling wait (its count depends on the driver's speed: not checked)
  rec.while_waiting([&] { ++polls; });
  rec.dispatch_1d(k, {x.view(), a.view(), ids.view()}, AxpbPush{n, 2.f, 1.f}, n);  // a = 2x + 1
  rec.copy(a.view(), host_a);
  rec.host_step_async([&] {
    std::copy_n(static_cast<const float*>(host_a.mapped), n, seen_a.begin());
    order.push_back(1);
  });
  rec.dispatch_1d(k, {a.view(), c.view(), ids.view()}, AxpbPush{n, -1.f, 0.f}, n);  // c = -a
  rec.copy(c.view(), host_c);
  rec.host_step_async([&] {
    std::copy_n(static_cast<const float*>(host_c.mapped), n, seen_c.begin());
    order.push_back(2);
  });
  rec.dispatch_1d(k, {c.view(), a.view(), ids.view()}, AxpbPush{n, 3.f, 0.f}, n);  // a = 3c: after host step 1's read
  CHECK(rec.host_step_count() == 2);
  for (int replay = 0; replay < 2; ++replay) {
    order.clear();
    rec.submit();
    // Only async host steps: submit() queued every segment without waiting for any.
    CHECK(order.empty());
    rec.wait();
    CHECK(order == std::vector<int>{1, 2});
    auto av = download_floats(ctx, a, n);
    for (uint32_t i = 0; i < n; ++i) {
      REQUIRE(seen_a[i] == 2.f * x0[i] + 1.f);
      REQUIRE(seen_c[i] == -(2.f * x0[i] + 1.f));
      REQUIRE(av[i] == 3.f * -(2.f * x0[i] + 1.f));
    }
  }
}

TEST_CASE("host_step after host_step_async: the async one runs first (recording order)" *
          doctest::test_suite("recording")) {
  Context& ctx = test::ctx();
  Buffer a = ctx.alloc(64);
  Recording rec(ctx);
  std::vector<int> order;
  rec.fill(a.view(), 1);
  rec.host_step_async([&] { order.push_back(1); });
  rec.fill(a.view(), 2);
  rec.host_step([&] { order.push_back(2); });
  rec.fill(a.view(), 3);
  rec.host_step_async([&] { order.push_back(3); });
  rec.fill(a.view(), 4);
  rec.submit();
  CHECK(order == std::vector<int>{1, 2});  // submit() ran the blocking one, and the one before it
  rec.wait();
  CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE_FIXTURE(Axpb200, "at_command splits a second recording where a first one found the last writer" *
          doctest::test_suite("recording")) {
  auto record = [&](Recording& r) {
    r.dispatch_1d(k, {x.view(), a.view(), ids.view()}, AxpbPush{n, 2.f, 1.f}, n);  // 0: a = 2x + 1
    r.copy(a.view(), c.view());                                                     // 1: c = a
    r.dispatch_1d(k, {c.view(), a.view(), ids.view()}, AxpbPush{n, 5.f, 0.f}, n);  // 2: a = 5c
    r.fill(c.view(), 0);                                                            // 3: c = 0
  };
  Recording probe(ctx);
  record(probe);
  CHECK(probe.command_index() == 4);
  CHECK(probe.last_writer(c.view()) == 3);
  CHECK(probe.last_writer(a.view()) == 2);
  CHECK(probe.last_writer(c.view().sub(8, 16)) == 3);
  CHECK(probe.last_writer(x.view()) == -1);
  // The value c has right after command 1 (its first writer), taken out by a hook there.
  Recording rec(ctx);
  const BufferView host = rec.transient(n * 4, MemoryKind::Host);
  std::vector<float> seen(n);
  rec.at_command(1, [&] {
    rec.copy(c.view(), host);
    rec.host_step_async([&] { std::copy_n(static_cast<const float*>(host.mapped), n, seen.begin()); });
  });
  record(rec);
  CHECK(rec.command_index() == 4);  // the hook's copy does not count
  CHECK(rec.command_count() == 5);
  CHECK(rec.last_writer(c.view()) == 3);
  rec.run();
  for (uint32_t i = 0; i < n; ++i) REQUIRE(seen[i] == 2.f * x0[i] + 1.f);
  std::vector<float> cv = download_floats(ctx, c, n);
  CHECK(std::all_of(cv.begin(), cv.end(), [](float v) { return v == 0.f; }));
  // A hook at a command that is never recorded is an error, not a silently missing split.
  Recording short_rec(ctx);
  short_rec.at_command(7, [] {});
  record(short_rec);
  CHECK_THROWS_WITH_AS(short_rec.finish(), doctest::Contains("at_command(7)"), Error);
  CHECK_THROWS_AS(rec.at_command(0, [] {}), Error);  // already recorded (and finished)
}
