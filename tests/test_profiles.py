"""Malformed, incomplete or unknown profiles fail with a message that names the problem."""
import pytest
import yaml

from autospec import ProfileError, load_profile
from tests.test_cost_model import synthetic_profile


def write(tmp_path, data, name="p.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ProfileError, match="unknown profile 'nope'.*h200-llama2-7b-llama-68m"):
        load_profile("nope")


def test_missing_file():
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile("/no/such/profile.yaml")


def test_not_yaml(tmp_path):
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(write(tmp_path, "a: [1, 2\nb: }"))


def test_not_a_mapping(tmp_path):
    with pytest.raises(ProfileError, match="mapping at the top level"):
        load_profile(write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize("key", ["name", "context_len", "target", "draft", "autospec_profile"])
def test_missing_key_is_named(tmp_path, key):
    data = synthetic_profile()
    del data[key]
    with pytest.raises(ProfileError, match=f"missing key.*{key}"):
        load_profile(write(tmp_path, data))


def test_non_positive_time_is_named(tmp_path):
    data = synthetic_profile()
    data["target"]["step_ms"][4][2] = -1.0
    with pytest.raises(ProfileError, match=r"target.step_ms\[4\]\[2\].*positive"):
        load_profile(write(tmp_path, data))


def test_incomplete_profile_names_the_missing_cells(tmp_path):
    data = synthetic_profile()
    del data["target"]["step_ms"][8][1]
    del data["draft"]["step_ms"][16]
    with pytest.raises(ProfileError, match=r"incomplete.*target \(8,1\).*draft \(16,1\)"):
        load_profile(write(tmp_path, data))


def test_wrong_version(tmp_path):
    data = synthetic_profile()
    data["autospec_profile"] = 7
    with pytest.raises(ProfileError, match="unsupported autospec_profile version 7"):
        load_profile(write(tmp_path, data))


def test_acceptance_outside_unit_interval(tmp_path):
    data = synthetic_profile()
    data["acceptance"] = {"per_pos": [0.5, 1.5]}
    with pytest.raises(ProfileError, match=r"acceptance.per_pos.*1.5"):
        load_profile(write(tmp_path, data))
