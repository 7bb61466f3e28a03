"""The ring all_reduce exercise: the reference passes, broken versions fail with a message,
and a function defined in a notebook (no importable module) reaches the ranks."""

import pytest

from labkit.checks import ExerciseFailed
from labkit.checks.collectives import check_ring_all_reduce, function_spec
from labkit.collectives.ring import ring_all_reduce

# As if typed into a notebook cell: defined in __main__, so the ranks cannot import it.
NOTEBOOK_CELL = '''
import torch.distributed as dist

def drops_the_remainder(t):
    """Sums only the part divisible by the world size: wrong for 1, 3, 5, 7 ... elements."""
    n = dist.get_world_size()
    k = t.numel() // n * n
    part = t.view(-1)[:k].clone()
    dist.all_reduce(part)
    t.view(-1)[:k] = part
    return t
'''


def notebook_function(tmp_path, source, name):
    path = tmp_path / "cell.py"
    path.write_text(source)
    namespace = {"__name__": "__main__"}
    exec(compile(source, str(path), "exec"), namespace)  # inspect.getsource finds the file
    return namespace[name]


def test_reference_passes_for_world_sizes_2_and_3(capsys):
    result = check_ring_all_reduce(ring_all_reduce, world_sizes=(2, 3), verbose=False)
    assert result.ok
    out = capsys.readouterr().out
    assert "✔ ring_all_reduce: matches dist.all_reduce for world sizes 2, 3" in out


def test_broken_notebook_function_fails_with_input_expected_and_actual(tmp_path):
    fn = notebook_function(tmp_path, NOTEBOOK_CELL, "drops_the_remainder")
    spec = function_spec(fn)
    assert "source" in spec and spec["imports"] == {"dist": "torch.distributed"}
    with pytest.raises(ExerciseFailed) as info:
        check_ring_all_reduce(fn, world_sizes=(2,), verbose=False)
    msg = str(info.value)
    assert "drops_the_remainder FAILED with world_size=2" in msg
    assert "shape (1,)" in msg  # 1 element on 2 ranks: nothing divisible, nothing summed
    assert "expected (dist.all_reduce)" in msg and "actual (your function)" in msg


def test_stub_reports_its_hint_and_result_can_be_returned(tmp_path):
    stub = notebook_function(tmp_path, (
        "def ring_all_reduce(tensor):\n"
        "    raise NotImplementedError('Exercise: reduce-scatter, then all-gather')\n"),
        "ring_all_reduce")
    result = check_ring_all_reduce(stub, world_sizes=(2,), verbose=False,
                                   raise_on_failure=False)
    assert not result.ok
    assert result.message == ("ring_all_reduce: not implemented yet — "
                              "Exercise: reduce-scatter, then all-gather")


def test_module_functions_travel_by_name():
    assert function_spec(ring_all_reduce) == {
        "target": "labkit.collectives.ring:ring_all_reduce"}
