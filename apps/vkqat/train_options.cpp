#include "train_options.h"

#include "backend/error.h"

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
  t->add_option("--model", a.cfg.model.name, "resnet20 | resnet32 | resnet56 | preact-resnet20 | plain-cnn")->capture_default_str();
  t->add_option("--width", a.cfg.model.width, "channels of the first stage (16 = standard)")->capture_default_str();
  t->add_option("--epochs", a.cfg.epochs, "epochs")->capture_default_str();
  t->add_option("--batch-size", a.cfg.batch, "batch size")->capture_default_str();
  t->add_option("--lr", a.cfg.lr, "peak learning rate (cosine schedule)")->capture_default_str();
  t->add_option("--momentum", a.cfg.momentum, "SGD momentum")->capture_default_str();
  t->add_option("--wd", a.cfg.weight_decay, "weight decay (not on BN parameters and biases)")->capture_default_str();
  t->add_option("--warmup-epochs", a.cfg.warmup_epochs, "linear learning-rate warm-up")->capture_default_str();
  t->add_option("--seed", a.cfg.seed, "random seed (init, data order, augmentation)")->capture_default_str();
  t->add_option("--wbits", a.cfg.wbits, "weight bits (32 = full precision)")->capture_default_str();
  t->add_option("--abits", a.cfg.abits, "activation bits (32 = full precision)")->capture_default_str();
  t->add_option("--quantizer", a.quant.quantizer, "cgpact | dorefa-pact | dorefa | lsq | minmax")->capture_default_str();
  t->add_option("--edge-bits", a.quant.edge_bits, "weight bits of the first conv and last FC")->capture_default_str();
  t->add_option("--bits-config", a.bits_config, "JSON file of per-layer bits: {\"layer1.0.conv1\": {\"wbits\": 2}}");
  t->add_flag("--sat", a.quant.sat, "scale-adjusted training: last FC weights rescaled to n_out Var = 1");
  t->add_flag("--sat-conv", a.quant.sat_conv, "SAT's rescale of every conv weight (fan_out Var = 1)");
  t->add_flag("--aux", a.cfg.aux, "full-precision auxiliary module (training only)");
  t->add_option("--aux-weight", a.cfg.aux_weight, "lambda: loss = CE(LP) + lambda CE(aux)")->capture_default_str();
  t->add_option("--init", a.cfg.init, "initialise weights from a checkpoint");
  t->add_option("--resume", a.resume, "continue the run in RUN_DIR from its last checkpoint");
  t->add_option("--out", a.cfg.out, "run directory");
  t->add_option("--device", a.device, "Vulkan device index (see `vkqat devices`)");
  t->add_option("--train-limit", a.cfg.train_limit, "use only the first K training images");
  t->add_option("--test-limit", a.cfg.test_limit, "use only the first K test images");
  t->add_option("--log-every", a.cfg.log_every, "steps between metrics.jsonl records")->capture_default_str();
  t->add_option("--stop-after-steps", a.cfg.stop_after_steps, "checkpoint and stop after N steps (as if interrupted)");
  t->add_flag("--profile", a.cfg.profile, "print the GPU time of each dispatch of one step");
}

void note_given(CLI::App* t, TrainArgs& a) {
  a.epochs_given = t->count("--epochs") > 0;
  if (a.cfg.model.width < 1) throw CLI::ValidationError("--width", "must be >= 1");
}

void finish_train_args(TrainArgs& a) {
  if (a.resume.empty() && a.cfg.out.empty()) throw Error("--out RUN_DIR is required (or --resume RUN_DIR)");
  if (a.stats_every < 0) throw Error("--stats-every must be >= 0");
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

std::unique_ptr<nn::Trainer> make_trainer(Context& ctx, const TrainArgs& a) {
  const nn::QuantPlugins plugins = quant::quant_plugins();
  return a.resume.empty() ? std::make_unique<nn::Trainer>(ctx, a.cfg, plugins)
                          : nn::Trainer::resume(ctx, a.resume, a.epochs_given ? a.cfg.epochs : 0, plugins);
}

}  // namespace vkqat::cli
