# The two commands of the README. Each installs whatever Debian packages are missing,
# configures a Release build into build/, builds, and runs its job.
PACKAGES := cmake g++ make libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools \
  glslang-tools spirv-tools spirv-cross libspirv-cross-c-shared-dev doctest-dev \
  nlohmann-json3-dev libcli11-dev libstb-dev libjpeg62-turbo-dev zlib1g-dev dataset-fashion-mnist \
  libimgui-dev libglfw3-dev xvfb xauth python3 python3-matplotlib
BUILD := build
JOBS ?= $(shell nproc)
RUN_DIR ?= runs/quickstart

.PHONY: run test build deps bench clean

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

clean:
	rm -rf $(BUILD)
