// vkqat: the command-line front end. Subcommands are thin: they parse flags, call the
// library, and print. Every failure is a vkqat::Error with a message naming the flag or
// file, printed as "vkqat: error: ..." with exit code 1 (2 for usage errors).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "backend/error.h"
#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"vkqat: quantization-aware training of low-bit CNNs on any Vulkan GPU"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::vector<std::function<int()>> actions;
  vkqat::cli::add_devices_command(app, actions);
  vkqat::cli::add_bench_command(app, actions);
  vkqat::cli::add_training_commands(app, actions);
  vkqat::cli::add_deploy_commands(app, actions);
  vkqat::cli::add_data_command(app, actions);
  vkqat::cli::add_model_command(app, actions);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and exits 0; every other parse error is a usage error: exit 2, as
    // documented (CLI11's own codes, 104-115, are not).
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto& act : actions)
      if (act) return act();
  } catch (const vkqat::Error& e) {
    std::fprintf(stderr, "vkqat: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vkqat: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
