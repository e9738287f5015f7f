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
override CFLAGS += -std=c11 -Wall -Wextra -Wno-unused-parameter -fno-strict-aliasing -pthread
CPPFLAGS += -Isrc -Iinclude -D_GNU_SOURCE
PKGS     := libcjson zlib libsodium libcurl sqlite3 libmicrohttpd
CPPFLAGS += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lcjson -lz -lsodium -lcurl -lsqlite3 -lmicrohttpd) -lblis -lm -pthread

# MPI: when Open MPI's mpicc is on PATH, the one `artificien` binary (and the test runner, which
# links the same library) is built with MPI; sim/sim.c and cli/cmd_sim.c get -DAF_HAVE_MPI.
# Without mpirun the binary still runs as one process (MPI_Init only under a launcher).
# Without mpicc everything builds as before, single-process. The flags are recorded in
# $(BUILD)/mpi.flags so installing or removing Open MPI rebuilds the two objects.
MPICC := $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
MPI_CPPFLAGS := -DAF_HAVE_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
MPI_LDLIBS   := $(shell $(MPICC) --showme:link 2>/dev/null)
endif
MPI_OBJ := $(BUILD)/src/sim/sim.o $(BUILD)/src/cli/cmd_sim.o
$(MPI_OBJ): CPPFLAGS += $(MPI_CPPFLAGS)
$(MPI_OBJ): $(BUILD)/mpi.flags
LDLIBS += $(MPI_LDLIBS)

ENGINE_DIRS := core tensor nn data train fed sim
ENGINE_SRC  := $(foreach d,$(ENGINE_DIRS),$(wildcard src/$(d)/*.c))
CLI_SRC     := $(wildcard src/cli/*.c)
# The coordinator's layers (SQLite, libmicrohttpd): in the binary and the tests, never in the
# device library.
SERVER_DIRS := store server
SERVER_OBJ  := $(foreach d,$(SERVER_DIRS),$(patsubst %.c,$(BUILD)/%.o,$(wildcard src/$(d)/*.c)))
TEST_SRC    := $(wildcard tests/*.c tests/*/*.c)

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ   := $(TEST_SRC:%.c=$(BUILD)/%.o)

# The device library: src/client over the engine layers a device needs (never store, server,
# sim or cli: no SQLite, no libmicrohttpd, no MPI). The binary and the tests link src/client too.
CLIENT_OBJ     := $(patsubst %.c,$(BUILD)/%.o,$(wildcard src/client/*.c))
CLIENT_LIB_OBJ := $(CLIENT_OBJ) $(foreach d,core tensor nn data train fed,$(patsubst %.c,$(BUILD)/%.o,$(wildcard src/$(d)/*.c)))

BIN   := $(BUILD)/artificien
TESTS := $(BUILD)/run_tests

.PHONY: all demo test test-browser asan bench clean deps check FORCE
all: $(BIN) $(TESTS) $(BUILD)/libartificien-client.a $(BUILD)/bench-load

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libartificien.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# One relocatable object whose only global definitions are the public artificien_* API:
# the engine's own symbols (af_, nn_, data_, fed_ …) cannot clash with an app's.
$(BUILD)/libartificien-client.a: $(CLIENT_LIB_OBJ)
	@rm -f $@
	ld -r -o $(BUILD)/artificien-client.o $^
	objcopy --wildcard --keep-global-symbol='artificien_*' $(BUILD)/artificien-client.o
	ar rcs $@ $(BUILD)/artificien-client.o

$(BUILD)/libartificien-server.a: $(SERVER_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(CLIENT_OBJ) $(BUILD)/libartificien-server.a $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(TESTS): $(TEST_OBJ) $(CLIENT_OBJ) $(BUILD)/libartificien-server.a $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench-load: $(BUILD)/bench/load.o $(CLIENT_OBJ) $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench-secagg: $(BUILD)/bench/secagg.o $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench-secagg-http: $(BUILD)/bench/secagg_http.o $(BUILD)/libartificien.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

FORCE:
$(BUILD)/mpi.flags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(MPI_CPPFLAGS) | $(MPI_LDLIBS)' | cmp -s - $@ || echo '$(MPI_CPPFLAGS) | $(MPI_LDLIBS)' > $@

deps:
	@tools/install-deps.sh

# The set-up targets build in parallel on every core (a fresh clone builds in well under a minute).
JOBS := -j$(shell nproc 2>/dev/null || echo 2)

demo: deps
	@$(MAKE) --no-print-directory $(JOBS) $(BIN)
	@$(if $(SECAGG),DEMO_SECAGG=$(SECAGG) )$(if $(HOLD),DEMO_HOLD=$(HOLD) )tools/demo.sh $(BUILD)

# The suite: C unit tests (one runner), then the command-line tests; one closing count line.
test: deps
	@$(MAKE) --no-print-directory $(JOBS) all
	@tests/run.sh $(BUILD)

check: all
	@tests/run.sh $(BUILD)

asan:
	@tools/install-deps.sh
	@$(MAKE) --no-print-directory $(JOBS) BUILD=build-asan OPT=-O1 \
	  CFLAGS="-O1 -g $(ARCH) -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh build-asan

# The dashboard in a real headless browser (Debian's chromium driven by Python playwright;
# tests/browser/run.sh installs both when missing). Not part of `make test`: it needs pip.
test-browser: deps
	@$(MAKE) --no-print-directory $(JOBS) $(BIN)
	@BUILD=$(BUILD) tests/browser/run.sh

bench: deps
	@$(MAKE) --no-print-directory $(JOBS) all $(BUILD)/bench-secagg $(BUILD)/bench-secagg-http
	@bench/run.sh $(BUILD)

clean:
	rm -rf build build-asan

-include $(ENGINE_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(CLIENT_OBJ:.o=.d) $(BUILD)/bench/load.d $(BUILD)/bench/secagg_http.d $(SERVER_OBJ:.o=.d)
