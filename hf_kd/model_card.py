"""Model cards for distilled students: a results schema and a Jinja template rendered with huggingface_hub.

The recipes write one results JSON per trained student ([`DistillationResults`], `hf_kd.cards.schema`); `hf-kd card`
and [`render_model_card`] (`hf_kd.cards.render`) turn it into a [`huggingface_hub.ModelCard`] whose metadata carries
`base_model`, `datasets`, tags, `license` and `language` (given, or known for the base model and teacher, e.g.
SmolLM2: apache-2.0, en), the training data, intended use and limitations, and precision and recall with their
confidence intervals: in a `model-index` (metric types `kd_precision`, `kd_recall`) when the evaluation ran on a Hub
dataset, else under `distillation.evaluation` (model-index names a Hub dataset; samples of a reference model are not
one). [`write_trainer_model_card`] (`hf_kd.cards.trainer`) is what `DistillationTrainer.create_model_card` calls (no
evaluation needed).

Nothing local leaks into a card: absolute paths become their basename and token-looking strings are dropped
(`hf_kd.sanitize.sanitize_text`); `hf_kd.sanitize.find_leaks` checks a finished card.

This module gathers the public names of `hf_kd.cards` (one module per job) in one place.
"""

from .cards.cli import add_card_arguments, card_from_args
from .cards.render import (
    DEFAULT_TAGS,
    KNOWN_MODELS,
    TEMPLATE_DIR,
    render_model_card,
    render_model_card_from_json,
    template_path,
)
from .cards.schema import (
    LOSS_DESCRIPTIONS,
    METRICS,
    SCHEMA_VERSION,
    SOURCE_DESCRIPTIONS,
    DistillationResults,
    load_results_file,
)
from .cards.trainer import framework_versions, name_or_path, results_from_trainer, write_trainer_model_card
from .citation import CITATION, PAPER_URL

__all__ = [
    "CITATION",
    "DEFAULT_TAGS",
    "KNOWN_MODELS",
    "LOSS_DESCRIPTIONS",
    "METRICS",
    "PAPER_URL",
    "SCHEMA_VERSION",
    "SOURCE_DESCRIPTIONS",
    "TEMPLATE_DIR",
    "DistillationResults",
    "add_card_arguments",
    "card_from_args",
    "framework_versions",
    "load_results_file",
    "render_model_card",
    "render_model_card_from_json",
    "results_from_trainer",
    "template_path",
    "write_trainer_model_card",
]
_name_or_path = name_or_path  # the name DistillationTrainer imports
