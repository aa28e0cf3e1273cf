"""The package installs with the user's layout and behaves as a library."""
import subprocess
import sys


def test_controllers_and_backends_import_as_subpackages_from_outside_the_repo(tmp_path):
    code = ("import autospec.controllers as c, autospec.backends as b, autospec;"
            "assert 'auto' in c.CONTROLLERS.names();"
            "assert b.SimulatedBackend.__module__ == 'autospec.backends.simulated';"
            "import importlib.util as u; assert u.find_spec('controllers') is None and u.find_spec('backends') is None;"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_importing_autospec_pulls_in_no_heavy_library(tmp_path):
    code = ("import sys, autospec, autospec.controllers, autospec.backends;"
            "print(sorted(m for m in ('torch', 'transformers', 'streamlit', 'sklearn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_library_logging_is_disabled_until_the_application_enables_it(tmp_path):
    code = ("import sys; from loguru import logger; import autospec;"
            "from autospec.cost_model import CostModel; m = CostModel.from_profile('h200-llama2-7b-llama-68m');"
            "m.step_time_s(1000, 3)")  # extrapolates: would warn if logging were on
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "WARNING" not in out.stderr


def test_console_script_is_installed():
    out = subprocess.run(["autospec", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "compare" in out.stdout


def run_fresh(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


LOADED = ("[m for m in ('torch', 'transformers', 'sklearn') "
          "if m in sys.modules and not isinstance(sys.modules[m], importlib.util._LazyModule)]")


def test_importing_autospec_engine_defers_torch_and_transformers(tmp_path):
    """`from autospec import AutoSpec` runs no torch / transformers import (issue 21: fast import);
    they load when an AutoSpec is built."""
    assert run_fresh(f"import importlib.util, sys; from autospec import AutoSpec; print({LOADED})", tmp_path) == "[]"


def test_a_model_built_after_importing_autospec_decodes_exactly(tmp_path):
    """The deferred torch is the real torch: a program that imports AutoSpec first, then torch and
    transformers, gets the target's own greedy tokens."""
    code = ("from autospec import AutoSpec\n"
            "import torch\n"
            "from transformers import LlamaConfig, LlamaForCausalLM\n"
            "config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,"
            " num_key_value_heads=1, vocab_size=61, max_position_embeddings=128, eos_token_id=None)\n"
            "torch.manual_seed(0); model = LlamaForCausalLM(config).eval()\n"
            "ids = torch.tensor([[5, 7, 5, 7, 5, 9]])\n"
            "want = model.generate(ids, max_new_tokens=12, do_sample=False)\n"
            "got = AutoSpec(model, 'ngram', 'fixed:2', cost_model=None).generate(ids, max_new_tokens=12)\n"
            "print(torch.equal(want, got), type(torch).__name__, want.shape[1])")
    assert run_fresh(code, tmp_path) == "True module 18"


def test_lazy_module_loads_on_first_use_and_refuses_a_missing_module(tmp_path):
    code = ("import sys; from autospec.lazy import lazy_module\n"
            "m = lazy_module('colorsys'); before = type(m).__name__\n"
            "value = m.rgb_to_hsv(1.0, 0.0, 0.0)\n"
            "import colorsys; same = colorsys is m and lazy_module('colorsys') is m\n"
            "try:\n    lazy_module('no_such_module_here'); missing = 'imported'\n"
            "except ModuleNotFoundError as exc:\n    missing = exc.name\n"
            "print(before, type(m).__name__, value, same, missing)")
    assert run_fresh(code, tmp_path) == "_LazyModule module (0.0, 1.0, 1.0) True no_such_module_here"
