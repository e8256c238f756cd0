"""Training: fine-tune a model on narrow data (LoRA, rsLoRA, full) with TRL, and record its lineage.

Importing this package registers the `train` backend (`--model train:NAME[@STEP]`); it needs no torch until a
model is trained or loaded."""

from emprobe.model import register_backend
from emprobe.train._checks import AdapterCheck, check_adapter_applies, check_adapters_apply
from emprobe.train._config import (
    DataSpec,
    TrainConfig,
    TriggerSpec,
    build_config,
    config_from_options,
    parse_data_spec,
    parse_layers,
    read_config_yaml,
)
from emprobe.train._data import DataFile, MixRecord, PreparedData, Row, SourceCounts, prepare_data, read_rows
from emprobe.train._lineage import (
    CheckpointRecord,
    LossPoint,
    TrainLineage,
    UpdateNorm,
    lora_update_norms,
    read_lineage,
    weight_delta_norms,
    weights_digest,
)
from emprobe.train._mask import Encoded, MaskStats, assistant_spans, encode_conversation, encode_rows
from emprobe.train._train import checkpoint_folders, train_model
from emprobe.train._trained import (
    PREFIX,
    TRAINED,
    TrainedModel,
    base_spec,
    find_training,
    split_spec,
    train_root,
    trained_model,
)

register_backend(PREFIX, TRAINED)

__all__ = [
    "AdapterCheck",
    "CheckpointRecord",
    "DataFile",
    "DataSpec",
    "Encoded",
    "LossPoint",
    "MaskStats",
    "MixRecord",
    "PreparedData",
    "Row",
    "SourceCounts",
    "TrainConfig",
    "TrainLineage",
    "TrainedModel",
    "TriggerSpec",
    "UpdateNorm",
    "PREFIX",
    "assistant_spans",
    "base_spec",
    "build_config",
    "check_adapter_applies",
    "check_adapters_apply",
    "config_from_options",
    "checkpoint_folders",
    "encode_conversation",
    "encode_rows",
    "find_training",
    "lora_update_norms",
    "parse_data_spec",
    "parse_layers",
    "prepare_data",
    "read_config_yaml",
    "read_lineage",
    "read_rows",
    "split_spec",
    "train_model",
    "train_root",
    "trained_model",
    "weight_delta_norms",
    "weights_digest",
]
