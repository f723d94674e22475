"""``model_zoo``'s public names: each is the object its module defines, and ``import model_zoo``
does not import torch or OpenCV until a name that needs them is used."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import model_zoo

IMPORT_CHECK = """
import sys
import model_zoo
assert "torch" not in sys.modules and "cv2" not in sys.modules, "import model_zoo imported torch or cv2"
model_zoo.load_image
assert "cv2" in sys.modules and "torch" not in sys.modules
model_zoo.Detector
assert "torch" in sys.modules
"""


def test_every_public_name_is_its_modules_object():
    on_first_use = model_zoo._ON_FIRST_USE
    assert set(on_first_use) <= set(model_zoo.__all__) and len(set(model_zoo.__all__)) == len(model_zoo.__all__)
    for name in model_zoo.__all__:
        value = getattr(model_zoo, name)
        module = on_first_use.get(name) or getattr(value, "__module__", None)
        if module is not None and module.startswith("model_zoo."):
            assert getattr(importlib.import_module(module), name) is value, name
    assert set(model_zoo.__all__) <= set(dir(model_zoo))


def test_import_model_zoo_leaves_torch_and_opencv_until_a_name_needs_them():
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(model_zoo, "no_such_name")
