# Entry points. Each target installs what it needs (scripts/setup.sh is
# idempotent), configures and builds incrementally.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CONFIG ?= examples/vit-tiny-synthetic.json
BIN := $(BUILD_DIR)/runtime/app/pipetransformer

.PHONY: setup configure build test demo bench docs clean

setup:
	bash scripts/setup.sh

configure: setup
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The test command (the README's, and what .ci/run calls).
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

# The main job on built-in synthetic data.
demo: build
	$(BIN) train --config $(CONFIG) --output output/demo

bench: build
	bash benchmarks/run_step_time.sh $(BUILD_DIR)

# Regenerates the configuration reference from the schema.
docs: build
	$(BIN) config --describe --format markdown > docs/configuration.md

clean:
	rm -rf $(BUILD_DIR)
