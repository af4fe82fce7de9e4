"""The trainer service's settings (env `FRAUD_TRAINER_*` and the common ones)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from fraudstream.settings import CommonSettings


class TrainerSettings(CommonSettings):
    """Where the trainer reads history and writes models, and the windows it trains on.

    The windows end at the archive's newest transaction (or now, if earlier), less
    `trainer_mature_days`: rows that recent are left out everywhere, since most of their
    fraud is not labelled yet. Before that, the evaluation window (`trainer_eval_days`)
    compares champion and challenger; before it, the challenger trains on
    `trainer_train_days`, after `trainer_warmup_days` that only warm entity state up.
    """

    registry_dir: Path = Field(default=Path("models"), description="Model registry root.")
    model_name: str = Field(default="fraud", description="Registry model to retrain.")
    archive_url: str = Field(default="archive", description="The archive (a local directory).")
    features_file: Path = Field(
        default=Path("config/features.yaml"), description="Feature set of challengers."
    )
    trainer_config: Path | None = Field(
        default=Path("config/train.yaml"), description="Training configuration (TrainConfig)."
    )
    rules_file: Path = Field(
        default=Path("config/rules.yaml"), description="Rule pack both sides are replayed with."
    )
    promotion_config: Path = Field(
        default=Path("config/promotion.yaml"), description="The promotion policy."
    )
    drift_config: Path = Field(
        default=Path("config/drift.yaml"),
        description="The monitor's settings: its precision alert rolls back on probation.",
    )
    trainer_group_id: str = Field(default="fraud-trainer", description="Consumer group.")
    trainer_train_days: float = Field(default=30.0, gt=0, le=366)
    trainer_eval_days: float = Field(default=7.0, gt=0, le=366)
    trainer_warmup_days: float = Field(default=7.0, ge=0, le=366)
    trainer_mature_days: float = Field(
        default=30.0, ge=0, le=366, description="Label maturity: rows this recent are left out."
    )
    trainer_wait_days: float = Field(
        default=0.0, ge=0, le=366,
        description="A drift trigger's retrain starts once the evaluation window ends this "
        "many days (event time) after the newest archived transaction when the trigger came "
        "(so the comparison, and with more days than trainer_eval_days the newest training "
        "rows, come after the change); 0: at once. Triggers from `fraudctl retrain` never "
        "wait.",
    )  # fmt: skip
    trainer_min_frauds: int = Field(
        default=50, ge=1, description="Labelled frauds the training window needs, else skip."
    )
    trainer_check_s: float = Field(
        default=60.0, gt=0, le=3600, description="How often the promotion policy is applied."
    )
    trainer_metrics_port: int = Field(default=9403, ge=0, le=65535, description="0: a free port.")
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")
