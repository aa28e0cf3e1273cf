"""Modules imported on first use, so that importing a module that names them stays cheap.

Contract: `lazy_module(name)` returns the module `name`: the module itself when it is imported
already, else a module object that runs the import on its first attribute access
(`importlib.util.LazyLoader`) and is that module from then on (in `sys.modules` and on its parent
package, as a plain import leaves it). A module that does not exist raises ModuleNotFoundError here,
at the call, not at first use. Callers that use it name the same modules in an
`if TYPE_CHECKING:` import, so that type checkers and the import graph (`.importlinter`) see the arrow.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)           # imports the parent packages, not `name`
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)                 # defers the real exec to the first attribute access
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
