"""PEP 517 build backend of the infllm Python package, standard library only.

build_wheel builds libinfllm.so with the repository's Makefile (`make CUDA=1` when nvcc is on the
PATH, or when INFLLM_CUDA=1; INFLLM_CUDA=0 forces a cpu-only build) and writes a wheel holding
python/infllm/*.py and that library. It needs the source tree around python/ (a checkout), so
there is no sdist: build_sdist says so.
"""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sysconfig
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # python/
ROOT = os.path.dirname(HERE)                                          # the repository


def _version():
    with open(os.path.join(ROOT, "include", "infllm.h")) as f:
        return re.search(r'#define IFL_VERSION_STRING "([^"]+)"', f.read()).group(1)


def _build_library():
    if not os.path.exists(os.path.join(ROOT, "Makefile")):
        raise RuntimeError("infllm: build the wheel from a checkout of infllm (pip install ./python): "
                           "the library's sources are not around %s" % HERE)
    want = os.environ.get("INFLLM_CUDA")
    cuda = want == "1" or (want != "0" and shutil.which("nvcc") is not None)
    lib = "build/cuda/libinfllm.so" if cuda else "build/libinfllm.so"
    cmd = ["make", "-C", ROOT, "-j%d" % min(8, os.cpu_count() or 1)] + (["CUDA=1"] if cuda else []) + [lib]
    subprocess.run(cmd, check=True)
    return os.path.join(ROOT, lib)


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (name, digest, len(data))


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    version = _version()
    tag = "py3-none-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")
    info = "infllm-%s.dist-info" % version
    files = {}
    pkg = os.path.join(HERE, "infllm")
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), "rb") as f:
                files["infllm/" + name] = f.read()
    with open(_build_library(), "rb") as f:
        files["infllm/libinfllm.so"] = f.read()
    files[info + "/METADATA"] = ("Metadata-Version: 2.1\nName: infllm\nVersion: %s\nSummary: InfLLM-V2 "
                                 "sparse attention (libinfllm) for numpy and PyTorch\nRequires-Python: >=3.8\n"
                                 % version).encode()
    files[info + "/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: infllm_build\nRoot-Is-Purelib: false\nTag: %s\n"
                              % tag).encode()
    files[info + "/top_level.txt"] = b"infllm\n"
    record = [_record_line(n, d) for n, d in files.items()] + [info + "/RECORD,,"]
    files[info + "/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = "infllm-%s-%s.whl" % (version, tag)
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return wheel


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError("infllm has no sdist: the wheel is built from a checkout (pip install ./python)")


def get_requires_for_build_wheel(config_settings=None):
    return []
