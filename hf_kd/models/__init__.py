"""Models shipped with hf_kd (importing a subpackage registers it with the transformers Auto classes)."""


def register_auto_model(config_class, model_class) -> None:
    """Register a toy model with `AutoConfig` / `AutoModel`, and for remote code; safe to call any number of times.

    `register_for_auto_class` makes `save_pretrained` copy the configuration and modeling files next to the weights,
    so the checkpoint loads with ``AutoModel.from_pretrained(path, trust_remote_code=True)`` where hf_kd is absent.
    """
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
