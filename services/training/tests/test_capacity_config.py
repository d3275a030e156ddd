"""The node description and memory estimate (checked against SmolLM2's known sizes), and the settings' defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorag_core.config import ConfigError, load_settings
from lorag_core.errors import FailedPrecondition
from lorag_models import resolve_model
from lorag_training.config import TrainingSettings
from lorag_training.jobs import capacity

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def shape():
    found = capacity.model_shape(resolve_model().path)
    assert found is not None
    return found


def test_shape_counts_smollm2_parameters_and_lora_parameters(shape):
    assert shape.parameters == pytest.approx(134.5e6, rel=0.005)
    assert shape.lora_parameters(8, []) == pytest.approx(2.44e6, rel=0.005)  # r=8 on every linear layer
    assert shape.lora_parameters(8, ["q_proj", "v_proj"]) < shape.lora_parameters(8, [])


def test_estimate_grows_with_batch_and_refuses_what_does_not_fit(shape):
    small = capacity.estimate(shape, "lora", 8, [], batch_size=2, sequence=64, on_gpu=False)
    big = capacity.estimate(shape, "lora", 8, [], batch_size=64, sequence=2048, on_gpu=False)
    assert small.weights == shape.parameters * 4 and big.activations == small.activations * 32 * 32
    node = capacity.NodeDevices(gpus=(), host_memory=24 * capacity.GIB)
    capacity.check_fits(small, node, 0)
    with pytest.raises(FailedPrecondition) as caught:
        capacity.check_fits(big, node, 0)
    assert "24.0 GiB" in caught.value.message and caught.value.metadata["estimated_bytes"] == str(big.total)
    gpu = capacity.NodeDevices(gpus=(capacity.Gpu(0, "test", 80 * capacity.GIB),), host_memory=0)
    capacity.check_fits(capacity.estimate(shape, "qlora", 8, [], 8, 2048, on_gpu=True), gpu, 1)


def test_settings_defaults_and_device_override(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAG_HOME", str(tmp_path))
    monkeypatch.setenv("LORAG_TRAINING_DEVICES", "0,2")
    settings = load_settings(TrainingSettings)
    assert settings.port == 50056 and settings.max_cpu_jobs == 1
    assert settings.data_dir == (tmp_path / "training").resolve()
    assert settings.resolved_database_url == f"sqlite:///{settings.data_dir / 'training.db'}"
    assert settings.resolved_tracking_uri == f"sqlite:///{settings.data_dir / 'mlflow.db'}"
    assert settings.gpu_ordinals() == [0, 2]
    monkeypatch.setenv("LORAG_TRAINING_DEVICES", "")
    assert load_settings(TrainingSettings).gpu_ordinals() == []
    monkeypatch.setenv("LORAG_TRAINING_DEVICES", "gpu0")
    with pytest.raises(ConfigError) as caught:
        load_settings(TrainingSettings)
    assert "LORAG_TRAINING_DEVICES" in str(caught.value)
    assert isinstance(settings.data_dir, Path)
