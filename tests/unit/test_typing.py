"""Static typing of the Function API: mypy checks calls against the decorated function.

A small program is type-checked by mypy as a user would: in a directory of its own,
with no project configuration, so it finds ``warren`` only as the installed package
(or through ``PYTHONPATH``, when this test's process has one). Each line marked
``# E: <fragment>`` must be reported with that fragment, each ``# R: <type>`` must
reveal that type, and no other line may be reported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import warren

PROGRAM = """\
import warren

app = warren.App("typing")


@app.function()
def f(x: int) -> int:
    return x


@app.function(max_containers=2, timeout=5.0)
async def g(x: int, suffix: str = "") -> str:
    return f"{x}{suffix}"


async def correct() -> None:
    reveal_type(f.local(1))  # R: int
    reveal_type(f.remote(1))  # R: int
    reveal_type(next(f.map([1])))  # R: int
    reveal_type(f.spawn(1))  # R: warren.function_call.FunctionCall[int]
    reveal_type(await f.remote.aio(1))  # R: int
    reveal_type(await f.spawn.aio(1))  # R: warren.function_call.FunctionCall[int]
    reveal_type(f.spawn(1).get(timeout=1))  # R: int
    reveal_type(g.remote(1))  # R: str
    reveal_type(await g.remote.aio(1, "!"))  # R: str
    reveal_type(f.with_options(timeout=1))  # R: warren.function.Function[[x: int], int, int]
    reveal_type(f.hydrate())  # R: warren.function.Function[[x: int], int, int]
    reveal_type(f.web_url)  # R: str | None
    reveal_type(warren.Function.from_name("a", "b"))  # R: warren.function.Function[..., Any, Any]
    for item in f.starmap([(1,), (2,)], order_outputs=False):
        reveal_type(item)  # R: int
    for item in f.for_each(range(3)):
        reveal_type(item)  # R: int
    async for item in f.map.aio([1], return_exceptions=True):
        reveal_type(item)  # R: int
    async for item in f.starmap.aio([(1,)]):
        reveal_type(item)  # R: int
    async for item in f.for_each.aio([1]):
        reveal_type(item)  # R: int
    for text in g.map([1, 2], ["a", "b"], kwargs={}):
        reveal_type(text)  # R: str
    f.update_autoscaler(max_containers=1)
    await f.update_autoscaler.aio(min_containers=0)
    warren.Function.from_name("a", "b").map([1], ["x"], [2.0])


async def wrong() -> None:
    f.remote("a")  # E: "__call__" of "Method" has incompatible type "str"; expected "int"
    f.local("a")  # E: "local" of "Function" has incompatible type "str"; expected "int"
    f.spawn("a")  # E: "__call__" of "Method" has incompatible type "str"; expected "int"
    f.map(["a"])  # E: List item 0 has incompatible type "str"; expected "int"
    f.starmap([("a",)])  # E: List item 0 has incompatible type "tuple[str]"; expected "tuple[int]"
    f.for_each(["a"])  # E: List item 0 has incompatible type "str"; expected "int"
    await f.remote.aio("a")  # E: Argument 1 to "aio" of "Method" has incompatible type "str"
    await f.spawn.aio("a")  # E: Argument 1 to "aio" of "Method" has incompatible type "str"
    f.map.aio(["a"])  # E: List item 0 has incompatible type "str"; expected "int"
    f.starmap.aio([("a",)])  # E: List item 0 has incompatible type "tuple[str]"
    f.for_each.aio(["a"])  # E: List item 0 has incompatible type "str"; expected "int"
    f.map([1], [2])  # E: Too many positional arguments for "__call__" of "MapMethod"
    g.map([1], [2])  # E: List item 0 has incompatible type "int"; expected "str"
    f.map([1], order_outputs="yes")  # E: Argument "order_outputs" to "__call__" of "MapMethod"
    f.with_options(timeout="x")  # E: Argument "timeout" to "with_options" of "Function"
    f.with_options(max_inputs=2)  # E: Unexpected keyword argument "max_inputs" for "with_options"
    f.update_autoscaler(max_containers="x")  # E: Argument "max_containers" to "__call__"
    app.function(max_inputs="x")  # E: No overload variant of "function" of "App" matches
"""

LINE = re.compile(r"^program\.py:(\d+): (error|note): (.*)$")


def mypy_report(directory: Path) -> dict[int, list[str]]:
    (directory / "program.py").write_text(PROGRAM)
    (directory / "mypy.ini").write_text("[mypy]\n")  # this directory's, so no other is read
    command = [sys.executable, "-m", "mypy", "--strict", "--hide-error-context"]
    command += ["--no-color-output", "--no-error-summary", "--config-file", "mypy.ini"]
    done = subprocess.run(
        [*command, "program.py"],
        cwd=directory,
        env={**os.environ, "MYPY_FORCE_COLOR": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: errors found
    reported: dict[int, list[str]] = {}
    for line in done.stdout.splitlines():
        if (match := LINE.match(line)) is not None:
            number, _, message = match.groups()
            reported.setdefault(int(number), []).append(message.replace("builtins.", ""))
    return reported


def marked(tag: str) -> dict[int, str]:
    """The lines of PROGRAM marked ``# <tag>: <text>``, by line number."""
    marks = {}
    for number, line in enumerate(PROGRAM.splitlines(), start=1):
        if f"  # {tag}: " in line:
            marks[number] = line.split(f"  # {tag}: ", 1)[1]
    return marks


def test_calls_are_checked_against_the_decorated_functions_signature(tmp_path: Path) -> None:
    # Given a program calling every method of a Function, right and wrong
    errors, reveals = marked("E"), marked("R")
    # When mypy checks it as a user's program
    reported = mypy_report(tmp_path)
    # Then each wrong call is reported, where it is and for what it is
    for number, fragment in errors.items():
        messages = reported.get(number, [])
        assert any(fragment in m for m in messages), (number, fragment, messages)
    # And each revealed type is the function's own, and nothing else is reported
    for number, expected in reveals.items():
        assert reported.get(number) == [f'Revealed type is "{expected}"'], number
    unexpected = {n: m for n, m in reported.items() if n not in errors and n not in reveals}
    assert unexpected == {}


def test_the_package_ships_its_type_information() -> None:
    assert (Path(warren.__file__).parent / "py.typed").is_file()
