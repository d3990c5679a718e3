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
# Every function declaration of the public headers carries its export macro (a line that starts
# with a type and names a public function is one that lacks it).
unmarked=$(cd "$(dirname "$0")/.." && {
    grep -nE '^[a-z][a-z0-9_ *]*\bifl_[a-z0-9_]+\(' include/infllm.h
    grep -nE '^[a-z][a-z0-9_ *]*\b(rt|tok)_[a-z0-9_]+\(' runtime/model.h runtime/config.h runtime/tokenizer.h \
        runtime/sample.h runtime/chat.h
})
if [ -n "$unmarked" ]; then echo "FAIL: public declarations without IFL_API/RT_API:"; echo "$unmarked"; fail=1; fi
# And every function the public headers declare is exported (a forgotten IFL_API/RT_API would
# hide it: the tool links the static archives, so only this test would notice).
here=$(cd "$(dirname "$0")/.." && pwd)
declared() { # PREFIX_MACRO HEADERS...: the names of the functions declared with the macro
    m=$1; shift
    sed -n "s/^$m [^(]*[ *]\([a-z][a-z0-9_]*\)(.*/\1/p" "$@" | sort -u
}
exported() { nm -D --defined-only "$1" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | sort -u; }
for pair in "libinfllm.so:IFL_API:include/infllm.h" \
            "libinfllm_runtime.so:RT_API:runtime/model.h runtime/config.h runtime/tokenizer.h runtime/sample.h runtime/chat.h"; do
    lib=${pair%%:*} rest=${pair#*:}; m=${rest%%:*} hdrs=${rest#*:}
    [ -f "$build/$lib" ] || continue
    files=; for h in $hdrs; do files="$files $here/$h"; done
    # shellcheck disable=SC2086
    missing=$(declared "$m" $files | comm -23 - "$(exported "$build/$lib" >"$build/.exported"; echo "$build/.exported")")
    rm -f "$build/.exported"
    # shellcheck disable=SC2086
    n_decl=$(declared "$m" $files | grep -c .)
    if [ -n "$missing" ]; then echo "FAIL: $lib does not export what its headers declare with $m:"; echo "$missing"; fail=1
    elif [ "$n_decl" -lt 10 ]; then echo "FAIL: found only $n_decl $m declarations in $hdrs"; fail=1
    else echo "ok: $lib exports all $n_decl functions declared with $m"; fi
done
# The runtime needs nothing from libinfllm but its public functions: every libinfllm symbol it
# leaves undefined must be an ifl_* one (the others would come from libc and libm).
und=$(nm -D --undefined-only "$build/libinfllm_runtime.so" | awk '{ print $NF }' | sed 's/@.*//' |
      grep -E '^(ifl|cpu|ref|rt|tok)_' | grep -v -E '^ifl_[a-z0-9][a-z0-9_]*$')
if [ -n "$und" ]; then echo "FAIL: libinfllm_runtime.so needs non-public symbols:"; echo "$und"; fail=1; fi
[ $fail -eq 0 ] && echo "exported symbols: ok"
exit $fail
