"""driftwire's detection engine: pure Python + numpy + river, no Kafka.

>>> from driftwire.detectors import Monitor, load_config, ReferenceProfile, FeatureBatch
"""

from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    AlertLifecycle,
    AlertPolicy,
    Evidence,
    Severity,
    Status,
    Verdict,
)
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import (
    ConfigError,
    DriftConfig,
    EngineConfig,
    GradualConfig,
    ModelConfig,
    PredictionConfig,
    QualityConfig,
    ReferenceConfig,
    SegmentConfig,
    WindowConfig,
    load_config,
    parse_config,
)
from driftwire.detectors.monitor import Monitor, MonitorCounters
from driftwire.detectors.profile import LABEL_COLUMN, SCORE_COLUMN, ProfileLayout, WindowProfile
from driftwire.detectors.reference import ReferenceProfile

__all__ = [
    "LABEL_COLUMN",
    "SCORE_COLUMN",
    "Alert",
    "AlertKind",
    "AlertLifecycle",
    "AlertPolicy",
    "ConfigError",
    "DriftConfig",
    "EngineConfig",
    "Evidence",
    "FeatureBatch",
    "GradualConfig",
    "ModelConfig",
    "Monitor",
    "MonitorCounters",
    "OutcomeBatch",
    "PredictionConfig",
    "ProfileLayout",
    "QualityConfig",
    "ReferenceConfig",
    "ReferenceProfile",
    "SegmentConfig",
    "Severity",
    "Status",
    "Verdict",
    "WindowConfig",
    "WindowProfile",
    "load_config",
    "parse_config",
]
