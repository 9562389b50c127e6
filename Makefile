# The two commands of the README. Each installs whatever Debian packages are missing,
# configures a Release build into build/, builds, and runs its job.
PACKAGES := cmake g++ make libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools \
  glslang-tools spirv-tools spirv-cross libspirv-cross-c-shared-dev doctest-dev \
  nlohmann-json3-dev libcli11-dev libstb-dev libjpeg62-turbo-dev libyuv-dev zlib1g-dev dataset-fashion-mnist \
  libimgui-dev libglfw3-dev xvfb xauth python3 python3-matplotlib clang libclang-rt-14-dev \
  libopenmpi-dev openmpi-bin
BUILD := build
JOBS ?= $(shell nproc)
RUN_DIR ?= runs/quickstart

.PHONY: run test build deps bench clean fuzz test-asan

deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

# The main job: a 4-bit ResNet-20 with CG-PACT, SAT and the full-precision auxiliary
# module on Fashion-MNIST. TRAIN_LIMIT keeps it to a few minutes on 2 CPU cores (lavapipe);
# TRAIN_LIMIT=0 trains on all 60000 images.
TRAIN_LIMIT ?= 12800
run: build
	./$(BUILD)/vkqat devices
	rm -rf $(RUN_DIR)
	./$(BUILD)/vkqat train --data fashion-mnist --model resnet20 --width 16 --epochs 1 --batch-size 128 \
	  --lr 0.1 --wbits 4 --abits 4 --quantizer cgpact --sat --aux --seed 0 \
	  --train-limit $(TRAIN_LIMIT) --out $(RUN_DIR)

bench: build
	./$(BUILD)/vkqat bench

# AddressSanitizer + UndefinedBehaviorSanitizer build of the unit tests (build-asan/), run on
# ASAN_TESTS (a ctest -R regex; the default leaves out the long training tests). Leaks in
# the Vulkan driver and layers are suppressed by tests/lsan.supp, nothing of vkqat's
# (tests/lsan_keep_loaded.c keeps those modules mapped so that their frames have names).
ASAN_BUILD := build-asan
ASAN_TESTS ?= .
# The long tests and their _mobile twins (the same test under VKQAT_DEVICE_PROFILE=mobile).
ASAN_EXCLUDE ?= ^(test_conv2d|test_int_kernels|test_train|test_quant_training|test_run_state|test_stats|test_quant_bench|cli_inputs|sweep_script|sweep_script_mobilenet_v2|viz_.*)(_mobile)?$$
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVKQAT_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target vkqat_tests vkqat
	gcc -shared -fPIC -O1 -o $(ASAN_BUILD)/lsan_keep_loaded.so tests/lsan_keep_loaded.c -ldl
	cd $(ASAN_BUILD) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $(CURDIR)/$(ASAN_BUILD)/lsan_keep_loaded.so" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 1800 -R '$(ASAN_TESTS)' -E '$(ASAN_EXCLUDE)'

# libFuzzer harnesses of the file readers (fuzz/, clang + ASan/UBSan, build-fuzz/), each run
# FUZZ_SECONDS from the committed seed corpus fuzz/corpus/NAME; new inputs go to
# build-fuzz/corpus/NAME, findings to build-fuzz/crash-NAME-*. Fails if any harness crashes.
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 60
FUZZERS ?= idx cifar safetensors bits_config model_config model_desc int_model stats image
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DVKQAT_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZERS))
	@fail=""; for f in $(FUZZERS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$f; \
	  ASAN_OPTIONS=detect_leaks=1 ./$(FUZZ_BUILD)/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -rss_limit_mb=2048 -artifact_prefix=$(FUZZ_BUILD)/crash-$$f- $(FUZZ_BUILD)/corpus/$$f fuzz/corpus/$$f \
	    > $(FUZZ_BUILD)/fuzz_$$f.log 2>&1 || fail="$$fail $$f"; \
	  echo "fuzz_$$f: $$(grep -o 'stat::number_of_executed_units: [0-9]*' $(FUZZ_BUILD)/fuzz_$$f.log | grep -o '[0-9]*$$') executions in $(FUZZ_SECONDS) s, corpus $$(ls $(FUZZ_BUILD)/corpus/$$f | wc -l) new inputs"; \
	done; \
	if [ -n "$$fail" ]; then echo "fuzz: findings in:$$fail (see $(FUZZ_BUILD)/fuzz_*.log)"; exit 1; fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
