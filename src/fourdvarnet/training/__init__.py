"""Training of one table row (paper Section 3.4): the loop (``loop``), its optimiser and
schedule (``optim``), the step runners (``steps``) and resuming (``resume``)."""

from .loop import (
    TrainingCollapsed,
    TrainingDiverged,
    batches,
    check_finite,
    pick_device,
    pretrain_genn_prior,
    pretrain_prior,
    seed_everything,
    train,
    training_loss,
    validate,
)
from .optim import stage_at
from .resume import load_resume, save_resume

__all__ = [
    "TrainingCollapsed",
    "TrainingDiverged",
    "batches",
    "check_finite",
    "load_resume",
    "pick_device",
    "pretrain_genn_prior",
    "pretrain_prior",
    "save_resume",
    "seed_everything",
    "stage_at",
    "train",
    "training_loss",
    "validate",
]
