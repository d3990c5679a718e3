#!/bin/sh
# test_symbols.sh BUILD -- the shared libraries export their public API and nothing else:
# libinfllm.so only ifl_* (include/infllm.h), libinfllm_runtime.so only rt_* and tok_* (the
# runtime's public headers, runtime/rt_api.h). Lists the dynamic symbols each defines (nm -D) and
# fails on any other name, printing it.
set -u
build=${1:?usage: test_symbols.sh BUILD_DIR}
fail=0
check() { # check LIB PATTERN WHAT
    lib=$1
    if [ ! -f "$lib" ]; then echo "FAIL: $lib is missing"; fail=1; return; fi
    syms=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//')
    n=$(printf '%s\n' "$syms" | grep -c . )
    bad=$(printf '%s\n' "$syms" | grep -v -E "$2" | grep .)
    if [ -n "$bad" ]; then
        echo "FAIL: $lib exports symbols outside $3 (objects compiled before -fvisibility=hidden"
        echo "      was in CFLAGS? make does not track flags: run make clean):"
        printf '%s\n' "$bad" | sed 's/^/  /'; fail=1
    elif [ "$n" -lt 10 ]; then
        echo "FAIL: $lib exports only $n symbols (nm -D found too few: is it built?)"; fail=1
    else
        echo "ok: $lib exports $n symbols, all $3"
    fi
}
check "$build/libinfllm.so" '^ifl_[a-z0-9][a-z0-9_]*$' "ifl_*"
check "$build/libinfllm_runtime.so" '^(rt|tok)_[a-z0-9][a-z0-9_]*$' "rt_* and tok_*"
# The runtime needs nothing from libinfllm but its public functions: every libinfllm symbol it
# leaves undefined must be an ifl_* one (the others would come from libc and libm).
und=$(nm -D --undefined-only "$build/libinfllm_runtime.so" | awk '{ print $NF }' | sed 's/@.*//' |
      grep -E '^(ifl|cpu|ref|rt|tok)_' | grep -v -E '^ifl_[a-z0-9][a-z0-9_]*$')
if [ -n "$und" ]; then echo "FAIL: libinfllm_runtime.so needs non-public symbols:"; echo "$und"; fail=1; fi
[ $fail -eq 0 ] && echo "exported symbols: ok"
exit $fail
