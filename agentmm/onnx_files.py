"""What every onnxruntime export in agentmm shares: a CPU session, and a folder written whole.

Models exported from PyTorch are kept so that a later process loads them without exporting
again: the memory embedder in ``<cache_dir>/embedders/<key>/`` (per machine, exported by a child
process: ``agentmm.memory._onnx``), the CLIP text tower in ``<data_dir>/embedders/<key>/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def cpu_session(graph: bytes | str, threads: int = 1) -> Any:
    """An onnxruntime session on the CPU with ``threads`` intra-op threads and quiet logs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def save_folder(directory: Path, files: Mapping[str, bytes | str]) -> None:
    """Write ``files`` (name -> content) into a temporary folder, then rename it into place:
    a reader sees a whole export or none. A folder already there is replaced (it is only
    written when the one there did not load: damaged, or of an older format)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        for name, content in files.items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        tmp.chmod(0o755)
        os.replace(tmp, directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not directory.exists():
            raise
