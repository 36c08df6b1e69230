"""Likelihood precision and recall of a student against a reference (Cha & Cho 2025), as an `evaluate` metric.

A thin wrapper: the math lives in `hf_kd.metrics.precision_recall`.
"""

import datasets
import evaluate

from hf_kd.citation import CITATION, PAPER_URL
from hf_kd.metrics import as_generative_model, precision_recall

_DESCRIPTION = """\
Precision = E_{x ~ student}[log p_reference(x)] and recall = E_{x ~ reference}[log p_student(x)], averaged per
token (or per UTF-8 byte when the two models have different tokenizers), with bootstrap confidence intervals over
sequences. Report the two together: a collapsed student has a high precision alone.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): samples drawn from the student (completions of `prompt` when one is given).
    references (`list[str]`): samples drawn from the reference (the ground truth), as many as `predictions`.
    student: the student: an `hf_kd.metrics.CausalLMAdapter`, a `(model, tokenizer)` pair or a model id / path.
    reference: the reference model, in the same forms.
    prompt (`str`, *optional*): score the samples as completions of this prompt (the prompt is not scored);
        without it the first token of each sample is not scored.
    unit (`str`, defaults to `"auto"`): `"token"`, `"byte"`, or `"auto"` (bytes when the tokenizers differ).
    n_boot (`int`, defaults to 1000): bootstrap replicates.
    confidence (`float`, defaults to 0.95): coverage of the intervals.
    seed (`int`, defaults to 0): bootstrap seed.
    batch_size (`int`, defaults to 32): scoring batch size when a model is wrapped here.
Returns:
    precision (`float`), recall (`float`), precision_ci and recall_ci (`[low, high]`), precision_num_samples,
    recall_num_samples (`int`), precision_num_units, recall_num_units (`float`), unit (`str`), confidence (`float`).
Examples:
    >>> import evaluate, hf_kd
    >>> metric = evaluate.load(hf_kd.metric_path("kd_precision_recall"))
    >>> metric.compute(predictions=student_texts, references=reference_texts, student=(student_model, tok),
    ...                reference=(reference_model, tok), prompt="The")  # doctest: +SKIP
"""


_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KdPrecisionRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES,
            reference_urls=[PAPER_URL],
        )

    def _compute(
        self,
        predictions,
        references,
        student=None,
        reference=None,
        prompt=None,
        unit="auto",
        n_boot=1000,
        confidence=0.95,
        seed=0,
        batch_size=32,
        **kwargs,  # arguments of other metrics under evaluate.combine
    ):
        if student is None or reference is None:
            raise ValueError("kd_precision_recall needs student= and reference= (adapters, (model, tokenizer), ids).")
        result = precision_recall(
            as_generative_model(student, batch_size=batch_size, progress=False),
            as_generative_model(reference, batch_size=batch_size, progress=False),
            student_samples=list(predictions),
            reference_samples=list(references),
            unit=unit,
            prompt=prompt,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )
        keep = ("precision", "recall", "unit", "confidence")
        out = {key: result[key] for key in keep}
        for side in ("precision", "recall"):
            out[f"{side}_ci"] = list(result[f"{side}_ci"])
            out[f"{side}_num_samples"] = result[f"{side}_num_samples"]
            out[f"{side}_num_units"] = result[f"{side}_num_units"]
        return out
