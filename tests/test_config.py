import textwrap

import pytest

from vantage_core.config import ModelConfig, load_config, parse_overrides, resolve_config_path
from vantage_core.errors import ConfigError

GUIDE_SMALL = """
# configs/small_model.yaml
model:
  hidden_size: 2048
  num_layers: 24
  num_experts: 16
  num_experts_per_token: 2

training:
  batch_size: 32
  learning_rate: 3e-4
  num_train_steps: 100000
"""

GUIDE_OPT = """
training:
  # Optimizer
  optimizer: adamw
  learning_rate: 2e-4
  weight_decay: 0.1
  adam_beta1: 0.9
  adam_beta2: 0.95
  adam_epsilon: 1e-8
  max_grad_norm: 1.0

  # Schedule
  lr_scheduler_type: cosine
  warmup_steps: 2000
  min_lr_ratio: 0.1

  # Precision
  mixed_precision: bf16
model:
  num_experts: 32
  num_experts_per_token: 2
  expert_capacity: 1.25
  router_aux_loss_coef: 0.01
  router_z_loss_coef: 0.001
data:
  spider_weight: 0.4
  bird_sql_weight: 0.3
  wiki_sql_weight: 0.2
  gretel_synthetic_weight: 0.1
  augmentation_prob: 0.4
  schema_perturbation_prob: 0.15
"""


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_guide_yaml_loads_as_printed(tmp_path):
    cfg = load_config(write(tmp_path, GUIDE_SMALL))
    assert cfg.training.learning_rate == pytest.approx(3e-4)   # PyYAML reads "3e-4" as a string
    assert cfg.model.num_experts == 16 and cfg.model.hidden_size == 2048
    cfg = load_config(write(tmp_path, GUIDE_OPT))
    assert cfg.training.adam_epsilon == pytest.approx(1e-8)
    assert cfg.training.mixed_precision == "bf16"
    assert cfg.data.gretel_synthetic_weight == pytest.approx(0.1)


@pytest.mark.parametrize("text,needle", [
    ("model:\n  hiden_size: 64\n", "model.hiden_size"),
    ("training:\n  learning_rate: fast\n", "training.learning_rate"),
    ("training:\n  batch_size: 3.5\n", "training.batch_size"),
    ("trainig:\n  batch_size: 3\n", "'trainig'"),
    ("model:\n  num_experts: 2\n  num_experts_per_token: 4\n", "num_experts_per_token"),
    ("model:\n  hidden_size: -64\n", "model.hidden_size"),
    ("training:\n  gradient_checkpointing: 'yes'\n", "training.gradient_checkpointing"),
    ("training:\n  lr_scheduler_type: cosin\n", "training.lr_scheduler_type"),
    ("model: [1, 2]\n", "'model' must be a mapping"),
    ("model:\n  hidden_size: 64\n   bad: indent\n", "malformed YAML"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(p) in msg and needle in msg


def test_precedence_defaults_yaml_overrides(tmp_path):
    p = write(tmp_path, "training:\n  learning_rate: 1e-3\n  batch_size: 4\n")
    cfg = load_config(p, ["training.learning_rate=5e-4"])
    assert cfg.training.learning_rate == pytest.approx(5e-4)  # override beats YAML
    assert cfg.training.batch_size == 4                         # YAML beats default
    assert cfg.model.hidden_size == ModelConfig().hidden_size   # default kept


def test_named_configs_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("tiny", "small", "medium", "large"):
        path = resolve_config_path(name)
        assert path.name == f"{name}_model.yaml" and path.is_file()
        load_config(name)


def test_override_parsing_errors():
    with pytest.raises(ConfigError):
        parse_overrides(["learning_rate=1"])
    assert parse_overrides(["model.num_experts=8"]) == {"model": {"num_experts": 8}}


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("tiny")
    p = write(tmp_path, cfg.to_yaml(), "resolved.yaml")
    assert load_config(p) == cfg
