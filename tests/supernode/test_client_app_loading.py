"""load_object: ``module:attr`` references, ``--dir``, and errors naming what failed."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from fl_async._loading import load_object, parse_reference
from fl_async.client import ClientApp
from fl_async.common import AppLoadError


@pytest.fixture
def app_dir(tmp_path: Path):
    name = f"clientmod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent("""
        from fl_async.client import ClientApp
        app = ClientApp()
        class Holder:
            inner = ClientApp()
        not_an_app = 42
    """)
    )
    (tmp_path / f"{name}_broken.py").write_text("import definitely_missing_module_xyz\n")
    (tmp_path / f"{name}_raises.py").write_text("raise RuntimeError('config missing')\n")
    yield tmp_path, name
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_loads_attribute_and_dotted_chain(app_dir) -> None:
    path, name = app_dir
    app = load_object(f"{name}:app", dir=path, expected=ClientApp)
    assert isinstance(app, ClientApp)
    assert load_object(f"{name}:app", dir=path) is app  # cached import
    assert isinstance(load_object(f"{name}:Holder.inner", dir=path, expected=ClientApp), ClientApp)


@pytest.mark.parametrize("ref", ["", "noattr", "a:", ":b", "a:b:c", "1mod:app", "mod:app-x", "a b:c"])
def test_malformed_references(ref: str) -> None:
    with pytest.raises(AppLoadError, match="invalid app reference"):
        parse_reference(ref)


def test_errors_name_what_failed(app_dir, tmp_path: Path) -> None:
    path, name = app_dir
    with pytest.raises(AppLoadError, match=r"module 'nowhere_[0-9a-f]+' not found"):
        load_object(f"nowhere_{uuid.uuid4().hex[:6]}:app")
    with pytest.raises(AppLoadError, match="importing module .*_broken' failed: .*definitely_missing_module_xyz"):
        load_object(f"{name}_broken:app", dir=path)
    with pytest.raises(AppLoadError, match="failed: RuntimeError: config missing"):
        load_object(f"{name}_raises:app", dir=path)
    with pytest.raises(AppLoadError, match=f"'{name}' has no attribute 'missing'"):
        load_object(f"{name}:missing", dir=path)
    with pytest.raises(AppLoadError, match="has no attribute 'nope'"):
        load_object(f"{name}:Holder.nope", dir=path)
    with pytest.raises(AppLoadError, match="it is of type int, expected a ClientApp"):
        load_object(f"{name}:not_an_app", dir=path, expected=ClientApp)
    with pytest.raises(AppLoadError, match="is not a directory"):
        load_object(f"{name}:app", dir=tmp_path / "does-not-exist")
