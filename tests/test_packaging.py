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
