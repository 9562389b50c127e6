// Test entry point: one validated Context shared by every test case of the process.
// A validation message (error, warning, or synchronization hazard) fails the test case
// that was running; one outside any test case fails the whole run.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <memory>

#include "testutil.h"

namespace {
std::unique_ptr<vkqat::Context> g_ctx;
bool g_in_test = false;
int g_stray_messages = 0;

struct TestTracker : doctest::IReporter {
  explicit TestTracker(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { g_in_test = true; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override { g_in_test = false; }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
DOCTEST_REGISTER_LISTENER("vkqat-test-tracker", 1, TestTracker);
}  // namespace

namespace vkqat::test {
Context& ctx() {
  if (!g_ctx) {
    ContextOptions opt;
    opt.validation = true;
    opt.on_validation_message = [](const std::string& msg) {
      std::fprintf(stderr, "VALIDATION: %s\n", msg.c_str());
      if (g_in_test) {
        FAIL_CHECK("Vulkan validation message: " << msg);
      } else {
        ++g_stray_messages;
      }
    };
    g_ctx = std::make_unique<Context>(opt);
  }
  return *g_ctx;
}
}  // namespace vkqat::test

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  int rc = context.run();
  g_ctx.reset();  // destruction may report leaks through validation
  if (g_stray_messages) {
    std::fprintf(stderr, "%d validation message(s) outside test cases\n", g_stray_messages);
    rc = rc ? rc : 1;
  }
  return rc;
}
