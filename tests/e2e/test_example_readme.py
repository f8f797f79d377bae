"""The README's quick start runs as written (server.py and client.py from its code blocks), and the README
names no internal path."""

from __future__ import annotations

import importlib.util
import re
import uuid
from pathlib import Path
from types import ModuleType

import anyio

from fl_async.cli.embedded import run_embedded

README = Path(__file__).resolve().parents[2] / "README.md"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"readme_{path.stem}_{uuid.uuid4().hex[:8]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_readme_quick_start_runs(tmp_path: Path) -> None:
    text = README.read_text()
    server_src, client_src = re.findall(r"```python\n(.*?)```", text, re.DOTALL)[:2]
    assert server_src.startswith("# server.py") and client_src.startswith("# client.py")
    for step in ("get_node_ids()", "random.sample", "push_messages", "pull_messages", "log(INFO"):
        assert step in server_src, step  # the guide's structure: select nodes, push, pull loop
    (tmp_path / "server.py").write_text(server_src)
    (tmp_path / "client.py").write_text(client_src)
    server, client = _load(tmp_path / "server.py"), _load(tmp_path / "client.py")
    with anyio.fail_after(60):
        await run_embedded(server.app, client.app, num_supernodes=2)


def test_readme_names_no_internal_paths() -> None:
    text = README.read_text()
    assert "/work/" not in text and "shared/seed" not in text
    assert "array_from_numpy" in text and "fl_async.common.log" in text
    assert "--driver-api-address 127.0.0.1:9091" in text  # how to keep a local trial on loopback
