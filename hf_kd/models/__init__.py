"""Models shipped with hf_kd (importing a subpackage registers it with the transformers Auto classes).

Each subpackage registers itself with transformers only: its files import nothing else of hf_kd, so the
configuration and modeling files `save_pretrained` copies next to the weights load where hf_kd is absent.
"""
