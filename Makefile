# infllm -- build, test and run. Plain GNU make; objects under $(BUILD)/.
#
#   make               build/libinfllm.a, build/libinfllm.so (exports only ifl_*), the model runtime's
#                      build/libinfllm_runtime.so (exports only rt_*, tok_*) and the tool build/infllm
#   make demo          build, then run `infllm demo` (the main job on built-in defaults)
#   make test          build and run every test (unit, misuse, tool error paths, spec oracle)
#   make check         `make test`, then the same tests built with AddressSanitizer + UBSan
#   make CUDA=1        also the cuda backend (src/cuda/*.cu, nvcc, CUDA_ARCH=90a), under build/cuda/
#   make test-cuda     build with CUDA=1 and run tests/test_cuda.c (prints SKIPPED without a GPU)
#   make test-cuda-memcheck  the same on small shapes under compute-sanitizer (GPU machine)
#   make fuzz          the parser fuzzers (clang libFuzzer), each for a bounded time
#   make python        the library the Python package loads from the tree (then PYTHONPATH=python)
#   make test-python   its pytest suite (python/tests; part of `make test`)
#   make clean

CC      ?= cc
ifeq ($(CUDA),1)
BUILD   ?= build/cuda
endif
BUILD   ?= build
OPT     ?= -O2 -g
WERROR  ?=
CFLAGS  += -std=c11 $(OPT) -fPIC -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla -fvisibility=hidden $(WERROR) $(SAN) -Iinclude -MMD -MP
LDFLAGS += $(SAN) -pthread
LDLIBS  += -lm

LIB_SRC  := $(wildcard src/core/*.c) $(wildcard src/ref/*.c) src/cpu/cpu_backend.c src/cpu/threadpool.c

# The cpu kernels are compiled once per instruction set and picked at run time (cpu_simd.h).
CPU_ISA_SRC := src/cpu/cpu_tiles.c src/cpu/cpu_attn.c src/cpu/cpu_select.c src/cpu/cpu_bwd.c src/cpu/cpu_ops.c
CPU_OPT     ?= -O3
ISA_scalar  :=
ISA_avx2    := -DCPU_ISA_AVX2 -mavx2 -mfma -mf16c
ISA_avx512  := -DCPU_ISA_AVX512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c
CPU_ISA_OBJ := $(foreach isa,scalar avx2 avx512,$(CPU_ISA_SRC:%.c=$(BUILD)/%.$(isa).o))
TOOL_SRC := $(wildcard tools/*.c)

# The model runtime (runtime/): checkpoints, tokenizer, the MiniCPM4 forward pass, generation. It is
# a layer above libinfllm that calls only its public API (the shared library is linked with
# --no-undefined against libinfllm.so, which exports nothing else), linked into the tool and the
# tests from its own archive. RUNTIME_ISA_SRC: files compiled once per instruction set.
RUNTIME_ISA_SRC := runtime/linear_kernels.c
RUNTIME_SRC     := $(filter-out $(RUNTIME_ISA_SRC),$(wildcard runtime/*.c))
RUNTIME_OBJ     := $(RUNTIME_SRC:%.c=$(BUILD)/%.o) \
                   $(foreach isa,scalar avx2 avx512,$(RUNTIME_ISA_SRC:%.c=$(BUILD)/%.$(isa).o))

# C tests (tests/NAME.c, each its own program). TESTS_TEXT: tokenizer, JSON, chat, sampling;
# TESTS_MODEL: checkpoints and the forward pass.
TESTS_TEXT  := test_json test_tokenizer
TESTS_MODEL := test_model
TESTS    := test_ref test_api_misuse test_kv_cache test_backend_ops $(TESTS_TEXT) $(TESTS_MODEL)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CPU_ISA_OBJ)
TOOL_OBJ := $(TOOL_SRC:%.c=$(BUILD)/%.o)

# The cuda backend (CUDA=1): nvcc for src/cuda/*.cu, the CUDA runtime linked statically so the
# library and tool run wherever the driver is (no libcudart on the library path needed).
ifeq ($(CUDA),1)
NVCC      ?= nvcc
CUDA_ARCH ?= 90a
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC)))
NVCCFLAGS ?= -O3 -std=c++17 -gencode=arch=compute_$(CUDA_ARCH),code=sm_$(CUDA_ARCH) -Xcompiler -fPIC,-Wall,-fvisibility=hidden \
             -Iinclude -MMD -MP
CUDA_OBJ  := $(patsubst %.cu,$(BUILD)/%.o,$(wildcard src/cuda/*.cu))
LIB_OBJ   += $(CUDA_OBJ)
CFLAGS    += -DIFL_WITH_CUDA
LDLIBS    += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

.PHONY: all demo test check clean test-cuda
all: $(BUILD)/libinfllm.a $(BUILD)/libinfllm.so $(BUILD)/libinfllm_runtime.so $(BUILD)/infllm

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

define isa_rule
$(BUILD)/$(2)/%.$(1).o: $(2)/%.c
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) $$(CPU_OPT) -ffp-contract=fast -Wno-psabi $$(ISA_$(1)) -c $$< -o $$@
endef
$(foreach isa,scalar avx2 avx512,$(eval $(call isa_rule,$(isa),src/cpu)))
$(foreach isa,scalar avx2 avx512,$(eval $(call isa_rule,$(isa),runtime)))

$(BUILD)/libinfllm.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

# --exclude-libs: nothing of a static library linked in (the CUDA runtime) is exported either
$(BUILD)/libinfllm.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,--exclude-libs,ALL -o $@ $^ $(LDLIBS)

$(BUILD)/libinfllm_runtime.so: $(RUNTIME_OBJ) $(BUILD)/libinfllm.so
	$(CC) -shared $(LDFLAGS) -Wl,--no-undefined -o $@ $(RUNTIME_OBJ) -L$(BUILD) -linfllm -Wl,-rpath,'$$ORIGIN' -lm

$(BUILD)/libinfllm_runtime.a: $(RUNTIME_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/infllm: $(TOOL_OBJ) $(BUILD)/libinfllm_runtime.a $(BUILD)/libinfllm.a
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(BUILD)/libinfllm_runtime.a $(BUILD)/libinfllm.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/harness.o $(BUILD)/tests/backend_check.o $(BUILD)/libinfllm_runtime.a $(BUILD)/libinfllm.a
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/tests/harness.o $(BUILD)/tests/backend_check.o $(BUILD)/libinfllm_runtime.a $(BUILD)/libinfllm.a $(LDLIBS)

demo: all
	$(BUILD)/infllm demo

# Each test prints its cases with their seeds and exits non-zero on a failure.
test: all $(TESTS:%=$(BUILD)/tests/%)
	@set -e; for t in $(TESTS); do echo "== $$t"; $(BUILD)/tests/$$t; done
	@echo "== tool error paths"; sh tests/test_cli.sh $(BUILD)/infllm
	@echo "== tool through a KV cache"; sh tests/test_cli_cache.sh $(BUILD)/infllm
	@echo "== exported symbols"; sh tests/test_symbols.sh $(BUILD)
	@echo "== tool against hostile input"; sh tests/test_hostile.sh $(BUILD)/infllm
	@echo "== spec oracle (independent python float64 implementation)"; \
	  python3 tests/oracle/selftest.py && python3 tests/oracle/check_cli.py --infllm $(BUILD)/infllm && \
	  python3 tests/oracle/check_cli.py --infllm $(BUILD)/infllm --backend cpu --seed 2 --cases 80 --no-reject --tol 1e-4
	@$(MAKE) --no-print-directory test-text-extra test-model-extra test-python
	@echo "all tests passed ($(BUILD))"

# Script tests of the runtime (after the C tests above): the tokenizer against its npm oracle,
# and the model tools end to end. Each recipe belongs to its part of the runtime.
.PHONY: test-text-extra test-model-extra fuzz
test-text-extra: all $(BUILD)/tests/tokenize_cli
	@echo "== tokenizer against the Hugging Face tokenizers library (npm oracle, tests/tokenizer)"; \
	  sh tests/tokenizer/check.sh $(BUILD)
	@echo "== infllm run end to end (tests/test_run.sh)"; sh tests/test_run.sh $(BUILD)/infllm
test-model-extra: all
	@echo "== model runtime against its float64 oracle (tests/model_oracle)"; \
	  python3 tests/model_oracle/selfcheck.py && python3 tests/model_oracle/check_model.py --infllm $(BUILD)/infllm

# The Python package (python/infllm: ctypes over libinfllm.so, numpy and torch front ends). `make
# python` builds the library it loads from the tree; test-python runs its pytest suite with
# PYTHON_TEST, an interpreter that has numpy, pytest and torch (Debian's python3-numpy,
# python3-pytest and python3-torch, which python/tests/ensure_deps.sh installs when missing).
# The tests compare against the tool, so it is built too. With CUDA=1 the cuda cases run where
# torch sees a GPU (they skip, saying why, elsewhere).
PYTHON_TEST ?= /usr/bin/python3
.PHONY: python test-python
python: $(BUILD)/libinfllm.so
test-python: $(BUILD)/libinfllm.so $(BUILD)/infllm
	@echo "== python package (pytest python/tests, $(PYTHON_TEST))"
	@sh python/tests/ensure_deps.sh $(PYTHON_TEST)
	INFLLM_LIB=$(abspath $(BUILD)/libinfllm.so) PYTHONPATH=python $(PYTHON_TEST) -m pytest -q -p no:cacheprovider python/tests

# libFuzzer targets (fuzz/*.c) for every reader of untrusted input: JSON, tokenizer.json (+ encode
# and decode), safetensors headers, .npy files, token-id files, config.json's meaning, the
# checkpoint loader (index, shards), the tool's flags. Each is built with clang
# -fsanitize=fuzzer,address,undefined (the sources it tests instrumented; libinfllm and the
# runtime's other parts linked from the plain build) and run for FUZZ_TIME seconds from its seed
# corpus (fuzz/corpus/NAME, copied, so new inputs stay under build/fuzz/). Needs clang and
# libFuzzer's runtime (Debian: clang-14 + libclang-rt-14-dev); the target installs nothing. A
# crash fails the target. fuzz_cli's stderr (the refusals it provokes) is closed. docs/fuzzing.md
# has a longer run's figures.
FUZZ_CC      ?= clang
FUZZ_TIME    ?= 20
FUZZ_CFLAGS  := -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude
FUZZ_TARGETS := fuzz_json fuzz_tokenizer fuzz_safetensors fuzz_npy fuzz_tokens fuzz_config fuzz_model fuzz_cli
FUZZ_RT      := runtime/json.c runtime/readfile.c runtime/errmsg.c
FUZZ_NPY     := tools/npy.c tools/outfile.c $(FUZZ_RT)
FUZZ_LIB     := build/libinfllm.a -lm -pthread
FUZZ_SRC_fuzz_json        := $(FUZZ_RT)
FUZZ_SRC_fuzz_tokenizer   := $(FUZZ_RT) runtime/tokenizer_load.c runtime/tokenizer_bpe.c runtime/tokenizer_decode.c \
                             runtime/tokenizer_write.c
FUZZ_SRC_fuzz_safetensors := $(FUZZ_RT) runtime/safetensors.c
FUZZ_SRC_fuzz_npy         := $(FUZZ_NPY) $(FUZZ_LIB)
FUZZ_SRC_fuzz_tokens      := tools/tokens.c $(FUZZ_NPY) $(FUZZ_LIB)
FUZZ_SRC_fuzz_config      := $(FUZZ_RT) runtime/config.c
FUZZ_SRC_fuzz_model       := $(FUZZ_RT) runtime/config.c runtime/model_load.c runtime/safetensors.c \
                             build/libinfllm_runtime.a $(FUZZ_LIB)
FUZZ_SRC_fuzz_cli         := tools/cli.c tools/memplan.c $(FUZZ_LIB)
build/fuzz/%: fuzz/%.c $(sort $(filter %.c,$(foreach t,$(FUZZ_TARGETS),$(FUZZ_SRC_$(t))))) build/libinfllm.a \
              build/libinfllm_runtime.a
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC_$*)
fuzz: $(FUZZ_TARGETS:%=build/fuzz/%)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  c=$${t#fuzz_}; rm -rf build/fuzz/corpus-$$c; mkdir -p build/fuzz/corpus-$$c; cp fuzz/corpus/$$c/* build/fuzz/corpus-$$c/; \
	  echo "== $$t ($(FUZZ_TIME) s)"; a=; [ $$t = fuzz_cli ] && a=-close_fd_mask=2; \
	  TMPDIR=build/fuzz build/fuzz/$$t -max_total_time=$(FUZZ_TIME) -max_len=16384 -rss_limit_mb=2048 -print_final_stats=1 \
	    $$a -artifact_prefix=build/fuzz/$$t- build/fuzz/corpus-$$c 2>build/fuzz/$$t.log || \
	    { tail -n 40 build/fuzz/$$t.log; echo "$$t: FAILED (log build/fuzz/$$t.log)"; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" build/fuzz/$$t.log | tr '\n' ' '; echo; \
	done; rm -rf build/fuzz/infllm-fuzz-model.*; echo "fuzz: no crashes"

# The sanitizer run repeats the C tests and the tool's error paths (the oracle sweep is skipped:
# it checks numbers, which the plain build already did).
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
check: test
	$(MAKE) BUILD=build/san OPT="-O1 -g" SAN="$(SAN_FLAGS)" \
	    all $(TESTS:%=build/san/tests/%)
	@set -e; for t in $(TESTS); do echo "== $$t (asan+ubsan)"; build/san/tests/$$t; done
	@echo "== tool error paths (asan+ubsan)"; sh tests/test_cli.sh build/san/infllm
	@echo "== tool through a KV cache (asan+ubsan)"; sh tests/test_cli_cache.sh build/san/infllm
	@echo "== tool against hostile input (asan+ubsan)"; sh tests/test_hostile.sh build/san/infllm
	@echo "all checks passed"

# Fault injection in SQLite's way (tests/fault_inject.c, tests/test_faults.sh): the sanitizer
# build of the tool with every allocation and file write wrapped (-Wl,--wrap), run once to count
# them, then once per N with the N-th allocation failing, and once per N with the N-th write
# failing (ENOSPC), along each create/load/write path. Every run must exit 0 (with the reference
# outputs) or 1, leak nothing (LeakSanitizer), leave existing files intact and no temporary.
FAULT_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=write,--wrap=fopen
$(BUILD)/infllm-faults: $(TOOL_OBJ) $(BUILD)/tests/fault_inject.o $(BUILD)/libinfllm_runtime.a $(BUILD)/libinfllm.a
	$(CC) $(LDFLAGS) $(FAULT_WRAP) -o $@ $(TOOL_OBJ) $(BUILD)/tests/fault_inject.o $(BUILD)/libinfllm_runtime.a \
	    $(BUILD)/libinfllm.a $(LDLIBS)
.PHONY: test-faults
test-faults:
	$(MAKE) BUILD=build/san OPT="-O1 -g" SAN="$(SAN_FLAGS)" build/san/infllm-faults
	sh tests/test_faults.sh build/san/infllm-faults

# The cuda backend against the ref over a sweep (tests/test_cuda.c); on a machine without a GPU it
# prints SKIPPED and exits 0. TEST_CUDA_ARGS: e.g. --full, --filter NAME, --seed N.
test-cuda:
	$(MAKE) CUDA=1 BUILD=build/cuda all build/cuda/tests/test_cuda
	build/cuda/tests/test_cuda $(TEST_CUDA_ARGS)

# tests/test_cuda.c under compute-sanitizer's memcheck (out-of-bounds and misaligned device
# accesses, device-side faults, leaked device memory), on its small-config cases (block 16: every
# op, dtype, batch layout, strided view and error path, at up to 900 keys); the log is
# build/cuda/test_cuda_memcheck.log. TEST_CUDA_MEMCHECK_ARGS picks other cases (empty: the whole
# quick sweep). It fails, saying so, when memcheck could not run: no compute-sanitizer, a device it
# does not support (gVisor: "Device not supported"), no GPU (the test's SKIPPED), no case run.
TEST_CUDA_MEMCHECK_ARGS ?= --filter bs=16
.PHONY: test-cuda-memcheck
test-cuda-memcheck:
	$(MAKE) CUDA=1 BUILD=build/cuda all build/cuda/tests/test_cuda
	@command -v compute-sanitizer >/dev/null 2>&1 || \
	  { echo "test-cuda-memcheck: memcheck NOT RUN: compute-sanitizer is not on the PATH"; exit 1; }
	@log=build/cuda/test_cuda_memcheck.log; \
	  echo "compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check full build/cuda/tests/test_cuda $(TEST_CUDA_MEMCHECK_ARGS)"; \
	  compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check full \
	    build/cuda/tests/test_cuda $(TEST_CUDA_MEMCHECK_ARGS) >$$log 2>&1; rc=$$?; \
	  grep -E "^=+ |FAIL|SKIPPED|cases, " $$log | tail -n 20; \
	  if grep -q "Device not supported" $$log; then \
	    echo "test-cuda-memcheck: memcheck NOT RUN: compute-sanitizer does not support this device (a gVisor machine?)"; exit 1; fi; \
	  if grep -q "^SKIPPED" $$log; then echo "test-cuda-memcheck: memcheck NOT RUN: no usable CUDA device"; exit 1; fi; \
	  if ! grep -q "ERROR SUMMARY: 0 errors" $$log || grep -q "^0 cases" $$log; then \
	    echo "test-cuda-memcheck: memcheck FAILED or checked nothing (exit $$rc), see $$log"; exit 1; fi; \
	  if [ $$rc -ne 0 ]; then echo "test-cuda-memcheck: test_cuda failed under memcheck (exit $$rc), see $$log"; exit 1; fi; \
	  echo "test-cuda-memcheck: passed, no memcheck errors"

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
