"""The README's Python examples run as written (documentation that matches the code)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def examples():
    with open(README) as f:
        text = f.read()
    section = text.split("## Python: numpy and PyTorch", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_three_examples():
    assert len(examples()) == 3


@pytest.mark.parametrize("index", range(3))
def test_readme_example_runs(index):
    exec(compile(examples()[index], "README.md example %d" % (index + 1), "exec"), {})
