"""The exception tree: every problem code the service answers has its class, unknown
codes fall back to their status's class, the drawn tree is the real one, and the
client loads none of the server's libraries."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

import bulkapi.client
from bulkapi.client import errors
from tests.support import ROOT

#: Where the server spells its problem codes.
_CODE_SOURCES = [
    ROOT / "bulkapi/core/errors.py",
    *sorted((ROOT / "bulkapi/api").glob("*.py")),
    *sorted((ROOT / "bulkapi/store").glob("*.py")),
]
#: How a code is spelt there: a class's ``code``, a ``code=`` argument, the code of a
#: ``PreconditionFailed`` or of a ``problem(...)``, or a value of the HTTP code table.
_CODE_PATTERNS = [
    r'\bcode = "([a-z_]+)"',
    r'\bcode="([a-z_]+)"',
    r'problem\(\s*\d+,\s*"([a-z_]+)"',
    r'^\s+\d{3}: "([a-z_]+)",$',
]


def _server_codes() -> set[str]:
    text = "\n".join(path.read_text() for path in _CODE_SOURCES)
    text += (ROOT / "bulkapi/core/preconditions.py").read_text()
    found = {code for pattern in _CODE_PATTERNS for code in re.findall(pattern, text, re.M)}
    found |= set(re.findall(r'PreconditionFailed\(\s*"([a-z_]+)"', text))
    return found


def test_every_problem_code_the_server_answers_has_its_own_class() -> None:
    codes = _server_codes()
    assert {"version_mismatch", "too_many_pending_operations", "not_ready"} <= codes
    assert len(codes) > 30, codes
    # "error" is the server's root class, never answered; "http_error" is the code of a
    # status with no code of its own, raised as that status's class.
    missing = codes - set(errors.BY_CODE) - {"error", "http_error"}
    assert not missing
    for code, cls in errors.BY_CODE.items():
        assert cls.code_name == code and cls.__name__ in bulkapi.client.__all__


def _answer(status: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers)


def test_a_problem_carries_its_fields() -> None:
    body = (
        b'{"type":"urn:bulkapi:problem:validation_error","title":"Validation failed",'
        b'"status":422,"detail":"1 operation(s) are invalid.","code":"validation_error",'
        b'"errors":{"3":{"op":["Must be one of: upsert, patch, delete."]}}}'
    )
    error = errors.problem_error(_answer(422, body))
    assert type(error) is errors.ValidationError
    assert (error.status, error.code, error.detail) == (
        422,
        "validation_error",
        "1 operation(s) are invalid.",
    )
    assert error.errors == {"3": {"op": ["Must be one of: upsert, patch, delete."]}}
    assert error.problem["title"] == "Validation failed" and error.retry_after is None


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (409, "a_code_from_the_future", errors.Conflict),
        (404, "gone_elsewhere", errors.NotFound),
        (418, "teapot", errors.ClientError),
        (502, "bad_gateway", errors.ServerError),
        (503, "resting", errors.ServiceUnavailable),
        (429, "too_many_pending_operations", errors.TooManyPendingOperations),
    ],
)
def test_a_code_is_raised_as_its_class_or_else_as_its_status_class(
    status: int, code: str, expected: type[errors.ProblemError]
) -> None:
    error = errors.problem_error(_answer(status, b'{"code":"%s","detail":"d"}' % code.encode()))
    assert type(error) is expected and error.code == code and error.status == status


def test_an_answer_that_is_no_problem_still_raises_by_status() -> None:
    error = errors.problem_error(_answer(502, b"<html>Bad Gateway</html>", **{"Retry-After": "7"}))
    assert type(error) is errors.ServerError
    assert (error.code, error.detail, error.retry_after) == (
        "http_error",
        "<html>Bad Gateway</html>",
        7,
    )


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    waited = errors.retry_after(_answer(503, b"", **{"Retry-After": later}))
    assert waited is not None and 100 < waited <= 120
    assert errors.retry_after(_answer(503, b"", **{"Retry-After": "soon"})) is None


def _drawn_tree() -> list[tuple[int, str]]:
    doc = bulkapi.client.__doc__ or ""
    lines = doc[doc.index("    BulkapiError") :].splitlines()
    drawn = []
    for line in lines:
        match = re.match(r"^    ((?:│   |    )*)(?:├── |└── )?([A-Za-z]+)", line)
        if match is None:
            break
        drawn.append((len(match.group(1)) // 4 + (1 if "── " in line else 0), match.group(2)))
    return drawn


def _real_tree(cls: type[BaseException], depth: int = 0) -> list[tuple[int, str]]:
    found = [(depth, cls.__name__)]
    for sub in cls.__subclasses__():
        if sub.__module__ == errors.__name__:
            found += _real_tree(sub, depth + 1)
    return found


def test_the_tree_in_the_docstring_is_the_class_tree() -> None:
    assert _drawn_tree() == _real_tree(errors.BulkapiError)


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    server_side = [
        "flask",
        "werkzeug",
        "sqlalchemy",
        "dramatiq",
        "marshmallow",
        "redis",
        "gunicorn",
    ]
    probe = (
        "import sys, bulkapi.client, bulkapi.client.errors\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {server_side!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
