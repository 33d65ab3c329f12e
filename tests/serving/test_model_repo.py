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
            elif name == "to_pb" and _first_str(node, 1):  # DLPack: to_pb(pb, NAME, tensor)
                outputs.add(_first_str(node, 1))
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
    sent |= {_first_str(n, 1) for n in ast.walk(bls) if isinstance(n, ast.Call) and _callee(n) == "to_pb"}
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


def _instances(text: str) -> tuple[str, list[int] | None]:
    block = re.search(r"instance_group\s*\[(.*?)\]\s*\n(?!\s*\})", text, re.S)
    kind = re.search(r"kind:\s*(KIND_\w+)", text).group(1)
    gpus = re.search(r"gpus:\s*\[([^\]]*)\]", text)
    assert block is not None
    return kind, None if gpus is None else [int(g) for g in gpus.group(1).split(",")]


def test_configs_render_kind_cpu_by_default(tmp_path):
    names = write_repository(tmp_path, num_shards=2)
    for name in names:
        text = (tmp_path / name / "config.pbtxt").read_text()
        assert _instances(text) == ("KIND_CPU", None), name
        assert "FORCE_CPU_ONLY_INPUT_TENSORS" not in text
    shard = parse_pbtxt((tmp_path / names[1] / "config.pbtxt").read_text())
    assert shard["input"]["HIDDEN"][0] == shard["output"]["EXPERT_OUT"][0] == "TYPE_FP32"


def test_configs_render_kind_gpu_when_asked(tmp_path):
    names = write_repository(tmp_path / "a", num_shards=3, device="cuda", gpus=[0, 1])
    texts = {n: (tmp_path / "a" / n / "config.pbtxt").read_text() for n in names}
    assert _instances(texts["ocr_decoder"]) == ("KIND_GPU", [0])  # one decoder instance, on the first GPU
    assert [_instances(texts[n]) for n in names[1:]] == [
        ("KIND_GPU", [0]),
        ("KIND_GPU", [1]),
        ("KIND_GPU", [0]),
    ]
    for n in names:
        cfg = parse_pbtxt(texts[n])
        assert "FORCE_CPU_ONLY_INPUT_TENSORS" in cfg["parameters"], n  # GPU tensors reach the model
    shard = parse_pbtxt(texts[names[1]])
    assert shard["input"]["HIDDEN"][0] == shard["output"]["EXPERT_OUT"][0] == "TYPE_BF16"  # bf16 on GPU
    assert re.search(r'key: "shard_dtype"\n  value: \{ string_value: "bfloat16" \}', texts["ocr_decoder"])
    # an explicit dtype wins; "cuda:1" alone puts everything on GPU 1
    names = write_repository(tmp_path / "b", num_shards=1, device="cuda:1", dtype="float32")
    shard_text = (tmp_path / "b" / names[1] / "config.pbtxt").read_text()
    assert _instances(shard_text) == ("KIND_GPU", [1])
    assert parse_pbtxt(shard_text)["input"]["HIDDEN"][0] == "TYPE_FP32"
    with pytest.raises(ValueError, match=r"gpus \[0\] given for device 'cpu'"):
        write_repository(tmp_path / "c", device="cpu", gpus=[0])


def test_repo_cli_takes_device_and_gpus(tmp_path, monkeypatch):
    from ocrstream.serving import repo

    monkeypatch.setattr("sys.argv", ["repo", str(tmp_path), "--shards=2", "--device=cuda", "--gpus=2,3"])
    repo.main()
    kinds = [
        _instances((tmp_path / n / "config.pbtxt").read_text())
        for n in ("ocr_decoder", "expert_shard_0", "expert_shard_1")
    ]
    assert kinds == [("KIND_GPU", [2]), ("KIND_GPU", [2]), ("KIND_GPU", [3])]


def test_chart_writes_a_gpu_repository_for_gpu_pods():
    """The decoder pod's init container writes KIND_GPU models on the pod's GPUs when it requests
    them (and KIND_CPU for a CPU-only Triton)."""
    from tests.charts.helmlib import CHART, ensure_helm, load_values, render

    try:
        helm = ensure_helm()
    except RuntimeError as exc:
        pytest.fail(str(exc))

    def init_args(values: dict) -> list[str]:
        pod = render(helm, values).component("Deployment", "decoder")["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        return init["command"]

    gpu = init_args(load_values(CHART / "ci" / "gpu-values.yaml"))  # 2 GPUs per decoder pod
    assert "--device=cuda" in gpu and "--gpus=0,1" in gpu
    cpu = init_args(load_values(CHART / "ci" / "dev-cpu-values.yaml"))  # Triton without GPUs
    assert "--device=cpu" in cpu and not any(a.startswith("--gpus") for a in cpu)
