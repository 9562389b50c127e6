#include "train_options.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "backend/error.h"
#include "nn/model/model_desc.h"
#include "nn/model/network.h"
#include "nn/train/run_state.h"

namespace vkqat::cli {

void add_train_options(CLI::App* t, TrainArgs& a) {
  t->add_option("--data", a.cfg.data, "dataset: fashion-mnist | mnist | cifar10 | cifar100 | cifar100-coarse | folder | cache")->capture_default_str();
  t->add_option("--data-dir", a.cfg.data_dir, "directory of the dataset files (default: Debian's location); folder: ROOT with train/<class>/ and val/<class>/; cache: the file of `vkqat data cache`");
  nn::DataOptions& d = a.cfg.data_options;
  t->add_option("--image-size", d.image_size, "folder/cache: side of the square training images (default 224; cache: its size)");
  t->add_option("--augment", d.augment, "none | flip | crop | imagenet (folder/cache default: none; built-in sets: crop)");
  t->add_option("--workers", d.workers, "folder/cache: decode and augmentation threads (default: every core)");
  t->add_option("--val-split", d.val_split, "folder without val/: hold out this fraction of each class for testing");
  t->add_option("--in-channels", d.in_channels, "folder: 1 or 3 (default: 1 if every image is grayscale, else 3)");
  t->add_option("--mean", d.mean, "per-channel normalization mean (1 or 3 values; default: the dataset's, ImageNet's for folders)")->delimiter(',');
  t->add_option("--std", d.std, "per-channel normalization std (1 or 3 values)")->delimiter(',');
  t->add_flag("--strict", d.strict, "folder: unreadable image files are fatal instead of skipped");
  t->add_option("--model", a.cfg.model.name,
                "resnet20 | resnet32 | resnet56 | preact-resnet20 | plain-cnn | resnet18 | resnet34 | resnet50 | mobilenet-v1 | mobilenet-v2")
      ->check(CLI::IsMember(nn::model_names()))
      ->capture_default_str();
  t->add_option("--model-file", a.model_file, "a JSON model description (see README, models/), instead of --model");
  t->add_option("--width", a.cfg.model.width, "channels of the first stage (16 = standard; resnet18/34/50: 64 = torchvision)")->capture_default_str();
  t->add_option("--width-mult", a.cfg.model.width_mult, "mobilenet-v1/v2: channel multiplier (torchvision's width_mult)")
      ->check(CLI::Range(0.01, 16.0))
      ->capture_default_str();
  t->add_option("--stem", a.cfg.model.stem, "resnet18/34/50, mobilenets: imagenet (7x7/2 + max pool; stride 2) | cifar (3x3 stride 1, no max pool)")
      ->check(CLI::IsMember({"imagenet", "cifar"}))
      ->capture_default_str();
  t->add_option("--epochs", a.cfg.epochs, "epochs")->capture_default_str();
  t->add_option("--batch-size", a.cfg.batch, "batch size")->capture_default_str();
  t->add_option("--lr", a.cfg.lr, "peak learning rate (cosine schedule)")->capture_default_str();
  t->add_option("--momentum", a.cfg.momentum, "SGD momentum")->capture_default_str();
  t->add_option("--wd", a.cfg.weight_decay, "weight decay (not on BN parameters and biases)")->capture_default_str();
  t->add_option("--warmup-epochs", a.cfg.warmup_epochs, "linear learning-rate warm-up")->capture_default_str();
  t->add_option("--seed", a.cfg.seed, "random seed (init, data order, augmentation)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  t->add_option("--wbits", a.cfg.wbits, "weight bits (32 = full precision)")->capture_default_str();
  t->add_option("--abits", a.cfg.abits, "activation bits (32 = full precision)")->capture_default_str();
  t->add_option("--quantizer", a.quant.quantizer, "preset pair: cgpact | dorefa-pact | dorefa | lsq | minmax")->capture_default_str();
  t->add_option("--wquant", a.wquant, "weight quantizer, replacing the preset's: dorefa | lsq | minmax");
  t->add_option("--aquant", a.aquant, "activation quantizer, replacing the preset's: cg-pact | pact | dorefa | lsq | minmax");
  t->add_flag("--per-channel", a.quant.per_channel, "one scale per output channel (weight quantizers that support it: lsq)");
  t->add_option("--edge-bits", a.quant.edge_bits, "weight bits of the first conv and last FC")->capture_default_str();
  t->add_option("--bits-config", a.bits_config, "JSON file of per-layer bits: {\"layer1.0.conv1\": {\"wbits\": 2}}");
  t->add_flag("--sat", a.quant.sat, "scale-adjusted training: last FC weights rescaled to n_out Var = 1");
  t->add_flag("--sat-conv", a.quant.sat_conv, "SAT's rescale of every conv weight (fan_out Var = 1)");
  t->add_flag("--aux", a.cfg.aux, "full-precision auxiliary module (training only)");
  t->add_option("--aux-weight", a.cfg.aux_weight, "lambda: loss = CE(LP) + lambda CE(aux)")->capture_default_str();
  t->add_option("--init", a.cfg.init, "initialise weights from a checkpoint");
  t->add_option("--fc-init", a.cfg.fc_init,
                "sat: rescale the last FC's initial latent weight to n_out Var = 1 (with --sat or DoReFa there: "
                "same logits, a step ~lr instead of 3 n_in/n_out lr; README, MobileNetV2)")
      ->check(CLI::IsMember({"default", "sat"}))
      ->capture_default_str();
  t->add_option("--resume", a.resume, "continue the run in RUN_DIR from its last checkpoint");
  t->add_option("--out", a.cfg.out, "run directory");
  t->add_option("--device", a.device, "Vulkan device index (see `vkqat devices`)")->check(CLI::NonNegativeNumber);
  t->add_option("--train-limit", a.cfg.train_limit, "use only the first K training images")->check(CLI::NonNegativeNumber);
  t->add_option("--test-limit", a.cfg.test_limit, "use only the first K test images")->check(CLI::NonNegativeNumber);
  t->add_option("--log-every", a.cfg.log_every, "steps between metrics.jsonl records")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  t->add_option("--keep-checkpoints", a.cfg.keep_checkpoints, "committed checkpoints kept in RUN_DIR/checkpoints")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  t->add_option("--stop-after-steps", a.cfg.stop_after_steps, "checkpoint and stop after N steps (as if interrupted)")
      ->check(CLI::NonNegativeNumber);
  t->add_flag("--profile", a.cfg.profile, "print the GPU time of each dispatch of one step");
  t->add_flag("--sync-bn", a.cfg.sync_bn,
              "under mpirun: batch-norm statistics over the global batch (a no-op in one process)");
  t->add_option("--bucket-mb", a.cfg.bucket_mb,
                "under mpirun: all-reduce the gradients in buckets of about this many MB, each started while the "
                "backward goes on (0: one all-reduce after the backward)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

// Every flag of add_train_options (and --stats-every), for note_given.
static const char* const kTrainFlags[] = {
    "--data", "--data-dir", "--model", "--model-file", "--width", "--width-mult", "--stem", "--epochs", "--batch-size", "--lr", "--momentum", "--wd",
    "--warmup-epochs", "--seed", "--wbits", "--abits", "--quantizer", "--wquant", "--aquant", "--per-channel", "--edge-bits", "--bits-config", "--sat",
    "--sat-conv", "--sync-bn", "--bucket-mb", "--aux", "--aux-weight", "--init", "--fc-init", "--resume", "--out", "--device", "--train-limit",
    "--test-limit", "--image-size", "--augment", "--workers", "--val-split", "--in-channels", "--mean", "--std", "--strict",
    "--log-every", "--keep-checkpoints", "--stop-after-steps", "--profile", "--stats-every"};

void note_given(CLI::App* t, TrainArgs& a) {
  a.given.clear();
  for (const char* flag : kTrainFlags)
    if (t->get_option_no_throw(flag) && t->count(flag) > 0) a.given.insert(flag);
  if (a.cfg.model.width < 1) throw CLI::ValidationError("--width", "must be >= 1");
}

void finish_train_args(TrainArgs& a) {
  if (a.resume.empty() && a.cfg.out.empty()) throw Error("--out RUN_DIR is required (or --resume RUN_DIR)");
  if (a.stats_every < 0) throw Error("--stats-every must be >= 0");
  if (!a.model_file.empty()) {
    if (a.given.count("--model")) throw Error("--model and --model-file name two models: give one");
    // Checked now (an error names the file and the layer); stored absolute in the run's
    // config and checkpoints, so eval and --resume rebuild it from anywhere.
    nn::load_model_description(a.model_file);
    a.cfg.model.model_file = std::filesystem::absolute(a.model_file).lexically_normal().string();
    a.cfg.model.name = nn::kModelFileName;
  }
  a.quant.apply_preset(a.quant.quantizer, a.wquant, a.aquant);
  a.quant.wbits = a.cfg.wbits;
  a.quant.abits = a.cfg.abits;
  if (!a.bits_config.empty()) {
    a.quant.bits_config = quant::load_bits_config(a.bits_config);
    a.quant.bits_config_source = "--bits-config " + a.bits_config;
  }
  a.quant.validate();
  if (a.quant.any() || !a.bits_config.empty()) a.cfg.quant = a.quant.to_json();
  if (!(a.cfg.aux_weight >= 0)) throw Error("--aux-weight must be >= 0");
  a.cfg.data_options.validate();
}

namespace {
std::string show(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_float()) {  // 0.1f as "0.1", not "0.10000000149011612"
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", j.get<double>());
    return buf;
  }
  return j.dump();
}

// Flags given with --resume that would change what the run is: an error unless equal to
// the stored value (comparing the parsed values, so "--lr 0.10" equals 0.1).
void check_resume_flags(const TrainArgs& a) {
  const nn::TrainConfig stored = nn::Trainer::stored_config(a.resume);
  const quant::QuantConfig sq = stored.quant.is_null() ? quant::QuantConfig{} : quant::quant_config_from_json(stored.quant);
  using Field = std::function<nlohmann::json(const nn::TrainConfig&, const quant::QuantConfig&)>;
  const std::vector<std::pair<const char*, Field>> fixed = {
      {"--data", [](auto& c, auto&) { return nlohmann::json(c.data); }},
      {"--model", [](auto& c, auto&) { return nlohmann::json(c.model.name); }},
      {"--width", [](auto& c, auto&) { return nlohmann::json(c.model.width); }},
      {"--width-mult", [](auto& c, auto&) { return nlohmann::json(c.model.width_mult); }},
      {"--stem", [](auto& c, auto&) { return nlohmann::json(c.model.stem); }},
      {"--model-file", [](auto& c, auto&) { return nlohmann::json(c.model.model_file); }},
      {"--batch-size", [](auto& c, auto&) { return nlohmann::json(c.batch); }},
      {"--lr", [](auto& c, auto&) { return nlohmann::json(c.lr); }},
      {"--momentum", [](auto& c, auto&) { return nlohmann::json(c.momentum); }},
      {"--wd", [](auto& c, auto&) { return nlohmann::json(c.weight_decay); }},
      {"--warmup-epochs", [](auto& c, auto&) { return nlohmann::json(c.warmup_epochs); }},
      {"--seed", [](auto& c, auto&) { return nlohmann::json(c.seed); }},
      {"--wbits", [](auto& c, auto&) { return nlohmann::json(c.wbits); }},
      {"--abits", [](auto& c, auto&) { return nlohmann::json(c.abits); }},
      {"--aux", [](auto& c, auto&) { return nlohmann::json(c.aux); }},
      {"--aux-weight", [](auto& c, auto&) { return nlohmann::json(c.aux_weight); }},
      {"--fc-init", [](auto& c, auto&) { return nlohmann::json(c.fc_init); }},
      {"--sync-bn", [](auto& c, auto&) { return nlohmann::json(c.sync_bn); }},
      {"--train-limit", [](auto& c, auto&) { return nlohmann::json(c.train_limit); }},
      {"--test-limit", [](auto& c, auto&) { return nlohmann::json(c.test_limit); }},
      {"--image-size", [](auto& c, auto&) { return nlohmann::json(c.data_options.image_size); }},
      {"--augment", [](auto& c, auto&) { return nlohmann::json(c.data_options.augment); }},
      {"--workers", [](auto& c, auto&) { return nlohmann::json(c.data_options.workers); }},
      {"--val-split", [](auto& c, auto&) { return nlohmann::json(c.data_options.val_split); }},
      {"--in-channels", [](auto& c, auto&) { return nlohmann::json(c.data_options.in_channels); }},
      {"--mean", [](auto& c, auto&) { return nlohmann::json(c.data_options.mean); }},
      {"--std", [](auto& c, auto&) { return nlohmann::json(c.data_options.std); }},
      {"--strict", [](auto& c, auto&) { return nlohmann::json(c.data_options.strict); }},
      {"--quantizer", [](auto&, auto& q) { return nlohmann::json(q.quantizer); }},
      {"--wquant", [](auto&, auto& q) { return nlohmann::json(q.wquant); }},
      {"--aquant", [](auto&, auto& q) { return nlohmann::json(q.aquant); }},
      {"--per-channel", [](auto&, auto& q) { return nlohmann::json(q.per_channel); }},
      {"--edge-bits", [](auto&, auto& q) { return nlohmann::json(q.edge_bits); }},
      {"--sat", [](auto&, auto& q) { return nlohmann::json(q.sat); }},
      {"--sat-conv", [](auto&, auto& q) { return nlohmann::json(q.sat_conv); }},
      {"--bits-config", [](auto&, auto& q) { return q.bits_config; }},
  };
  for (const auto& [flag, field] : fixed) {
    if (!a.given.count(flag)) continue;
    const nlohmann::json want = field(a.cfg, a.quant), have = field(stored, sq);
    if (want != have)
      throw Error(std::string(flag) + " " + show(want) + " differs from the run's " + show(have) + ": " + flag +
                  " cannot change on --resume (start a new run with --init " + a.resume + "/" + nn::kCheckpointFile +
                  " instead)");
  }
  if (a.given.count("--init")) {
    throw Error("--init cannot be given with --resume (the run continues from its own checkpoint)");
  }
  if (a.given.count("--out")) {
    std::error_code ec;
    if (!std::filesystem::equivalent(a.cfg.out, a.resume, ec))
      throw Error("--out " + a.cfg.out + " is not the --resume directory " + a.resume +
                  " (a resumed run continues in its own directory)");
  }
}
}  // namespace

std::unique_ptr<nn::Trainer> make_trainer(Context& ctx, const TrainArgs& a) {
  const nn::QuantPlugins plugins = quant::quant_plugins();
  if (a.resume.empty()) return std::make_unique<nn::Trainer>(ctx, a.cfg, plugins);
  check_resume_flags(a);
  nn::ResumeOptions change;
  if (a.given.count("--epochs")) change.epochs = a.cfg.epochs;
  if (a.given.count("--data-dir")) change.data_dir = a.cfg.data_dir;
  if (a.given.count("--log-every")) change.log_every = a.cfg.log_every;
  if (a.given.count("--keep-checkpoints")) change.keep_checkpoints = a.cfg.keep_checkpoints;
  change.stop_after_steps = a.cfg.stop_after_steps;
  change.profile = a.cfg.profile;
  change.bucket_mb = a.cfg.bucket_mb;
  if (a.given.count("--device")) std::fprintf(stderr, "resume: on --device %d\n", a.device);
  return nn::Trainer::resume(ctx, a.resume, change, plugins);
}

}  // namespace vkqat::cli
