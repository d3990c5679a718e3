# infllm -- build, test and run. Plain GNU make; objects under $(BUILD)/.
#
#   make               build/libinfllm.a, build/libinfllm.so and the tool build/infllm
#   make demo          build, then run `infllm demo` (the main job on built-in defaults)
#   make test          build and run every test (unit, misuse, tool error paths, spec oracle)
#   make check         `make test`, then the same tests built with AddressSanitizer + UBSan
#   make clean

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
WERROR  ?=
CFLAGS  += -std=c11 $(OPT) -fPIC -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla $(WERROR) $(SAN) -Iinclude -MMD -MP
LDFLAGS += $(SAN)
LDLIBS  += -lm

LIB_SRC  := $(wildcard src/core/*.c) $(wildcard src/ref/*.c)
TOOL_SRC := $(wildcard tools/*.c)
TESTS    := test_ref test_api_misuse

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_OBJ := $(TOOL_SRC:%.c=$(BUILD)/%.o)

.PHONY: all demo test check clean
all: $(BUILD)/libinfllm.a $(BUILD)/libinfllm.so $(BUILD)/infllm

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libinfllm.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/libinfllm.so: $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/infllm: $(TOOL_OBJ) $(BUILD)/libinfllm.a
	$(CC) $(LDFLAGS) -o $@ $(TOOL_OBJ) $(BUILD)/libinfllm.a $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/tests/harness.o $(BUILD)/libinfllm.a
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/tests/harness.o $(BUILD)/libinfllm.a $(LDLIBS)

demo: all
	$(BUILD)/infllm demo

# Each test prints its cases with their seeds and exits non-zero on a failure.
test: all $(TESTS:%=$(BUILD)/tests/%)
	@set -e; for t in $(TESTS); do echo "== $$t"; $(BUILD)/tests/$$t; done
	@echo "== tool error paths"; sh tests/test_cli.sh $(BUILD)/infllm
	@echo "== spec oracle (independent python float64 implementation)"; \
	  python3 tests/oracle/selftest.py && python3 tests/oracle/check_cli.py --infllm $(BUILD)/infllm
	@echo "all tests passed ($(BUILD))"

# The sanitizer run repeats the C tests and the tool's error paths (the oracle sweep is skipped:
# it checks numbers, which the plain build already did).
check: test
	$(MAKE) BUILD=build/san OPT="-O1 -g" SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    all $(TESTS:%=build/san/tests/%)
	@set -e; for t in $(TESTS); do echo "== $$t (asan+ubsan)"; build/san/tests/$$t; done
	@echo "== tool error paths (asan+ubsan)"; sh tests/test_cli.sh build/san/infllm
	@echo "all checks passed"

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
