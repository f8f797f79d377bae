"""Loading ``module:attr`` references to apps (ServerApp, ClientApp), as Flower 1.9's object loader.

A reference is ``"package.module:attribute"`` where the attribute part may be a dotted chain
(``"module:obj.app"``). Every failure raises :class:`~fl_async.errors.AppLoadError` whose message
names the reference and what failed (format, directory, import, attribute, type).
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from fl_async.errors import AppLoadError

__all__ = ["load_object", "parse_reference"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")


def parse_reference(ref: str) -> tuple[str, str]:
    """Split ``"module:attr"`` into ``(module, attr)``.

    Raises:
        AppLoadError: the reference is not of the form ``module.path:attr.path`` (identifiers only).
    """
    if not isinstance(ref, str):
        raise AppLoadError(f"app reference must be a string 'module:attribute', got {type(ref).__name__}")
    match = _REF.match(ref.strip())
    if match is None:
        raise AppLoadError(
            f"invalid app reference {ref!r}: expected 'module:attribute' (e.g. 'client:app' or 'pkg.client:app')"
        )
    return match.group(1), match.group(2)


def _describe(exc: BaseException) -> str:
    """``Type: message`` plus where: a SyntaxError's file and line (and the offending line), or the innermost
    frame of the traceback for an exception raised while importing."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    last = text.splitlines()[-1] if text else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        code = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        return f"{last} ({exc.filename}, line {exc.lineno}{code})"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    frames = [f for f in frames if "importlib" not in f.filename]
    if frames:
        return f"{last} (raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})"
    return last


def load_object(ref: str, dir: str | Path | None = None, expected: type | tuple[type, ...] | None = None) -> Any:
    """Import ``module`` and return ``module.attr`` for the reference ``"module:attr"``.

    Args:
        ref: the reference, e.g. ``"examples.quickstart.client:app"``.
        dir: a directory put first on ``sys.path`` before importing (``--dir``); ``None`` = leave the
            path alone (the current directory is used as Python does).
        expected: a type (or tuple of types) the object must be an instance of, e.g. ``ClientApp``.

    Returns:
        The object. Python caches the module import, so repeated loads return the same object.

    Raises:
        AppLoadError: the reference is malformed, ``dir`` is not a directory, the module cannot be
            found or raises while importing, the attribute is missing, or the object has the wrong type.
            The message names the reference and the failing step.
    """
    module_name, attr_path = parse_reference(ref)
    if dir is not None:
        path = Path(dir).expanduser().resolve()
        if not path.is_dir():
            raise AppLoadError(f"cannot load {ref!r}: --dir {str(dir)!r} is not a directory")
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            where = (
                " (searched sys.path; add the app's directory with --dir)"
                if dir is None
                else f" in {str(dir)!r} or sys.path"
            )
            raise AppLoadError(f"cannot load {ref!r}: module {exc.name!r} not found{where}") from exc
        raise AppLoadError(f"cannot load {ref!r}: importing module {module_name!r} failed: {_describe(exc)}") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AppLoadError(f"cannot load {ref!r}: importing module {module_name!r} failed: {_describe(exc)}") from exc
    obj: Any = module
    walked = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"cannot load {ref!r}: {walked!r} has no attribute {part!r}") from None
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    if expected is not None and not isinstance(obj, expected):
        names = " or ".join(t.__name__ for t in expected) if isinstance(expected, tuple) else expected.__name__
        raise AppLoadError(f"cannot load {ref!r}: it is of type {type(obj).__name__}, expected a {names}")
    return obj
