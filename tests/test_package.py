"""`import tailor`: the public names, lazily loaded upper sub-packages, the error hierarchy."""

from __future__ import annotations

import json
import subprocess
import sys

import tailor

HEAVY = ("tailor.search", "tailor.serve", "tailor.route", "tailor.dnas", "optuna", "onnxruntime",
         "uvicorn", "starlette")  # fmt: skip


def test_import_tailor_stays_light_and_exposes_search_lazily() -> None:
    code = (
        "import json, sys, tailor\n"
        f"before = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "search = tailor.search\n"
        "front = search.ParetoFront\n"
        "from tailor import search as same\n"
        "print(json.dumps({'before': before, 'callable': callable(search), 'same': same is search,\n"
        "                  'front': front.__name__, 'optuna': 'optuna' in sys.modules,\n"
        "                  'listed': 'search' in dir(tailor) and 'search' in tailor.__all__}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] == [], f"import tailor loaded {result['before']}"
    assert result["callable"] and result["same"] and result["front"] == "ParetoFront" and result["listed"]
    assert not result["optuna"], "optuna loads when a search runs, not on import"


def test_unknown_attributes_still_raise() -> None:
    try:
        tailor.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("tailor.no_such_thing did not raise")


def test_recipe_error_is_a_tailor_value_error_and_not_a_subnet_error() -> None:
    assert issubclass(tailor.RecipeError, tailor.TailorError) and issubclass(tailor.RecipeError, ValueError)
    assert not issubclass(tailor.RecipeError, tailor.InvalidSubnetError)
    assert "RecipeError" in tailor.__all__
