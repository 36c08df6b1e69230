"""The layering of hf_kd, read from the source with `ast` (nothing is imported):

math and kernels (sharpening, divergences, losses, lm_heads, target_entropy, topk, fast_decode) <- sampling <-
metrics, generation <- trainer, and the toy models' files stand alone (``save_pretrained`` copies them next to the
weights for remote code).

Rules hold for everything a module reaches through its imports, not only its own import lines. The package root
``hf_kd`` (the public facade that re-exports everything) is not followed.
"""

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hf_kd"
MATH_MODULES = ("sharpening", "divergences", "losses", "lm_heads", "target_entropy", "topk", "fast_decode")
MATH = {f"hf_kd.{m}" for m in MATH_MODULES}
TRAINER = {f"hf_kd.{m}" for m in ("distillation_trainer", "distillation_config", "trainer_checks", "completions")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(name: str, source: str, is_package: bool, modules: set[str]) -> set[str]:
    """hf_kd modules that `source` (module `name`) imports, resolved to modules (``from . import x`` is x if x is a
    module, else the package)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            found |= subs or {target}
    return {m for m in found if m == "hf_kd" or m.startswith("hf_kd.")}


@functools.cache
def _source_graph() -> tuple[tuple[str, frozenset], ...]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    return tuple(
        (n, frozenset(imports_of(n, p.read_text(), p.name == "__init__.py", set(files)))) for n, p in files.items()
    )


def import_graph(extra: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> the hf_kd modules it imports, for every file under hf_kd/ (plus `extra` name -> source)."""
    graph = {n: set(edges) for n, edges in _source_graph()}
    for n, source in (extra or {}).items():
        graph[n] = imports_of(n, source, False, set(graph) | set(extra))
    return graph


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), set()) - seen - {"hf_kd"}:
            seen.add(m)
            todo.append(m)
    return seen


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for name in sorted(graph):
        reached = reach(graph, name)
        if name in MATH:
            out += [f"{name} (math) reaches {m}" for m in sorted(reached - MATH)]
        elif in_package(name, "hf_kd.sampling"):
            out += [
                f"{name} (sampling) reaches {m}" for m in sorted(reached - MATH) if not in_package(m, "hf_kd.sampling")
            ]
        if in_package(name, "hf_kd.metrics") or in_package(name, "hf_kd.generation") or name == "hf_kd.generation_cli":
            out += [f"{name} reaches the trainer's {m}" for m in sorted(reached & TRAINER)]
        toy = in_package(name, "hf_kd.models.gmm") or (
            in_package(name, "hf_kd.models.hmm")
            and name.rpartition(".")[2].startswith(("modeling_", "configuration_"))
        )
        if toy:
            own = name.rpartition(".")[0] if name.count(".") > 2 else name
            out += [f"{name} (toy model) reaches {m}" for m in sorted(reached) if not in_package(m, own)]
    return out


def test_hf_kd_is_layered():
    graph = import_graph()
    assert {"hf_kd.sampling", "hf_kd.metrics.lm_adapter", "hf_kd.models.gmm.modeling_gmm"} <= set(graph)
    assert violations(graph) == []
    # metrics and generation sample through the one sampling layer
    assert "hf_kd.sampling" in graph["hf_kd.metrics.lm_adapter"]
    assert any(in_package(m, "hf_kd.sampling") for n in graph if in_package(n, "hf_kd.generation") for m in graph[n])


@pytest.mark.parametrize(
    "name, source, expected",
    [
        ("hf_kd.sampling.extra", "from ..offline import load_causal_lm", "(sampling) reaches hf_kd.offline"),
        ("hf_kd.sampling.extra", "from ..losses import token_divergence", None),
        ("hf_kd.sampling.extra", "from ..metrics.lm_adapter import CausalLMAdapter", "(sampling) reaches"),
        ("hf_kd.metrics.extra", "from ..distillation_trainer import DistillationTrainer", "the trainer's"),
        ("hf_kd.metrics.extra", "from hf_kd import trainer_checks", "the trainer's hf_kd.trainer_checks"),
        ("hf_kd.metrics.extra", "from ..validation import check_model_path", None),
        ("hf_kd.generation.extra", "from .. import completions", "the trainer's hf_kd.completions"),
        ("hf_kd.models.gmm.extra", "from hf_kd.sharpening import sharpen_logits", "(toy model) reaches"),
        ("hf_kd.models.hmm.modeling_extra", "from ..gmm import GMMModel", "(toy model) reaches"),
        ("hf_kd.models.hmm.modeling_extra", "from .configuration_hmm import HMMConfig", None),
    ],
)
def test_a_forbidden_import_is_caught(name, source, expected):
    """The checker itself: a synthetic offending module fails it, an allowed one does not."""
    found = [v for v in violations(import_graph({name: source})) if v.startswith(name + " ")]
    if expected is None:
        assert found == []
    else:
        assert found and any(expected in v for v in found), found


def test_math_module_importing_sampling_is_caught():
    graph = import_graph()
    graph["hf_kd.losses"] = graph["hf_kd.losses"] | {"hf_kd.sampling.warp"}
    assert any(v.startswith("hf_kd.losses (math) reaches hf_kd.sampling") for v in violations(graph))
