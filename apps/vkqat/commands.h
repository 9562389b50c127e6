#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <vector>

namespace vkqat::cli {
// Each adds a subcommand; its callback pushes the action to run after parsing.
using Actions = std::vector<std::function<int()>>;
void add_devices_command(CLI::App& app, Actions& actions);
void add_bench_command(CLI::App& app, Actions& actions);
void add_training_commands(CLI::App& app, Actions& actions);  // train, eval, inspect
void add_deploy_commands(CLI::App& app, Actions& actions);    // export, infer (integer model)
void add_data_command(CLI::App& app, Actions& actions);       // data info, data cache, data export
void add_model_command(CLI::App& app, Actions& actions);      // model show
}  // namespace vkqat::cli
