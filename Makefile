# Artificien — one GNU Makefile.
#   make          build the `artificien` binary (build/artificien)
#   make demo     install missing Debian packages, build, run the main job
#   make test     install missing Debian packages, build, run the whole suite
#   make asan     the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench    benchmarks, side by side with PyTorch when it is installed (never in `make test`)
#   make clean
# Folders under src/ are the layers of docs/architecture.md; each may use only those above it.

BUILD    ?= build
CC       ?= cc
ARCH     ?= -march=native
OPT      ?= -O3
CFLAGS   ?= $(OPT) $(ARCH) -g
CFLAGS   += -std=c11 -Wall -Wextra -Wno-unused-parameter -fno-strict-aliasing -pthread
CPPFLAGS += -Isrc -Iinclude -D_GNU_SOURCE
PKGS     := libcjson zlib
CPPFLAGS += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lcjson -lz) -lblis -lm -pthread

ENGINE_DIRS := core tensor nn data train fed sim
ENGINE_SRC  := $(foreach d,$(ENGINE_DIRS),$(wildcard src/$(d)/*.c))
CLI_SRC     := $(wildcard src/cli/*.c)
TEST_SRC    := $(wildcard tests/*.c tests/*/*.c)

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ   := $(TEST_SRC:%.c=$(BUILD)/%.o)

BIN   := $(BUILD)/artificien
TESTS := $(BUILD)/run_tests

.PHONY: all demo test asan bench clean deps check
all: $(BIN) $(TESTS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libartificien.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(TESTS): $(TEST_OBJ) $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

deps:
	@tools/install-deps.sh

demo: deps
	@$(MAKE) --no-print-directory $(BIN)
	$(BIN) train --data fashion-mnist --epochs 2 --batch 100 --opt adam --lr 0.01 --seed 1 --out $(BUILD)/demo-run

# The suite: C unit tests (one runner), then the command-line tests; one closing count line.
test: deps
	@$(MAKE) --no-print-directory all
	@tests/run.sh $(BUILD)

check: all
	@tests/run.sh $(BUILD)

asan:
	@tools/install-deps.sh
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  CFLAGS_EXTRA= CFLAGS="-O1 -g $(ARCH) -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh build-asan

bench: deps
	@$(MAKE) --no-print-directory all
	@bench/run.sh $(BUILD)

clean:
	rm -rf build build-asan

-include $(ENGINE_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
