"""Hub export: the student's files in the formats its library loads, its model card, and pushing it.

- :mod:`.files`: the files of an output folder and which of them are pushed.
- :mod:`.timm_format`: timm students saved in timm's own Hub format.
- :mod:`.card`: the model card (what the student was distilled from, how, and how well it does).
- :mod:`.card_info`: the card's facts, gathered from a trainer or from an output folder.
- :mod:`.push`: one commit of an output folder to a Hub repository.
- :mod:`.errors`: Hub failures as one clear `HubPushError`.

Nothing here imports the trainer: the trainer calls these to save, describe and push its student.
"""

from .card import DistillationCardInfo, ModelResult, build_model_card, is_hub_model_id, validate_model_card
from .card_info import card_from_output_dir, card_info_from_output_dir, card_info_from_trainer, create_model_card
from .errors import HubPushError, describe_hub_error, hub_errors
from .files import README_NAME, select_upload_files
from .push import push_output_dir
from .timm_format import is_timm_model, save_timm_model

__all__ = [
    "README_NAME",
    "DistillationCardInfo",
    "HubPushError",
    "ModelResult",
    "build_model_card",
    "card_from_output_dir",
    "card_info_from_output_dir",
    "card_info_from_trainer",
    "create_model_card",
    "describe_hub_error",
    "hub_errors",
    "is_hub_model_id",
    "is_timm_model",
    "push_output_dir",
    "save_timm_model",
    "select_upload_files",
    "validate_model_card",
]
