"""Distil a teacher into a student with hf_kd, then measure precision and recall against a reference model.

    accelerate launch recipes/smollm2_kd.py --config recipes/configs/smollm2_1.7b_to_135m_paper.yaml
    python recipes/smollm2_kd.py --config recipes/configs/quickstart.yaml        # offline, CPU, < 10 minutes

A thin script over the packaged sweep, `hf_kd.distill` (the same as ``hf-kd distill --config ...`` and
``accelerate launch -m hf_kd.distill --config ...``; see its docstring). Errors are raised with their traceback here;
`hf-kd distill` prints them as one line.
"""

from hf_kd import distill
from hf_kd.distill import *  # noqa: F403  (RecipeArguments, validate, ... for scripts that load this file)


def main(argv: list[str] | None = None) -> list[dict]:
    return distill.main(argv, prog="python recipes/smollm2_kd.py")


if __name__ == "__main__":
    main()
