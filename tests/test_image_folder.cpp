// Image decoding, folder scanning, bad files, transforms, the streamed loader's
// determinism (1 vs 2 workers, folder vs cache) and CIFAR-100. Pure CPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "backend/error.h"
#include "image_test_util.h"
#include "nn/data/dataset.h"
#include "nn/data/image_cache.h"
#include "nn/data/image_decode.h"
#include "nn/data/image_folder.h"
#include "nn/data/image_transform.h"
#include "nn/data/loader.h"

using namespace vkqat;
using namespace vkqat::nn;
using vkqat::test::TempFolder;

namespace {

Image decode_file(const std::string& path, int channels, int min_short = 0) {
  std::vector<uint8_t> b = test::read_bytes(path);
  return decode_image(b.data(), b.size(), channels, min_short);
}

double mean_abs_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += std::abs(int(a[i]) - int(b[i]));
  return s / double(a.size());
}

// A folder of 2 classes x 6 train images and 2 x 2 val images, mixed sizes and formats.
void make_small_folder(const TempFolder& t, bool jpeg = false) {
  int k = 0;
  for (const char* cls : {"cat", "ant"})
    for (int i = 0; i < 6; ++i, ++k) {
      const std::string f = t / ("train/" + std::string(cls) + "/img" + std::to_string(i) + (jpeg ? ".jpg" : ".png"));
      jpeg ? test::write_jpg(f, 40 + 3 * i, 30 + 2 * i, 3, k) : test::write_png(f, 40 + 3 * i, 30 + 2 * i, 3, k);
    }
  for (const char* cls : {"cat", "ant"})
    for (int i = 0; i < 2; ++i, ++k) test::write_png(t / ("val/" + std::string(cls) + "/v" + std::to_string(i) + ".png"), 36, 36, 3, k);
}

DataOptions opts(int size, const std::string& augment = "none", int workers = 1) {
  DataOptions o;
  o.image_size = size;
  o.augment = augment;
  o.workers = workers;
  return o;
}

std::vector<Batch> epoch_batches(const Dataset& d, int batch, bool train, uint64_t seed, int epoch, LoaderOptions lo = {}) {
  BatchLoader l(d, batch, train, seed, lo);
  l.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (l.next(b)) out.push_back(b);
  return out;
}

void check_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].index == b[i].index);
    CHECK(a[i].y == b[i].y);
    CHECK(a[i].x == b[i].x);
  }
}

}  // namespace

TEST_CASE("PNG decoding: RGB, gray, RGBA, palette, to 1 or 3 channels" * doctest::test_suite("image")) {
  TempFolder t;
  test::write_png(t / "rgb.png", 17, 9, 3, 1);
  Image rgb = decode_file(t / "rgb.png", 3);
  CHECK(rgb.width == 17);
  CHECK(rgb.height == 9);
  CHECK(rgb.pixels == test::pattern(17, 9, 3, 1));  // lossless
  test::write_png(t / "gray.png", 5, 4, 1, 2);
  CHECK(decode_file(t / "gray.png", 1).pixels == test::pattern(5, 4, 1, 2));
  Image g3 = decode_file(t / "gray.png", 3);  // gray replicated
  for (size_t i = 0; i < g3.pixels.size(); i += 3) CHECK((g3.pixels[i] == g3.pixels[i + 1] && g3.pixels[i] == g3.pixels[i + 2]));
  test::write_png(t / "rgba.png", 6, 3, 4, 3);
  Image a = decode_file(t / "rgba.png", 3);  // alpha dropped
  std::vector<uint8_t> want, src = test::pattern(6, 3, 4, 3);
  for (size_t i = 0; i < src.size(); i += 4) want.insert(want.end(), {src[i], src[i + 1], src[i + 2]});
  CHECK(a.pixels == want);
  test::write_palette_png(t / "pal.png", 4, 2, {255, 0, 0, 0, 255, 0, 0, 0, 255});
  Image p = decode_file(t / "pal.png", 3);
  CHECK(std::vector<uint8_t>(p.pixels.begin(), p.pixels.begin() + 6) == std::vector<uint8_t>{255, 0, 0, 0, 255, 0});
  std::vector<uint8_t> pb = test::read_bytes(t / "pal.png");
  ImageInfo pi = probe_image(pb.data(), pb.size());
  CHECK(pi.format == ImageFormat::Png);
  CHECK(pi.channels == 3);
}

TEST_CASE("JPEG decoding: close to the source, reduced DCT scale for small targets" * doctest::test_suite("image")) {
  TempFolder t;
  test::write_jpg(t / "a.jpg", 400, 300, 3, 0, 95);
  Image full = decode_file(t / "a.jpg", 3);
  CHECK(full.width == 400);
  CHECK(full.height == 300);
  CHECK(mean_abs_diff(full.pixels, test::pattern(400, 300, 3, 0)) < 4.0);
  // Shorter side 300: the smallest M/8 with ceil(300 M / 8) >= 64 is M = 2 (75 px).
  Image small = decode_file(t / "a.jpg", 3, 64);
  CHECK(small.width == 100);
  CHECK(small.height == 75);
  CHECK(decode_file(t / "a.jpg", 3, 300).width == 400);  // no reduction possible
  Image gray = decode_file(t / "a.jpg", 1);
  CHECK(gray.channels == 1);
  CHECK(gray.pixels.size() == size_t(400) * 300);
  std::vector<uint8_t> jb = test::read_bytes(t / "a.jpg");
  ImageInfo ji = probe_image(jb.data(), jb.size());
  CHECK(ji.format == ImageFormat::Jpeg);
  CHECK(ji.width == 400);
  CHECK(ji.channels == 3);  // (stb_image_write cannot write 1-component JPEGs to test the gray case)
}

TEST_CASE("bad image bytes throw DecodeError, never crash" * doctest::test_suite("image")) {
  TempFolder t;
  test::write_png(t / "ok.png", 30, 20, 3);
  test::write_jpg(t / "ok.jpg", 64, 48, 3);
  std::vector<uint8_t> png = test::read_bytes(t / "ok.png"), jpg = test::read_bytes(t / "ok.jpg");
  auto fails = [](const std::vector<uint8_t>& b) {
    try {
      decode_image(b.data(), b.size(), 3);
    } catch (const DecodeError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(fails({}).find("empty") != std::string::npos);
  CHECK(fails({'h', 'e', 'l', 'l', 'o'}).find("not a JPEG or PNG") != std::string::npos);
  CHECK(fails(std::vector<uint8_t>(png.begin(), png.begin() + long(png.size() / 2))).find("PNG") != std::string::npos);
  CHECK(fails(std::vector<uint8_t>(jpg.begin(), jpg.begin() + long(jpg.size() / 2))).find("JPEG") != std::string::npos);
  CHECK(fails(std::vector<uint8_t>(jpg.begin(), jpg.begin() + 4)).find("JPEG") != std::string::npos);
  CHECK(fails(test::png_header_only(30000, 30000)).find("too large") != std::string::npos);
  std::vector<uint8_t> flipped = png;  // a corrupt IDAT byte (CRC no longer matches or inflate fails)
  for (size_t i = png.size() / 2; i < png.size() / 2 + 8; ++i) flipped[i] ^= 0x5a;
  CHECK_FALSE(fails(flipped).empty());
  // Random garbage after valid magic bytes.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<uint8_t> b = trial % 2 ? jpg : png;
    for (int k = 0; k < 20; ++k) b[16 + rng() % (b.size() - 16)] = uint8_t(rng());
    try {
      decode_image(b.data(), b.size(), 3);
    } catch (const DecodeError&) {
    }
  }
}

TEST_CASE("image folder: classes sorted, labels, splits, channels" * doctest::test_suite("image")) {
  TempFolder t;
  make_small_folder(t);
  FolderScan s = scan_image_folder(t.path.string(), 0, false, false);
  CHECK(s.classes == std::vector<std::string>{"ant", "cat"});
  CHECK(s.train.size() == 12);
  CHECK(s.val.size() == 4);
  CHECK(s.train[0].label == 0);
  CHECK(s.train[0].path.find("/ant/") != std::string::npos);
  CHECK(s.train[11].label == 1);
  CHECK(folder_channels(s, 0) == 3);
  CHECK(folder_channels(s, 1) == 1);
  CHECK(s.bad.empty());

  TempFolder g;  // no val/: --val-split holds out a fixed part of each class
  for (int i = 0; i < 10; ++i) {
    test::write_png(g / ("train/a/" + std::to_string(i) + ".png"), 8, 8, 1, i);
    test::write_png(g / ("train/b/" + std::to_string(i) + ".png"), 8, 8, 1, i + 10);
  }
  CHECK(scan_image_folder(g.path.string(), 0, false, false).val.empty());
  FolderScan s2 = scan_image_folder(g.path.string(), 0.2, false, false);
  CHECK(s2.val.size() == 4);
  CHECK(s2.train.size() == 16);
  CHECK(folder_channels(s2, 0) == 1);
  FolderScan s3 = scan_image_folder(g.path.string(), 0.2, false, false);
  for (size_t i = 0; i < s2.val.size(); ++i) CHECK(s2.val[i].path == s3.val[i].path);
  CHECK_THROWS_WITH_AS(load_image_folder(g.path.string(), opts(8)), doctest::Contains("--val-split"), Error);
  auto [tr, va] = load_image_folder(g.path.string(), [] { auto o = opts(8); o.val_split = 0.2; return o; }());
  CHECK(tr.n == 16);
  CHECK(va.n == 4);
  CHECK(tr.channels == 1);
  CHECK(tr.mean[0] == doctest::Approx(0.449f));
  CHECK(tr.class_names == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH_AS(scan_image_folder(t.path.string(), 0.1, false, false), doctest::Contains("has a val/"), Error);
}

TEST_CASE("image folder: bad files are skipped with one warning each, --strict makes them fatal" * doctest::test_suite("image")) {
  TempFolder t;
  make_small_folder(t);
  test::write_bytes(t / "train/ant/empty.png", {});
  test::write_bytes(t / "train/ant/notes.txt", {'h', 'i', '\n'});
  std::vector<uint8_t> png = test::read_bytes(t / "train/cat/img0.png");
  test::write_bytes(t / "train/cat/header_cut.png", std::vector<uint8_t>(png.begin(), png.begin() + 20));
  test::write_bytes(t / "train/cat/huge.png", test::png_header_only(30000, 30000));
  test::write_bytes(t / "train/cat/.hidden", {1, 2, 3});  // hidden files are not images we were given
  FolderScan s = scan_image_folder(t.path.string(), 0, false, false);
  CHECK(s.train.size() == 12);
  REQUIRE(s.bad.size() == 4);
  std::string all;
  for (auto& [f, why] : s.bad) all += f + ": " + why + "\n";
  CHECK(all.find("empty.png: empty file") != std::string::npos);
  CHECK(all.find("notes.txt: not a JPEG or PNG image") != std::string::npos);
  CHECK(all.find("header_cut.png: truncated PNG header") != std::string::npos);
  CHECK(all.find("huge.png: image too large to decode (30000x30000)") != std::string::npos);
  CHECK(s.warnings.back() == "4 unreadable files skipped in " + t.path.string());
  CHECK_THROWS_WITH_AS(scan_image_folder(t.path.string(), 0, true, false), doctest::Contains("empty.png: empty file (--strict)"),
                       Error);

  // A truncated body passes the header scan; decoding it warns once and substitutes the
  // next image (with its label); --strict makes it fatal.
  TempFolder u;
  make_small_folder(u, /*jpeg=*/true);
  std::vector<uint8_t> jpg = test::read_bytes(u / "train/ant/img2.jpg");
  test::write_bytes(u / "train/ant/img2.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + long(jpg.size() * 2 / 3)));
  auto [tr, va] = load_image_folder(u.path.string(), opts(16));
  REQUIRE(tr.n == 12);
  const FolderSource& src = dynamic_cast<const FolderSource&>(*tr.source);
  std::vector<uint8_t> a(3 * 16 * 16), b(a.size());
  CHECK(src.produce(2, false, 0, a.data()) == 0);
  CHECK(src.bad_files().count() == 1);
  src.produce(3, false, 0, b.data());
  CHECK(a == b);  // image 2 was replaced by image 3
  src.produce(2, false, 0, a.data());
  CHECK(src.bad_files().count() == 1);  // one warning per file
  DataOptions strict = opts(16);
  strict.strict = true;
  auto [tr2, va2] = load_image_folder(u.path.string(), strict);
  CHECK_THROWS_WITH_AS(tr2.source->produce(2, false, 0, a.data()), doctest::Contains("img2.jpg: corrupt or truncated JPEG"),
                       Error);

  // An image so elongated that its base would pass libyuv's 32767 px side (1 x 200 at base
  // 224: 44800 px tall) is warned about and replaced, like a truncated one.
  TempFolder v;
  make_small_folder(v);
  test::write_png(v / "train/ant/a_thin.png", 1, 200, 3, 1);  // entry 0: sorts first in ant/
  auto [tr3, va3] = load_image_folder(v.path.string(), opts(224));
  const FolderSource& thin = dynamic_cast<const FolderSource&>(*tr3.source);
  REQUIRE(thin.describe(0).find("a_thin.png") != std::string::npos);
  std::vector<uint8_t> c(3 * 224 * 224), d(c.size());
  CHECK(thin.produce(0, false, 0, c.data()) == 0);
  CHECK(thin.bad_files().count() == 1);
  thin.produce(1, false, 0, d.data());
  CHECK(c == d);
}

TEST_CASE("image folder: empty class, one class, class mismatch, 1x1 image" * doctest::test_suite("image")) {
  TempFolder t;
  make_small_folder(t);
  std::filesystem::create_directories(t.path / "train/zebra");
  FolderScan s = scan_image_folder(t.path.string(), 0, false, false);
  CHECK(s.classes.size() == 3);  // kept: labels stay the folder's order
  bool warned = false;
  for (auto& w : s.warnings) warned |= w.find("class zebra has no readable images") != std::string::npos;
  CHECK(warned);

  TempFolder one;
  test::write_png(one / "train/only/a.png", 8, 8, 3);
  CHECK_THROWS_WITH_AS(scan_image_folder(one.path.string(), 0, false, false), doctest::Contains("only one class (only)"), Error);
  TempFolder none;
  std::filesystem::create_directories(none.path / "train");
  CHECK_THROWS_WITH_AS(scan_image_folder(none.path.string(), 0, false, false), doctest::Contains("no class folders"), Error);
  CHECK_THROWS_WITH_AS(scan_image_folder((none.path / "missing").string(), 0, false, false), doctest::Contains("not a directory"),
                       Error);
  CHECK_THROWS_WITH_AS(scan_image_folder((none.path / "train").string(), 0, false, false), doctest::Contains("no train/"), Error);

  TempFolder mism;
  make_small_folder(mism);
  test::write_png(mism / "val/dog/x.png", 8, 8, 3);
  CHECK_THROWS_WITH_AS(scan_image_folder(mism.path.string(), 0, false, false), doctest::Contains("classes missing from train/: dog"),
                       Error);

  TempFolder tiny;
  test::write_png(tiny / "train/a/1x1.png", 1, 1, 3, 5);
  test::write_png(tiny / "train/b/wide.png", 300, 2, 3, 6);
  test::write_png(tiny / "val/a/1x1.png", 1, 1, 3, 5);
  for (const char* aug : {"none", "crop", "imagenet"}) {
    auto [tr, va] = load_image_folder(tiny.path.string(), opts(24, aug));
    std::vector<uint8_t> out(3 * 24 * 24);
    tr.source->produce(0, true, 1, out.data());
    const std::vector<uint8_t> px = test::pattern(1, 1, 3, 5);
    if (std::string(aug) == "none")
      for (int c = 0; c < 3; ++c) CHECK(out[size_t(c) * 576 + 300] == px[size_t(c)]);  // a 1x1 image is a flat colour
    tr.source->produce(1, true, 2, out.data());
  }
}

TEST_CASE("transforms: eval center crop, flip, CIFAR crop, RandomResizedCrop" * doctest::test_suite("image")) {
  const int W = 40, H = 32, S = 32;
  std::vector<uint8_t> img = test::pattern(W, H, 3, 9);
  auto at = [&](int x, int y, int c) { return img[(size_t(y) * W + x) * 3 + c]; };
  std::vector<uint8_t> out(3 * S * S);
  std::mt19937_64 rng(1);
  ImageTransform t;
  t.size = S;
  t.apply(img.data(), H, W, false, rng, out.data());
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < S; y += 7)
      for (int x = 0; x < S; x += 5) CHECK(out[(size_t(c) * S + y) * S + x] == at(x + 4, y, c));

  t.mode = AugmentMode::Flip;
  int flipped = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 r(seed), r2(seed);
    t.apply(img.data(), H, W, true, r, out.data());
    const bool f = r2() % 2 == 1;
    flipped += f;
    CHECK(out[5] == at(f ? 4 + S - 1 - 5 : 4 + 5, 0, 0));
  }
  CHECK(flipped > 3);
  CHECK(flipped < 17);

  t.mode = AugmentMode::Crop;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 r(seed), r2(seed);
    t.apply(img.data(), H, W, true, r, out.data());
    const int dy = int(r2() % 9) - 4, dx = int(r2() % 9) - 4;
    const bool f = r2() % 2 == 1;
    for (int y = 0; y < S; y += 3)
      for (int x = 0; x < S; x += 3) {
        const int sy = y + dy, sx = (f ? S - 1 - x : x) + dx;
        const bool in = sy >= 0 && sy < S && sx >= 0 && sx < S;
        CHECK(out[size_t(y) * S + x] == (in ? at(sx + 4, sy, 0) : 0));
      }
  }

  // RandomResizedCrop: the eval transform of an imagenet-mode base is its center crop;
  // training crops vary with the seed and stay deterministic for one seed.
  t.mode = AugmentMode::ImageNet;
  t.size = 28;
  CHECK(t.base_size() == 32);
  std::vector<uint8_t> a(3 * 28 * 28), b(a.size()), c(a.size());
  std::mt19937_64 r1(3), r2(3), r3(4);
  t.apply(img.data(), H, W, true, r1, a.data());
  t.apply(img.data(), H, W, true, r2, b.data());
  t.apply(img.data(), H, W, true, r3, c.data());
  CHECK(a == b);
  CHECK(a != c);
  // A crop of the whole image (scale 1, ratio W/H inside [3/4, 4/3]) is a plain resize.
  std::vector<uint8_t> resized(28 * 28 * 3);
  resize_image(img.data(), W, H, 0, resized.data(), 28, 28, 3);
  bool some_full = false;
  for (uint64_t seed = 0; seed < 400 && !some_full; ++seed) {
    std::mt19937_64 r(seed);
    t.apply(img.data(), H, W, true, r, a.data());
    std::vector<uint8_t> chw(a.size()), chw_flip(a.size());
    for (int y = 0; y < 28; ++y)
      for (int x = 0; x < 28; ++x)
        for (int k = 0; k < 3; ++k) {
          chw[(size_t(k) * 28 + y) * 28 + x] = resized[(size_t(y) * 28 + x) * 3 + k];
          chw_flip[(size_t(k) * 28 + y) * 28 + x] = resized[(size_t(y) * 28 + 27 - x) * 3 + k];
        }
    some_full = a == chw || a == chw_flip;
  }
  CHECK(some_full);  // ~0.2% of crops are the whole image; 400 tries find one
}

TEST_CASE("resize (libyuv box/bilinear): constant stays, ramps follow the plane, channels independent" *
          doctest::test_suite("image")) {
  std::mt19937_64 rng(5);
  // Shapes: shrink < 2x (bilinear), > 2x (box), enlarge, 1-pixel sides, odd sizes.
  const int shapes[][4] = {{40, 30, 28, 21}, {97, 61, 13, 9}, {17, 23, 50, 41}, {1, 9, 5, 3},
                           {64, 1, 7, 4},    {300, 200, 224, 224}, {31, 37, 31, 37}, {2, 2, 1, 1}};
  for (const auto& sh : shapes) {
    const int w = sh[0], h = sh[1], dw = sh[2], dh = sh[3];
    CAPTURE(w);
    CAPTURE(h);
    CAPTURE(dw);
    CAPTURE(dh);
    // A constant image stays exactly constant, per channel.
    std::vector<uint8_t> src(size_t(w) * h * 3), dst(size_t(dw) * dh * 3);
    for (size_t i = 0; i < src.size(); ++i) src[i] = uint8_t(40 + 70 * (i % 3));
    resize_image(src.data(), w, h, 0, dst.data(), dw, dh, 3);
    // (libyuv's box filter, used when both sides shrink over 2x, divides by a truncated
    // fixed-point reciprocal of the box area: up to 1 low.)
    const int box_low = w > 2 * dw && h > 2 * dh ? 1 : 0;
    int wrong = 0;
    for (size_t i = 0; i < dst.size(); ++i) {
      const int want = 40 + 70 * int(i % 3);
      wrong += dst[i] > want || dst[i] < want - box_low;
    }
    CHECK(wrong == 0);
    // A plane v = a x + b y + c: every output pixel lies within the values its source area
    // spans, widened by half a source pixel each way (libyuv aligns pixel centers when
    // shrinking, corners when enlarging), channel by channel.
    const double a = double(rng() % 100) / w, b = double(rng() % 100) / h;  // values stay in 10..250
    auto plane = [&](double x, double y, int ch) { return a * x + b * y + 10 + 20 * ch; };
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < 3; ++ch) src[(size_t(y) * w + x) * 3 + ch] = uint8_t(std::lround(plane(x, y, ch)));
    resize_image(src.data(), w, h, 0, dst.data(), dw, dh, 3);
    const double kx = double(w) / dw, ky = double(h) / dh;
    int outside = 0;
    std::string first;
    for (int y = 0; y < dh; ++y)
      for (int x = 0; x < dw; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          const double x0 = std::clamp(x * kx - 1, 0.0, w - 1.0), x1 = std::clamp((x + 1) * kx, 0.0, w - 1.0);
          const double y0 = std::clamp(y * ky - 1, 0.0, h - 1.0), y1 = std::clamp((y + 1) * ky, 0.0, h - 1.0);
          const double lo = plane(x0, y0, ch) - 1.5, hi = plane(x1, y1, ch) + 1.5;
          const int v = dst[(size_t(y) * dw + x) * 3 + ch];
          if ((v < lo || v > hi) && outside++ == 0)
            first = std::to_string(v) + " at (" + std::to_string(x) + ", " + std::to_string(y) + ", " +
                    std::to_string(ch) + ") outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
        }
    CAPTURE(first);
    CHECK(outside == 0);
    // Three channels resize exactly like three one-channel images (planes; no channel
    // leaks into another).
    for (uint8_t& v : src) v = uint8_t(rng());
    resize_image(src.data(), w, h, 0, dst.data(), dw, dh, 3);
    for (int ch = 0; ch < 3; ++ch) {
      std::vector<uint8_t> one(size_t(w) * h), one_out(size_t(dw) * dh);
      for (size_t i = 0; i < one.size(); ++i) one[i] = src[i * 3 + ch];
      resize_image(one.data(), w, h, 0, one_out.data(), dw, dh, 1);
      bool same = true;
      for (size_t i = 0; i < one_out.size(); ++i) same = same && one_out[i] == dst[i * 3 + ch];
      CHECK(same);
    }
  }
  std::vector<uint8_t> px(12), out(12);
  CHECK_THROWS_AS(resize_image(px.data(), 2, 2, 0, out.data(), 0, 2, 3), Error);
  CHECK_THROWS_AS(resize_image(px.data(), 2, 2, 0, out.data(), 2, 2, 2), Error);
  CHECK_THROWS_AS(resize_image(px.data(), kMaxResizeSide + 1, 1, 0, out.data(), 2, 2, 1), Error);
}

TEST_CASE("streamed loader: identical batches for 1 and 2 workers, prefetch or not, folder or cache" * doctest::test_suite("image")) {
  TempFolder t;
  make_small_folder(t, /*jpeg=*/true);
  for (const char* aug : {"none", "crop", "imagenet", "flip"}) {
    CAPTURE(aug);
    auto [tr1, va1] = load_image_folder(t.path.string(), opts(24, aug, 1));
    auto [tr2, va2] = load_image_folder(t.path.string(), opts(24, aug, 2));
    LoaderOptions sync;
    sync.prefetch = false;
    for (int epoch : {0, 1}) {
      const auto a = epoch_batches(tr1, 4, true, 11, epoch);
      check_same(a, epoch_batches(tr2, 4, true, 11, epoch));
      check_same(a, epoch_batches(tr2, 4, true, 11, epoch, sync));
      CHECK(a.size() == 3);
    }
    check_same(epoch_batches(va1, 3, false, 0, 0), epoch_batches(va2, 3, false, 0, 0));
    CHECK(epoch_batches(va1, 3, false, 0, 0).back().size == 1);

    // The cache of the same folder at the folder path's base size gives the same batches.
    ImageTransform base;
    base.mode = parse_augment_mode(aug);
    base.size = 24;
    const std::string cache = t / (std::string("c_") + aug + ".vkqc");
    CacheWriteReport rep = write_image_cache(t.path.string(), base.base_size(), cache, opts(0, "", 2));
    CHECK(rep.train == 12);
    CHECK(rep.val == 4);
    auto [ctr, cva] = load_image_cache(cache, opts(24, aug, 2));
    CHECK(ctr.class_names == tr1.class_names);
    check_same(epoch_batches(tr1, 4, true, 11, 1), epoch_batches(ctr, 4, true, 11, 1));
    check_same(epoch_batches(va1, 3, false, 0, 0), epoch_batches(cva, 3, false, 0, 0));
  }
  // A limited streamed set takes evenly spaced images (both classes), the same through the cache.
  auto [ftr, fva] = load_image_folder(t.path.string(), opts(24, "crop", 2));
  Dataset sub = first_n(ftr, 4);
  CHECK(sub.source_index == std::vector<uint32_t>{0, 3, 6, 9});
  CHECK(sub.label(0) == 0);
  CHECK(sub.label(3) == 1);
  const auto sb = epoch_batches(sub, 2, true, 5, 0);
  REQUIRE(sb.size() == 2);
  for (const Batch& b : sb)
    for (int i = 0; i < 2; ++i) CHECK(b.y[size_t(i)] == sub.label(int(b.index[size_t(i)])));
  // Different seeds and epochs change the augmentation; the epoch order is a permutation.
  auto [tr, va] = load_image_folder(t.path.string(), opts(24, "imagenet", 2));
  CHECK(epoch_batches(tr, 4, true, 11, 0)[0].x != epoch_batches(tr, 4, true, 12, 0)[0].x);
  // Resume: starting at a later position gives the same remaining batches.
  BatchLoader l(tr, 4, true, 11);
  l.start_epoch(1, 2);
  Batch b;
  REQUIRE(l.next(b));
  CHECK(b.x == epoch_batches(tr, 4, true, 11, 1)[2].x);
}

TEST_CASE("image cache: bad files are refused clearly" * doctest::test_suite("image")) {
  TempFolder t;
  test::write_bytes(t / "x.vkqc", {'n', 'o', 'p', 'e'});
  CHECK_THROWS_WITH_AS(MappedCache(t / "x.vkqc"), doctest::Contains("too short"), Error);
  std::vector<uint8_t> bad(64, 0);
  test::write_bytes(t / "y.vkqc", bad);
  CHECK_THROWS_WITH_AS(MappedCache(t / "y.vkqc"), doctest::Contains("bad magic"), Error);
  CHECK_THROWS_WITH_AS(MappedCache(t / "missing.vkqc"), doctest::Contains("cannot open"), Error);
  make_small_folder(t);
  write_image_cache(t.path.string(), 20, t / "ok.vkqc", opts(0, "", 1));
  std::vector<uint8_t> ok = test::read_bytes(t / "ok.vkqc");
  std::vector<uint8_t> cut(ok.begin(), ok.end() - 5);
  test::write_bytes(t / "cut.vkqc", cut);
  CHECK_THROWS_AS(MappedCache(t / "cut.vkqc"), Error);
  std::mt19937 rng(3);
  for (int trial = 0; trial < 100; ++trial) {  // random corruption: an Error or a valid cache, never a crash
    std::vector<uint8_t> b = ok;
    for (int k = 0; k < 4; ++k) b[8 + rng() % (b.size() - 8)] ^= uint8_t(1 + rng() % 255);
    test::write_bytes(t / "r.vkqc", b);
    try {
      auto [tr, va] = load_image_cache(t / "r.vkqc", opts(20, "crop", 1));
      std::vector<uint8_t> out(size_t(tr.channels) * 20 * 20);
      for (int i = 0; i < tr.n; ++i) tr.source->produce(i, true, 1, out.data());
    } catch (const Error&) {
    }
  }
  CHECK_THROWS_WITH_AS(load_image_cache(t / "ok.vkqc", [] { auto o = opts(16); o.in_channels = 1; return o; }()),
                       doctest::Contains("3-channel"), Error);
}

TEST_CASE("CIFAR-100 binary: fine and coarse labels, bad files" * doctest::test_suite("image")) {
  TempFolder t;
  std::vector<uint8_t> recs;
  for (int r = 0; r < 5; ++r) {
    recs.push_back(uint8_t(r * 4));    // coarse
    recs.push_back(uint8_t(r * 20 + 3));  // fine
    for (int k = 0; k < 3072; ++k) recs.push_back(uint8_t(r + k));
  }
  test::write_bytes(t / "cifar-100-binary/train.bin", recs);
  test::write_bytes(t / "cifar-100-binary/test.bin", std::vector<uint8_t>(recs.begin(), recs.begin() + 2 * 3074));
  std::ofstream(t / "cifar-100-binary/coarse_label_names.txt") << "c0\nc1\nc2\nc3\nc4\nc5\nc6\nc7\nc8\nc9\nc10\nc11\nc12\nc13\nc14\nc15\nc16\nc17\nc18\nc19\n";
  Dataset fine = load_dataset("cifar100", t.path.string(), true);
  CHECK(fine.n == 5);
  CHECK(fine.classes == 100);
  CHECK(fine.labels == std::vector<uint8_t>{3, 23, 43, 63, 83});
  CHECK(fine.image(1)[0] == 1);
  CHECK(fine.image(4)[3071] == uint8_t(4 + 3071));
  CHECK(fine.class_names.empty());
  Dataset coarse = load_dataset("cifar100-coarse", t.path.string(), false);
  CHECK(coarse.n == 2);
  CHECK(coarse.classes == 20);
  CHECK(coarse.labels == std::vector<uint8_t>{0, 4});
  CHECK(coarse.class_names.size() == 20);
  CHECK(coarse.mean[0] == doctest::Approx(0.5071f));
  recs[3074] = 100;  // coarse label out of range
  test::write_bytes(t / "cifar-100-binary/train.bin", recs);
  CHECK_THROWS_WITH_AS(load_dataset("cifar100", t.path.string(), true), doctest::Contains("out of range [0, 20)"), Error);
  recs.pop_back();
  test::write_bytes(t / "cifar-100-binary/train.bin", recs);
  CHECK_THROWS_WITH_AS(load_dataset("cifar100", t.path.string(), true), doctest::Contains("not a positive multiple of 3074"),
                       Error);
}

TEST_CASE("data options from a checkpoint: integers are checked, not converted blindly" * doctest::test_suite("image")) {
  CHECK_THROWS_WITH_AS(nn::DataOptions::from_json({{"image_size", 7.7e73}}), doctest::Contains("image_size"), Error);
  CHECK_THROWS_WITH_AS(nn::DataOptions::from_json({{"workers", "four"}}), doctest::Contains("workers"), Error);
  CHECK(nn::DataOptions::from_json({{"image_size", 64}, {"workers", 2}}).image_size == 64);
}
