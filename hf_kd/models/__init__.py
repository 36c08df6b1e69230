"""Models shipped with hf_kd (importing a subpackage registers it with the transformers Auto classes)."""
