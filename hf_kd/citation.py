"""The paper hf_kd implements, written once: its link, its BibTeX entry and a one-line reference.

Model cards, dataset cards, the `evaluate` metric and the README cite it from here (a test keeps the README's
BibTeX block equal to [`CITATION`]).
"""

__all__ = ["CITATION", "PAPER_REFERENCE", "PAPER_TITLE", "PAPER_URL"]

PAPER_TITLE = "Why Knowledge Distillation Works in Generative Models: A Minimal Working Explanation"
PAPER_ARXIV = "2505.13111"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ARXIV}"
CITATION = f"""@inproceedings{{cha2025why,
  title         = {{{PAPER_TITLE}}},
  author        = {{Cha, Sungmin and Cho, Kyunghyun}},
  booktitle     = {{Advances in Neural Information Processing Systems (NeurIPS)}},
  year          = {{2025}},
  eprint        = {{{PAPER_ARXIV}}},
  archivePrefix = {{arXiv}},
  url           = {{{PAPER_URL}}}
}}"""
PAPER_REFERENCE = f'Sungmin Cha and Kyunghyun Cho, "{PAPER_TITLE}", NeurIPS 2025 (arXiv:{PAPER_ARXIV})'
