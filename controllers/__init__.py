"""autospec.controllers: policies that choose spec_len each step.

Importing this package registers every built-in controller in `CONTROLLERS`; build one by name
with `build_controller('auto', max_spec_len=8, cost_model=cm)` or a spec like 'fixed:3'.
"""
from .base import (CONTROLLERS, BaseController, bucket_of, build_controller, names_option, parse_spec, register,
                   split_specs, takes_cost_model)
from .fixed import FixedController, SweepController
from .table import PRESETS, TableController
from .heuristic import HeuristicController
from .model import ModelController
from .bandit import BanditController
from .thompson import ThompsonController
from .ucb import UCBController
from .oracle import OracleController
from .auto import make_auto

__all__ = [
    "CONTROLLERS", "BaseController", "BanditController", "FixedController", "HeuristicController",
    "ModelController", "OracleController", "PRESETS", "SweepController", "TableController", "ThompsonController",
    "UCBController", "bucket_of", "build_controller", "make_auto", "parse_spec", "register", "split_specs",
    "names_option", "takes_cost_model",
]
