"""Every config.pbtxt in model_repo/ against the code its model.py runs: input names the code reads
must be declared (required ones never optional-only), outputs it builds must be declared and every
declared tensor must be used; the decoder's BLS calls must match the shard's tensors. The models
that ``ocrstream.serving.repo`` generates must equal the checked-in files (no drift)."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

from ocrstream.serving.repo import write_repository

REPO = Path(__file__).resolve().parents[2]
MODEL_REPO = REPO / "model_repo"
CONFIGS = sorted(MODEL_REPO.glob("*/config.pbtxt"))


def parse_pbtxt(text: str) -> dict:
    """name, inputs/outputs as {name: (data_type, dims, optional)} and parameter keys."""
    text = re.sub(r"#[^\n]*", "", text)
    out = {"name": re.search(r'^name:\s*"([^"]+)"', text, re.M).group(1), "input": {}, "output": {}}
    for kind in ("input", "output"):
        m = re.search(rf"^{kind}\s*\[(.*?)^\]", text, re.M | re.S)
        if not m:
            continue
        for block in re.findall(r"\{(.*?)\}", m.group(1), re.S):
            name = re.search(r'name:\s*"([^"]+)"', block).group(1)
            dtype = re.search(r"data_type:\s*(\w+)", block).group(1)
            dims = [
                int(d) for d in re.search(r"dims:\s*\[([^\]]*)\]", block).group(1).split(",") if d.strip()
            ]
            out[kind][name] = (dtype, dims, bool(re.search(r"optional:\s*true", block)))
    out["parameters"] = set(re.findall(r'key:\s*"([^"]+)"', text))
    return out


def _first_str(call: ast.Call, pos: int) -> str | None:
    if (
        len(call.args) > pos
        and isinstance(call.args[pos], ast.Constant)
        and isinstance(call.args[pos].value, str)
    ):
        return call.args[pos].value
    return None


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def tensor_usage(classes: list[ast.ClassDef]) -> tuple[set[str], set[str], set[str]]:
    """(required inputs read, optional inputs read, outputs built) inside the given classes."""
    required, optional, outputs = set(), set(), set()
    for cls in classes:
        for node in ast.walk(cls):
            if not isinstance(node, ast.Call):
                continue
            name = _callee(node)
            if name == "get_input_tensor_by_name":
                if _first_str(node, 1):
                    required.add(_first_str(node, 1))
            elif name == "_opt" and _first_str(node, 2):
                optional.add(_first_str(node, 2))
            elif name == "Tensor" and _first_str(node, 0):
                outputs.add(_first_str(node, 0))
    return required, optional, outputs


def _classes_behind(model_py: Path) -> list[ast.ClassDef]:
    """TritonPythonModel itself plus any ocrstream class its model.py imports and wraps."""
    tree = ast.parse(model_py.read_text())
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ocrstream."):
            spec = importlib.util.find_spec(node.module)
            mod_tree = ast.parse(Path(spec.origin).read_text())
            wanted = {a.name for a in node.names}
            classes += [n for n in mod_tree.body if isinstance(n, ast.ClassDef) and n.name in wanted]
    return classes


def test_model_repo_has_configs():
    names = {p.parent.name for p in CONFIGS}
    assert {"ocr_decoder", "expert_shard_0", "expert_shard_1"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_config_tensor_names_match_model_code(config):
    cfg = parse_pbtxt(config.read_text())
    assert cfg["name"] == config.parent.name, "name: must equal the folder"
    model_py = config.parent / "1" / "model.py"
    assert model_py.exists(), f"{model_py} missing"
    required, optional, outputs = tensor_usage(_classes_behind(model_py))
    declared_in, declared_out = cfg["input"], cfg["output"]
    assert required | optional, f"{model_py} reads no input tensors"
    assert required <= set(declared_in), f"read but not declared: {required - set(declared_in)}"
    assert optional <= set(declared_in), f"read but not declared: {optional - set(declared_in)}"
    assert set(declared_in) <= required | optional, (
        f"declared but never read: {set(declared_in) - required - optional}"
    )
    for name in required:
        assert not declared_in[name][2], f"{name} is read as required but declared optional"
    for name in optional:
        assert declared_in[name][2], f"{name} is read with a default but declared required"
    assert outputs & set(declared_out) == set(declared_out), (
        f"declared, never built: {set(declared_out) - outputs}"
    )


def test_decoder_bls_calls_match_the_shard_model():
    from ocrstream.serving import triton_decoder

    shard = parse_pbtxt((MODEL_REPO / "expert_shard_0" / "config.pbtxt").read_text())
    tree = ast.parse(Path(triton_decoder.__file__).read_text())
    (bls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BlsTransport"]
    sent = {_first_str(n, 0) for n in ast.walk(bls) if isinstance(n, ast.Call) and _callee(n) == "Tensor"}
    requested = {
        e.value
        for n in ast.walk(bls)
        if isinstance(n, ast.keyword) and n.arg == "requested_output_names"
        for e in n.value.elts
    }
    read = {
        _first_str(n, 1)
        for n in ast.walk(bls)
        if isinstance(n, ast.Call) and _callee(n) == "get_output_tensor_by_name"
    }
    assert sent == set(shard["input"])
    assert requested == read == set(shard["output"])


def test_generated_repository_equals_checked_in(tmp_path):
    names = write_repository(tmp_path, num_shards=2)
    for name in names:
        for rel in ("config.pbtxt", "1/model.py"):
            assert (tmp_path / name / rel).read_text() == (MODEL_REPO / name / rel).read_text(), (
                f"model_repo/{name}/{rel} drifted: python -m ocrstream.serving.repo model_repo"
            )
    decoder = parse_pbtxt((tmp_path / "ocr_decoder" / "config.pbtxt").read_text())
    assert {"checkpoint", "num_shards", "placement_store", "shard_prefix"} <= decoder["parameters"]
    assert "decoupled: true" in (tmp_path / "ocr_decoder" / "config.pbtxt").read_text()
