#!/bin/sh
# ensure_deps.sh PYTHON -- makes sure PYTHON can import numpy, pytest and torch (the Python test
# suite's only dependencies). Debian's interpreter (/usr/bin/python3) gets python3-numpy,
# python3-pytest and python3-torch from apt-get when they are missing (as root); any other
# interpreter must bring its own.
py=${1:-/usr/bin/python3}
have() { "$py" -c "import numpy, pytest, torch" >/dev/null 2>&1; }
have && exit 0
pkgs="python3-numpy python3-pytest python3-torch"
if [ "$py" = /usr/bin/python3 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing $pkgs (Debian packages)"
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs ||
     { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs; }) >/dev/null
    have && exit 0
fi
echo "ensure_deps: $py cannot import numpy, pytest and torch (Debian: apt-get install $pkgs)" >&2
exit 1
