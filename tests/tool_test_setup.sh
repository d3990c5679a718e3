# SPDX-License-Identifier: MIT
#
# tool_test_setup.sh -- the start every script test of the tool shares, sourced (`. FILE`) with
# the caller's arguments still in "$@": the first names the tool (relative or absolute), the
# second is optional where the caller allows it (SETUP_MAX_ARGS=2). Sets BIN (absolute), HERE
# (the tests folder), TMP (a new folder, removed at exit; SETUP_NAME names it) and checks that
# the tool runs and python3 exists. Exits 2 on a bad call, 1 when something is missing.
if [ $# -lt 1 ] || [ $# -gt "${SETUP_MAX_ARGS:-1}" ]; then
    echo "usage: sh $0 path/to/infllm${SETUP_USAGE_MORE:-}" >&2
    exit 2
fi
BIN=$1
case $BIN in
/*) ;;
*) BIN=$(pwd)/$BIN ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$BIN" ]; then
    echo "$0: $BIN is not an executable" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "$0: python3 is needed to write the .npy inputs" >&2
    exit 1
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/infllm-${SETUP_NAME:-test}.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
