// train / eval / inspect: added by the trainer work (issue 3).
#include "commands.h"

namespace vkqat::cli {
void add_training_commands(CLI::App&, Actions&) {}
}  // namespace vkqat::cli
