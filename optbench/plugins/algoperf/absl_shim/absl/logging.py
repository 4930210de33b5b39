"""``absl.logging``'s functions on Python's logging (logger ``absl``)."""

from __future__ import annotations

import logging as _logging
from typing import Any

_log = _logging.getLogger("absl")
DEBUG, INFO, WARNING, ERROR, FATAL = _logging.DEBUG, _logging.INFO, _logging.WARNING, _logging.ERROR, _logging.FATAL


def debug(msg: Any, *args: Any, **kwargs: Any) -> None:
    _log.debug(msg, *args, **kwargs)


def info(msg: Any, *args: Any, **kwargs: Any) -> None:
    _log.info(msg, *args, **kwargs)


def warning(msg: Any, *args: Any, **kwargs: Any) -> None:
    _log.warning(msg, *args, **kwargs)


warn = warning


def error(msg: Any, *args: Any, **kwargs: Any) -> None:
    _log.error(msg, *args, **kwargs)


def exception(msg: Any, *args: Any, **kwargs: Any) -> None:
    _log.exception(msg, *args, **kwargs)


def log(level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
    _log.log(level, msg, *args, **kwargs)


def set_verbosity(level: Any) -> None:
    _log.setLevel(level if isinstance(level, int) else str(level).upper())
