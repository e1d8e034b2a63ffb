"""The default-box layouts the teaching tabs offer: SSD300 and SSD512, where the one with the served model's
default boxes is the model's own config (its source layers' names, its mean colour). Every tab names the choice
the same way (CONFIG_LABEL); the page's network choice is "Model"."""

from __future__ import annotations

import torch

import ssd

CONFIGS = {"SSD300": ssd.SSD300_VOC, "SSD512": ssd.SSD512_VOC}
CONFIG_LABEL = "Default boxes of"


def same_default_boxes(a: ssd.SSDConfig, b: ssd.SSDConfig) -> bool:
    return a.feature_maps == b.feature_maps and torch.equal(ssd.default_boxes(a), ssd.default_boxes(b))


def config_choices(model_config: ssd.SSDConfig | None) -> dict[str, ssd.SSDConfig]:
    """The configs a teaching tab draws or matches against, by label: SSD300 and SSD512, where the one with the
    model's default boxes is the model's own config (its layer names, its mean colour, and the only one its
    network has scores for); a model with other default boxes comes first, under its own name. None: no model."""
    configs = dict(CONFIGS)
    if model_config is None:
        return configs
    own = [label for label, cfg in configs.items() if same_default_boxes(cfg, model_config)]
    if own:
        configs[own[0]] = model_config
        return configs
    return {model_config.name: model_config, **configs}


def own_label(configs: dict[str, ssd.SSDConfig], model_config: ssd.SSDConfig) -> str:
    """The label under which `config_choices` put the model's own config."""
    return next(label for label, cfg in configs.items() if cfg == model_config)
